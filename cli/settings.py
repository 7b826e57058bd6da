"""``settings``: the values in force, and where each came from.

It used to print the declared defaults, which told a newcomer nothing about why the server
or the CLI did what it did. Now each row is the value a command would use — after the
environment, the global options and the files the rules fall back on (the newest warehouse
in the data directory, the demo's release calendar, the packaged model) — and its source.
Secrets (the record-key secret, the API key pepper) are shown only as ``set``/``unset``;
passwords inside URLs are masked.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cli.context import model_path, settings_of
from cli.output import write_text
from cli.parsing import command
from cube.errors import ConfigError
from cube.settings import SETTINGS, Settings

#: Shown as set/unset only.
SECRETS = frozenset({"key_secret", "api_key_pepper"})
HEADER = ("variable", "value", "source", "meaning")


def _mask_url(text: str) -> str:
    """A URL with its password replaced by ``***`` (anything else unchanged)."""
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def rows(settings: Settings, environ: Mapping[str, str], options: Mapping[str, Any]
         ) -> list[tuple[str, str, str, str]]:
    """(variable, value in force, source, meaning) for every declared setting."""
    out = []
    for s in SETTINGS:
        value: Any = getattr(settings, s.name)
        if options.get(s.name) is not None:
            source = "option"
        elif environ.get(s.env, "") != "":
            source = "env"
        else:
            source = "default"
        if s.name == "model" and source == "default":
            value = str(model_path(settings))
            source = "default" if value == s.default else "default (packaged model)"
        elif s.name == "warehouse" and value is None:
            from cube.workspace import resolve_warehouse

            try:
                value = resolve_warehouse(None, settings.data_dir)
                source = "newest in data dir"
            except ConfigError:
                value = None
        elif s.name == "releases" and value is None:
            value = settings.release_calendar()
            if value is not None:
                source = "data dir (demo calendar)"
        if s.name in SECRETS:
            shown = "set" if value else "unset"
        elif value is None:
            shown = "unset"
        else:
            shown = _mask_url(str(value))
        out.append((s.env, shown, source, s.help))
    return out


def cmd_settings(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    options = {"model": getattr(args, "model", None), "data_dir": getattr(args, "data_dir", None)}
    table = [HEADER, *rows(settings, os.environ, options)]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    write_text("".join(f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}\n"
                       for r in table))
    return 0


def register(sub: Any) -> None:
    s = command(sub, "settings", help="list the settings in force, where each came from "
                                      "(option, env, default) and what it means",
                example="STATCUBE_DATA_DIR=/srv/statcube statcube settings")
    s.set_defaults(func=cmd_settings)
