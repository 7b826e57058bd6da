"""PostgreSQL, for real: loading a warehouse (cube/pg_load.py, ``statcube load-pg``) and the
same queries giving identical raw and protected results — values, order and Arrow types —
on DuckDB and on PostgreSQL.

The server comes from tests/pg.py (STATCUBE_TEST_PG_URL, or the local cluster started by the
fixture); these tests never skip.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Required, TypedDict

import duckdb
import pyarrow as pa
import pytest
import sqlalchemy as sa

from cli.main import main as cli
from cube.engine import Engine
from cube.errors import ArgumentError, EngineUnavailableError, StatcubeError
from cube.model import Model
from cube.pg_load import load_pg
from cube.pg_load import pg_url as to_pg_url
from cube.query import Request
from cube.workspace import Workspace

pytestmark = pytest.mark.integration


# --- the session load ---------------------------------------------------------------------------


def _tables(url: str, schema: str) -> dict[str, dict[str, str]]:
    engine = sa.create_engine(to_pg_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT table_name, column_name, data_type, collation_name "
                "FROM information_schema.columns WHERE table_schema = %s", (schema,)).all()
    finally:
        engine.dispose()
    out: dict[str, dict[str, str]] = {}
    for table, column, dtype, collation in rows:
        out.setdefault(table, {})[column] = dtype + (f" {collation}" if collation else "")
    return out


def _indexes(url: str, schema: str) -> dict[str, list[str]]:
    engine = sa.create_engine(to_pg_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s",
                (schema,)).all()
    finally:
        engine.dispose()
    out: dict[str, list[str]] = {}
    for table, definition in rows:
        out.setdefault(table, []).append(definition.split(" USING btree ")[1])
    return out


def test_load_copies_exactly_the_warehouse_tables_with_types_and_keys(
        pg_warehouse: str, pg_url: str, pg_schema: str, warehouse: Path) -> None:
    tables = _tables(pg_url, pg_schema)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        source = {t for (t,) in con.execute("SHOW TABLES").fetchall()}
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in source}
    assert set(tables) == source  # facts, dimensions, sdc_ptable, statcube_meta, boundaries
    assert "boundaries" in tables
    assert not any(c == "unit_id" for cols in tables.values() for c in cols)
    assert tables["fact_housing_benefit"]["n"] == "bigint"
    assert tables["fact_housing_benefit"]["rk"] == "smallint"
    assert tables["fact_housing_benefit"]["month_id"] == "integer"
    assert tables["dim_month"]["month"] == "smallint"  # DuckDB TINYINT
    assert tables["dim_geography"]["la_name"] == "text C"  # byte order, like DuckDB
    assert tables["fact_housing_benefit"]["oa_code"] == "text C"  # a DuckDB ENUM
    assert tables["fact_housing_benefit"]["tenure"] == "text C"
    assert tables["dim_geography"]["oa_code"] == "text C"
    assert tables["fact_sanctions"]["jcp_office"] == "text C"  # a DuckDB ENUM
    indexes = _indexes(pg_url, pg_schema)
    assert "(oa_code)" in indexes["dim_geography"]
    assert "(pcv, ckey)" in indexes["sdc_ptable"]
    assert sorted(indexes["fact_sanctions"]) == ["(jcp_office)", "(month_id)", "(oa_code)"]
    assert "(tenure)" not in indexes["fact_housing_benefit"]  # 4 codes: never worth a b-tree
    engine = Engine(pg_warehouse)
    try:
        for table, n in counts.items():
            assert engine.scalar(sa.select(sa.func.count()).select_from(sa.table(table))) == n
    finally:
        engine.close()


# --- loader behaviour on a small copy -----------------------------------------------------------


@pytest.fixture
def small_warehouse(warehouse: Path, tmp_path: Path) -> Path:
    """A copy of the session warehouse listing two small cubes, plus a stray table that
    must never travel."""
    path = tmp_path / "small.duckdb"
    shutil.copy(warehouse, path)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE statcube_meta SET value = ? WHERE key = 'cubes'",
                    [json.dumps(["nino_registrations", "sanctions"])])
        con.execute("CREATE TABLE microdata_leak AS SELECT 'u1' AS unit_id, 'E00000001' AS oa")
    return path


@pytest.fixture
def fresh_schema(pg_url: str) -> Iterator[str]:
    schema = f"t_load_{secrets.token_hex(4)}"
    yield schema
    engine = sa.create_engine(to_pg_url(pg_url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def test_loader_takes_only_model_tables_and_refuses_to_overwrite(
        model: Model, small_warehouse: Path, pg_url: str, fresh_schema: str) -> None:
    report = load_pg(model, small_warehouse, pg_url, schema=fresh_schema)
    tables = set(_tables(pg_url, fresh_schema))
    assert "microdata_leak" not in tables and "fact_pip" not in tables
    assert {"fact_sanctions", "fact_nino_registrations", "dim_jcp", "dim_quarter",
            "dim_world_area", "sdc_ptable", "statcube_meta"} <= tables
    assert set(report.rows) == tables
    assert ":statcube@" not in report.target  # the password is never shown
    with pytest.raises(ArgumentError) as e:
        load_pg(model, small_warehouse, pg_url, schema=fresh_schema)
    assert "--replace" in e.value.message
    again = load_pg(model, small_warehouse, pg_url, schema=fresh_schema, replace=True)
    assert again.rows == report.rows
    from pg import with_search_path  # the plugin module, imported once it is registered

    ws = Workspace.open(model, with_search_path(pg_url, fresh_schema))
    try:
        assert ws.cube_names == ["sanctions", "nino_registrations"]
        assert ws.cube("sanctions").aggregate(drilldown="benefit").total_cell_count == 2
    finally:
        ws.close()


def test_a_failed_load_leaves_nothing_behind(model: Model, small_warehouse: Path,
                                             pg_url: str, fresh_schema: str) -> None:
    engine = sa.create_engine(to_pg_url(pg_url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{fresh_schema}"')
        # a relation named like an index the loader creates after copying every dimension
        conn.exec_driver_sql(f'CREATE SEQUENCE "{fresh_schema}".ix_fact_sanctions_oa_code')
    engine.dispose()
    with pytest.raises(EngineUnavailableError) as e:
        load_pg(model, small_warehouse, pg_url, schema=fresh_schema, replace=True)
    assert "nothing was changed" in str(e.value)
    assert _tables(pg_url, fresh_schema) == {}


def test_cli_load_pg(small_warehouse: Path, pg_url: str, fresh_schema: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["load-pg", str(small_warehouse), pg_url, "--schema", fresh_schema]) == 0
    assert cli(["load-pg", str(small_warehouse), pg_url, "--schema", fresh_schema]) == 2
    assert "--replace" in capsys.readouterr().err
    assert cli(["load-pg", str(small_warehouse), pg_url, "--schema", fresh_schema,
                "--replace"]) == 0
    assert cli(["load-pg", str(small_warehouse), "sqlite:///x.db"]) == 2


def test_plain_postgresql_urls_use_psycopg(pg_warehouse: str) -> None:
    url = pg_warehouse.replace("postgresql+psycopg://", "postgresql://")
    engine = Engine(url)
    try:
        assert engine.name == "postgresql"
        assert engine.scalar(sa.select(sa.literal(1))) == 1
    finally:
        engine.close()


# --- one suite, every engine: identical results -------------------------------------------------

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("housing_benefit", {"drilldown": "geography:region"}),
    ("housing_benefit", {"drilldown": "geography:la|tenure", "order": "claimants:desc",
                         "page": 2, "pagesize": 9}),
    ("housing_benefit", {"drilldown": "geography:la", "order": "weekly_award_mean:desc",
                         "pagesize": 12}),
    ("housing_benefit", {"drilldown": "time:month|passported"}),
    ("universal_credit", {"drilldown": "geography@constituency:pcon",
                          "cut": "geography@constituency:E92000001,E12000007"}),
    ("universal_credit", {"drilldown": "conditionality|employment", "split": "gender:F"}),
    ("pip", {"drilldown": "geography:la", "top": "2:claimants:geography"}),
    ("pip", {"drilldown": "geography:lsoa", "pagesize": 50, "page": 3,
             "order": "geography.lsoa_name:desc"}),
    ("pip", {"drilldown": "daily_living|mobility", "having": "claimants>100"}),
    ("sanctions", {"drilldown": "jcp:office|outcome", "cut": "time:2026,3-2026,4,10"}),
    ("sanctions", {"drilldown": "time:quarter", "cut": "!geography:E92000001"}),
    ("sanctions", {"drilldown": "geography:la", "page": 999, "pagesize": 10}),
    ("sanctions", {"cut": "outcome:no_such_code", "drilldown": "benefit"}),
    ("sanctions", {"cut": "outcome:adverse"}),
    ("benefit_cap", {"drilldown": "cap_band|children", "order": "households:desc"}),
    ("nino_registrations", {"drilldown": "time|world_area", "cut": "time:2026"}),
]


@pytest.mark.parametrize(("cube", "kw"), QUERIES, ids=[f"{c}-{i}" for i, (c, _) in
                                                      enumerate(QUERIES)])
def test_same_results_on_duckdb_and_postgresql(workspace: Workspace,
                                               pg_workspace: Workspace,
                                               cube: str, kw: dict[str, Any]) -> None:
    results = []
    for ws in (workspace, pg_workspace):
        browser = ws.cube(cube)
        raw = browser._raw_aggregate(browser.query(Request.make(cube, **kw)))
        results.append((raw, browser.aggregate(**kw)))
    (duck_raw, duck_pub), (pg_raw, pg_pub) = results
    assert pg_raw.cells.schema == duck_raw.cells.schema
    assert pg_raw.cells.equals(duck_raw.cells)
    assert pg_raw.summary.equals(duck_raw.summary)
    assert pg_raw.total_cell_count == duck_raw.total_cell_count
    assert pg_pub.cells.schema == duck_pub.cells.schema
    assert pg_pub.to_json() == duck_pub.to_json()


def test_arrow_types_are_canonical_on_both_engines(workspace: Workspace,
                                                   pg_workspace: Workspace) -> None:
    for ws in (workspace, pg_workspace):
        hb = ws.cube("housing_benefit")
        raw = hb._raw_aggregate(hb.query(Request.make(
            "housing_benefit", drilldown="time:month|tenure", split="tenure:private")))
        types = dict(zip(raw.cells.column_names, raw.cells.schema.types, strict=True))
        assert types["time.month"] == pa.int64()  # TINYINT / smallint
        assert types["time.month_label"] == pa.string()
        assert types["tenure.tenure_order"] == pa.int64()
        assert types["weekly_award_mean"] == pa.float64()
        assert types["__within_split__"] == pa.bool_()
        assert types["__rk"] == pa.int64()
        # an empty result is typed too
        empty = ws.engine.execute(sa.select(
            sa.literal_column("month_id"), sa.literal_column("month_label"))
            .select_from(sa.table("dim_month")).where(sa.false()))
        assert empty.schema.types == [pa.int64(), pa.string()]


class _MembersArgs(TypedDict, total=False):
    """Arguments of :meth:`cube.workspace.CubeBrowser.members`."""

    dimension: Required[str]
    hierarchy: str
    level: str
    depth: int
    page: int
    pagesize: int


def test_members_and_cell_details_agree(workspace: Workspace,
                                        pg_workspace: Workspace) -> None:
    cases: tuple[_MembersArgs, ...] = (
        {"dimension": "geography", "level": "msoa", "pagesize": 40, "page": 2},
        {"dimension": "geography", "hierarchy": "constituency", "depth": 3},
        {"dimension": "time", "level": "month"},
        {"dimension": "condition"})
    for kw in cases:
        duck = workspace.cube("pip").members(**kw)
        pg = pg_workspace.cube("pip").members(**kw)
        assert pg.members.equals(duck.members) and pg.total_member_count == \
            duck.total_member_count
    cut = "geography:E92000001,E12000007;W92000004|time@ym:2026,7-2026,9|condition:other"
    assert pg_workspace.cube("pip").cell_details(cut) == workspace.cube("pip").cell_details(cut)


def test_engine_errors_are_statcube_errors(pg_warehouse: str) -> None:
    engine = Engine(pg_warehouse)
    try:
        with pytest.raises(StatcubeError) as e:
            engine.execute(sa.select(sa.literal_column("x")).select_from(sa.table("no_table")))
        assert e.value.status >= 500 and not e.value.public
    finally:
        engine.close()
    bad = Engine(to_pg_url(pg_warehouse).set(database="no_such_database_here")
                 .render_as_string(hide_password=False))
    try:
        with pytest.raises(EngineUnavailableError):
            bad.execute(sa.select(sa.literal(1)))
    finally:
        bad.close()
