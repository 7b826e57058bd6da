"""The query engine on a real warehouse, on every engine (DuckDB and PostgreSQL).

Raw values are checked exactly against independent SQL written by hand in this file from the
warehouse's tables (fact_<cube>, dim_geography, dim_month/dim_quarter, dim_jcp), run on the
DuckDB file directly — never against the compiler's own output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main as cli
from cube.errors import (
    ArgumentError,
    HierarchyError,
    NonAdditiveError,
    NoSuchDimensionError,
    NoSuchHierarchyError,
    NoSuchLevelError,
    StatcubeError,
)
from cube.model import load_model
from cube.query import Request
from cube.raw import RawResult
from cube.workspace import Workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
MODEL = load_model(ROOT / "model.json")
LATEST = (2026, 11)  # tests/conftest.py: 6 months from 2026-06
K = 4096


# --- independent computation ------------------------------------------------------------------

GEOGRAPHY = {lv: f"g.{lv}_code" for lv in ("country", "region", "la", "msoa", "lsoa", "oa",
                                             "pcon")}
TIME = {"year": "t.year", "quarter": "t.quarter", "month": "t.month"}
JCP = {"group": "j.group_code", "district": "j.district_code", "office": "j.office_code"}
AMOUNTS = {"housing_benefit": "weekly_award", "benefit_cap": "weekly_reduction"}


def key_sql(cube: str, dim: str, level: str) -> tuple[str, str]:
    """(hand-written SQL for the level key, the engine's cell column for it)."""
    if dim == "geography":
        return GEOGRAPHY[level], f"geography.{level}_code"
    if dim == "time":
        return TIME[level], f"time.{level}"
    if dim == "jcp":
        return JCP[level], f"jcp.{level}_code"
    return f"f.{dim}", f"{dim}.{dim}_code"  # category dimensions: the fact holds the code


def from_sql(cube: str) -> str:
    quarterly = cube == "nino_registrations"
    time = ("JOIN dim_quarter t ON t.quarter_id = f.quarter_id" if quarterly
            else "JOIN dim_month t ON t.month_id = f.month_id")
    jcp = " JOIN dim_jcp j ON j.office_code = f.jcp_office" if cube == "sanctions" else ""
    return (f"FROM fact_{cube} f JOIN dim_geography g ON g.oa_code = f.oa_code {time}{jcp}")


def hand(con: duckdb.DuckDBPyConnection, cube: str, keys: list[str], where: str = "TRUE",
         having: str = "TRUE") -> dict[tuple[Any, ...], tuple[int, ...]]:
    """{key tuple: (n, rk, [amount sum, amount max])} computed by hand."""
    amount = AMOUNTS.get(cube)
    extra = f", sum(f.{amount}_sum), max(f.{amount}_max)" if amount else ""
    select = ", ".join([*keys, f"sum(f.n), sum(f.rk) % {K}" + extra])
    group = f"GROUP BY {', '.join(keys)}" if keys else ""
    rows = con.execute(f"SELECT {select} {from_sql(cube)} WHERE {where} {group} "
                       f"HAVING {having}").fetchall()
    return {tuple(r[: len(keys)]): tuple(int(v) for v in r[len(keys):]) for r in rows
            if r[len(keys)] is not None}


def engine_cells(raw: RawResult, columns: list[str]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    amount = AMOUNTS.get(raw.query.cube.name)
    values = ["__n", "__rk"] + ([f"__{amount}_sum", f"__{amount}_max"] if amount else [])
    out = {}
    for row in raw.cells.to_pylist():
        key = tuple(row[c] for c in columns)
        assert key not in out, f"duplicate cell {key}"
        out[key] = tuple(row[v] for v in values)
    return out


@pytest.fixture(scope="module")
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(warehouse), read_only=True)
    yield c
    c.close()


def raw(ws: Workspace, cube: str, **kw: Any) -> RawResult:
    browser = ws.cube(cube)
    return browser._raw_aggregate(browser.query(Request.make(cube, **kw)))


def stock(cube: str) -> bool:
    return MODEL.cube(cube).kind == "stock"


# --- acceptance: every cube, every level of every hierarchy -----------------------------------

CASES = [
    (c.name, d.name, h.name, lv.name)
    for c in MODEL.cubes.values() for d in c.dimensions for h in d.hierarchies
    for lv in h.levels
]


def _drillable(cube: str, dim: str, level: str) -> bool:
    """Stocks cannot be drilled by time above month."""
    return not (stock(cube) and dim == "time" and level != "month")


@pytest.mark.parametrize(("cube", "dim", "hier", "level"),
                         [c for c in CASES if _drillable(c[0], c[1], c[3])],
                         ids=lambda v: str(v))
def test_every_level_of_every_hierarchy_matches_hand_written_sql(
        any_workspace: Workspace, con: duckdb.DuckDBPyConnection,
        cube: str, dim: str, hier: str, level: str) -> None:
    dimension = MODEL.cube(cube).dimension(dim)
    path = [lv.name for lv in dimension.hierarchy(hier).levels]
    path = path[: path.index(level) + 1]
    keys = [key_sql(cube, dim, lv) for lv in path]
    # Stocks: one month (cut) unless time itself is drilled to month.
    month_cut = stock(cube) and dim != "time"
    where = f"f.month_id = {LATEST[0] * 100 + LATEST[1]}" if month_cut else "TRUE"
    r = raw(any_workspace, cube, drilldown=f"{dim}@{hier}:{level}", pagesize=1_000_000,
            cut=f"time@ym:{LATEST[0]},{LATEST[1]}" if month_cut else None)

    expected = hand(con, cube, [k for k, _ in keys], where)
    got = engine_cells(r, [c for _, c in keys])
    assert got == expected
    assert r.total_cell_count == len(expected) == r.cells.num_rows
    # drilled raw counts add up to the raw summary, which is the hand-computed total
    (summary,) = r.summary.to_pylist()
    (total,) = hand(con, cube, [], where).values()
    assert sum(v[0] for v in got.values()) == summary["__n"] == total[0]
    assert sum(v[1] for v in got.values()) % K == summary["__rk"] == total[1]
    # labels travel with keys; ancestors' attributes are included
    for lv in path:
        for a in dimension.level(lv).attributes:
            assert a.ref in r.cells.column_names


@pytest.mark.parametrize(("cube", "hier", "level"), [
    (c, h, lv) for c, d, h, lv in CASES if d == "time" and not _drillable(c, d, lv)])
def test_stocks_refuse_time_drills_above_month(workspace: Workspace, cube: str, hier: str,
                                               level: str) -> None:
    with pytest.raises(NonAdditiveError):
        raw(workspace, cube, drilldown=f"time@{hier}:{level}")


# --- cuts -------------------------------------------------------------------------------------

GEO_KEYS = ["g.country_code", "g.region_code", "g.la_code"]
GEO_COLS = ["geography.country_code", "geography.region_code", "geography.la_code"]


@pytest.mark.parametrize(("cut", "where"), [
    # range over two levels: lexicographic on (country, region)
    ("geography:E92000001,E12000002-E92000001,E12000004",
     "g.country_code = 'E92000001' AND g.region_code BETWEEN 'E12000002' AND 'E12000004'"),
    # bounds of different depth: from a region to an LA inside a later region
    ("geography:E92000001,E12000008-E92000001,E12000009,E06000030",
     "g.country_code = 'E92000001' AND (g.region_code = 'E12000008' OR "
     "(g.region_code = 'E12000009' AND g.la_code <= 'E06000030'))"),
    # open ranges
    ("geography:S92000003-", "g.country_code >= 'S92000003'"),
    ("geography:-E92000001,E12000002", "g.country_code = 'E92000001' AND "
                                       "g.region_code <= 'E12000002'"),
    # sets of mixed depth
    ("geography:E92000001,E12000001;W92000004",
     "(g.region_code = 'E12000001' OR g.country_code = 'W92000004')"),
    # negation of a point, a set and a range
    ("!geography:E92000001", "g.country_code <> 'E92000001'"),
    ("!geography:E92000001,E12000007;S92000003",
     "NOT (g.region_code = 'E12000007' OR g.country_code = 'S92000003')"),
    ("!geography:E92000001,E12000002-E92000001,E12000008",
     "NOT (g.country_code = 'E92000001' AND g.region_code BETWEEN 'E12000002' AND 'E12000008')"),
    # a cut on a category dimension (no join needed) combined with geography
    ("outcome:adverse|geography:E92000001", "f.outcome = 'adverse' AND "
                                            "g.country_code = 'E92000001'"),
])
def test_range_set_and_negated_cuts(any_workspace: Workspace,
                                    con: duckdb.DuckDBPyConnection, cut: str,
                                    where: str) -> None:
    r = raw(any_workspace, "sanctions", cut=cut, drilldown="geography:la")
    expected = hand(con, "sanctions", GEO_KEYS, where)
    assert expected, "the case should select something"
    assert engine_cells(r, GEO_COLS) == expected
    (summary,) = r.summary.to_pylist()
    assert summary["__n"] == sum(v[0] for v in expected.values())


@pytest.mark.parametrize(("cut", "months"), [
    ("time@ym:2026,7-2026,9", (202607, 202609)),
    ("time:2026,3-2026,4,10", (202607, 202610)),  # (year, quarter) to (year, quarter, month)
    ("time@ym:2026,9-", (202609, 202699)),
    ("time@ym:-2026,7", (0, 202607)),
    ("time:2026,3,8-2026,4", (202608, 202612)),
])
def test_time_ranges_compare_hierarchically(any_workspace: Workspace,
                                            con: duckdb.DuckDBPyConnection, cut: str,
                                            months: tuple[int, int]) -> None:
    r = raw(any_workspace, "universal_credit", cut=cut, drilldown="time@ym:month")
    lo, hi = months
    expected = hand(con, "universal_credit", ["t.year", "t.month"],
                    f"f.month_id BETWEEN {lo} AND {hi}")
    assert engine_cells(r, ["time.year", "time.month"]) == expected


def test_range_cut_keeps_the_drill_depth_on_the_engine(workspace: Workspace) -> None:
    r = raw(workspace, "sanctions", cut="geography:E92000001,E12000001-E92000001,E12000003",
            drilldown="geography")
    assert r.cells.column("geography.country_code").to_pylist() == ["E92000001"]
    assert "geography.region_code" not in r.cells.column_names


def test_split(any_workspace: Workspace, con: duckdb.DuckDBPyConnection) -> None:
    r = raw(any_workspace, "sanctions", drilldown="outcome",
            split="geography:E92000001,E12000007")
    got = engine_cells(r, ["outcome.outcome_code", "__within_split__"])
    expected = hand(con, "sanctions", ["f.outcome", "g.region_code = 'E12000007'"])
    assert got == expected
    assert {k[1] for k in got} == {True, False}
    # cells are ordered by the drilled level, then the split flag
    keys = [(c["outcome.outcome_order"], c["__within_split__"]) for c in r.cells.to_pylist()]
    assert keys == sorted(keys)


# --- order and paging -------------------------------------------------------------------------


def test_natural_order_is_the_level_order_attribute(any_workspace: Workspace) -> None:
    r = raw(any_workspace, "pip", drilldown="age_band|geography:region")
    rows = [(c["age_band.age_band_order"], c["geography.country_code"],
             c["geography.region_code"]) for c in r.cells.to_pylist()]
    assert rows == sorted(rows)
    assert len({c["age_band.age_band_order"] for c in r.cells.to_pylist()}) > 1


def test_order_by_aggregate_then_attribute(any_workspace: Workspace) -> None:
    r = raw(any_workspace, "pip", drilldown="geography:la", order="claimants:desc")
    counts = r.cells.column("claimants").to_pylist()
    assert counts == sorted(counts, reverse=True)
    r2 = raw(any_workspace, "pip", drilldown="geography:la", order="geography.la_name:desc")
    names = r2.cells.column("geography.la_name").to_pylist()
    assert names == sorted(names, reverse=True)


def test_paging_with_total_cell_count(any_workspace: Workspace) -> None:
    whole = raw(any_workspace, "housing_benefit", drilldown="geography:la|tenure",
                order="claimants:desc")
    n = whole.cells.num_rows
    pages = [raw(any_workspace, "housing_benefit", drilldown="geography:la|tenure",
                 order="claimants:desc", page=p, pagesize=25) for p in range(n // 25 + 1)]
    assert all(p.total_cell_count == n for p in pages)
    assert [p.cells.num_rows for p in pages[:-1]] == [25] * (n // 25)
    joined = [row for p in pages for row in p.cells.to_pylist()]
    assert joined == whole.cells.to_pylist()  # deterministic order, nothing lost or repeated
    past = raw(any_workspace, "housing_benefit", drilldown="geography:la|tenure",
               page=n // 7 + 5, pagesize=7)
    assert past.cells.num_rows == 0 and past.total_cell_count == n
    # the summary is the same however it was computed: from all cells, as window totals
    # on a page, or by its own statement for a page past the end
    assert all(p.summary.equals(whole.summary) for p in [*pages, past])
    # the public result says the same
    pub = any_workspace.cube("housing_benefit").aggregate(
        drilldown="geography:la|tenure", page=n // 7 + 5, pagesize=7).to_json()
    assert pub["cells"] == [] and pub["total_cell_count"] == n and pub["page"] == n // 7 + 5


def test_no_drilldown_means_no_cells_only_the_summary(any_workspace: Workspace) -> None:
    r = raw(any_workspace, "sanctions", cut="outcome:adverse")
    assert r.cells.num_rows == 0
    assert r.summary.column("__n")[0].as_py() > 0
    empty = raw(any_workspace, "sanctions", cut="outcome:no_such_code")
    assert empty.summary.column("__n")[0].as_py() == 0


# --- having and top (raw) ---------------------------------------------------------------------


def test_having_filters_cells_on_raw_values(any_workspace: Workspace,
                                            con: duckdb.DuckDBPyConnection) -> None:
    r = raw(any_workspace, "sanctions", drilldown="geography:la", having="decisions>40",
            pagesize=1000)
    expected = hand(con, "sanctions", GEO_KEYS, having="sum(f.n) > 40")
    assert 0 < len(expected) < len(hand(con, "sanctions", GEO_KEYS))
    assert engine_cells(r, GEO_COLS) == expected
    assert r.total_cell_count == len(expected)
    # the summary is of the whole cell, not of the filtered cells
    assert r.summary.column("__n")[0].as_py() == hand(con, "sanctions", [])[()][0]


def test_top_n_per_parent_level(any_workspace: Workspace,
                                con: duckdb.DuckDBPyConnection) -> None:
    r = raw(any_workspace, "sanctions", drilldown="geography:la", top="2:decisions:geography")
    rows = con.execute(f"""
        SELECT country_code, region_code, la_code FROM (
          SELECT g.country_code, g.region_code, g.la_code, row_number() OVER (
            PARTITION BY g.country_code, g.region_code
            ORDER BY sum(f.n) DESC, g.country_code, g.region_code, g.la_code) AS rank
          {from_sql('sanctions')} GROUP BY g.country_code, g.region_code, g.la_code)
        WHERE rank <= 2
        ORDER BY country_code, region_code, la_code""").fetchall()
    got = [(c["geography.country_code"], c["geography.region_code"], c["geography.la_code"])
           for c in r.cells.to_pylist()]
    assert got == rows
    overall = raw(any_workspace, "sanctions", drilldown="geography:la", top="3:decisions",
                  order="decisions:desc")
    counts = overall.cells.column("decisions").to_pylist()
    best = sorted(hand(con, "sanctions", GEO_KEYS).values(), reverse=True)[:3]
    assert counts == [b[0] for b in best]


# --- stocks, flows and embargo ------------------------------------------------------------------


def test_stock_defaults_to_latest_month_and_says_so(any_workspace: Workspace,
                                                    con: duckdb.DuckDBPyConnection) -> None:
    pub = any_workspace.cube("pip").aggregate(drilldown="gender").to_json()
    assert pub["period"] == "2026-11"
    assert pub["cell"] == []  # the default period is not a cut the user made
    r = raw(any_workspace, "pip", drilldown="gender")
    assert engine_cells(r, ["gender.gender_code"]) == hand(
        con, "pip", ["f.gender"], "f.month_id = 202611")


def test_flows_add_over_months(any_workspace: Workspace,
                               con: duckdb.DuckDBPyConnection) -> None:
    r = raw(any_workspace, "sanctions", drilldown="time:quarter")
    expected = hand(con, "sanctions", ["t.year", "t.quarter"])
    assert engine_cells(r, ["time.year", "time.quarter"]) == expected
    assert len(expected) == 3  # Jun | Jul-Sep | Oct-Nov


def test_embargo_hides_later_months_everywhere(any_workspace: Workspace,
                                               con: duckdb.DuckDBPyConnection) -> None:
    ws = any_workspace.view((2026, 9))
    pip = ws.cube("pip")
    assert pip.aggregate(drilldown="gender").to_json()["period"] == "2026-09"
    r = raw(ws, "pip", drilldown="time:month")
    assert engine_cells(r, ["time.year", "time.month"]) == hand(
        con, "pip", ["t.year", "t.month"], "f.month_id <= 202609")
    assert raw(ws, "pip", cut="time@ym:2026,10").summary.column("__n")[0].as_py() == 0
    months = pip.members("time", level="month").members.column("time.month").to_pylist()
    assert months == [6, 7, 8, 9]
    details = pip.cell_details("time@ym:2026,10;2026,9")[0]["paths"]
    assert details[0] is None  # a hidden month: no member, exactly like one that never was
    assert details[1][1] == {"time.month": 9, "time.month_label": "Sep 2026", "_key": 9,
                             "_label": "Sep 2026"}
    # quarterly flows: Q3 2026 ends in September, Q4 is hidden
    nino = raw(ws, "nino_registrations", drilldown="time:quarter")
    assert nino.cells.column("time.quarter").to_pylist() == [2, 3]
    assert raw(any_workspace.view((2026, 8)), "nino_registrations",
               drilldown="time:quarter").cells.column("time.quarter").to_pylist() == [2]


# --- members and cell details ---------------------------------------------------------------


def test_members_by_level_depth_cut_and_page(any_workspace: Workspace,
                                             con: duckdb.DuckDBPyConnection) -> None:
    hb = any_workspace.cube("housing_benefit")
    regions = hb.members("geography", level="region")
    expected = con.execute("SELECT DISTINCT country_code, region_code FROM dim_geography "
                           "ORDER BY 1, 2").fetchall()
    got = [(m["geography.country_code"], m["geography.region_code"])
           for m in regions.members.to_pylist()]
    assert got == expected and regions.depth == 2 and regions.total_member_count is None
    assert hb.members("geography", depth=2).members == regions.members
    las = hb.members("geography", level="la", cut="geography:E92000001,E12000007")
    assert set(las.members.column("geography.region_code").to_pylist()) == {"E12000007"}
    # paging over a high-cardinality level, including a page past the end
    (n_oa,) = con.execute("SELECT count(*) FROM dim_geography").fetchone()  # type: ignore[misc]
    page = hb.members("geography", level="oa", page=2, pagesize=100)
    assert page.total_member_count == n_oa and page.members.num_rows == 100
    first = con.execute("SELECT oa_code FROM dim_geography ORDER BY country_code, region_code, "
                        "la_code, msoa_code, lsoa_code, oa_code LIMIT 100 OFFSET 200").fetchall()
    assert page.members.column("geography.oa_code").to_pylist() == [r[0] for r in first]
    past = hb.members("geography", level="oa", page=10_000, pagesize=100)
    assert past.members.num_rows == 0 and past.total_member_count == n_oa
    # constituency hierarchy; category members in their order
    pcon = hb.members("geography", hierarchy="constituency", level="pcon")
    assert "geography.pcon_name" in pcon.members.column_names
    tenure = hb.members("tenure").members.column("tenure.tenure_order").to_pylist()
    assert tenure == sorted(tenure)


@pytest.mark.parametrize(("kw", "error"), [
    ({"dimension": "geografy"}, NoSuchDimensionError),
    ({"dimension": "geography", "hierarchy": "nope"}, NoSuchHierarchyError),
    ({"dimension": "geography", "level": "regoin"}, NoSuchLevelError),
    ({"dimension": "geography", "level": "pcon"}, HierarchyError),
    ({"dimension": "geography", "level": "oa"}, ArgumentError),  # high cardinality
    ({"dimension": "geography", "depth": 7}, ArgumentError),
    ({"dimension": "geography", "level": "la", "cut": "tenure:private"}, ArgumentError),
])
def test_members_errors(workspace: Workspace, kw: dict[str, Any],
                        error: type[StatcubeError]) -> None:
    with pytest.raises(error):
        workspace.cube("housing_benefit").members(**kw)


def test_cell_details(any_workspace: Workspace) -> None:
    hb = any_workspace.cube("housing_benefit")
    (geo, tenure) = hb.cell_details("geography:E92000001,E12000007|tenure:private")
    assert geo["paths"] == [[
        {"geography.country_code": "E92000001", "geography.country_name": "England",
         "_key": "E92000001", "_label": "England"},
        {"geography.region_code": "E12000007", "geography.region_name": "London",
         "_key": "E12000007", "_label": "London"}]]
    assert tenure["paths"][0][0]["_label"].startswith("Private")
    (rng,) = hb.cell_details("geography:E92000001,E12000001-E92000001,E12000002")
    assert rng["type"] == "range"
    assert [d[1]["_label"] for d in rng["paths"]] == ["North East", "North West"]
    (open_range,) = hb.cell_details("geography:E92000001,E12000001-")
    assert open_range["paths"][1] is None


# --- fuzz: only the engine's own 4xx errors ----------------------------------------------------

NAMES = st.sampled_from(["geography", "time", "tenure", "geografy", "age_band", "g", "_x"])
KEYS = st.text(alphabet=st.sampled_from(list("E9201,;-:!|\\@ '\"x")), max_size=14)


@st.composite
def cut_strings(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        head = draw(st.sampled_from(["", "!"])) + draw(NAMES)
        head += draw(st.sampled_from(["", "@ons", "@constituency", "@ym", "@nope"]))
        parts.append(head + ":" + draw(KEYS))
    return "|".join(parts) if draw(st.booleans()) else draw(st.text(max_size=30))


DRILLS = st.lists(st.sampled_from([
    "geography", "geography:region", "geography:la", "geography@constituency:pcon", "time",
    "time:month", "time@ym:month", "tenure", "age_band", "geography:oa", "nope", "time:x",
    "geography@ym", "tenure:tenure", ":", "a|b", "",
]), max_size=3)
ORDERS = st.lists(st.sampled_from([
    "claimants", "claimants:desc", "geography.region_name", "geography", "x:up", "tenure",
    "weekly_award_mean:desc", "geography.region_name:DESC", "",
]), max_size=2)


HAVING = st.one_of(st.sampled_from(["", "claimants>10", "claimants >= 3|claimants!=7",
                                     "weekly_award_mean<100.5", "x>1", "claimants>>1"]),
                   st.text(max_size=12))
TOP = st.sampled_from(["", "2:claimants", "1:claimants:geography", "0:claimants", "3:x",
                       "2:claimants:tenure", "a:b"])


@given(cut=cut_strings(), drilldown=DRILLS, order=ORDERS,
       pagesize=st.sampled_from([None, 1, 5, 0]), page=st.sampled_from([None, 0, 3, -1]),
       split=st.one_of(st.just(""), cut_strings()), having=HAVING, top=TOP)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_requests_only_raise_client_errors(
        workspace: Workspace, cut: str, drilldown: list[str], order: list[str],
        pagesize: int | None, page: int | None, split: str, having: str, top: str) -> None:
    hb = workspace.cube("housing_benefit")
    try:
        result = hb.aggregate(cut=cut, drilldown=drilldown, order=order, page=page,
                              pagesize=pagesize, split=split, having=having, top=top)
    except StatcubeError as exc:
        assert 400 <= exc.status < 500, exc
        assert exc.public
        json.dumps(exc.to_dict())
        return
    body = result.to_json()
    assert body["total_cell_count"] >= len(body["cells"])


# --- CLI --------------------------------------------------------------------------------------


def test_cli_aggregate_members_and_sql(warehouse: Path, capsys: pytest.CaptureFixture[str],
                                       workspace: Workspace) -> None:
    w = str(warehouse)
    assert cli(["aggregate", "pip", "--warehouse", w, "-d", "geography:region",
                "--pagesize", "3"]) == 0
    body = json.loads(capsys.readouterr().out)
    expected = workspace.cube("pip").aggregate(drilldown="geography:region", pagesize=3)
    assert body["cells"] == expected.to_json()["cells"]
    assert body["total_cell_count"] == 11 and body["period"] == "2026-11"
    assert not any(k.startswith("__") for c in body["cells"] for k in c)

    assert cli(["aggregate", "pip", "--warehouse", w, "-d", "gender", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:2] == ["gender.gender_code", "gender.gender_name"]
    assert len(lines) == 3

    assert cli(["members", "pip", "time", "--warehouse", w, "--level", "month"]) == 0
    assert len(json.loads(capsys.readouterr().out)["data"]) == 6

    assert cli(["sql", "pip", "--warehouse", w, "-d", "geography:region",
                "--cut", "gender:F", "--dialect", "postgresql"]) == 0
    out = capsys.readouterr().out
    # Region × gender is answered from the smallest rollup holding both, and says so.
    assert out.startswith("-- cells (from rollup_pip__region_gender)\n")
    assert "rollup_pip__region_gender.gender = 'F'" in out and "fact_pip" not in out
    assert "-- summary (from rollup_pip__" in out and "%%" not in out

    assert cli(["aggregate", "pip", "--warehouse", w, "-d", "time:year"]) == 2
    assert "stock" in capsys.readouterr().err



_FORKED_WORKER = """
import os, sys
import cube.workspace  # the server's imports (pyarrow, then duckdb) in the parent, as in
from cube.engine import Engine  # gunicorn's master; the crash needed pyarrow imported first
pid = os.fork()
if pid == 0:  # a worker's life, then a normal interpreter exit (atexit handlers run)
    engine = Engine(sys.argv[1])
    with engine.raw_duckdb() as cur:
        cur.execute("SELECT count(*) FROM statcube_meta").fetchall()
    engine.close()
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("signal" if os.WIFSIGNALED(status) else "exit", os.WTERMSIG(status)
      if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def test_a_forked_process_using_the_warehouse_exits_cleanly(warehouse: Path) -> None:
    """gunicorn forks its workers after importing duckdb; each opens the warehouse, queries
    and exits. Every worker used to die by SIGABRT at exit (duckdb's default connection,
    inherited from the parent, destroyed in the child: cube/engine.py)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FORKED_WORKER, str(warehouse)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["exit", "0"], done.stdout + done.stderr
    assert "terminate called" not in done.stderr
