"""SQL compilation: golden snapshots per dialect, fragments with their bound values, and SQL
injection attempts against the real engines.

Golden files live in tests/golden/<name>.<dialect>.sql. They are compared, never written,
unless ``STATCUBE_UPDATE_GOLDEN=1`` is set (then they are rewritten and the test passes):

    STATCUBE_UPDATE_GOLDEN=1 python -m pytest -q tests/test_sql.py
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select

from cube import sql as compiler
from cube.disclosure.rules import Protection
from cube.disclosure.sql_path import protected_stage
from cube.errors import GrammarError, StatcubeError
from cube.model import Model, load_model
from cube.query import Query, Request
from cube.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("STATCUBE_UPDATE_GOLDEN") == "1"
MODEL = load_model(ROOT / "model.json")
LATEST = (2026, 11)
DIALECTS: dict[str, sa.engine.Dialect] = {
    "duckdb": DuckDBDialect(),
    # SQLAlchemy's psycopg2 dialect has an unannotated __init__ (as in cube/spark/engine.py)
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
}


def query(cube: str, period_limit: int | None = None, **kw: Any) -> Query:
    return Query.from_request(MODEL.cube(cube), Request.make(cube, **kw), LATEST, period_limit)


@cache
def protection() -> Protection:
    return Protection.from_model(MODEL)


def raw_cells(cube: str, **kw: Any) -> Select[Any]:
    return compiler.finish(query(cube, **kw), 4096)


def protected_cells(cube: str, **kw: Any) -> Select[Any]:
    p = protection()
    return compiler.finish(query(cube, **kw), p.k, protected_stage(p), keep_raw=False)


def members(cube: str, dim: str, level: str, cut: str = "", **kw: Any) -> Select[Any]:
    c = MODEL.cube(cube)
    d = c.dimension(dim)
    h = d.hierarchy()
    cuts = query(cube, cut=cut).cuts if cut else ()
    mq = compiler.MembersQuery(c, d, h, h.level_index(level) + 1,
                               tuple(x for x in cuts if x.dimension.name == dim), **kw)
    return compiler.members(mq)


# --- golden snapshots -------------------------------------------------------------------------

CASES: dict[str, Any] = {
    # a stock pinned to its latest month, drilled by region (the demo query)
    "hb_region": lambda: raw_cells("housing_benefit", drilldown="geography:region"),
    "hb_region_summary": lambda: compiler.summary(
        query("housing_benefit", drilldown="geography:region"), 4096),
    # range + set + negation, category cut without a join, paging with a window count
    "sanctions_cuts_paged": lambda: raw_cells(
        "sanctions", cut="geography:E92000001,E12000002-E92000001,E12000004,E08000010|"
                         "!benefit:ESA|outcome:adverse;reserved",
        drilldown="geography:la|time:month", order="decisions:desc", page=2, pagesize=20),
    # top-N per region, having, embargo
    "pip_top_having": lambda: compiler.finish(
        query("pip", period_limit=202609, drilldown="geography:la|gender",
              having="claimants>=10", top="2:claimants:geography"), 4096),
    # split and an explicit hierarchy
    "uc_split": lambda: raw_cells(
        "universal_credit", drilldown="geography@constituency:pcon",
        cut="geography@constituency:E92000001,E12000007", split="employment:employed"),
    # the protected statement (values from the p-table in SQL), ordered by a protected mean
    "benefit_cap_protected": lambda: protected_cells(
        "benefit_cap", drilldown="geography:region|children",
        order="weekly_reduction_mean:desc", pagesize=10),
    # quarterly flow, implicit next level after a point cut
    "nino_quarters": lambda: raw_cells("nino_registrations", cut="time:2026",
                                       drilldown="time|world_area"),
    # the raw path's paged statement: page, total cell count and summary in one
    "pip_paged_totals": lambda: compiler.finish(
        query("pip", drilldown="geography:lsoa|gender", cut="geography:W92000004",
              pagesize=50, page=2), 4096, totals=True),
    # members (paged, with a cut) and an injection attempt, which must stay one quoted value
    "members_la": lambda: members("pip", "geography", "la", cut="geography:E92000001",
                                  page=1, pagesize=5),
    "injection_quoted": lambda: raw_cells(
        "sanctions", cut=r"outcome:x' OR 1=1 \-\-|geography:'\; DROP TABLE fact_pip\; \-\-",
        drilldown="benefit"),
}


@pytest.mark.unit
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_sql(name: str, dialect: str) -> None:
    sql = compiler.to_sql(CASES[name](), DIALECTS[dialect]).strip() + "\n"
    path = GOLDEN / f"{name}.{dialect}.sql"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(sql, encoding="utf-8")
        return
    assert path.exists(), f"missing {path}: run with STATCUBE_UPDATE_GOLDEN=1 to create it"
    assert sql == path.read_text(encoding="utf-8"), (
        f"compiled SQL differs from {path}; if the change is intended, rerun with "
        "STATCUBE_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.unit
def test_golden_injection_is_a_quoted_literal() -> None:
    text = (GOLDEN / "injection_quoted.postgresql.sql").read_text(encoding="utf-8")
    assert "fact_sanctions.outcome = 'x'' OR 1=1 --'" in text
    assert "dim_geography.country_code = '''; DROP TABLE fact_pip; --'" in text


# --- fragments and bound values ---------------------------------------------------------------


def compiled(stmt: Select[Any]) -> tuple[str, list[Any]]:
    """DuckDB SQL with positional parameters shown as ``?``, and the bound values in order."""
    c = stmt.compile(dialect=DuckDBDialect(paramstyle="numeric_dollar"))
    return re.sub(r"\$\d+", "?", str(c)), [c.params[n] for n in c.positiontup or []]


FRAGMENTS: list[tuple[dict[str, Any], str, list[Any]]] = [
    ({"cut": "outcome:adverse"}, "WHERE fact_sanctions.outcome = ?", ["adverse"]),
    ({"cut": "outcome:adverse;reserved"},
     "WHERE fact_sanctions.outcome = ? OR fact_sanctions.outcome = ?", ["adverse", "reserved"]),
    ({"cut": "!benefit:JSA"}, "fact_sanctions.benefit != ?", ["JSA"]),
    ({"cut": "geography:E92000001,E12000007", "drilldown": "geography"},
     "dim_geography.country_code = ? AND dim_geography.region_code = ?",
     ["E92000001", "E12000007"]),
    # ranges compare lexicographically over the hierarchy's keys
    ({"cut": "geography:E92000001,E12000002-E92000001,E12000004"},
     "dim_geography.country_code >= ? AND (dim_geography.country_code > ? OR "
     "dim_geography.country_code = ? AND dim_geography.region_code >= ?) AND "
     "dim_geography.country_code <= ? AND (dim_geography.country_code < ? OR "
     "dim_geography.country_code = ? AND dim_geography.region_code <= ?)",
     ["E92000001"] * 3 + ["E12000002"] + ["E92000001"] * 3 + ["E12000004"]),
    # time cuts become conditions on the fact's period column: no join to dim_month
    ({"cut": "time@ym:2026,9-2026,11"},
     "WHERE fact_sanctions.month_id >= ? AND fact_sanctions.month_id <= ?", [202609, 202611]),
    ({"cut": "time:2026-"}, "WHERE fact_sanctions.month_id >= ?", [202601]),
    ({"cut": "time:2026,3;2026,4,11"},
     "fact_sanctions.month_id BETWEEN ? AND ? OR fact_sanctions.month_id = ?",
     [202607, 202609, 202611]),
    ({"cut": "!time@ym:2026,9"}, "fact_sanctions.month_id != ?", [202609]),
    # …unless the path is not a real period: then the keys are compared as given
    ({"cut": "time:2026,1,11"},
     "JOIN dim_month ON fact_sanctions.month_id = dim_month.month_id \nWHERE dim_month.year = ?"
     " AND dim_month.quarter = ? AND dim_month.month = ?", [2026, 1, 11]),
    ({"cut": "geography:W92000004", "drilldown": "geography"},
     "JOIN dim_geography ON fact_sanctions.oa_code = dim_geography.oa_code", ["W92000004"]),
    ({"cut": "geography@constituency:E92000001,E12000001,E14000001,E00000001",
      "drilldown": "benefit"},
     "fact_sanctions.oa_code = ?", ["E92000001", "E12000001", "E14000001", "E00000001"]),
    ({"drilldown": "jcp:district", "pagesize": "10", "page": "3"},
     "count(*) OVER () AS __total_cells", [10, 30]),
    ({"drilldown": "jcp", "order": "decisions:desc"},
     "ORDER BY cells.__n DESC, cells.\"jcp.group_code\" ASC", []),
    ({"drilldown": "jcp", "having": "decisions>40"}, "WHERE cells.__n > ?", [40.0]),
    ({"drilldown": "geography:la", "top": "3:decisions:geography"},
     "row_number() OVER (PARTITION BY cells.\"geography.country_code\", "
     "cells.\"geography.region_code\" ORDER BY cells.__n DESC NULLS LAST", [3]),
    ({"drilldown": "outcome", "split": "benefit:JSA"},
     "CASE WHEN (fact_sanctions.benefit = ?) THEN true ELSE false END AS __within_split__",
     ["JSA"]),
]


@pytest.mark.unit
@pytest.mark.parametrize(("request_kw", "fragment", "params"), FRAGMENTS,
                         ids=[str(f[0]) for f in FRAGMENTS])
def test_fragments_and_bound_parameters(request_kw: dict[str, Any], fragment: str,
                                        params: list[Any]) -> None:
    sql, bound = compiled(raw_cells("sanctions", **request_kw))
    assert fragment in sql
    assert bound == params  # every request value is bound; nothing else is
    for value in params:
        if isinstance(value, str):
            assert f"'{value}'" not in sql


@pytest.mark.unit
def test_only_the_tables_a_query_needs_are_joined() -> None:
    sql, _ = compiled(raw_cells("sanctions", cut="outcome:adverse|benefit:JSA",
                                drilldown="reason"))
    assert "JOIN dim_reason" in sql
    for table in ("dim_outcome", "dim_benefit", "dim_geography", "dim_month", "dim_jcp"):
        assert table not in sql
    summary, _ = compiled(compiler.summary(query("sanctions", drilldown="geography:la"), 4096))
    assert "JOIN" not in summary


@pytest.mark.unit
def test_stock_pin_and_embargo_are_bound_conditions() -> None:
    sql, bound = compiled(compiler.finish(query("pip", period_limit=202609,
                                                drilldown="gender"), 4096))
    assert "WHERE fact_pip.month_id = ? AND fact_pip.month_id <= ?" in sql
    assert "dim_month" not in sql
    assert bound == [202611, 202609]


# --- SQL injection, against the real engines --------------------------------------------------

ATTACKS = [
    "x' OR 1=1 --",
    "'; DROP TABLE fact_pip; --",
    "x\" OR \"1\"=\"1",
    "1; DELETE FROM dim_geography",
    "E92000001') OR ('a'='a",
    "\\'; DROP TABLE statcube_meta; \\-\\-",
    "\x00",
]


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\!|:;,-" else ch for ch in text)


def injection_requests() -> list[tuple[str, dict[str, Any]]]:
    """Every parameter carrying each attack; the selection is the attack value alone, so a
    request must either be refused (4xx) or select nothing."""
    out: list[tuple[str, dict[str, Any]]] = []
    for a in ATTACKS:
        e = _escape(a)  # escaped so that the grammar hands the text to SQL as one key
        out += [
            ("aggregate", {"cut": f"geography:{e}", "drilldown": "gender"}),
            ("aggregate", {"cut": f"geography:E92000001,{e}", "drilldown": "geography"}),
            ("aggregate", {"cut": f"gender:{e};{e}x", "drilldown": "age_band"}),
            ("aggregate", {"cut": f"time@ym:2026,{e}"}),
            ("aggregate", {"cut": a}),
            ("aggregate", {"cut": f"{a}:x"}),
            ("aggregate", {"cut": f"geography@{a}:x"}),
            ("aggregate", {"drilldown": a}),
            ("aggregate", {"drilldown": f"geography:{a}"}),
            ("aggregate", {"aggregates": a}),
            ("aggregate", {"order": a, "drilldown": "gender"}),
            ("aggregate", {"order": f"claimants:{a}", "drilldown": "gender"}),
            ("aggregate", {"having": f"claimants>{a}", "drilldown": "gender"}),
            ("aggregate", {"having": a, "drilldown": "gender"}),
            ("aggregate", {"top": f"1:{a}", "drilldown": "gender"}),
            ("aggregate", {"top": a, "drilldown": "gender"}),
            ("aggregate", {"page": a, "pagesize": "5", "drilldown": "gender"}),
            ("aggregate", {"pagesize": a, "drilldown": "gender"}),
            ("split", {"split": f"gender:{e}", "drilldown": "age_band"}),
            ("members", {"dimension": a}),
            ("members", {"dimension": "geography", "level": a}),
            ("members", {"dimension": "geography", "hierarchy": a}),
            ("members", {"dimension": "geography", "level": "la", "cut": f"geography:{e}"}),
            ("cell", {"cut": f"geography:{e},{e}"}),
            ("cell", {"cut": a}),
        ]
    return out


def _fingerprint(ws: Workspace) -> list[Any]:
    """The tables' row counts and a reference result: must not change."""
    engine = ws.engine
    counts = [engine.scalar(sa.select(sa.func.count()).select_from(sa.table(t)))
              for t in ("fact_pip", "dim_geography", "statcube_meta", "sdc_ptable")]
    pip = ws.cube("pip")
    ref = pip._raw_aggregate(pip.query(Request.make("pip", drilldown="geography:region|gender")))
    return [counts, ref.cells, ref.summary]


@pytest.mark.integration
def test_sql_injection_in_every_parameter(any_workspace: Workspace) -> None:
    before = _fingerprint(any_workspace)
    pip = any_workspace.cube("pip")
    refused = selected_nothing = 0
    for kind, kw in injection_requests():
        try:
            if kind == "aggregate":
                result = pip.aggregate(**kw)
                raw = pip._raw_aggregate(result.query)
                assert raw.summary.column("__n")[0].as_py() == 0, kw
                assert result.cells.num_rows == 0 and result.summary["claimants"] == 0, kw
            elif kind == "split":
                result = pip.aggregate(**kw)
                assert not any(result.cells.column("__within_split__").to_pylist()), kw
            elif kind == "members":
                assert pip.members(**kw).members.num_rows == 0, kw
            else:
                for c in pip.cell_details(**kw):
                    assert all(path is None for path in c["paths"]), kw
            selected_nothing += 1
        except StatcubeError as exc:
            assert 400 <= exc.status < 500 and exc.public, (kw, exc)
            refused += 1
    assert refused > 0 and selected_nothing > 0
    after = _fingerprint(any_workspace)
    assert after[0] == before[0]
    assert after[1].equals(before[1]) and after[2].equals(before[2])


@pytest.mark.integration
@pytest.mark.parametrize("attack", ATTACKS[:-1])
def test_injected_range_bounds_compare_as_plain_strings(
        any_workspace: Workspace, warehouse: Path, attack: str) -> None:
    """A range bound selects exactly what the same text, bound as a parameter, selects."""
    import duckdb

    pip = any_workspace.cube("pip")
    result = pip._raw_aggregate(pip.query(Request.make(
        "pip", cut=f"geography:{_escape(attack)}-", drilldown="geography")))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = con.execute(
            "SELECT g.country_code, sum(f.n) FROM fact_pip f JOIN dim_geography g USING "
            "(oa_code) WHERE f.month_id = 202611 AND g.country_code >= ? GROUP BY 1 "
            "ORDER BY 1", [attack]).fetchall()
    got = [(c["geography.country_code"], c["__n"]) for c in result.cells.to_pylist()]
    assert got == expected


@pytest.mark.unit
def test_nul_in_a_key_is_a_client_error(model: Model) -> None:
    with pytest.raises(StatcubeError) as e:
        Query.from_request(model.cube("pip"), Request.make("pip", cut="gender:F\x00"), LATEST)
    assert e.value.status == 400


@pytest.mark.unit
@pytest.mark.parametrize("name", ["geo'graphy", 'geo"graphy', "geography;", "geo graphy"])
def test_quoted_dimension_names_are_grammar_errors(model: Model, name: str) -> None:
    for kw in ({"cut": f"{name}:x"}, {"drilldown": name}, {"order": f"{name}.x"}):
        with pytest.raises(GrammarError):
            Query.from_request(model.cube("pip"), Request.make("pip", **kw), LATEST)
