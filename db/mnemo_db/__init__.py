"""MnemoLite's migrations: append-only SQL files applied in name order (see mnemo_core.migrate)."""
