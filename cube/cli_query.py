"""The query subcommands of ``statcube``: ``aggregate``, ``members``, ``sql`` and ``load-pg``.

Registered by cube/cli.py (:func:`add_commands`). Like the HTTP API, ``aggregate`` prints
*protected* results only (through the disclosure gate). ``sql`` is the admin's view of the
compiled statements: it prints SQL with the request's values inlined, never data.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

QUERY_HELP = {
    "cut": "cut string, e.g. 'geography:E92000001,E12000007|tenure:private'",
    "drilldown": "drilldown, e.g. 'geography:la' (repeat or separate with '|')",
    "aggregates": "aggregates to compute (default: all of the cube's)",
    "order": "order, e.g. 'claimants:desc' (repeatable)",
}


def _add_query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cube", help="cube name, e.g. housing_benefit")
    p.add_argument("--warehouse", help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE; "
                                       "default: newest release in DATA_DIR/warehouse)")
    p.add_argument("--cut", default="", help=QUERY_HELP["cut"])
    p.add_argument("--drilldown", "-d", action="append", default=[],
                   help=QUERY_HELP["drilldown"])
    p.add_argument("--aggregates", action="append", default=[], help=QUERY_HELP["aggregates"])
    p.add_argument("--order", action="append", default=[], help=QUERY_HELP["order"])
    p.add_argument("--page", type=int, help="page number, from 0 (needs --pagesize)")
    p.add_argument("--pagesize", type=int, help="cells per page")
    p.add_argument("--split", default="", help="split cut: cells inside/outside it")
    p.add_argument("--having", default="", help="keep cells where e.g. 'claimants>100'")
    p.add_argument("--top", default="", help="'N:aggregate' or 'N:aggregate:dimension'")


def _workspace(args: argparse.Namespace) -> Any:
    from cube.cli import _model, _settings
    from cube.workspace import Workspace, resolve_warehouse

    settings = _settings(args)
    target = resolve_warehouse(args.warehouse or settings.warehouse, settings.data_dir)
    return Workspace.open(_model(settings), target)


def _request(args: argparse.Namespace) -> Any:
    from cube.query import Request

    return Request.make(args.cube, cut=args.cut, drilldown=args.drilldown,
                        aggregates=args.aggregates, order=args.order, page=args.page,
                        pagesize=args.pagesize, split=args.split, having=args.having,
                        top=args.top)


def cmd_aggregate(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    try:
        browser = ws.cube(args.cube)
        result = browser.aggregate_query(browser.query(_request(args)))
        if args.format == "csv":
            cells = result.cells.to_pylist()
            names = result.cells.column_names
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(names)
            writer.writerows([["" if c[n] is None else c[n] for n in names] for c in cells])
        else:
            print(json.dumps(result.to_json(), indent=2, default=str, ensure_ascii=False))
    finally:
        ws.close()
    return 0


def cmd_members(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    try:
        m = ws.cube(args.cube).members(
            args.dimension, hierarchy=args.hierarchy, level=args.level, depth=args.depth,
            cut=args.cut, page=args.page, pagesize=args.pagesize)
        out = {"dimension": m.dimension, "hierarchy": m.hierarchy, "depth": m.depth,
               "members": m.members.to_pylist()}
        if m.total_member_count is not None:
            out["total_member_count"] = m.total_member_count
        print(json.dumps(out, indent=2, default=str, ensure_ascii=False))
    finally:
        ws.close()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from sqlalchemy.dialects import postgresql

    from cube import sql as compiler
    from cube.disclosure.sql_path import protected_stage

    ws = _workspace(args)
    try:
        browser = ws.cube(args.cube)
        query = browser.query(_request(args))
        if args.dialect == "postgresql":
            dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        elif args.dialect == "duckdb":
            from duckdb_engine import Dialect

            dialect = Dialect()
        else:
            dialect = ws.engine.dialect
        p = ws.gate.protection
        cells = compiler.finish(query, p.k, protected_stage(p), keep_raw=False) \
            if args.protected else compiler.finish(query, p.k)
        print("-- cells")
        print(compiler.to_sql(cells, dialect) + ";")
        print("-- summary")
        print(compiler.to_sql(compiler.summary(query, p.k), dialect) + ";")
    finally:
        ws.close()
    return 0


def cmd_load_pg(args: argparse.Namespace) -> int:
    from cube.cli import _model, _settings, console, progress_bar
    from cube.pg_load import load_pg

    settings = _settings(args)
    with progress_bar("load-pg") as report:
        rep = load_pg(_model(settings), args.warehouse, args.url, schema=args.schema,
                      replace=args.replace, progress=report)
    rows = sum(rep.rows.values())
    where = rep.target + (f" (schema {rep.schema})" if rep.schema else "")
    console.print(f"loaded {len(rep.rows)} tables, {rows:,} rows into {where} "
                  f"in {rep.seconds:.1f}s")
    return 0


def add_commands(sub: Any) -> None:
    """Register the subcommands on cube/cli.py's subparsers."""
    a = sub.add_parser("aggregate", help="aggregate a cube (protected values), print JSON/CSV")
    _add_query_args(a)
    a.add_argument("--format", choices=["json", "csv"], default="json")
    a.set_defaults(func=cmd_aggregate)

    m = sub.add_parser("members", help="list the members of a dimension level")
    m.add_argument("cube")
    m.add_argument("dimension")
    m.add_argument("--warehouse", help="DuckDB file or SQLAlchemy URL")
    m.add_argument("--hierarchy")
    m.add_argument("--level", help="level name (default: the deepest)")
    m.add_argument("--depth", type=int, help="level depth, from 1 (instead of --level)")
    m.add_argument("--cut", default="", help="cut on the same dimension")
    m.add_argument("--page", type=int)
    m.add_argument("--pagesize", type=int)
    m.set_defaults(func=cmd_members)

    s = sub.add_parser("sql", help="print the SQL a query compiles to (admin; no data)")
    _add_query_args(s)
    s.add_argument("--dialect", choices=["engine", "duckdb", "postgresql"], default="engine",
                   help="SQL dialect (default: the warehouse's engine)")
    s.add_argument("--protected", action="store_true",
                   help="show the protected statement (values computed with the p-table in "
                        "SQL) instead of the raw one")
    s.set_defaults(func=cmd_sql)

    lp = sub.add_parser("load-pg", help="copy a DuckDB warehouse into PostgreSQL")
    lp.add_argument("warehouse", help="the release's .duckdb file")
    lp.add_argument("url", help="PostgreSQL URL, e.g. postgresql://user:pass@host/db")
    lp.add_argument("--schema", help="target schema (created if missing)")
    lp.add_argument("--replace", action="store_true", help="replace existing tables")
    lp.set_defaults(func=cmd_load_pg)

