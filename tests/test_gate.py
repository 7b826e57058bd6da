"""The one disclosure gate: the p-table it trusts, the result type it returns, the export
stream, and what it counts.

- The build stores the p-table in the warehouse (``sdc_ptable``) and records its digest;
  the gate refuses a warehouse whose p-table (digest or rows) is not the model's, because the
  numpy path reads the model's table and the SQL path the warehouse's.
- A ProtectedResult cannot hold an internal column.
- The export stream gives the same cells as the API.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from conftest import QueryArgs

from cube.disclosure.gate import Gate, ProtectedResult
from cube.disclosure.ptable import PTableParams, build_ptable
from cube.disclosure.rules import Protection
from cube.engine import Engine
from cube.errors import ArgumentError, ConfigError
from cube.model import Model, parse_model
from cube.query import Request
from cube.workspace import Workspace

pytestmark = pytest.mark.integration


# --- the p-table in the warehouse -------------------------------------------------------------


def test_warehouse_ptable_equals_the_models(model: Model, any_workspace: Workspace) -> None:
    """On every serving engine: ``load-pg`` copies the p-table and its digest unchanged."""
    params = PTableParams.from_mapping(model.disclosure.get("ptable", {}))
    expected = build_ptable(params)
    t = sa.table("sdc_ptable", sa.column("pcv"), sa.column("ckey"), sa.column("pvalue"))
    rows = any_workspace.engine.execute(
        sa.select(t.c.pcv, t.c.ckey, t.c.pvalue).order_by(t.c.pcv, t.c.ckey))
    pcv, ckey, pvalue = (rows.column(c).to_numpy() for c in ("pcv", "ckey", "pvalue"))
    ncat, k = params.ncat, params.K
    assert len(pcv) == (ncat + 1) * k
    assert np.array_equal(pcv, np.repeat(np.arange(ncat + 1), k))
    assert np.array_equal(ckey, np.tile(np.arange(k), ncat + 1))
    assert np.array_equal(pvalue.reshape(ncat + 1, k), expected.values)
    assert any_workspace.meta["ptable_digest"] == expected.digest
    assert (params.D, params.V, params.js, params.K) == (3, 2.0, 2, 4096)


def test_gate_refuses_a_warehouse_with_another_digest(model: Model, any_workspace: Workspace
                                                      ) -> None:
    ws = any_workspace
    for meta in ({**ws.meta, "ptable_digest": "0" * 64},
                 {k: v for k, v in ws.meta.items() if k != "ptable_digest"}):
        with pytest.raises(ConfigError, match="rebuild the warehouse"):
            Workspace(model, ws.engine, meta=meta)


def test_gate_refuses_a_model_with_other_ptable_parameters(any_warehouse: str) -> None:
    raw = json.loads((Path(__file__).parent.parent / "model.json").read_text(encoding="utf-8"))
    raw["info"]["disclosure"]["ptable"]["seed"] = 12345
    other = parse_model(raw)
    with pytest.raises(ConfigError, match=r"model\.json describes p-table"):
        Workspace.open(other, any_warehouse)


def test_gate_refuses_a_warehouse_whose_ptable_rows_were_changed(model: Model, warehouse: Path,
                                                                 tmp_path: Path) -> None:
    """The digest in the metadata is right, but someone edited the table the SQL path joins:
    the API (numpy) and the exports (SQL) would then disagree, so the gate refuses."""
    copy = tmp_path / warehouse.name
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE sdc_ptable SET pvalue = 0 WHERE pcv = 6 AND ckey < 10")
    con.close()
    with pytest.raises(ConfigError, match="does not hold the values"):
        Workspace.open(model, copy)
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM sdc_ptable WHERE pcv = 6 AND ckey = 0")
    con.close()
    with pytest.raises(ConfigError, match="does not hold the values"):
        Workspace.open(model, copy)


def test_the_gate_uses_the_models_parameters(model: Model, workspace: Workspace) -> None:
    p = workspace.gate.protection
    assert p == Protection.from_model(model)
    assert (p.p_small, p.p_large, p.flex_point, p.q, p.mean_threshold) == (0.25, 0.05, 5, 2, 10)
    assert (p.dominance_p, p.dominance_mu) == (10, 1)


# --- the result type --------------------------------------------------------------------------


def test_protected_result_refuses_internal_columns(any_workspace: Workspace) -> None:
    good = any_workspace.cube("pip").aggregate(drilldown="gender")
    for name in ("__n", "__rk", "__rk2", "__weekly_award_max", "__total_cells"):
        cells = good.cells.append_column(name, pa.array([1] * good.cells.num_rows))
        with pytest.raises(AssertionError, match="cannot carry"):
            replace(good, cells=cells)
        with pytest.raises(AssertionError, match="cannot carry"):
            replace(good, summary={**good.summary, name: 1})
    # With the list of public columns, anything else is refused too (e.g. a raw "n").
    with pytest.raises(AssertionError, match="cannot carry"):
        replace(good, cells=good.cells.append_column("n", pa.array([1] * good.cells.num_rows)))


def test_public_methods_return_protected_results(any_workspace: Workspace) -> None:
    hb = any_workspace.cube("housing_benefit")
    q = hb.query(Request.make("housing_benefit", drilldown="tenure"))
    for result in (hb.aggregate(drilldown="tenure"), hb.aggregate_query(q)):
        assert isinstance(result, ProtectedResult)
    report = hb.aggregate(drilldown="geography:oa", pagesize=500).to_json()["disclosure"]
    assert report["parameters"] == {
        "D": 3, "V": 2.0, "js": 2, "mean_threshold": 10,
        "magnitude": {"p_small": 0.25, "p_large": 0.05, "flex_point": 5, "q": 2,
                      "dominance_p": 10, "dominance_mu": 1}}
    assert report["withheld_values"] > 0
    assert any("may not equal the sum" in n for n in report["notes"])


# --- the export stream ------------------------------------------------------------------------


@pytest.mark.parametrize(("cube", "kw"), [
    ("housing_benefit", {"drilldown": "geography:la|tenure"}),
    ("benefit_cap", {"drilldown": "geography:msoa|time:month"}),
    ("sanctions", {"drilldown": "jcp:office|outcome", "cut": "time:2026,3,8"}),
    ("pip", {"drilldown": "geography:region", "order": "claimants:desc"}),
])
def test_the_export_stream_publishes_what_the_api_does(any_workspace: Workspace, cube: str,
                                                       kw: dict[str, str]) -> None:
    b = any_workspace.cube(cube)
    q = b.query(Request.make(cube, **kw))
    api = b.aggregate_query(q).cells
    streamed = pa.Table.from_batches(list(any_workspace.gate.stream(b.raw, q, 37)))
    assert streamed.column_names == api.column_names
    assert streamed.to_pylist() == api.to_pylist()


def test_the_export_stream_is_never_paged(workspace: Workspace) -> None:
    b = workspace.cube("pip")
    q = b.query(Request.make("pip", drilldown="geography:la", pagesize=5))
    with pytest.raises(ArgumentError, match="not paged"):
        workspace.gate.stream(b.raw, q)


# --- paging: numpy over the complete cells, or the protected SQL -----------------------------


@pytest.mark.parametrize(("cube", "kw"), [
    ("housing_benefit", {"drilldown": "geography:oa", "cut": "LA"}),
    ("benefit_cap", {"drilldown": "geography:oa"}),
    ("universal_credit", {"drilldown": "geography:la|gender", "split": "gender:F"}),
    ("sanctions", {"drilldown": "time:month|outcome", "order": "time:desc"}),
    ("pip", {"drilldown": "geography:lsoa|time:month"}),
    ("housing_benefit", {"drilldown": "geography:la|tenure", "order": "claimants:desc"}),
    ("benefit_cap", {"drilldown": "geography:la", "order": "weekly_reduction_sum:desc"}),
    ("housing_benefit", {"drilldown": "geography:la|tenure",
                         "order": "weekly_award_mean,tenure:desc"}),
    ("universal_credit", {"drilldown": "geography:oa", "having": "people>=10"}),
    ("housing_benefit", {"drilldown": "geography:msoa", "having": "weekly_award_mean>90",
                         "order": "claimants"}),
    ("sanctions", {"drilldown": "jcp:office|outcome", "having": "decisions!=3",
                   "split": "outcome:adverse"}),
])
def test_a_page_is_the_same_from_numpy_or_from_the_protected_sql(
        any_workspace: Workspace, cube: str, kw: QueryArgs) -> None:
    """A paged query, or one ordered or filtered on published values, is answered in numpy
    from its complete raw cells when they are few, by the protected SQL when they are many.
    Both give the same cells in the same order, the same page, total (counted after cells
    published as zero are dropped and after the filters) and summary — also for a page past
    the end."""
    b = any_workspace.cube(cube)
    if kw.get("cut") == "LA":  # the OAs of the first local authority
        la = b.members("geography", level="la").members.to_pylist()[0]
        kw = {**kw, "cut": "geography:" + ",".join(
            la[f"geography.{lvl}_code"] for lvl in ("country", "region", "la"))}
    gate = any_workspace.gate
    everything = b.aggregate(**kw, pagesize=1_000_000)
    assert everything.cells.num_rows == everything.total_cell_count
    last = everything.total_cell_count // 7
    for page, size in ((0, 7), (1, 7), (last, 7), (last + 5, 7), (0, 1_000_000)):
        q = b.query(Request.make(cube, **kw, page=page, pagesize=size))
        numpy_way = gate.aggregate(b.raw, q)
        sql_gate = Gate(gate.model, gate.protection)
        sql_gate.NUMPY_PAGE_CELLS = 0  # every paged query is "too large": the SQL path
        sql_way = sql_gate.aggregate(b.raw, q)
        assert numpy_way.cells.to_pylist() == sql_way.cells.to_pylist(), (page, size)
        assert numpy_way.to_json() == sql_way.to_json()
        assert numpy_way.cells.schema == sql_way.cells.schema
        assert numpy_way.total_cell_count == sql_way.total_cell_count \
            == everything.total_cell_count
        assert numpy_way.summary == sql_way.summary == everything.summary
        assert everything.total_cell_count > 7
        assert numpy_way.cells.to_pylist() == everything.cells.slice(
            page * size, size).to_pylist()


@pytest.mark.parametrize("order", ["weekly_reduction_sum:desc", "weekly_reduction_mean",
                                   "weekly_reduction_mean:desc,households"])
def test_withheld_values_sort_where_each_engines_sql_puts_them(any_workspace: Workspace,
                                                               order: str) -> None:
    """Ordering on a value that is withheld (null) in some cells: the numpy answer puts
    them where the engine's SQL does (DuckDB last, PostgreSQL as the largest value)."""
    b = any_workspace.cube("benefit_cap")
    q = b.query(Request.make("benefit_cap", drilldown="geography:msoa", order=order,
                             pagesize=1_000_000))
    gate = any_workspace.gate
    numpy_way = gate._in_numpy(b.raw, q)
    assert numpy_way is not None
    assert numpy_way.cells.column(order.split(":")[0].split(",")[0]).null_count > 0
    sql_gate = Gate(gate.model, gate.protection)
    sql_gate.NUMPY_PAGE_CELLS = 0
    assert numpy_way.to_json() == sql_gate.aggregate(b.raw, q).to_json()


# --- counting cells on the SQL path ---------------------------------------------------------


def test_a_page_past_the_end_counts_protected_cells_not_raw_ones(any_workspace: Workspace) -> None:
    """With a filter on a published value, the total of a page past the end must count the
    cells whose *published* value passes; counting raw values would tell how many raw
    counts pass the filter."""
    b = any_workspace.cube("benefit_cap")
    kw: QueryArgs = {"drilldown": "geography:oa", "having": "households>=3"}
    everything = b.aggregate(**kw, pagesize=1_000_000)
    past_end = b.aggregate(**kw, pagesize=10, page=10_000)
    assert past_end.cells.num_rows == 0
    assert past_end.total_cell_count == everything.total_cell_count == everything.cells.num_rows
    raw_count = b.raw.count_cells(b.query(Request.make("benefit_cap", **kw, pagesize=10)))
    assert raw_count != past_end.total_cell_count  # the two differ: the fix matters here


def test_gate_for_warehouse_checks_an_engine_directly(model: Model, any_warehouse: str
                                                    ) -> None:
    engine = Engine(any_warehouse)
    try:
        ws = Workspace(model, engine)
        gate = Gate.for_warehouse(model, engine, ws.meta)
        assert gate.protection.ptable.digest == ws.meta["ptable_digest"]
    finally:
        engine.close()
