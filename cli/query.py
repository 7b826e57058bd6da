"""The query commands: ``aggregate``, ``members``, ``sql`` and ``sdc-report``.

Each answers for one release of the calendar in force, as the HTTP API does (cli/context.py),
and says on stderr which release and period it answered. Like the API, ``aggregate`` prints
*protected* results only (through the disclosure gate), as the API's JSON (plus ``release``)
or as the API's CSV, byte for byte (cube/csvfile.py). ``sql`` is the admin's view of the
compiled statements: SQL with the request's values inlined, never data.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.context import answering
from cli.output import note, write, write_text
from cli.parsing import Parser, command, nonempty
from cube.csvfile import HEADERS, aggregate_csv, member_labels, members_csv

QUERY_HELP = {
    "cut": "cut string, e.g. 'geography:E92000001,E12000007|tenure:private'",
    "drilldown": "drilldown, e.g. 'geography:la' (repeat or separate with '|')",
    "aggregates": "aggregates to compute (default: all of the cube's)",
    "order": "order, e.g. 'claimants:desc' (repeatable)",
}


def _add_release_args(p: Parser) -> None:
    p.add_argument("--warehouse", type=nonempty,
                   help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE; default: "
                        "newest release in DATA_DIR/warehouse)")
    p.add_argument("--releases", type=nonempty,
                   help="release calendar file (env STATCUBE_RELEASES; default "
                        "DATA_DIR/releases.toml when present)")
    p.add_argument("--release", type=nonempty,
                   help="release id (default: the latest published release)")
    p.add_argument("--prerelease", action="store_true",
                   help="allow --release to name a release not yet published, as the API's "
                        "prerelease and admin keys may")


def _add_query_args(p: Parser) -> None:
    p.add_argument("cube", help="cube name, e.g. housing_benefit")
    _add_release_args(p)
    p.add_argument("--cut", default="", help=QUERY_HELP["cut"])
    p.add_argument("--drilldown", "-d", action="append", default=[],
                   help=QUERY_HELP["drilldown"])
    p.add_argument("--aggregates", action="append", default=[], help=QUERY_HELP["aggregates"])
    p.add_argument("--order", action="append", default=[], help=QUERY_HELP["order"])
    p.add_argument("--page", help="page number, from 0 (needs --pagesize)")
    p.add_argument("--pagesize", help="cells per page")
    p.add_argument("--split", default="", help="split cut: cells inside/outside it")
    p.add_argument("--having", default="", help="keep cells where e.g. 'claimants>100'")
    p.add_argument("--top", default="", help="'N:aggregate' or 'N:aggregate:dimension'")


def _add_format_args(p: Parser) -> None:
    p.add_argument("--format", choices=["json", "csv"], default="json",
                   help="json (the API's JSON, plus release) or csv (the API's CSV: CRLF, "
                        "withheld values '..')")
    p.add_argument("--header", choices=list(HEADERS), default="names",
                   help="CSV header row: names (default), labels or none")


def _request(args: argparse.Namespace) -> Any:
    from cube.query import Request

    return Request.make(args.cube, cut=args.cut, drilldown=args.drilldown,
                        aggregates=args.aggregates, order=args.order, page=args.page,
                        pagesize=args.pagesize, split=args.split, having=args.having,
                        top=args.top)


def _json(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n"


def cmd_aggregate(args: argparse.Namespace) -> int:
    with answering(args) as answer:
        browser = answer.browser(args.cube)
        result = browser.aggregate_query(browser.query(_request(args)))
        note(answer.line(result.query.default_period))
        if args.format == "csv":
            write(aggregate_csv(result, args.header))
        else:
            write_text(_json({**result.to_json(), "release": answer.release.id}))
    return 0


def cmd_members(args: argparse.Namespace) -> int:
    with answering(args) as answer:
        browser = answer.browser(args.cube)
        m = browser.members(args.dimension, hierarchy=args.hierarchy, level=args.level,
                            depth=args.depth, cut=args.cut, page=args.page,
                            pagesize=args.pagesize)
        note(answer.line())
        dimension = browser.cube.dimension(m.dimension)
        if args.format == "csv":
            write(members_csv(m.members, member_labels(dimension), args.header))
            return 0
        # The API's members shape (server/describe.py), rows under "data".
        out: dict[str, Any] = {
            "dimension": m.dimension, "hierarchy": m.hierarchy, "depth": m.depth,
            "level": dimension.hierarchy(m.hierarchy).levels[m.depth - 1].name}
        if args.pagesize is not None:
            out["total_member_count"] = m.total_member_count
        out["release"] = answer.release.id
        out["data"] = m.members.to_pylist()
        write_text(_json(out))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import Dialect

    from cube import sql as compiler
    from cube.disclosure.sql_path import protected_stage

    with answering(args) as answer:
        browser = answer.browser(args.cube)
        query = browser.query(_request(args))
        dialect: Dialect
        if args.dialect == "postgresql":
            dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        elif args.dialect == "duckdb":
            from duckdb_engine import Dialect as DuckDBDialect

            dialect = DuckDBDialect()
        else:
            dialect = browser.ws.engine.dialect
        p = browser.ws.gate.protection
        cells = compiler.finish(query, p.k, protected_stage(p), keep_raw=False) \
            if args.protected else compiler.finish(query, p.k)
        note(answer.line(query.default_period))
        table = compiler.source_table(query)
        summary_table = compiler.source_table(query, summary=True)
        write_text(f"-- cells (from {table})\n" + compiler.to_sql(cells, dialect) + ";\n"
                   f"-- summary (from {summary_table})\n"
                   + compiler.to_sql(compiler.summary(query, p.k), dialect) + ";\n")
    return 0


def cmd_sdc_report(args: argparse.Namespace) -> int:
    """Utility figures of disclosure control for a cube and level: see
    cube/disclosure/report.py. Aggregate statistics only, never a raw cell value."""
    from cube.disclosure.report import sdc_report

    with answering(args) as answer:
        report = sdc_report(answer.browser(args.cube), args.level, args.period)
        note(answer.line(report.period))
        write_text(_json(report.to_json()) if args.json else report.to_text() + "\n")
    return 0


def register(sub: Any) -> None:
    a = command(sub, "aggregate", help="aggregate a cube (protected values), print JSON/CSV",
                example="statcube aggregate sanctions -d time:quarter -d outcome "
                        "--cut 'benefit:JSA' --format csv")
    _add_query_args(a)
    _add_format_args(a)
    a.set_defaults(func=cmd_aggregate)

    m = command(sub, "members", help="list the members of a dimension level",
                example="statcube members housing_benefit geography --level region "
                        "--format csv")
    m.add_argument("cube", help="cube name, e.g. housing_benefit")
    m.add_argument("dimension", help="dimension name, e.g. geography")
    _add_release_args(m)
    m.add_argument("--hierarchy", type=nonempty, help="hierarchy (default: the dimension's "
                                                      "default)")
    m.add_argument("--level", type=nonempty, help="level name (default: the deepest)")
    m.add_argument("--depth", type=int, help="level depth, from 1 (instead of --level)")
    m.add_argument("--cut", default="", help="cut on the same dimension")
    m.add_argument("--page", type=int, help="page number, from 0 (needs --pagesize)")
    m.add_argument("--pagesize", type=int, help="members per page")
    _add_format_args(m)
    m.set_defaults(func=cmd_members)

    s = command(sub, "sql", help="print the SQL a query compiles to (admin; no data)",
                example="statcube sql pip -d geography:region --cut gender:F "
                        "--dialect postgresql")
    _add_query_args(s)
    s.add_argument("--dialect", choices=["engine", "duckdb", "postgresql"], default="engine",
                   help="SQL dialect (default: the warehouse's engine)")
    s.add_argument("--protected", action="store_true",
                   help="show the protected statement (values computed with the p-table in "
                        "SQL) instead of the raw one")
    s.set_defaults(func=cmd_sql)

    r = command(sub, "sdc-report", help="utility of disclosure control for a cube and "
                                        "level (aggregate figures only)",
                example="statcube sdc-report --cube housing_benefit --level geography:la")
    r.add_argument("--cube", required=True, help="cube name, e.g. housing_benefit")
    r.add_argument("--level", required=True, help="dim:level, e.g. geography:la")
    r.add_argument("--period", type=nonempty,
                   help="YYYY-MM (YYYY-Qn for quarterly cubes; default: latest)")
    _add_release_args(r)
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.set_defaults(func=cmd_sdc_report)
