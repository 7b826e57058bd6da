"""``load-pg``: copy a built DuckDB warehouse into PostgreSQL (cube/pg_load.py).

Without psycopg installed this answers one line naming the extra to install: the check is
in the core, where the URL becomes an engine (:func:`cube.engine.database_url`)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.context import model_of, settings_of
from cli.output import note, progress_bar
from cli.parsing import command, nonempty


def cmd_load_pg(args: argparse.Namespace) -> int:
    from cube.pg_load import load_pg

    settings = settings_of(args)
    with progress_bar("load-pg") as report:
        rep = load_pg(model_of(settings), args.warehouse, args.url, schema=args.schema,
                      replace=args.replace, progress=report)
    rows = sum(rep.rows.values())
    where = rep.target + (f" (schema {rep.schema})" if rep.schema else "")
    note(f"loaded {len(rep.rows)} tables, {rows:,} rows into {where} in {rep.seconds:.1f}s")
    return 0


def register(sub: Any) -> None:
    lp = command(sub, "load-pg", help="copy a DuckDB warehouse into PostgreSQL",
                 example="statcube load-pg data/warehouse/2026-11.duckdb "
                         "postgresql://statcube@localhost/statcube --schema r2026_11")
    lp.add_argument("warehouse", type=nonempty, help="the release's .duckdb file")
    lp.add_argument("url", type=nonempty,
                    help="PostgreSQL URL, e.g. postgresql://user:pass@host/db")
    lp.add_argument("--schema", type=nonempty, help="target schema (created if missing)")
    lp.add_argument("--replace", action="store_true", help="replace existing tables")
    lp.set_defaults(func=cmd_load_pg)
