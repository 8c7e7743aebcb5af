"""MnemoLite benchmarks (``make bench``): every figure against a baseline from the same run."""
