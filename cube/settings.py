"""Settings, declared once.

Each setting has a name, a default, an environment variable and a one-line help. The CLI, the
server factory and the README (checked by a test) all read this one table, so a setting cannot
exist in one place and be missing in another. Nothing here reads the environment at import
time: :func:`Settings.from_env` does, when asked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cube.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: str | int | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("model", "STATCUBE_MODEL", "model.json", "Path to the Cubes-format model file."),
    Setting("data_dir", "STATCUBE_DATA_DIR", "data",
            "Where `statcube generate` writes inputs and `statcube build` writes warehouses."),
    Setting("warehouse", "STATCUBE_WAREHOUSE", None,
            "SQLAlchemy URL or DuckDB file of the warehouse to serve "
            "(default: newest in data_dir)."),
    Setting("key_secret", "STATCUBE_KEY_SECRET", None,
            "Secret for record keys (HMAC). Never commit it; prefer key_file in production."),
    Setting("key_file", "STATCUBE_KEY_FILE", None,
            "File holding the record-key secret (used when key_secret is unset)."),
    Setting("key_cache", "STATCUBE_KEY_CACHE", None,
            "Folder of the unit-key cache (default: <key file>.unitkeys beside the key file; "
            "with key_secret and no key_cache: no cache)."),
    Setting("export_dir", "STATCUBE_EXPORT_DIR", "exports",
            "Where Parquet cube exports are written."),
    # --- HTTP server (server/) ---
    Setting("releases", "STATCUBE_RELEASES", None,
            "Release calendar file (TOML or JSON); unset: the warehouse is one published release."),
    Setting("api_keys", "STATCUBE_API_KEYS", None,
            "API keys file (TOML or JSON) of hashed keys and roles; unset: everyone is a guest."),
    Setting("api_key_pepper", "STATCUBE_API_KEY_PEPPER", None,
            "Secret mixed into API key hashes (HMAC-SHA256); required with api_keys."),
    Setting("max_cells_guest", "STATCUBE_MAX_CELLS_GUEST", 5000,
            "Largest table (cells) a guest may get in one response; larger ones must be paged."),
    Setting("max_cells_registered", "STATCUBE_MAX_CELLS_REGISTERED", 100000,
            "Largest table (cells) for the registered role."),
    Setting("max_cells_prerelease", "STATCUBE_MAX_CELLS_PRERELEASE", 1000000,
            "Largest table (cells) for the prerelease role."),
    Setting("max_cells_admin", "STATCUBE_MAX_CELLS_ADMIN", 1000000,
            "Largest table (cells) for the admin role."),
    Setting("rate_limit_guest", "STATCUBE_RATE_LIMIT_GUEST", "60/minute",
            "Requests per client IP without a key (flask-limiter syntax: 5/second;60/minute)."),
    Setting("rate_limit_registered", "STATCUBE_RATE_LIMIT_REGISTERED", "600/minute",
            "Requests per key for the registered role."),
    Setting("rate_limit_prerelease", "STATCUBE_RATE_LIMIT_PRERELEASE", "3000/minute",
            "Requests per key for the prerelease role."),
    Setting("rate_limit_admin", "STATCUBE_RATE_LIMIT_ADMIN", "3000/minute",
            "Requests per key for the admin role."),
    Setting("rate_limit_storage", "STATCUBE_RATE_LIMIT_STORAGE", "memory://",
            "Where rate-limit counters live: memory:// (per worker) or redis://host (shared)."),
    Setting("cache_bytes", "STATCUBE_CACHE_BYTES", 67108864,
            "Size of each worker's in-process LRU cache of serialised results (0 disables it)."),
    Setting("cache_max_age", "STATCUBE_CACHE_MAX_AGE", 86400,
            "Cache-Control max-age (seconds) for responses naming a published release."),
    Setting("cors_origins", "STATCUBE_CORS_ORIGINS", None,
            "Origins allowed by CORS: * or a comma-separated list; unset: no CORS headers."),
    Setting("host", "STATCUBE_HOST", "127.0.0.1", "Address `statcube serve` listens on."),
    Setting("port", "STATCUBE_PORT", 8000, "Port `statcube serve` listens on."),
    Setting("workers", "STATCUBE_WORKERS", 0,
            "Server worker processes (0: one per CPU core); each opens the warehouse read-only."),
    Setting("threads", "STATCUBE_THREADS", 4, "Threads per worker process."),
    Setting("statement_timeout_ms", "STATCUBE_STATEMENT_TIMEOUT_MS", 20000,
            "Longest time (milliseconds) one SQL statement of the server may run before it is "
            "cancelled and the request answers 504 query_timeout (0: no limit)."),
    Setting("duckdb_threads", "STATCUBE_DUCKDB_THREADS", 1,
            "DuckDB threads per query in a server worker (0: DuckDB's default, one per core); "
            "workers and their threads already answer requests in parallel."),
    Setting("proxy_hops", "STATCUBE_PROXY_HOPS", 0,
            "Reverse proxies in front of the server whose X-Forwarded-For is trusted (for IPs)."),
    # --- SQL API (wire/) ---
    Setting("sql_host", "STATCUBE_SQL_HOST", "127.0.0.1",
            "Address `statcube sql-serve` (the PostgreSQL-protocol SQL API) listens on."),
    Setting("sql_port", "STATCUBE_SQL_PORT", 5433,
            "Port of the SQL API (0: any free port)."),
    Setting("sql_tls_cert", "STATCUBE_SQL_TLS_CERT", None,
            "PEM certificate for TLS on the SQL API; unset: no TLS (keep it on loopback)."),
    Setting("sql_tls_key", "STATCUBE_SQL_TLS_KEY", None,
            "PEM private key for the SQL API's certificate."),
    Setting("sql_threads", "STATCUBE_SQL_THREADS", 8,
            "Threads answering SQL API queries (connections themselves cost no thread)."),
    Setting("clock", "STATCUBE_CLOCK", None,
            "A fixed 'now' (ISO 8601, e.g. 2026-12-02T12:00Z) deciding which releases are "
            "published: for demos, documentation tests and rehearsing a publication; unset: "
            "the system clock."),
)


@dataclass(frozen=True)
class Settings:
    model: str = "model.json"
    data_dir: str = "data"
    warehouse: str | None = None
    key_secret: str | None = None
    key_file: str | None = None
    key_cache: str | None = None
    export_dir: str = "exports"
    releases: str | None = None
    api_keys: str | None = None
    api_key_pepper: str | None = None
    max_cells_guest: int = 5000
    max_cells_registered: int = 100000
    max_cells_prerelease: int = 1000000
    max_cells_admin: int = 1000000
    rate_limit_guest: str = "60/minute"
    rate_limit_registered: str = "600/minute"
    rate_limit_prerelease: str = "3000/minute"
    rate_limit_admin: str = "3000/minute"
    rate_limit_storage: str = "memory://"
    cache_bytes: int = 67108864
    cache_max_age: int = 86400
    cors_origins: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0
    threads: int = 4
    statement_timeout_ms: int = 20000
    duckdb_threads: int = 1
    proxy_hops: int = 0
    sql_host: str = "127.0.0.1"
    sql_port: int = 5433
    sql_tls_cert: str | None = None
    sql_tls_key: str | None = None
    sql_threads: int = 8
    clock: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            if s.env in env and env[s.env] != "":
                values[s.name] = env[s.env]
                if isinstance(s.default, int):
                    try:
                        values[s.name] = int(env[s.env])
                    except ValueError:
                        raise ConfigError(f"{s.env} must be a whole number, got "
                                          f"{env[s.env]!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        bad = set(values) - known
        if bad:
            raise ConfigError(f"unknown settings: {', '.join(sorted(bad))}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def release_calendar(self) -> str | None:
        """The release calendar in force, one rule for the server, the CLI and exports:
        ``STATCUBE_RELEASES`` (or ``--releases``), else the demo's ``DATA_DIR/releases.toml``
        when it exists, else None (the warehouse is one published release). Without this
        single rule the CLI and the server disagreed about the latest published period."""
        if self.releases:
            return self.releases
        demo = Path(self.data_dir) / "releases.toml"
        return str(demo) if demo.is_file() else None

    def now(self) -> datetime:
        """What time the release calendar is read at: ``STATCUBE_CLOCK`` if set (an aware
        time; a naive one is UTC), else the system clock. One rule for the server, the CLI
        and exports, so a rehearsal of a publication is consistent everywhere."""
        if not self.clock:
            return datetime.now(UTC)
        try:
            when = datetime.fromisoformat(self.clock.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"STATCUBE_CLOCK must be an ISO 8601 time such as "
                              f"2026-12-02T12:00Z, got {self.clock!r}") from None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    def key_cache_dir(self) -> Path | None:
        """Where the build caches unit keys (cube/incremental.py): beside the secret, as
        protected as it, never in a warehouse or export folder. ``STATCUBE_KEY_CACHE`` if
        set, else ``<key file>.unitkeys`` when the secret comes from a file, else none."""
        if self.key_cache:
            return Path(self.key_cache)
        if self.key_file and not self.key_secret:
            return Path(self.key_file + ".unitkeys")
        return None

    def secret(self) -> bytes:
        """The record-key secret. Refuses to run without one: a default would be public."""
        if self.key_secret:
            return self.key_secret.encode("utf-8")
        if self.key_file:
            p = Path(self.key_file)
            try:
                text = p.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read key file {p}: {exc.strerror}") from None
            if len(text) < 16:
                raise ConfigError(f"key file {p} holds fewer than 16 characters")
            return text.encode("utf-8")
        raise ConfigError(
            "no record-key secret: set STATCUBE_KEY_SECRET or STATCUBE_KEY_FILE "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > .statcube-secret`)"
        )
