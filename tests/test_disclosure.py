"""Disclosure control on real query results: the published values obey the method's
invariants, and the same cell has the same value whichever way it is reached.

Every check compares published values with the raw cells of the same query
(``CubeBrowser._raw_aggregate``) and with the p-table itself (``PTable.values`` indexed
directly), never with protect.py's own helpers, so the tests restate the method instead of
re-running its code:

    n̂ = 0 if n = 0 else n + ptable[min(n, NCAT), ckey]
    m  = p_large + (p_small − p_large)·(fp·x1 / (fp·x1 + S))^q      (flex share of x1)
    dominated: S − x1 − min(x1, S − x1) < p%·x1  → m ≥ p%, |v| + mu, sign never 0
    Ŝ = max(0, S + (n̂ − n)·round(S/n) + sign·round_half_up(m·x1·|v|))   v = ptable[NCAT, ckey2]
    mean = round_half_up(Ŝ / n̂) pence; total and mean withheld when n̂ < threshold

(the flex share is truncated to whole 1/100000ths at each step, as the method states it, so
both sides compute the same penny.)

Everything runs on the session warehouse on both serving engines (``any_workspace``:
DuckDB and its PostgreSQL copy), including the SQL-arithmetic property test, which feeds
extreme raw cells through each engine's SQL template and its own ``sdc_ptable``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cube import sql as compiler
from cube.disclosure.protect import RK, RK2, N, protect_table, withheld_column
from cube.disclosure.report import sdc_report
from cube.disclosure.rules import Protection
from cube.disclosure.sql_path import protected_stage
from cube.errors import ArgumentError, UserError
from cube.model import Aggregate, Model
from cube.query import Query, Request
from cube.workspace import CubeBrowser, Workspace

pytestmark = pytest.mark.integration


# --- helpers --------------------------------------------------------------------------------


def _query(ws: Workspace, cube: str, **kw: Any) -> Query:
    b = ws.cube(cube)
    return b.query(Request.make(cube, **kw))


def _keys(q: Query) -> list[str]:
    return [a.ref for a in q.cell_attributes] + ([compiler.SPLIT] if q.split else [])


def _by_key(table: pa.Table, keys: Sequence[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = table.to_pylist()
    out = {tuple(r[k] for k in keys): r for r in rows}
    assert len(out) == len(rows), "cell keys must be unique"
    return out


def _pence(pounds: float) -> int:
    return round(pounds * 100)


def _half_up(num: int, den: int) -> int:
    """round_half_up(num / den) for num >= 0, den > 0, in exact arithmetic."""
    return math.floor(Fraction(num, den) + Fraction(1, 2))


def _flex_share(s: int, x1: int, p: Protection) -> int:
    """m in 1/100000ths of x1: exact rational arithmetic, truncated where the method says."""
    w_scale = 100_000
    fpx = p.flex_point * x1
    w = math.floor(Fraction(w_scale * fpx, max(fpx + s, 1)))
    wq = w
    for _ in range(p.q - 1):
        wq = math.floor(Fraction(wq * w, w_scale))
    lo, hi = round(p.p_large * w_scale), round(p.p_small * w_scale)
    return lo + math.floor(Fraction((hi - lo) * wq, w_scale))


def is_dominated(s: int, x1: int, p: Protection) -> bool:
    """The p% rule with the second largest amount at its bound min(x1, S − x1)."""
    second = min(x1, s - x1)
    return 100 * (s - x1 - second) < p.dominance_p * x1


def expected_sum(n: int, n_hat: int, s: int, x1: int, ckey2: int, p: Protection) -> int:
    if n_hat == 0:
        return 0
    v = int(p.ptable.values[p.ptable.params.ncat, ckey2])
    m = _flex_share(s, x1, p)
    steps = abs(v)
    sign = (v > 0) - (v < 0)
    dom = is_dominated(s, x1, p)
    if dom:
        m = max(m, p.dominance_p * 1000)
        steps += p.dominance_mu
        vc = n_hat - n
        sign = (vc > 0) - (vc < 0) or sign or (1 if ckey2 % 2 == 0 else -1)
    mag = _half_up(x1 * steps * m, 100_000)
    if dom:
        mag = max(mag, 1)
    return max(0, s + (n_hat - n) * _half_up(s, n) + sign * mag)


def expected_cell(raw: dict[str, Any], aggregates: Sequence[Aggregate], p: Protection
                  ) -> dict[str, Any]:
    """The published values of one raw cell, restated from the method (module docstring)."""
    values = p.ptable.values
    ncat = p.ptable.params.ncat
    n = raw[N]
    n_hat = 0 if n == 0 else n + int(values[min(n, ncat), raw[RK]])
    out: dict[str, Any] = {}
    for a in aggregates:
        if a.measure.kind == "count":
            out[a.name] = n_hat
            continue
        s, xmax = raw[compiler.sum_col(a.measure.name)], raw[compiler.max_col(a.measure.name)]
        s_hat = expected_sum(n, n_hat, s, xmax, raw[RK2], p)
        if n_hat < p.mean_threshold:
            out[a.name] = None
        elif a.function == "sum":
            out[a.name] = s_hat
        else:
            out[a.name] = _half_up(s_hat, n_hat)
    return out


class Tally:
    """What the invariant checks saw, so a test can prove it was not vacuous."""

    def __init__(self) -> None:
        self.cells = 0
        self.small = 0  # raw counts 1..js
        self.changed = 0
        self.withheld = 0
        self.means = 0
        self.sums = 0
        self.dropped = 0  # cells published as zero, hence left out
        self.dominated = 0  # published totals the dominance rule protects


def check_published(raw: dict[str, Any], pub: dict[str, Any], aggregates: Sequence[Aggregate],
                    p: Protection, tally: Tally) -> None:
    """Every invariant of the acceptance list, for one cell (or one summary)."""
    params = p.ptable.params
    n = raw[N]
    want = expected_cell(raw, aggregates, p)
    tally.cells += 1
    tally.small += 1 <= n <= params.js
    for a in aggregates:
        got = pub[a.name]
        if a.measure.kind == "count":
            assert got not in range(1, params.js + 1), f"published {a.name}={got}"
            assert got >= 0
            assert abs(got - n) <= params.D
            if n == 0:
                assert got == 0
            assert got == want[a.name]
            tally.changed += got != n
            continue
        m = a.measure.name
        s, xmax = raw[compiler.sum_col(m)], raw[compiler.max_col(m)]
        withheld = pub[withheld_column(a.name)]
        if want[a.name] is None:  # totals and means alike, below the mean threshold
            assert got is None and withheld is True
            tally.withheld += 1
            continue
        assert withheld is False
        if a.function == "sum":
            s_hat = _pence(got)
            assert s_hat >= 0
            # Noise: the count's own (n̂ − n people at the cell's mean amount) plus at most
            # D + mu steps of at most p_small of the largest amount, rounded to the penny.
            bound = abs(p.ptable.params.D) * _half_up(s, max(n, 1)) + \
                (params.D + p.dominance_mu) * Fraction(max(p.fixed(p.p_small),
                                                           p.dominance_p * 1000),
                                                       100_000) * xmax + 1
            assert abs(s_hat - s) <= bound
            if is_dominated(s, xmax, p):
                assert s_hat != s  # a dominated total is never published exactly
                tally.dominated += 1
            assert s_hat == want[a.name]
            tally.sums += 1
        else:
            assert _pence(got) == want[a.name]
            tally.means += 1


def check_query(browser: CubeBrowser, q: Query, tally: Tally) -> None:
    """Raw vs published for every cell and the summary of one query (numpy or SQL path)."""
    p = browser.ws.gate.protection
    raw = browser._raw_aggregate(q)
    pub = browser.aggregate_query(q)
    keys = _keys(q)
    raw_cells = _by_key(raw.cells, keys)
    pub_cells = _by_key(pub.cells, keys)
    # Cells published as zero are left out exactly like empty cells; every other raw cell is
    # published, and no published cell has a zero count.
    count = next(iter(a for a in q.cube.aggregates if a.measure.kind == "count"))
    visible = {key for key, r in raw_cells.items() if expected_cell(r, [count], p)[count.name]}
    assert pub_cells.keys() == visible
    tally.dropped += len(raw_cells) - len(visible)
    for key in visible:
        check_published(raw_cells[key], pub_cells[key], q.aggregates, p, tally)
    summary = dict(pub.summary)
    stocks_over_months = [a for a in q.aggregates if a.nonadditive and summary[a.name] is None
                          and not (a.measure.kind == "amount" and expected_cell(
                              raw.summary.to_pylist()[0], [a], p)[a.name] is None)]
    if stocks_over_months:  # a stock summed over several months is never published
        assert any("cannot be added across months" in n for n in pub.report.notes)
        return
    check_published(raw.summary.to_pylist()[0], summary, q.aggregates, p, tally)


# --- 1. invariants ------------------------------------------------------------------------

ALL = 1_000_000  # pagesize that takes every cell of a high-cardinality level at test scale

INVARIANT_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("housing_benefit", {"drilldown": "geography:region"}),
    ("housing_benefit", {"drilldown": "geography:la|tenure"}),
    ("housing_benefit", {"drilldown": "geography:oa", "pagesize": ALL}),
    ("housing_benefit", {"drilldown": "geography:msoa|time:month", "pagesize": ALL}),
    ("housing_benefit", {"cut": "geography:E92000001,E12000001",
                         "drilldown": "geography|family_type|spare_room"}),
    ("benefit_cap", {"drilldown": "geography:la|time:month"}),
    ("benefit_cap", {"drilldown": "geography:lsoa|cap_band", "pagesize": ALL}),
    ("benefit_cap", {"drilldown": "geography:oa", "pagesize": ALL}),
    ("benefit_cap", {"drilldown": "family_type|children|cap_band",
                     "cut": "geography:S92000003"}),
    ("universal_credit", {"drilldown": "geography:oa|gender", "pagesize": ALL}),
    ("pip", {"drilldown": "geography:la|daily_living|mobility"}),
    ("sanctions", {"drilldown": "jcp:office|time:month"}),
    ("sanctions", {"drilldown": "geography:oa", "pagesize": ALL}),
    ("nino_registrations", {"drilldown": "geography:la|time:quarter"}),
    ("nino_registrations", {"drilldown": "world_area|age_band|gender"}),
    # the SQL path: order, filter and rank on published values
    ("housing_benefit", {"drilldown": "geography:la", "order": "weekly_award_mean:desc"}),
    ("pip", {"drilldown": "geography:msoa", "order": "claimants", "pagesize": ALL}),
]


def test_published_values_obey_the_method_on_every_cell(any_workspace: Workspace) -> None:
    tally = Tally()
    for cube, kw in INVARIANT_QUERIES:
        browser = any_workspace.cube(cube)
        check_query(browser, browser.query(Request.make(cube, **kw)), tally)
    # Not vacuous: many cells, small counts, changed cells, withheld and published means.
    assert tally.cells > 8_000
    assert tally.small > 1_000
    assert 0.5 < tally.changed / tally.cells < 0.9
    assert tally.withheld > 3_000 and tally.means > 1_000 and tally.sums > 1_000
    print("dominated published totals:", tally.dominated)
    assert tally.dropped > 100  # the zero-dropping rule was exercised


def test_an_empty_selection_is_published_as_zero(any_workspace: Workspace) -> None:
    """A true zero stays zero: a cut that selects no records (a real OA, a real tenure, but
    nobody of that tenure there) gives n = 0, published 0, sum 0 and a withheld mean."""
    hb = any_workspace.cube("housing_benefit")
    q = _query(any_workspace, "housing_benefit", drilldown="geography:oa|tenure", pagesize=ALL)
    rows = hb._raw_aggregate(q).cells.to_pylist()
    present = {(r["geography.oa_code"], r["tenure.tenure_code"]) for r in rows}
    levels = ("country", "region", "la", "msoa", "lsoa", "oa")
    r, tenure = next((r, t) for r in rows for t in ("social_la", "social_ha", "private", "other")
                     if (r["geography.oa_code"], t) not in present)
    path = ",".join(r[f"geography.{lv}_code"] for lv in levels)
    empty = _query(any_workspace, "housing_benefit", cut=f"geography:{path}|tenure:{tenure}")
    assert hb._raw_aggregate(empty).summary.column(N).to_pylist() == [0]
    check_query(hb, empty, Tally())
    summary = hb.aggregate_query(empty).summary
    assert summary["claimants"] == 0
    assert summary["weekly_award_sum"] is None and summary["weekly_award_sum_withheld"]
    assert summary["weekly_award_mean"] is None and summary["weekly_award_mean_withheld"]


# --- 2. consistency -------------------------------------------------------------------------


def _published(browser: CubeBrowser, **kw: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    q = browser.query(Request.make(browser.cube.name, **kw))
    return _by_key(browser.aggregate_query(q).cells, _keys(q))


def _values(row: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[n] for n in names)


HB_VALUES = ("claimants", "weekly_award_sum", "weekly_award_sum_withheld", "weekly_award_mean",
             "weekly_award_mean_withheld")


def _la_paths(any_workspace: Workspace) -> list[tuple[str, str, str]]:
    m = any_workspace.cube("housing_benefit").members("geography", level="la").members
    return [(r["geography.country_code"], r["geography.region_code"], r["geography.la_code"])
            for r in m.to_pylist()]


def test_same_la_through_different_drill_paths(any_workspace: Workspace) -> None:
    hb = any_workspace.cube("housing_benefit")
    la = "geography.la_code"
    all_las = {v[la]: _values(v, HB_VALUES)
               for v in _published(hb, drilldown="geography:la").values()}
    for country, region, code in _la_paths(any_workspace)[::5]:
        # implicit next level under a region cut, explicit level, ordered by a value (SQL)
        under_region = _published(hb, cut=f"geography:{country},{region}", drilldown="geography")
        by_value = _published(hb, cut=f"geography:{country},{region}",
                              drilldown="geography:la", order="claimants:desc")
        point = hb.aggregate(cut=f"geography:{country},{region},{code}").summary
        drilled_below = hb.aggregate(cut=f"geography:{country},{region},{code}",
                                     drilldown="geography:msoa").summary
        expected = all_las[code]
        for cells in (under_region, by_value):
            (row,) = [v for v in cells.values() if v[la] == code]
            assert _values(row, HB_VALUES) == expected
        assert _values(point, HB_VALUES) == expected
        assert _values(drilled_below, HB_VALUES) == expected


def test_same_region_through_either_geography_hierarchy(any_workspace: Workspace) -> None:
    pip = any_workspace.cube("pip")
    ons = {k[2]: v["claimants"] for k, v in _published(pip, drilldown="geography:region").items()}
    pcon = {k[2]: v["claimants"] for k, v in
            _published(pip, drilldown="geography@constituency:region").items()}
    assert ons == pcon and len(ons) == 11


def test_dimensions_cut_to_their_totals_or_not_mentioned(any_workspace: Workspace) -> None:
    """Cutting a dimension to everything it has selects the same records as leaving it out,
    so the cells are the same cells: same keys, same noise."""
    hb = any_workspace.cube("housing_benefit")
    plain = _published(hb, drilldown="geography:region|passported")
    every_tenure = _published(hb, drilldown="geography:region|passported",
                              cut="tenure:social_la;social_ha;private;other")
    every_country = _published(hb, drilldown="geography:region|passported",
                               cut="geography:E92000001;S92000003;W92000004")
    latest = _published(hb, drilldown="geography:region|passported", cut="time:2026,4,11")
    assert plain == every_tenure == every_country == latest
    nino = any_workspace.cube("nino_registrations")
    whole = _published(nino, drilldown="geography:la|gender")
    year = _published(nino, drilldown="geography:la|gender", cut="time:2026")
    assert whole == year


def test_pages_orders_and_page_sizes_agree(any_workspace: Workspace) -> None:
    uc = any_workspace.cube("universal_credit")
    base = _published(uc, drilldown="geography:oa", pagesize=ALL)
    for order in (None, "geography.oa_code:desc", "people:desc", "people"):
        pages: dict[tuple[Any, ...], dict[str, Any]] = {}
        page = 0
        while True:
            got = _published(uc, drilldown="geography:oa", pagesize=1000, page=page,
                             order=order)
            if not got:
                break
            assert not pages.keys() & got.keys()
            pages.update(got)
            page += 1
        assert pages == base, order


def test_split_cells_equal_the_cells_of_the_split_cut(any_workspace: Workspace) -> None:
    hb = any_workspace.cube("housing_benefit")
    split = _published(hb, drilldown="geography:region", split="tenure:private")
    inside = _published(hb, drilldown="geography:region", cut="tenure:private")
    assert {k[:-1]: v for k, v in split.items() if k[-1] is True} == {
        k: {**v, compiler.SPLIT: True} for k, v in inside.items()}


def test_numpy_and_sql_paths_agree_cell_by_cell(any_workspace: Workspace) -> None:
    """The same query through the gate's numpy path and through the protected SQL template
    (the export path), compared table against table."""
    gate = any_workspace.gate
    p = gate.protection
    for cube, kw in INVARIANT_QUERIES:
        browser = any_workspace.cube(cube)
        q = browser.query(Request.make(cube, **kw))
        if q.needs_measure_values_in_sql:
            continue
        numpy_cells = gate.aggregate(browser.raw, q).cells
        stmt = compiler.finish(q, p.k, protected_stage(p), keep_raw=False)
        sql_cells = any_workspace.engine.execute(stmt)
        if compiler.TOTAL in sql_cells.column_names:
            sql_cells = sql_cells.drop_columns([compiler.TOTAL])
        assert sql_cells.column_names == numpy_cells.column_names
        assert sql_cells.to_pylist() == numpy_cells.to_pylist(), (cube, kw)


# --- numpy path == SQL path, over generated queries -----------------------------------------


@st.composite
def _requests(draw: st.DrawFn, model: Model, la_paths: Sequence[tuple[str, str, str]]
              ) -> tuple[str, dict[str, Any]]:
    cube = model.cube(draw(st.sampled_from(sorted(model.cubes))))
    categories = [d for d in cube.dimensions if d.members]
    geo = draw(st.sampled_from([None, "country", "region", "la", "msoa", "lsoa", "oa"]))
    max_cats = 1 if geo == "oa" else 2
    drilled = draw(st.lists(st.sampled_from(categories), max_size=max_cats,
                            unique_by=lambda d: d.name))
    drills = [f"geography:{geo}"] if geo else []
    drills += [d.name for d in drilled]
    cuts: list[str] = []
    if len(drilled) < max_cats and draw(st.booleans()):
        dim = draw(st.sampled_from([d for d in categories if d not in drilled]))
        cuts.append(f"{dim.name}:{draw(st.sampled_from(dim.members)).code}")
    if draw(st.booleans()):
        cuts.append("geography:" + ",".join(draw(st.sampled_from(la_paths))))
    if cube.grain == "month" and draw(st.booleans()):
        drills.append("time:month")
    elif cube.grain == "month" and draw(st.booleans()):
        cuts.append(f"time:2026,{draw(st.sampled_from(['3,7', '3,9', '4,10']))}")
    kw: dict[str, Any] = {"drilldown": drills, "cut": "|".join(cuts)}
    if geo in ("lsoa", "oa") or draw(st.booleans()):
        kw["pagesize"] = draw(st.sampled_from([7, 100, ALL]))
        kw["page"] = draw(st.integers(0, 3))
    return cube.name, kw


@pytest.fixture(scope="module")
def la_paths(any_workspace: Workspace) -> list[tuple[str, str, str]]:
    return _la_paths(any_workspace)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_generated_queries_agree_on_both_paths(any_workspace: Workspace, model: Model,
                                               la_paths: list[tuple[str, str, str]],
                                               data: st.DataObject) -> None:
    cube, kw = data.draw(_requests(model, la_paths))
    browser = any_workspace.cube(cube)
    try:
        q = browser.query(Request.make(cube, **kw))
        numpy_result = browser.aggregate_query(q)
    except UserError:
        assume(False)
        return
    gate = any_workspace.gate
    p = gate.protection
    sql_cells = any_workspace.engine.execute(compiler.finish(q, p.k, protected_stage(p),
                                                         keep_raw=False))
    if compiler.TOTAL in sql_cells.column_names:
        sql_cells = sql_cells.drop_columns([compiler.TOTAL])
    assert sql_cells.to_pylist() == numpy_result.cells.to_pylist()
    # Ordering by a published value takes the gate's SQL path; every cell keeps its value.
    count = next(a.name for a in q.aggregates if a.measure.kind == "count")
    ordered = browser.aggregate(**{**kw, "order": f"{count}:desc", "page": None,
                                   "pagesize": ALL if kw.get("pagesize") else None})
    assert ordered.summary == numpy_result.summary
    keys = _keys(q)
    by_value = _by_key(ordered.cells, keys)
    for key, row in _by_key(numpy_result.cells, keys).items():
        assert by_value[key] == row
    assert ordered.total_cell_count == numpy_result.total_cell_count


# --- the arithmetic itself, on extreme raw cells --------------------------------------------


def _raw_cells() -> st.SearchStrategy[list[tuple[int, int, int, int, int]]]:
    """(n, rk, rk2, S, x_max) with x_max <= S <= n·x_max, biased to small counts, large
    sums and maxima whose noise lands on a half penny."""
    @st.composite
    def cell(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
        n = draw(st.one_of(st.integers(0, 12), st.integers(0, 10**7)))
        rk, rk2 = draw(st.integers(0, 4095)), draw(st.integers(0, 4095))
        if n == 0:
            return (0, rk, rk2, 0, 0)
        xmax = draw(st.one_of(st.integers(1, 100), st.sampled_from([5, 15, 25, 1665, 8335]),
                              st.integers(1, 10**7)))
        s = draw(st.integers(xmax, xmax * n))
        return (n, rk, rk2, s, xmax)
    return st.lists(cell(), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_raw_cells())
def test_sql_template_and_numpy_agree_on_extreme_cells(any_workspace: Workspace,
                                                       rows: list[tuple[int, int, int, int, int]]
                                                       ) -> None:
    q = _query(any_workspace, "housing_benefit", drilldown="tenure")
    p = any_workspace.gate.protection
    names = [N, RK, RK2, "__weekly_award_sum", "__weekly_award_max"]
    raw = pa.table({name: pa.array([r[i] for r in rows], pa.int64())
                    for i, name in enumerate(names)}).append_column(
        "i", pa.array(range(len(rows)), pa.int64()))
    values = sa.values(*(sa.column(n, sa.BigInteger) for n in [*names, "i"]),
                       name="cells").data([(*r, i) for i, r in enumerate(rows)])
    # Typed as the aggregation types them (BIGINT), not as DuckDB would guess from literals.
    sub = sa.select(*(sa.cast(c, sa.BigInteger).label(c.name) for c in values.c)).subquery("c")
    stage = protected_stage(p)(q, sub)
    assert stage.keep is not None
    src = stage.source if stage.source is not None else sub  # the stage's outermost layer
    stmt = sa.select(src.c.i, *(v.label(k) for k, v in stage.values.items()), *stage.extra,
                     stage.keep.label("kept")).select_from(stage.frm).order_by(src.c.i)
    # The serving engine runs the cell key arithmetic on literal cells, joining its own
    # sdc_ptable (on PostgreSQL the table load-pg copied).
    from_sql = any_workspace.engine.execute(stmt).drop_columns(["i"])
    kept = from_sql.column("kept").to_pylist()
    from_sql = from_sql.drop_columns(["kept"])
    from_numpy = protect_table(raw, q.aggregates, p, [], drop_zero=False)
    assert from_sql.to_pylist() == from_numpy.to_pylist()
    # Both paths leave out exactly the cells published as zero.
    assert kept == [c != 0 for c in from_numpy.column("claimants").to_pylist()]
    assert protect_table(raw, q.aggregates, p, []).to_pylist() == [
        r for r, k in zip(from_numpy.to_pylist(), kept, strict=True) if k]
    tally = Tally()
    for r, pub in zip(raw.to_pylist(), from_numpy.to_pylist(), strict=True):
        check_published(r, pub, q.aggregates, p, tally)


@pytest.mark.unit
def test_noise_is_unbiased_and_has_variance_v_on_large_counts(workspace: Workspace) -> None:
    """Over all K keys of the symmetric row, noise sums to exactly zero; its variance is V."""
    p = workspace.gate.protection
    row = p.ptable.symmetric_row().astype(np.int64)
    assert int(row.sum()) == 0
    assert abs(float((row**2).mean()) - p.ptable.params.V) < 0.01


# --- sdc-report -------------------------------------------------------------------------------


def test_sdc_report_figures_match_raw_against_published(any_workspace: Workspace) -> None:
    """The report's figures, recomputed here from the raw cells and the cells the public API
    publishes for the same level and period."""
    hb = any_workspace.cube("housing_benefit")
    report = sdc_report(hb, "geography:la", "2026-09").to_json()
    kw: dict[str, Any] = {"drilldown": "geography:la", "cut": "time:2026,3,9"}
    raw = _by_key(hb._raw_aggregate(_query(any_workspace, "housing_benefit", **kw)).cells,
                  ["geography.la_code"])
    pub = _by_key(hb.aggregate(**kw).cells, ["geography.la_code"])
    n = np.array([raw[k][N] for k in raw])
    n_hat = np.array([pub[k]["claimants"] for k in raw])
    p, q = n / n.sum(), n_hat / n_hat.sum()
    rel = [abs(_pence(pub[k]["weekly_award_mean"]) - raw[k]["__weekly_award_sum"] / raw[k][N])
           / (raw[k]["__weekly_award_sum"] / raw[k][N])
           for k in raw if not pub[k]["weekly_award_mean_withheld"]]
    assert report["period"] == "2026-09" and report["cells"] == len(raw) == 35
    assert report["mean_absolute_deviation"] == pytest.approx(np.abs(n_hat - n).mean())
    assert report["share_changed"] == pytest.approx((n_hat != n).mean())
    assert report["hellinger_distance"] == pytest.approx(
        math.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()))
    (mean,) = report["means"]
    assert mean["aggregate"] == "weekly_award_mean" and mean["published"] == len(rel)
    assert mean["mean_relative_error"] == pytest.approx(float(np.mean(rel)))
    assert 0 < report["mean_absolute_deviation"] <= 3 and report["hellinger_utility"] > 0.99


def test_sdc_report_command_prints_aggregate_figures_only(
        any_workspace: Workspace, any_warehouse: str, capsys: pytest.CaptureFixture[str]
        ) -> None:
    from cli.main import main

    assert main(["sdc-report", "--cube", "housing_benefit", "--level", "geography:la",
                 "--warehouse", any_warehouse]) == 0
    out = capsys.readouterr().out
    for label in ("claimants: mean absolute deviation", "claimants: share of cells changed",
                  "claimants: Hellinger distance", "relative error of LA means"):
        assert label in out
    # No raw LA figure (count, sum or maximum, in pence or pounds) is printed.
    hb = any_workspace.cube("housing_benefit")
    raw = hb._raw_aggregate(_query(any_workspace, "housing_benefit", drilldown="geography:la"))
    tokens = set(out.replace("(", " ").replace(")", " ").replace(",", "").split())
    for name in (N, "__weekly_award_sum", "__weekly_award_max"):
        for v in raw.cells.column(name).to_pylist():
            assert str(v) not in tokens and f"{v / 100:.2f}" not in tokens
    assert main(["sdc-report", "--cube", "nino_registrations", "--level", "world_area",
                 "--period", "2026-Q3", "--warehouse", any_warehouse, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["period"] == "2026-Q3" and doc["means"] == [] and doc["cells"] == 10


def test_sdc_report_refusals(any_workspace: Workspace) -> None:
    hb = any_workspace.cube("housing_benefit")
    with pytest.raises(ArgumentError, match="at least 10"):
        sdc_report(hb, "geography:country")
    with pytest.raises(ArgumentError, match="YYYY-MM"):
        sdc_report(hb, "geography:la", "September")
    with pytest.raises(ArgumentError, match="exactly one level"):
        sdc_report(hb, "geography:la|tenure")
    nino = any_workspace.cube("nino_registrations")
    assert sdc_report(nino, "geography:la", "2026-08") == sdc_report(nino, "geography:la",
                                                                    "2026-Q3")


def test_a_summary_is_the_same_whichever_path_answers_it(any_workspace: Workspace) -> None:
    """Without a drilldown there are no cells; ordering or filtering on values must not
    change the summary (nor empty it)."""
    hb = any_workspace.cube("housing_benefit")
    plain = hb.aggregate(cut="geography:E92000001")
    for kw in ({"order": "claimants:desc"}, {"having": "claimants>0"},
               {"order": "weekly_award_mean", "pagesize": 3}):
        other = hb.aggregate(cut="geography:E92000001", **kw)
        assert other.summary == plain.summary and other.summary["claimants"] > 0
        assert other.cells.num_rows == 0 and other.total_cell_count == 0


@pytest.mark.unit
def test_the_readme_explains_what_the_code_does(model: Model) -> None:
    """The README's disclosure section names every rule the gate can refuse with, the
    parameters in force and the report's figures."""
    from cube.disclosure.rules import RULE_OA_CATEGORIES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("<!-- section: sdc -->"):
                     readme.index("<!-- section: server -->")]
    assert f"`{RULE_OA_CATEGORIES}`" in section
    assert "custom group" in section and "sum of the published" in section
    d = model.disclosure
    params = d["ptable"]
    assert f"`D = {params['D']}`" in section and f"`js = {params['js']}`" in section
    assert f"`K = {params['K']}`" in section
    for key, value in d["magnitude"].items():
        assert f"`{key} = {value}`" in section
    for label in ("mean absolute deviation", "share of cells changed", "Hellinger distance",
                  "relative error of LA means", "`..`", "sdc_ptable"):
        assert label in section
