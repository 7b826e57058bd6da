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
            "SQLAlchemy URL or DuckDB file of the warehouse to serve (default: newest in data_dir)."),
    Setting("key_secret", "STATCUBE_KEY_SECRET", None,
            "Secret for record keys (HMAC). Never commit it; prefer key_file in production."),
    Setting("key_file", "STATCUBE_KEY_FILE", None,
            "File holding the record-key secret (used when key_secret is unset)."),
    Setting("export_dir", "STATCUBE_EXPORT_DIR", "exports", "Where Parquet cube exports are written."),
)


@dataclass(frozen=True)
class Settings:
    model: str = "model.json"
    data_dir: str = "data"
    warehouse: str | None = None
    key_secret: str | None = None
    key_file: str | None = None
    export_dir: str = "exports"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            if s.env in env and env[s.env] != "":
                values[s.name] = env[s.env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        bad = set(values) - known
        if bad:
            raise ConfigError(f"unknown settings: {', '.join(sorted(bad))}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

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
