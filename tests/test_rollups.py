"""Rollups: tables pre-aggregated at region and local-authority grain, read instead of the
fact when they hold everything a query reads.

What a user relies on: the same published (and raw) answer whether or not a rollup answers
it — over every level of every hierarchy of every cube, alone and with a category, cut or
split — on DuckDB and on PostgreSQL (``load-pg`` copies the rollups); and that the table
read is the smallest that can answer. A warehouse built before rollups (no ``rollups`` in
its metadata) is answered from its facts.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cube import sql as compiler
from cube.disclosure.rules import check_query
from cube.errors import ModelError, UserError
from cube.model import Model, load_model, parse_model
from cube.query import Request
from cube.rollups import declared, from_meta, select_sql
from cube.workspace import Workspace

pytestmark = pytest.mark.integration


def _without_rollups(ws: Workspace) -> Workspace:
    """The same warehouse as a build before rollups would describe it."""
    meta = {k: v for k, v in ws.meta.items() if k != "rollups"}
    return Workspace(ws.model, ws.engine, ws.visible_until, meta, ws.gate)


def _requests(model: Model) -> list[tuple[str, dict[str, Any]]]:
    """Every level of every hierarchy of every cube alone; the levels a rollup may answer
    (country, region, LA, time) also with a category drilled, cut to a member, or split on;
    plus a time range, paging and no drilldown at all."""
    out: list[tuple[str, dict[str, Any]]] = []
    for cube in model.cubes.values():
        cats = [d for d in cube.dimensions if d.members]
        for d in cube.dimensions:
            for h in d.hierarchies:
                for lvl in h.levels:
                    if d.is_time and cube.kind == "stock" and lvl.name != "month":
                        continue
                    drill = f"{d.name}@{h.name}:{lvl.name}"
                    paged = {"pagesize": 1_000_000} if lvl.cardinality == "high" else {}
                    out.append((cube.name, {"drilldown": drill, **paged}))
                    if not (d.is_time or lvl.name in ("country", "region", "la")):
                        continue
                    for c in cats[:1]:
                        if c.name == d.name:
                            continue
                        out.append((cube.name, {"drilldown": [drill, c.name], **paged}))
                        out.append((cube.name, {"drilldown": drill, **paged,
                                                "cut": f"{c.name}:{c.members[0].code}"}))
                        out.append((cube.name, {"drilldown": drill, **paged,
                                                "split": f"{c.name}:{c.members[-1].code}"}))
        if cube.grain == "month":
            out.append((cube.name, {"drilldown": ["geography:region", "time:month"],
                                    "cut": "time:2026,7-2026,10"}))
        out.append((cube.name, {"drilldown": "geography:la", "pagesize": 7, "page": 2}))
        out.append((cube.name, {}))
    return out


ROOT = Path(__file__).resolve().parent.parent
MODEL_REQUESTS = _requests(load_model(ROOT / "model.json"))


def test_the_warehouse_holds_the_declared_rollups(workspace: Workspace) -> None:
    for name in workspace.cube_names:
        cube = workspace.model.cube(name)
        held = from_meta(workspace.meta, name)
        assert {r.table for r in held} == {r.table for r in declared(cube)}
        assert [r.rows for r in held] == sorted(r.rows for r in held)
        fact_rows = workspace.engine.scalar(
            sa.text(f"SELECT count(*) FROM {cube.physical.fact}"))
        assert all(0 < r.rows <= fact_rows for r in held)


def test_every_rollup_table_is_its_grain_summed_from_the_fact(workspace: Workspace) -> None:
    """The build takes shortcuts (local authority rollups from one shared set of cells, region
    rollups from those); each table must still be exactly the plain aggregation of the fact
    at its grain — including the rollups model.json declares, which few queries choose."""
    for name in workspace.cube_names:
        cube = workspace.model.cube(name)
        period = compiler.fact_period_column(cube)
        for r in from_meta(workspace.meta, name):
            plain = f"SELECT * FROM ({select_sql(cube, r, period)}) AS p"
            for x, y in ((f"SELECT * FROM {r.table}", plain), (plain, f"SELECT * FROM {r.table}")):
                extra = workspace.engine.scalar(
                    sa.text(f"SELECT count(*) FROM ({x} EXCEPT ALL {y}) AS d"))
                assert extra == 0, f"{r.table}: {extra} rows differ from the fact's"


@pytest.mark.parametrize(("cube", "kw"), MODEL_REQUESTS, ids=lambda v: str(v))
def test_answers_are_identical_with_and_without_rollups(any_workspace: Workspace, cube: str,
                                                        kw: dict[str, Any]) -> None:
    base = _without_rollups(any_workspace)
    with_rollups = any_workspace.cube(cube)
    without = base.cube(cube)
    try:
        q0 = without.query(Request.make(cube, **kw))
        want_json = without.aggregate_query(q0).to_json()
    except UserError as exc:  # refused (grammar limits): refused alike with rollups
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            with_rollups.aggregate_query(with_rollups.query(Request.make(cube, **kw)))
        return
    q = with_rollups.query(Request.make(cube, **kw))
    assert compiler.source_table(q0) == q0.cube.physical.fact
    assert with_rollups.aggregate_query(q).to_json() == want_json
    # Raw cells too (the gate's input), before any protection or rounding.
    got, want = with_rollups._raw_aggregate(q), without._raw_aggregate(q0)
    assert got.cells.to_pylist() == want.cells.to_pylist()
    assert got.summary.to_pylist() == want.summary.to_pylist()


@pytest.mark.parametrize(("cube", "kw"), MODEL_REQUESTS[::4], ids=lambda v: str(v))
def test_the_table_read_is_the_smallest_that_can_answer(workspace: Workspace, cube: str,
                                                        kw: dict[str, Any]) -> None:
    """Each rollup, offered alone, is either refused (the fact is read) or gives the base
    table's raw answer; the one chosen among all is the smallest of those accepted."""
    b = workspace.cube(cube)
    try:
        q = b.query(Request.make(cube, **kw))
        check_query(q)
    except UserError:
        q = b.query(Request.make(cube, drilldown="geography:region"))
    want = _without_rollups(workspace).cube(cube)._raw_aggregate(replace(q, rollups=()))
    accepted = []
    for r in q.rollups:
        alone = replace(q, rollups=(r,))
        if compiler.source_table(alone) == r.table:
            accepted.append(r)
            got = b._raw_aggregate(alone)
            assert got.cells.to_pylist() == want.cells.to_pylist(), r.table
            assert got.summary.to_pylist() == want.summary.to_pylist(), r.table
    chosen = compiler.source_table(q)
    if accepted:
        assert chosen == min(accepted, key=lambda r: r.rows).table
    else:
        assert chosen == q.cube.physical.fact


@pytest.mark.parametrize(("cube", "kw", "table"), [
    ("housing_benefit", {"drilldown": "geography:region"}, "rollup_housing_benefit__region"),
    ("housing_benefit", {"drilldown": "geography:region|tenure"},
     "rollup_housing_benefit__region_tenure"),
    ("housing_benefit", {"drilldown": "geography:la", "cut": "tenure:private"},
     "rollup_housing_benefit__la_tenure"),
    ("universal_credit", {"drilldown": "time:month|conditionality"},
     "rollup_universal_credit__region_conditionality"),
    ("housing_benefit", {"drilldown": "geography:msoa"}, "fact_housing_benefit"),
    ("housing_benefit", {"drilldown": "geography:region|tenure|age_band"},
     "fact_housing_benefit"),
    # two categories drilled together: rollups model.json declares on top of the defaults
    ("pip", {"drilldown": "geography:region|daily_living|mobility"},
     "rollup_pip__region_daily_living_mobility"),
    ("universal_credit", {"drilldown": "employment|gender|age_band",
                          "cut": "geography:E92000001,E12000007"},
     "rollup_universal_credit__region_employment_gender_age_band"),
    ("sanctions", {"drilldown": "benefit|outcome", "cut": "time:2026"},
     "rollup_sanctions__region_benefit_outcome"),
])
def test_which_table_answers(workspace: Workspace, cube: str, kw: dict[str, Any],
                             table: str) -> None:
    q = workspace.cube(cube).query(Request.make(cube, **kw))
    assert compiler.source_table(q) == table


@pytest.mark.unit
def test_a_cube_declares_its_own_rollups() -> None:
    raw = json.loads((ROOT / "model.json").read_text(encoding="utf-8"))
    hb = next(c for c in raw["cubes"] if c["name"] == "housing_benefit")
    hb["info"]["rollups"] = [{"geography": "region", "dimensions": ["tenure", "age_band"]},
                             {"geography": None, "dimensions": ["tenure"]}]
    defaults = declared(parse_model(json.loads(
        (ROOT / "model.json").read_text(encoding="utf-8"))).cube("housing_benefit"))
    cube = parse_model(raw).cube("housing_benefit")
    # Declared rollups add to the defaults (region/LA, alone and with each category), after
    # them; one declared twice, or equal to a default, is built once.
    hb["info"]["rollups"] += [{"geography": "region", "dimensions": ["tenure"]},
                              {"geography": None, "dimensions": ["tenure"]}]
    twice = declared(parse_model(raw).cube("housing_benefit"))
    assert [(r.table, r.geography, r.dimensions) for r in declared(cube)] == [
        *((r.table, r.geography, r.dimensions) for r in defaults),
        ("rollup_housing_benefit__region_tenure_age_band", "region", ("tenure", "age_band")),
        ("rollup_housing_benefit__all_tenure", None, ("tenure",))]
    assert twice == declared(cube)
    assert ("rollup_housing_benefit__region_tenure", "region", ("tenure",)) in [
        (r.table, r.geography, r.dimensions) for r in defaults]
    assert ("rollup_housing_benefit__la", "la", ()) in [
        (r.table, r.geography, r.dimensions) for r in defaults]
    hb["info"]["rollups"] = [{"geography": "region", "dimensions": ["gender"]}]
    with pytest.raises(ModelError, match="rollup cannot keep"):
        declared(parse_model(raw).cube("housing_benefit"))
    hb["info"]["rollups"] = [{"geography": "region", "levels": ["tenure"]}]
    with pytest.raises(ModelError):
        parse_model(raw)
