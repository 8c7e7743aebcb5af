"""The benchmark harness: a local stack of real processes, the load generators, the
baselines, and the report."""
