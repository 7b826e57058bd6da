"""Custom groups are sums of published predefined cells — attacks from the issue, reproduced.

Before: a set cut, a negated cut, a split or two cuts through different hierarchies formed a
new record set with fresh noise, and averaging many of them recovered small cells exactly
(102/102 LA × month × reason sanctions cells from 1,500 set-cut queries; 86 of 93 monthly
counts of an LA ∩ constituency piece one LSOA large). Now every such value must equal the
sum of the published values of the predefined cells that tile it, computed here
independently: tiles from the members API and plain Python sets, each tile's value from a
direct point-cut query. Then no number of custom groups tells more than the cells do.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import QueryArgs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cube.disclosure.groups import is_predefined
from cube.query import Request
from cube.settings import Settings
from cube.workspace import CubeBrowser, Workspace
from server import create_app
from server.app import service

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("country", "region", "la", "msoa", "lsoa", "oa")


# --- an independent oracle ------------------------------------------------------------------

def _oas(b: CubeBrowser, cut: str) -> list[dict[str, Any]]:
    """Every OA of a geography cut (one or several cuts on geography), with its ons path."""
    oas: list[dict[str, Any]] = b.members("geography", level="oa", cut=cut,
                                          pagesize=100_000).members.to_pylist()
    return oas


def _path(row: dict[str, Any], depth: int) -> tuple[str, ...]:
    return tuple(row[f"geography.{lv}_code"] for lv in LEVELS[:depth])


def oracle_tiles(inside: list[dict[str, Any]], universe: list[dict[str, Any]]
                 ) -> list[tuple[str, ...]]:
    """Coarsest ons members wholly inside ``inside`` (OA rows), ``universe`` being every OA
    of the members that could be tiles (here: of the LAs involved)."""
    chosen = {_path(r, 6) for r in inside}
    members: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    for r in universe:
        for depth in range(3, 7):  # la .. oa (the universe is whole LAs)
            members[_path(r, depth)].add(_path(r, 6))
    tiles = []
    for path, oas in members.items():
        if oas <= chosen and not (len(path) > 3 and members[path[:-1]] <= chosen):
            tiles.append(path)
    return tiles


def published(b: CubeBrowser, geo_path: tuple[str, ...], extra: str = "") -> dict[str, Any]:
    """The published summary of one predefined cell: a point cut on an ons path."""
    cut = "geography:" + ",".join(geo_path) + (f"|{extra}" if extra else "")
    q = b.query(Request.make(b.cube.name, cut=cut))
    assert is_predefined(q)
    return dict(b.aggregate_query(q).summary)


def oracle_sum(b: CubeBrowser, tiles: list[tuple[str, ...]], extra: str = "",
               count: str = "claimants") -> int:
    return sum(int(published(b, t, extra)[count] or 0) for t in tiles)


@pytest.fixture(scope="module")
def la(any_workspace: Workspace) -> dict[str, Any]:
    """An LA with several MSOAs and constituencies, with all its OAs."""
    hb = any_workspace.cube("housing_benefit")
    las = hb.members("geography", level="la").members.to_pylist()
    for row in las:
        path = ",".join(row[f"geography.{lv}_code"] for lv in ("country", "region", "la"))
        oas = _oas(hb, f"geography:{path}")
        msoas = {r["geography.msoa_code"] for r in oas}
        if len(msoas) >= 3:
            return {"path": path, "oas": oas}
    raise AssertionError("no LA with three MSOAs in the test data")


# --- sums of tiles, on sets and complements of OAs ------------------------------------------

@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(whole=st.integers(0, 50), picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=12),
       negate=st.booleans())
def test_a_set_of_oas_is_the_sum_of_the_published_cells_that_tile_it(
        any_workspace: Workspace, la: dict[str, Any], whole: int, picks: list[int],
        negate: bool) -> None:
    hb = any_workspace.cube("housing_benefit")
    oas = la["oas"]
    # A whole MSOA now and then, so coarser tiles are exercised too.
    msoas = sorted({r["geography.msoa_code"] for r in oas})
    picked = [r for r in oas if r["geography.msoa_code"] == msoas[whole % len(msoas)]] \
        if whole < len(msoas) else []
    picked += [oas[i % len(oas)] for i in picks]
    paths = sorted({",".join(_path(r, 6)) for r in picked})
    if negate:  # the LA minus those OAs: two cuts on geography, one inverted
        cut = f"geography:{la['path']}|!geography:" + ";".join(paths)
        chosen = {tuple(p.split(",")) for p in paths}
        inside = [r for r in oas if _path(r, 6) not in chosen]
    else:
        cut = "geography:" + ";".join(paths)
        inside = [r for r in oas if ",".join(_path(r, 6)) in paths]
    result = hb.aggregate(cut=cut)
    expected = oracle_sum(hb, oracle_tiles(inside, oas))
    assert result.summary["claimants"] == expected
    report = result.to_json()["disclosure"]
    custom = not is_predefined(result.query)
    assert custom == (negate or len(paths) > 1)
    if custom:
        assert report["sums_of_published_cells"]["values"] == 1


def test_a_custom_groups_mean_is_its_summed_total_over_its_summed_count(
        any_workspace: Workspace, la: dict[str, Any]) -> None:
    hb = any_workspace.cube("housing_benefit")
    msoas = sorted({r["geography.msoa_code"] for r in la["oas"]})[:2]
    cut = "geography:" + ";".join(f"{la['path']},{m}" for m in msoas)
    got = hb.aggregate(cut=cut).summary
    parts = [published(hb, (*la["path"].split(","), m)) for m in msoas]
    total = round(sum(p["weekly_award_sum"] for p in parts), 2)
    count = sum(p["claimants"] for p in parts)
    assert got["claimants"] == count and got["weekly_award_sum"] == pytest.approx(total)
    assert got["weekly_award_mean"] == pytest.approx(round(total / count, 2), abs=0.006)


# --- the LA ∩ constituency pieces (measured: 86 of 93 monthly counts recovered) ---------------

def test_cross_hierarchy_pieces_are_sums_of_ons_cells(any_workspace: Workspace,
                                                      la: dict[str, Any]) -> None:
    sanctions = any_workspace.cube("sanctions")
    hb = any_workspace.cube("housing_benefit")
    region = ",".join(la["path"].split(",")[:2])
    pcons = sorted({r["geography.pcon_code"] for r in _oas(
        hb, f"geography:{la['path']}")}) if "geography.pcon_code" in la["oas"][0] else []
    if not pcons:  # members of the ons hierarchy carry no constituency: ask that hierarchy
        pcons = [r["geography.pcon_code"] for r in sanctions.members(
            "geography", hierarchy="constituency", level="pcon",
            cut=f"geography@constituency:{region}").members.to_pylist()]
    drilled = {c["geography.pcon_code"]: c["decisions"] for c in sanctions.aggregate(
        cut=f"geography:{la['path']}", drilldown="geography@constituency:pcon").cells.to_pylist()}
    pieces = 0
    for pcon in pcons:
        cut = f"geography:{la['path']}|geography@constituency:{region},{pcon}"
        inside = _oas(sanctions, cut)
        if not inside:
            continue
        pieces += 1
        # Canonical tiling: the hierarchy needing fewer tiles (ties: the default, ons).
        ons = oracle_tiles(inside, la["oas"])
        whole_pcon = _oas(sanctions, f"geography@constituency:{region},{pcon}")
        by_pcon = [("pcon", pcon)] if len(whole_pcon) == len(inside) else \
            [("oa", r["geography.oa_code"]) for r in inside]
        if len(by_pcon) < len(ons):
            expected = sum(int(sanctions.aggregate(
                cut=f"geography@constituency:{region},{pcon}"
                    + ("" if kind == "pcon" else f",{code}")).summary["decisions"])
                for kind, code in by_pcon)
        else:
            expected = oracle_sum(sanctions, ons, count="decisions")
        assert sanctions.aggregate(cut=cut).summary["decisions"] == expected
        # The same piece as a drilled cell (the "split" variant of the attack).
        assert drilled.get(pcon, 0) == expected
        # And over a set of months: the sum of the piece's monthly values, nothing fresher.
        months = ";".join(f"2026,{(m - 1) // 3 + 1},{m}" for m in (7, 8, 10))
        by_month = sum(sanctions.aggregate(cut=f"{cut}|time:2026,{(m - 1) // 3 + 1},{m}")
                       .summary["decisions"] for m in (7, 8, 10))
        assert sanctions.aggregate(cut=f"{cut}|time:{months}").summary["decisions"] == by_month
    assert pieces >= 2


# --- averaging many custom groups (measured: 102/102 cells recovered) --------------------------

def test_averaging_custom_groups_recovers_nothing_beyond_the_published_cells(
        any_workspace: Workspace, la: dict[str, Any]) -> None:
    sanctions = any_workspace.cube("sanctions")
    q = sanctions.query(Request.make("sanctions", cut=f"geography:{la['path']}",
                                     drilldown="time:month|reason"))
    key = ("time.year", "time.quarter", "time.month", "reason.reason_code")

    def cells(table: Any) -> dict[tuple[Any, ...], int]:
        return {tuple(r[k] for k in key): int(r.get("decisions", r.get("__n", 0)) or 0)
                for r in table.to_pylist()}

    pub = cells(sanctions.aggregate_query(q).cells)
    # A quarter whose every month is selected is tiled by the quarter's own cell.
    quarters = {(r["time.year"], r["time.quarter"], r["reason.reason_code"]): r["decisions"]
                for r in sanctions.aggregate(cut=f"geography:{la['path']}",
                                             drilldown="time:quarter|reason").cells.to_pylist()}
    raw = {k: v for k, v in ((tuple(r[c] for c in key), r["__n"])
                             for r in sanctions._raw_aggregate(q).cells.to_pylist())}
    months = sorted({k[:3] for k in raw})
    reasons = sorted({k[3] for k in raw})
    rng = random.Random(12)

    def group_value(ms: list[tuple[Any, ...]], rs: list[str]) -> int:
        cut = (f"geography:{la['path']}|time:" + ";".join(",".join(map(str, m)) for m in ms)
               + "|reason:" + ";".join(rs))
        return int(sanctions.aggregate(cut=cut).summary["decisions"])

    def tiles_sum(ms: list[tuple[Any, ...]], rs: list[str]) -> int:
        total = 0
        for q in {m[:2] for m in ms}:
            in_q = [m for m in months if m[:2] == q]
            if all(m in ms for m in in_q):
                total += sum(quarters.get((*q, r), 0) for r in rs)
            else:
                total += sum(pub.get((*m, r), 0) for m in ms if m[:2] == q for r in rs)
        return total

    # 1. Every group is exactly the sum of its published cells.
    for _ in range(40):
        ms = rng.sample(months, rng.randint(1, len(months)))
        rs = rng.sample(reasons, rng.randint(1, len(reasons)))
        if len(ms) == len(months) and len(rs) == len(reasons):
            continue  # the LA's own (predefined) total
        if len(rs) == len(reasons) or len(ms) == len(months):
            continue  # a whole dimension (or the whole year) is tiled by its own total
        assert group_value(ms, rs) == tiles_sum(ms, rs)
    # 2. The attack: difference groups with and without a cell, averaged over many groups.
    recovered = 0
    direct = 0
    targets = [k for k in raw if 1 <= raw[k] <= 4][:12] or list(raw)[:12]
    for cell in targets:
        estimates = []
        for _ in range(8):
            # months of other quarters than the cell's, so no quarter is ever whole
            others = [m for m in months if m[:2] != cell[:2]]
            ms = [cell[:3], *rng.sample(others, 1)]
            rs = [cell[3], *rng.sample([r for r in reasons if r != cell[3]], 1)]
            with_cell = group_value(ms, rs)
            without = group_value(ms[1:], rs) + group_value([cell[:3]], rs[1:])
            estimates.append(with_cell - without)
        estimate = sum(estimates) / len(estimates)
        assert estimate == pub.get(cell, 0)  # the published value, never a fresher one
        recovered += estimate == raw[cell]
        direct += pub.get(cell, 0) == raw[cell]
    assert recovered == direct


# --- every route answers the same sums ------------------------------------------------------------

def test_http_json_and_csv_give_the_same_custom_group_values(
        any_workspace: Workspace, any_warehouse: str, la: dict[str, Any], tmp_path: Path
        ) -> None:
    app = create_app(Settings(model=str(ROOT / "model.json"), warehouse=any_warehouse,
                              data_dir=str(tmp_path), rate_limit_guest="100000/minute"))
    try:
        client = app.test_client()
        msoas = sorted({r["geography.msoa_code"] for r in la["oas"]})[:2]
        cut = "geography:" + ";".join(f"{la['path']},{m}" for m in msoas) + \
            "|tenure:private;social_la"
        url = f"/cube/housing_benefit/aggregate?cut={cut}&drilldown=age_band"
        doc = orjson.loads(client.get(url).get_data())
        py = any_workspace.cube("housing_benefit").aggregate(cut=cut, drilldown="age_band")
        assert doc["cells"] == py.to_json()["cells"] and doc["summary"] == py.summary
        csv_lines = client.get(url + "&format=csv").get_data(as_text=True).splitlines()
        assert len(csv_lines) == 1 + len(doc["cells"])
        for line, cell in zip(csv_lines[1:], doc["cells"], strict=True):
            assert line.split(",")[3] == str(cell["claimants"])
    finally:
        service(app).releases.close()


def test_predefined_queries_keep_the_direct_path(any_workspace: Workspace) -> None:
    """Queries whose every cell is one member per dimension are not custom groups (and so
    not sums): drilldowns under point cuts, set cuts drilled at their own level, a split
    that every drilled member lies wholly inside or outside of."""
    hb = any_workspace.cube("housing_benefit")
    predefined: tuple[QueryArgs, ...] = (
        {"drilldown": "geography:region|tenure"},
        {"cut": "geography:E92000001", "drilldown": "geography"},
        {"cut": "tenure:private;social_la", "drilldown": "tenure"},
        {"cut": "!geography:E92000001,E12000007", "drilldown": "geography:region"},
        {"drilldown": "geography:region", "split": "geography:E92000001,E12000007"},
        {"cut": "geography:E92000001,E12000007", "drilldown": "geography@constituency:pcon"})
    for kw in predefined:
        assert is_predefined(hb.query(Request.make("housing_benefit", **kw))), kw
        assert "sums_of_published_cells" not in hb.aggregate(**kw).to_json()["disclosure"]
    custom: tuple[QueryArgs, ...] = (
        {"cut": "tenure:private;social_la"},
        {"cut": "geography:E92000001,E12000007;E92000001,E12000008",
         "drilldown": "geography:country"},
        {"drilldown": "geography:country", "split": "geography:E92000001,E12000007"})
    for kw in custom:
        assert not is_predefined(hb.query(Request.make("housing_benefit", **kw))), kw


def test_paging_ordering_and_top_apply_to_the_summed_cells(any_workspace: Workspace,
                                                           la: dict[str, Any]) -> None:
    hb = any_workspace.cube("housing_benefit")
    cut = f"geography:{la['path']}|tenure:private;social_la"
    whole = hb.aggregate(cut=cut, drilldown="geography:msoa", order="claimants:desc")
    values = [c["claimants"] for c in whole.cells.to_pylist()]
    assert values == sorted(values, reverse=True) and whole.total_cell_count == len(values)
    pages = [hb.aggregate(cut=cut, drilldown="geography:msoa", order="claimants:desc",
                          pagesize=2, page=p) for p in range(len(values) // 2 + 1)]
    assert list(itertools.chain.from_iterable(
        [c["claimants"] for c in p.cells.to_pylist()] for p in pages)) == values
    assert all(p.total_cell_count == len(values) for p in pages)
    top = hb.aggregate(cut=cut, drilldown="geography:msoa", top="1:claimants")
    assert [c["claimants"] for c in top.cells.to_pylist()] == values[:1]
    having = hb.aggregate(cut=cut, drilldown="geography:msoa", having=f"claimants>{values[-1]}")
    assert all(c["claimants"] > values[-1] for c in having.cells.to_pylist())
