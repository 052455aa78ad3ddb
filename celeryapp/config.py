"""Settings from the environment (one table in the README), read once per process.

Every knob is a ``TURBO_*`` variable; the Databricks connector's own variables
(``DATABRICKS_*``) are read by the engine itself, on the worker only.
"""
from __future__ import annotations

import socket
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .core import names as C
from .core.names import PRIORITIES
from .core.policy import Limits, time_limits
from .core.urls import redact_url, with_password  # noqa: F401  (re-exported)


def _default_results_dir() -> Path:
    return Path(tempfile.gettempdir()) / "agent-turbo" / "results"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TURBO_", extra="ignore")

    # --- Redis -------------------------------------------------------------
    broker_url: str = C.DEFAULT_BROKER_URL
    result_backend: str | None = None  # default: the broker URL
    redis_password: str | None = Field(default=None, repr=False)
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    result_expires: int = C.DEFAULT_RESULT_EXPIRES
    # seconds past the longest hard time limit before an unacked message is redelivered;
    # <= 0 would redeliver a task while it still runs
    visibility_margin: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    unacked_restore_interval: int = 10
    # seconds without a worker's heartbeat before its unacked messages go back to their
    # queues (a dead host's tasks start again within about 1.5 x this)
    dead_worker_timeout: float = Field(default=15.0, ge=2, le=3600, allow_inf_nan=False)
    # requeues of a task whose worker process died running it; the next death: FAILURE
    worker_lost_requeues: int = Field(default=C.DEFAULT_WORKER_LOST_REQUEUES, ge=0)
    send_sent_event: bool = False
    event_flush_delay: float = Field(default=0.1, ge=0)
    # TURBO_STOCK_CELERY: kombu's and Celery's own Redis transport, result backend and
    # worker consumer instead of celeryapp/overrides (a way out of a regression there);
    # secrets stay redacted. Set it on workers and clients alike.
    stock_celery: bool = False

    # --- limits and retries -------------------------------------------------
    query_timeout: float = C.DEFAULT_QUERY_TIMEOUT
    query_max_timeout: float = C.DEFAULT_QUERY_MAX_TIMEOUT
    agent_timeout: float = C.DEFAULT_AGENT_TIMEOUT
    agent_max_timeout: float = C.DEFAULT_AGENT_MAX_TIMEOUT
    time_limit_grace: float = C.DEFAULT_TIME_LIMIT_GRACE
    max_retries: int = 3
    retry_backoff: float = 2.0
    retry_backoff_max: float = 300.0
    default_priority: str = C.DEFAULT_PRIORITY

    # --- SQL ----------------------------------------------------------------
    default_engine: str = "duckdb"
    duckdb_path: str = ":memory:"
    duckdb_read_only: bool | None = None  # default: read-only for a file database
    # threads of each DuckDB connection (SET threads); default: the CPUs divided among the
    # worker's prefork processes (-c), at least 1 (tasks/engines: duckdb_threads)
    duckdb_threads: int | None = Field(default=None, ge=1)
    # engine connections a worker process keeps between queries (tasks/engines/pool.py):
    # closed after this long unused (0: a new connection per query) or since opened
    session_max_idle: float = Field(default=600.0, ge=0)
    session_max_age: float = Field(default=3600.0, ge=0)
    results_dir: Path = Field(default_factory=_default_results_dir)
    max_sql_bytes: int = Field(default=C.DEFAULT_MAX_SQL_BYTES, ge=1)
    # a task's arguments, JSON-encoded (refused at submit, never stored whole)
    max_args_bytes: int = Field(default=C.DEFAULT_MAX_ARGS_BYTES, ge=1)
    max_inline_rows: int = 1000
    preview_rows: int = 20

    # --- agents -------------------------------------------------------------
    claude_bin: str = "claude"
    codex_bin: str = "codex"
    gemini_bin: str = "gemini"
    # agent runs at once per host; default (unset): the io worker's concurrency
    agent_concurrency: int | None = None
    agent_slots_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "agent-turbo" / "agent-slots")
    host: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    # each run's own scratch directory (removed afterwards unless keep_workdir/keep_session)
    agent_scratch_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "agent-turbo" / "agent-runs")
    # the CLIs' own retry loops (CLAUDE_CODE_MAX_RETRIES, codex's request/stream
    # retries, gemini's attempts): bounded, so the task's backoff and timeout decide
    agent_cli_max_retries: int = Field(default=1, ge=0, le=10)
    agent_max_prompt_bytes: int = Field(default=1024 * 1024, ge=1)
    # --- what callers may ask of this worker's agents (comma-separated) ---
    # permission modes callers may ask for (claude --permission-mode, codex --sandbox,
    # gemini --approval-mode); default: all but the ones that bypass every check
    agent_permission_modes: str = ("acceptEdits,auto,default,dontAsk,plan,read-only,"
                                   "workspace-write,auto_edit")
    # tool rules callers may allow (fnmatch patterns: "Read,Grep,Bash(git *)"); * = any
    agent_allowed_tools: str = "*"
    # directories under which a caller's cwd may lie; empty: runs get scratch dirs only
    agent_cwd_roots: str = ""
    # more of the worker's environment the CLIs see (fnmatch patterns, e.g. AWS_*),
    # beyond PATH, HOME, locale, proxies and each CLI's own keys and settings
    agent_env_pass: str = ""

    # --- this host's worker (turbo-worker / python -m celeryapp.worker.host) ---
    worker_queues: str = ",".join(C.ROLE_QUEUES[C.CPU_ROLE])  # the cpu (prefork) worker's
    worker_concurrency: int | None = None  # default: the CPU count
    worker_statedb: Path | None = None  # revokes survive restarts; default under results' parent
    worker_loglevel: str = "INFO"
    worker_pool: str = "prefork"
    # the second worker of the host (turbo-worker --io): I/O-bound work on threads
    worker_role: str = C.CPU_ROLE  # cpu | io; `turbo-worker --io` / `--role` win
    io_worker_queues: str = ",".join(C.ROLE_QUEUES[C.IO_ROLE])
    io_worker_concurrency: int = Field(default=64, ge=1)
    io_worker_pool: str = "threads"
    io_worker_statedb: Path | None = None  # default: io-<host>.db next to worker-<host>.db

    # --- flower and metrics ---
    # Flower (python -m celeryapp.monitoring.flower, or celery -A celeryapp flower:
    # celeryapp/monitoring/flowerconfig.py)
    flower_user: str | None = None
    flower_password: str | None = Field(default=None, repr=False)
    flower_dev: bool = False  # allow Flower without login, on a loopback address only
    flower_port: int = 5555
    flower_address: str = "127.0.0.1"
    flower_db: Path | None = None  # persistent state; default under results' parent
    flower_persistent: bool = True
    flower_state_save_interval: int = 60000  # ms between state saves
    flower_max_tasks: int = 10000
    # the project's Prometheus exporter (python -m celeryapp.monitoring.metrics)
    metrics_port: int = 9808
    metrics_address: str = "127.0.0.1"
    # --- end flower and metrics ---

    # --- workflows (celeryapp/flows) ---
    # seconds between repair passes (one worker at a time): steps whose task ended but whose
    # transition was lost are settled, steps claimed but never published are published again;
    # 0: no repair thread in the workers (flows.repair() still works)
    flow_repair_interval: float = Field(default=15.0, ge=0, allow_inf_nan=False)
    # a step claimed for dispatch this long ago and still not published is published again
    flow_dispatch_grace: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    # how long a worker hook retries a workflow transition while Redis is unreachable; the
    # repair pass leaves a step whose task ended to its hook for this long plus 2 s
    flow_retry_seconds: float = Field(default=30.0, ge=0, allow_inf_nan=False)

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        if not value or not all(ch.isalnum() or ch in "-_" for ch in value):
            raise ValueError(f"TURBO_HOST must be letters, digits, - or _, got {value!r}")
        return value

    @field_validator("worker_role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in C.ROLES:
            raise ValueError(f"TURBO_WORKER_ROLE must be one of {', '.join(C.ROLES)}, "
                             f"got {value!r}")
        return value

    @field_validator("default_priority")
    @classmethod
    def _known_priority(cls, value: str) -> str:
        if value not in PRIORITIES:
            raise ValueError(f"unknown priority {value!r}; use one of {', '.join(PRIORITIES)}")
        return value

    @field_validator("max_inline_rows", "preview_rows", "agent_concurrency", "max_retries")
    @classmethod
    def _not_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be >= 0")
        return value

    @model_validator(mode="after")
    def _consistent_limits(self) -> Settings:
        if self.query_timeout > self.query_max_timeout:
            raise ValueError("TURBO_QUERY_TIMEOUT exceeds TURBO_QUERY_MAX_TIMEOUT")
        if self.agent_timeout > self.agent_max_timeout:
            raise ValueError("TURBO_AGENT_TIMEOUT exceeds TURBO_AGENT_MAX_TIMEOUT")
        if self.retry_backoff_max >= self.visibility_timeout:
            raise ValueError("TURBO_RETRY_BACKOFF_MAX must stay below the visibility timeout")
        return self

    # --- derived ------------------------------------------------------------
    def limits(self, kind: str) -> Limits:
        """The timeout policy of ``kind`` ("query" or "agent") for the request policy."""
        return Limits(getattr(self, f"{kind}_timeout"), getattr(self, f"{kind}_max_timeout"),
                      self.time_limit_grace, f"TURBO_{kind.upper()}_MAX_TIMEOUT",
                      self.default_priority, self.max_args_bytes, self.max_sql_bytes)

    @property
    def agent_slots(self) -> int:
        """Agent runs at once on this host: TURBO_AGENT_CONCURRENCY, by default the io
        worker's slots (agent runs wait on their CLI in its threads)."""
        if self.agent_concurrency is not None:
            return self.agent_concurrency
        return self.io_worker_concurrency

    @property
    def longest_hard_limit(self) -> float:
        longest = max(self.query_max_timeout, self.agent_max_timeout)
        return time_limits(longest, self.time_limit_grace)[1]

    @property
    def visibility_timeout(self) -> int:
        """Redis redelivers unacked messages after this; it must outlast any task."""
        return int(self.longest_hard_limit + self.visibility_margin)

    @property
    def broker(self) -> str:
        return with_password(self.broker_url, self.redis_password)

    @property
    def backend(self) -> str:
        return with_password(self.result_backend or self.broker_url, self.redis_password)

    @property
    def duckdb_is_read_only(self) -> bool:
        if self.duckdb_read_only is not None:
            return self.duckdb_read_only
        return self.duckdb_path != ":memory:"

    def redis_ssl_options(self) -> dict | None:
        """TLS options for ``rediss://`` URLs (CA verification on by default)."""
        if not self.broker.startswith("rediss://") and not self.backend.startswith("rediss://"):
            return None
        import ssl

        options: dict = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if self.redis_tls_ca:
            options["ssl_ca_certs"] = self.redis_tls_ca
        if self.redis_tls_cert:
            options["ssl_certfile"] = self.redis_tls_cert
        if self.redis_tls_key:
            options["ssl_keyfile"] = self.redis_tls_key
        return options


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between runs)."""
    get_settings.cache_clear()
