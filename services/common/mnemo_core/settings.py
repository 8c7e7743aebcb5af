"""Configuration from the environment (prefix ``MNEMO_``), read once by each service's main()."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mnemo_core.errors import validation_message

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# pgvector's HNSW index takes `vector` columns of at most 2,000 dimensions; the events and
# code chunks are searched through one, so a larger model could store vectors but never
# be searched. Refused at start, by name, instead.
MAX_EMBEDDING_DIM = 2000


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MNEMO_", extra="ignore")

    # Database. When database_url is empty the local runner starts an embedded
    # PostgreSQL and hands its URL to the services it starts.
    database_url: str = ""
    db_host: str = "127.0.0.1"
    db_port: int = 5433
    db_user: str = "mnemo"
    db_password: str = "mnemopass"  # noqa: S105  # the documented local default
    db_name: str = "mnemolite"
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Waits on PostgreSQL: a statement (every service), and a free pooled connection (the
    # API). A database that stalls (holds its connections, answers nothing) costs a request
    # at most these before its 503.
    db_command_timeout_s: float = Field(default=60.0, gt=0)
    db_acquire_timeout_s: float = Field(default=10.0, gt=0)
    data_dir: Path = Path(".mnemolite")

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_keys: str = ""
    allow_insecure: bool = False
    # Host names the API answers to without keys besides IP addresses and localhost
    # (comma-separated; "*" for any): a web page whose own name an attacker pointed at
    # 127.0.0.1 (DNS rebinding) must not read or write here. With keys, any name.
    allowed_hosts: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_events: int = 1000
    query_timeout_s: float = 10.0
    search_ef: int = 100
    # Event search compares every vector while the events table is smaller than this (about
    # 8,000 events of a short text: exact answers in under 10 ms); the HNSW index beyond.
    search_exact_below_mb: float = Field(default=16.0, ge=0)
    # How long a write's Idempotency-Key (events, code upload) is remembered (then it counts
    # as unused).
    idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # Operations: /metrics without a key (else it needs X-API-Key like /v1), and how often
    # the API samples queue figures for /metrics and the /ui history.
    metrics_public: bool = True
    ops_sample_s: float = 5.0

    # Embedding
    embedding_model: str = DEFAULT_MODEL
    embedding_dim: int = 384
    batch_size: int = 64
    message_batch: int = 64
    torch_threads: int = 0
    max_attempts: int = 5
    visibility_timeout_s: int = 60
    poll_seconds: int = 2
    grace_period_s: float = 20.0
    heartbeat_s: float = 5.0
    worker_dead_after_s: float = 20.0

    # Code indexing
    parse_processes: int = 1
    parse_timeout_s: float = 30.0
    index_messages: int = 4
    max_file_bytes: int = 1024 * 1024
    max_files_per_request: int = 20_000
    max_archive_bytes: int = 64 * 1024 * 1024
    # The API holds an archive's text while it stores it: its peak RSS is about 90 MiB plus
    # 1.2 times this (README, Limits; tests/acceptance/test_code_limits.py), which the
    # container's API_MEMORY (384m) holds with room to spare. Raise them together.
    max_archive_expanded_bytes: int = 128 * 1024 * 1024
    max_archive_entries: int = 50_000
    max_path_chars: int = 1024

    # Local runner
    embedders: int = 1
    indexers: int = 1
    # Set by `mnemo up` for the services it starts: they stop when that process dies.
    supervisor_pid: int = 0

    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = "info"

    @field_validator("embedding_dim")
    @classmethod
    def _dim_in_range(cls, v: int) -> int:
        if not 1 <= v <= MAX_EMBEDDING_DIM:
            raise ValueError(
                f"must be between 1 and {MAX_EMBEDDING_DIM}: pgvector's HNSW index takes "
                f"at most {MAX_EMBEDDING_DIM} dimensions"
            )
        return v

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def allowed_host_names(self) -> frozenset[str] | None:
        """The names of ``allowed_hosts`` (lower case), or None when any name will do."""
        names = frozenset(h.strip().lower().rstrip(".") for h in self.allowed_hosts.split(","))
        if self.api_key_list or "*" in names:
            return None
        return names - {""}

    def dsn(self) -> str:
        """The URL services connect to: MNEMO_DATABASE_URL, or one built from the parts."""
        if self.database_url:
            return self.database_url
        return (
            f"postgresql://{quote(self.db_user)}:{quote(self.db_password)}"
            f"@{self.db_host}:{self.db_port}/{quote(self.db_name)}"
        )


def load(**overrides: Any) -> Settings:
    """The settings from the environment (and ``overrides``); :class:`SettingsError` names
    each variable at fault, e.g. ``MNEMO_EMBEDDING_DIM=4096: must be between 1 and 2000``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        name = "MNEMO_" + "_".join(str(p) for p in e.get("loc", ())).upper()
        msg = validation_message(e)
        parts.append(f"{name}={e.get('input')!s}: {msg}")
    return "; ".join(parts)
