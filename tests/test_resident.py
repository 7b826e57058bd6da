"""Resident rollups (cube/resident.py): small rollup tables answered from an in-memory Arrow
copy instead of an SQL statement, on DuckDB.

What a user relies on: exactly the answer the SQL gives — raw cells (values, column types,
order), summary, and so the published (protected) result — for any query over any cube:
drilldowns at every level the rollups hold, in both geography hierarchies and every time
hierarchy, point, set, range and inverted cuts, time ranges, splits, ``within``
restrictions, release views (embargo); a query the resident path declines still answers;
memory stays within the row cap and the byte budget; threads loading a table at once share
one copy; and a copy answers only for the warehouse file it was read from.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from cube import resident
from cube import sql as compiler
from cube.engine import Engine
from cube.errors import UserError
from cube.model import Cube, Model
from cube.query import OrderItem, Query, Request
from cube.raw import RawCube, _shape, _store
from cube.rollups import keyed_dimensions
from cube.workspace import Workspace

pytestmark = pytest.mark.integration
pytest_plugins = ["pg"]

Paths = dict[str, list[tuple[Any, ...]]]


@pytest.fixture(scope="session")
def member_paths(workspace: Workspace) -> dict[str, Paths]:
    """Per cube, member paths to cut on: each level of the geography (down to local
    authority), of every time hierarchy and of every dimension the rollups keep."""
    out: dict[str, Paths] = {}
    for name in workspace.cube_names:
        b = workspace.cube(name)
        paths: Paths = {}
        dims = [b.cube.dimension("geography"), b.cube.time_dimension,
                *keyed_dimensions(b.cube)]
        for dim in dims:
            assert dim is not None
            for h in dim.hierarchies:
                for depth, lvl in enumerate(h.levels, 1):
                    if dim.name == "geography" and lvl.name not in ("country", "region", "la"):
                        continue
                    m = b.members(dim.name, hierarchy=h.name, depth=depth)
                    keys = [x.key.ref for x in h.levels[:depth]]
                    paths[f"{dim.name}@{h.name}:{lvl.name}"] = [
                        tuple(row[k] for k in keys) for row in m.members.to_pylist()]
        out[name] = paths
    return out


def _text(path: tuple[Any, ...]) -> str:
    return ",".join(str(k) for k in path)


def _cut_on(draw: st.DrawFn, paths: Paths, level: str) -> str:
    """A point, set or range cut (sometimes inverted) on members of ``level``."""
    found = paths[level]
    dim, _, _ = level.partition(":")
    kind = draw(st.sampled_from(["point", "set", "range", "open"]))
    if kind == "point":
        body = _text(draw(st.sampled_from(found)))
    elif kind == "set":
        body = ";".join(_text(p) for p in draw(st.lists(st.sampled_from(found), min_size=1,
                                                        max_size=3, unique=True)))
    else:
        a, b = sorted(draw(st.lists(st.sampled_from(found), min_size=2, max_size=2)))
        body = f"{_text(a)}-{_text(b)}" if kind == "range" else draw(st.sampled_from(
            [f"{_text(a)}-", f"-{_text(b)}"]))
    return ("!" if draw(st.integers(0, 3)) == 0 else "") + f"{dim}:{body}"


@st.composite
def _queries(draw: st.DrawFn, ws: Workspace, member_paths: dict[str, Paths]
             ) -> tuple[str, Request, tuple[int, int] | None]:
    """A cube, a request over what its rollups hold, and a release view (or None)."""
    name = draw(st.sampled_from(sorted(member_paths)))
    cube = ws.model.cube(name)
    paths = member_paths[name]
    geo_levels = [lv for lv in paths if lv.startswith("geography@")]
    time_levels = [lv for lv in paths if lv.startswith("time@")]
    finest = "month" if cube.grain == "month" else "quarter"
    stock = cube.kind == "stock"
    keyed = [d.name for d in keyed_dimensions(cube)]
    drill: list[str] = []
    cut: list[str] = []
    if draw(st.booleans()):
        drill.append(draw(st.sampled_from(geo_levels)))
    if draw(st.booleans()):
        cut.append(_cut_on(draw, paths, draw(st.sampled_from(geo_levels))))
    time_how = draw(st.sampled_from(["none", "period", "drill", "range", "other"]))
    months = [lv for lv in time_levels if lv.endswith(":" + finest)]
    if time_how == "period":
        cut.append("time@" + draw(st.sampled_from(months)).split("@")[1].split(":")[0] + ":"
                   + _text(draw(st.sampled_from(paths[draw(st.sampled_from(months))]))))
    elif time_how in ("drill", "range"):
        level = draw(st.sampled_from(months if stock else time_levels))
        drill.append(level)
        if time_how == "range":
            cut.append(_cut_on(draw, paths, level).lstrip("!"))
    elif time_how == "other" and not stock:
        year = draw(st.sampled_from(paths[next(lv for lv in time_levels
                                               if lv.endswith(":year"))]))[0]
        cut.append(draw(st.sampled_from([f"time:{year}", f"time@ym:{year},13",
                                         f"time:{year},1-{year},3,8", f"!time:{year}"])))
    for dim in draw(st.lists(st.sampled_from(keyed), max_size=2, unique=True)):
        levels = [lv for lv in paths if lv.startswith(dim + "@")]
        if draw(st.booleans()):
            drill.append(draw(st.sampled_from(levels)))
        else:
            cut.append(_cut_on(draw, paths, draw(st.sampled_from(levels))))
    order = None
    # bool(drill): mypy would infer the draw's type from ``drill`` on the left of ``and``
    if bool(drill) and draw(st.booleans()):
        order = drill[0].split("@")[0] + draw(st.sampled_from(["", ":desc"]))
    split = None
    if draw(st.integers(0, 4)) == 0:
        split = _cut_on(draw, paths, draw(st.sampled_from(geo_levels + [
            lv for lv in paths if lv.split("@")[0] in keyed])))
    view = None
    if draw(st.booleans()):
        month = draw(st.sampled_from(paths[f"time@ym:{'month' if finest == 'month' else 'year'}"]
                                     if finest == "month" else paths["time@yq:quarter"]))
        view = (month[0], month[1]) if finest == "month" else (month[0], month[1] * 3)
    return name, Request.make(name, cut="|".join(cut), drilldown=drill, order=order,
                              split=split), view


def _sql(ws: Workspace, cube: Cube) -> RawCube:
    return RawCube(ws.engine, cube, ws.gate.k, resident=False)


def _same_published(ws: Workspace, mine: RawCube, theirs: RawCube, q: Query) -> None:
    try:
        want = ws.gate.aggregate(theirs, q)
    except UserError as exc:
        with pytest.raises(type(exc)):
            ws.gate.aggregate(mine, q)
        return
    got = ws.gate.aggregate(mine, q)
    assert got.cells.equals(want.cells)
    assert got.summary == want.summary
    assert got.total_cell_count == want.total_cell_count


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_resident_answers_equal_the_sql(workspace: Workspace,
                                        member_paths: dict[str, Paths],
                                        data: st.DataObject) -> None:
    """Raw cells (values, types, order), ``limit`` semantics, summaries and published
    results — plain, paged and ordered by a value, as the gate's numpy path reads them —
    equal the SQL's, in every release view."""
    name, request, view = data.draw(_queries(workspace, member_paths))
    ws = workspace.view(view)
    b = ws.cube(name)
    try:
        q = b.query(request)
    except UserError:
        assume(False)
        return
    if data.draw(st.integers(0, 5)) == 0 and q.drilldown:
        region = b.cube.dimension("geography").hierarchy().levels[1].key
        codes = [p[1] for p in data.draw(st.lists(st.sampled_from(
            member_paths[name]["geography@ons:region"]), max_size=3))]
        q = dataclasses.replace(q, within=((region, tuple(codes)),))
    mine, theirs = b.raw, _sql(ws, b.cube)
    if q.drilldown or q.split:
        answered = mine._resident_cells(q, _shape(q)[0], None) is not None
        event("cells: resident" if answered else "cells: declined (SQL)")
        want = theirs.cells(q)
        assert mine.cells(q).equals(want), request
        for limit in (1, 3, want.num_rows + 1):
            got = mine.cells(q, limit)
            assert got.num_rows == min(limit, want.num_rows)
            if want.num_rows < limit:
                assert got.equals(theirs.cells(q, limit))
        lean, lean_sql = mine.lean(q), theirs.lean(q)
        assert lean.cells.equals(lean_sql.cells) and lean.summary.equals(lean_sql.summary)
    else:
        event("summary: resident" if mine._resident_summary(q) is not None else
              "summary: declined (SQL)")
        assert mine.aggregate(q).summary.equals(theirs.aggregate(q).summary), request
    aggregate = q.aggregates[0]
    for variant in (q, dataclasses.replace(q, page=0, pagesize=5),
                    dataclasses.replace(q, order=(OrderItem(aggregate.name, True,
                                                            aggregate=aggregate),))):
        if not q.within:
            _same_published(ws, mine, theirs, variant)


def _query(b: Any, **kw: Any) -> Query:
    q: Query = b.query(Request.make(b.cube.name, **kw))
    return q


@pytest.mark.parametrize(("cube", "kw"), [
    ("housing_benefit", {"drilldown": "geography:region"}),
    ("housing_benefit", {"drilldown": "geography@constituency:region|tenure"}),
    ("housing_benefit", {"drilldown": "tenure", "cut": "geography:E92000001,E12000007;"
                                                       "W92000004"}),
    ("housing_benefit", {"drilldown": "geography:la", "split": "tenure:private",
                         "order": "geography:desc"}),
    ("universal_credit", {"drilldown": "time@ym:month|conditionality",
                          "cut": "time@ym:2026,7-2026,9|!geography:W92000004"}),
    ("sanctions", {"drilldown": "jcp:district", "cut": "time:2026,3"}),
    ("nino_registrations", {"drilldown": "time:quarter|world_area"}),
    ("housing_benefit", {"cut": "geography:E92000001,E12000007"}),
    ("sanctions", {"cut": "time@ym:2026,13|outcome:sanctioned"}),
])
def test_region_la_and_category_queries_are_answered_resident(
        workspace: Workspace, cube: str, kw: dict[str, Any]) -> None:
    """The questions residency is for never reach the SQL: the resident path answers them
    (and equals the SQL)."""
    b = workspace.cube(cube)
    q = _query(b, **kw)
    sql = _sql(workspace, b.cube)
    if q.drilldown:
        got = b.raw._resident_cells(q, _shape(q)[0], None)
        assert got is not None and got.equals(sql.cells(q))
    else:
        got = b.raw._resident_summary(q)
        assert got is not None and got.equals(sql.aggregate(q).summary)


def test_a_declined_query_still_answers(workspace: Workspace) -> None:
    """Labels that are not in a copied dimension table, a table joined through another, a
    query with paging or values in its order: declined, and the SQL gives the answer."""
    b = workspace.cube("housing_benefit")
    uncopied = RawCube(workspace.engine, b.cube, workspace.gate.k)
    uncopied.DIMENSION_COPY_ROWS = 0  # no dimension copy: the tenure labels are joined
    q = _query(b, drilldown="geography:region|tenure")
    assert uncopied._resident_cells(q, _shape(q)[0], None) is None
    assert uncopied.cells(q).equals(_sql(workspace, b.cube).cells(q))
    rollup = compiler.choose_rollup(q)
    assert rollup is not None
    table = b.raw.resident_table(rollup)
    assert table is not None
    paged = dataclasses.replace(q, page=0, pagesize=3)
    assert resident.cells(paged, rollup, table, b.raw._dimension, workspace.gate.k) is None
    # A key of another type than its column (an integer for a text code): declined.
    bad = dataclasses.replace(q, within=((b.cube.dimension("tenure").levels[0].key, (1,)),))
    assert resident.cells(bad, rollup, table, b.raw._dimension, workspace.gate.k) is None
    # An integer key no integer column can hold (a year of 23 digits, which is no period, so
    # the level keys decide): declined, not an OverflowError; the SQL answers.
    s = workspace.cube("sanctions")
    for cut in ("time:99999999999999999999999", "time@ym:2026,7-2026,99999999999999999999"):
        huge = _query(s, drilldown="outcome", cut=cut)
        assert s.raw._resident_cells(huge, _shape(huge)[0], None) is None
        assert s.raw.cells(huge).equals(_sql(workspace, s.cube).cells(huge))


def test_the_row_cap_and_the_byte_budget_hold(model: Model, warehouse: Path) -> None:
    """A table over the row cap is never read whole, one that would take the store over its
    byte budget is not held; their queries run SQL, with the same answers."""
    engine = Engine(warehouse)
    try:
        ws = Workspace(model, engine)
        b = ws.cube("housing_benefit")
        store = _store(engine)
        small = _query(b, drilldown="geography:region")
        big = _query(b, drilldown="geography:region|age_band")
        r_small, r_big = compiler.choose_rollup(small), compiler.choose_rollup(big)
        assert r_small is not None and r_big is not None and r_small.rows < r_big.rows
        store.max_rows = r_small.rows
        assert b.raw.resident_table(r_small) is not None
        assert b.raw.resident_table(r_big) is None
        assert b.raw.cells(big).equals(_sql(ws, b.cube).cells(big))
        assert store.used_bytes <= store.budget_bytes
        # Metadata that under-states a table's rows: the read itself enforces the cap.
        understated = dataclasses.replace(r_big, rows=0, table=r_big.table)
        other = Engine(warehouse)
        try:
            raw = RawCube(other, b.cube, ws.gate.k)
            _store(other).max_rows = r_small.rows
            assert raw.resident_table(understated) is None
            # The budget: room for the first table, not for a second one.
            held = b.raw.resident_table(r_small)
            assert held is not None
            _store(other).max_rows = resident.MAX_ROWS
            _store(other).budget_bytes = held.nbytes
            assert raw.resident_table(r_small) is not None
            region_tenure = compiler.choose_rollup(_query(b, drilldown="geography:region|"
                                                                   "tenure"))
            assert region_tenure is not None
            assert raw.resident_table(region_tenure) is None
            assert _store(other).used_bytes <= held.nbytes
        finally:
            other.close()
    finally:
        engine.close()


def test_threads_loading_at_once_share_one_copy(model: Model, warehouse: Path) -> None:
    engine = Engine(warehouse)
    try:
        ws = Workspace(model, engine)
        cube = ws.model.cube("housing_benefit")
        rollup = compiler.choose_rollup(_query(ws.cube("housing_benefit"),
                                               drilldown="geography:la"))
        assert rollup is not None
        # Each thread its own RawCube (as each release view has), over one engine.
        raws = [RawCube(engine, cube, ws.gate.k) for _ in range(8)]
        start = threading.Barrier(len(raws))
        got: list[Any] = [None] * len(raws)

        def load(i: int) -> None:
            start.wait()
            got[i] = raws[i].resident_table(rollup)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(len(raws))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got[0] is not None and all(g is got[0] for g in got)
        assert _store(engine).reads == 1
    finally:
        engine.close()


def test_a_copy_answers_only_for_its_own_warehouse_file(model: Model, warehouse: Path,
                                                        tmp_path: Path) -> None:
    """Two builds of a release hold different rows under the same table names; each engine
    (one per file, as the release set opens them) answers from its own file's copy, and a
    view of a build shares its engine's copy but applies its own period limit."""
    copy = tmp_path / warehouse.name
    shutil.copy(warehouse, copy)
    first = Workspace.open(model, warehouse)
    b = first.cube("housing_benefit")
    q = _query(b, drilldown="geography:region")
    rollup = compiler.choose_rollup(q)
    assert rollup is not None
    con = duckdb.connect(str(copy))
    con.execute(f"UPDATE {rollup.table} SET n = n + 1000")
    con.close()
    second = Workspace.open(model, copy)
    try:
        b2 = second.cube("housing_benefit")
        a, c = b.raw.cells(q), b2.raw.cells(q)
        assert a.equals(_sql(first, b.cube).cells(q))
        assert c.equals(_sql(second, b2.cube).cells(q))
        assert a.column(compiler.N) != c.column(compiler.N)
        assert _store(first.engine) is not _store(second.engine)
        view = first.view((2026, 8))
        vb = view.cube("housing_benefit")
        vq = _query(vb, drilldown="geography:region|time:month")
        assert vq.period_limit == 202608
        assert vb.raw.resident_table(rollup) is b.raw.resident_table(rollup)
        got = vb.raw.cells(vq)
        assert got.equals(_sql(view, vb.cube).cells(vq))
        assert max(got.column("time.month").to_pylist()) == 8
    finally:
        first.close()
        second.close()


def test_postgresql_keeps_sql(pg_workspace: Workspace) -> None:
    """Residency is for DuckDB only: PostgreSQL's collation decides the order of text."""
    b = pg_workspace.cube("housing_benefit")
    q = _query(b, drilldown="geography:region")
    rollup = compiler.choose_rollup(q)
    assert rollup is not None
    assert not b.raw.resident and b.raw.resident_table(rollup) is None
    assert b.raw._resident_cells(q, _shape(q)[0], None) is None


# --- Conditions on coded columns: SQL's three-valued logic ---------------------------------------

_TEXT = st.sampled_from(["", "E06000001", "E12000007", "W92000004", "a", "Z", "é", "ß"])


@st.composite
def _columns(draw: st.DrawFn) -> list[tuple[pa.ChunkedArray, list[Any]]]:
    """Two or three columns of the same rows, with nulls (text or integers, in one or more
    chunks), each with values to compare it with, some of them absent from it."""
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(draw(st.integers(2, 3))):
        text = draw(st.booleans())
        item = _TEXT if text else st.integers(-3, 3)
        rows = draw(st.lists(st.one_of(st.none(), item), min_size=n, max_size=n))
        cut = draw(st.integers(0, n))
        kind = pa.string() if text else pa.int64()
        out.append((pa.chunked_array([pa.array(rows[:cut], kind), pa.array(rows[cut:], kind)]),
                    draw(st.lists(item, min_size=1, max_size=4))))
    return out


_ARROW = {"=": pc.equal, ">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal,
          "<": pc.less}


def _truth(got: Any) -> list[bool | None]:
    """A resident condition as Arrow would show it: None where unknown."""
    return [bool(v) if k else None for v, k in zip(got.value, got.known, strict=True)]


@settings(max_examples=300, deadline=None)
@given(columns=_columns(), data=st.data())
def test_coded_conditions_follow_three_valued_logic(
        columns: list[tuple[pa.ChunkedArray, list[Any]]], data: st.DataObject) -> None:
    """Comparisons on coded columns (codes ranked by value, -1 for null), combined with AND,
    OR and NOT, give exactly what Arrow's comparisons and Kleene functions give on the
    columns themselves — the semantics of the SQL the resident path stands in for: a
    comparison with NULL is unknown, unknown AND false is false, unknown OR true is true,
    NOT unknown is unknown; text compares byte by byte."""
    rows = np.arange(len(columns[0][0]))
    coded = [resident._code(column) for column, _ in columns]

    def condition() -> tuple[Any, pa.Array]:
        i = data.draw(st.integers(0, len(columns) - 1))
        column, values = columns[i]
        op, v = data.draw(st.sampled_from(sorted(_ARROW))), data.draw(st.sampled_from(values))
        mine = resident._compare_one(coded[i], rows, op, v)
        theirs = _ARROW[op](column, pa.scalar(v, column.type))
        assert _truth(mine) == theirs.to_pylist()
        return mine, theirs

    got, want = condition()
    for how in data.draw(st.lists(st.sampled_from(["and", "or", "not"]), max_size=5)):
        if how == "not":
            got, want = resident._not(got), pc.invert(want)
        else:
            other, other_arrow = condition()
            if how == "and":
                got, want = resident._all([got, other]), pc.and_kleene(want, other_arrow)
            else:
                got, want = resident._any([got, other]), pc.or_kleene(want, other_arrow)
        assert _truth(got) == want.to_pylist()
    # Grouping: rows with equal values (null with null) share a code, others do not.
    for (column, _), c in zip(columns, coded, strict=True):
        values = column.to_pylist()
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                assert (c.codes[i] == c.codes[j]) == (a == b)
