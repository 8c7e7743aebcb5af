"""What every MnemoLite service shares: settings, the pool, queries, queues, jobs, logs."""

__version__ = "0.1.0"
