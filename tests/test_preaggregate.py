"""The exports' two-step aggregation (cube/sql.py ``_preaggregated``: on the fact table
first, then joined to the dimensions) gives exactly the cells of the one-step form, protected
and raw, for every grain of every cube, and falls back to the one-step form where it does not
apply."""

from __future__ import annotations

import pytest

from cube import sql as compiler
from cube.disclosure.sql_path import protected_stage
from cube.export import grain_query, grains_for, visible_periods
from cube.query import Query, Request
from cube.workspace import Workspace

pytestmark = pytest.mark.integration


def test_every_grain_gives_the_same_cells_preaggregated(workspace: Workspace) -> None:
    p = workspace.gate.protection
    checked = 0
    for name in workspace.cube_names:
        browser = workspace.cube(name)
        period = visible_periods(browser)[-1]
        for g in grains_for(browser.cube):
            q = grain_query(browser, g, period)
            for stage, keep_raw in ((protected_stage(p), False), (compiler.raw_values, True)):
                one = compiler.finish(q, p.k, stage, keep_raw=keep_raw)
                two = compiler.finish(q, p.k, stage, keep_raw=keep_raw, preaggregate=True)
                assert "pre" in str(two) and "pre" not in str(one).split("FROM")[-1]
                expected, got = workspace.engine.execute(one), workspace.engine.execute(two)
                assert got.num_rows > 0 and got.equals(expected), (name, g.name)
                checked += 1
    assert checked >= 2 * 30


def test_queries_it_does_not_handle_fall_back(workspace: Workspace) -> None:
    browser = workspace.cube("housing_benefit")
    p = workspace.gate.protection
    # A cut on the geography table (a country), not on a column of the fact: one step.
    q = Query.from_request(browser.cube, Request.make(
        "housing_benefit", cut="geography:E92000001", drilldown="tenure"),
        browser.latest_period, browser.period_limit)
    one = compiler.finish(q, p.k, protected_stage(p), keep_raw=False)
    two = compiler.finish(q, p.k, protected_stage(p), keep_raw=False, preaggregate=True)
    assert str(one) == str(two)
