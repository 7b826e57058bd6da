"""Members and cell details from a browser's copy of small hierarchies
(:meth:`cube.workspace.CubeBrowser.member_copy`) answer exactly what the engine answers.

Every comparison is against a browser of the same release view whose copies are off
(``MEMBER_COPY_ROWS = 0``: every lookup is a statement, as before copies existed), on DuckDB
and PostgreSQL: random cuts (points, sets, ranges, inverted; existing paths, made-up keys,
months after the view's period), random member listings (depth, level, paging past the end,
fields), and whole HTTP responses under every role and release of the test calendar. The
embargo holds in a copy exactly as in the statement (a view's copy has no month after its
period), and a replaced build is never answered from the old build's copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_support import KEYS, make_app

from cube.model import Model
from cube.releases import Calendar, ReleaseSet, cell_details
from cube.workspace import CubeBrowser, Workspace
from server.app import service

pytestmark = pytest.mark.integration

CUBES = ("housing_benefit", "pip", "universal_credit", "sanctions", "nino_registrations")


def plain(browser: CubeBrowser) -> CubeBrowser:
    """A browser of the same view that asks the engine every time (no copies)."""
    fresh = CubeBrowser(browser.ws, browser.cube)
    fresh.MEMBER_COPY_ROWS = 0
    return fresh


@pytest.fixture(scope="module")
def paths(any_workspace: Workspace) -> dict[tuple[str, str, str], list[list[str]]]:
    """Existing key paths per (cube, dimension, hierarchy), every depth, read by statements."""
    out: dict[tuple[str, str, str], list[list[str]]] = {}
    for name in CUBES:
        b = plain(any_workspace.cube(name))
        for dim in b.cube.dimensions:
            for hier in dim.hierarchies:
                found: list[list[str]] = []
                for depth in range(1, len(hier.levels) + 1):
                    rows = b.members(dim.name, hierarchy=hier.name, depth=depth,
                                     pagesize=400).members.to_pylist()
                    keys = [lvl.key.ref for lvl in hier.levels[:depth]]
                    found += [[str(r[k]) for k in keys] for r in rows[:: max(1, len(rows) // 12)]]
                out[(name, dim.name, hier.name)] = found
    return out


@st.composite
def cuts(draw: st.DrawFn, keys: list[tuple[str, str, str]],
         paths: dict[tuple[str, str, str], list[list[str]]], cube: str) -> str:
    mine = [k for k in keys if k[0] == cube]
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        _, dim, hier = draw(st.sampled_from(mine))

        def path(dim: str = dim, hier: str = hier) -> list[str]:
            p = list(draw(st.sampled_from(paths[(cube, dim, hier)])))
            change = draw(st.sampled_from(["keep", "keep", "keep", "unknown", "future"]))
            if change == "unknown":
                p[-1] = p[-1] + "9" if p[-1].isdigit() else p[-1] + "x"
            elif change == "future" and dim == "time":
                p = ["2026", "4", "11", "9"][: len(p)]  # after some views' period
            return p

        at = draw(st.sampled_from(["", f"@{hier}"]))
        invert = draw(st.sampled_from(["", "", "!"]))
        kind = draw(st.sampled_from(["point", "set", "range", "open"]))
        if kind == "point":
            body = ",".join(path())
        elif kind == "set":
            body = ";".join(",".join(path()) for _ in range(draw(st.integers(2, 3))))
        elif kind == "range":
            body = f"{','.join(path())}-{','.join(path())}"
        else:
            body = f"{','.join(path())}-" if draw(st.booleans()) else f"-{','.join(path())}"
        parts.append(f"{invert}{dim}{at}:{body}")
    return "|".join(parts)


@pytest.mark.parametrize("until", [None, (2026, 8)], ids=["whole", "to-2026-08"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cell_details_from_copies_are_the_engines(
        any_workspace: Workspace, paths: dict[tuple[str, str, str], list[list[str]]],
        until: tuple[int, int] | None, data: st.DataObject) -> None:
    view = any_workspace.view(until)
    cube = data.draw(st.sampled_from(CUBES))
    cut = data.draw(cuts(sorted(paths), paths, cube))
    browser = view.cube(cube)
    assert browser.cell_details(cut) == plain(browser).cell_details(cut), cut


@st.composite
def listings(draw: st.DrawFn, model: Model) -> tuple[str, dict[str, Any]]:
    cube = draw(st.sampled_from(CUBES))
    dim = draw(st.sampled_from(model.cube(cube).dimensions))
    hier = draw(st.sampled_from(dim.hierarchies))
    kw: dict[str, Any] = {"hierarchy": hier.name}
    how = draw(st.sampled_from(["depth", "level", "default"]))
    if how == "depth":
        kw["depth"] = draw(st.integers(1, len(hier.levels)))
    elif how == "level":
        kw["level"] = draw(st.sampled_from(hier.levels)).name
    if draw(st.booleans()):
        kw["pagesize"] = draw(st.sampled_from([1, 2, 5, 40, 1000]))
        kw["page"] = draw(st.sampled_from([None, 0, 1, 3, 10_000]))
    if draw(st.integers(0, 4)) == 0:
        kw["fields"] = [hier.levels[0].key.ref]
    return cube, {"dimension": dim.name, **kw}


@pytest.mark.parametrize("until", [None, (2026, 8)], ids=["whole", "to-2026-08"])
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_members_from_copies_are_the_engines(any_workspace: Workspace,
                                            until: tuple[int, int] | None,
                                            data: st.DataObject) -> None:
    view = any_workspace.view(until)
    cube, kw = data.draw(listings(any_workspace.model))
    browser = view.cube(cube)
    try:
        expected = plain(browser).members(**kw)
    except Exception as exc:  # a high-cardinality level without a page: refused alike
        with pytest.raises(type(exc)):
            browser.members(**kw)
        return
    got = browser.members(**kw)
    assert got.members.equals(expected.members, check_metadata=True), (cube, kw)
    assert (got.dimension, got.hierarchy, got.depth, got.total_member_count) == (
        expected.dimension, expected.hierarchy, expected.depth, expected.total_member_count)


def test_small_hierarchies_are_copied_and_large_ones_are_not(any_workspace: Workspace
                                                              ) -> None:
    hb = any_workspace.view(None).cube("housing_benefit")
    geo = hb.cube.dimension("geography")
    ons = geo.hierarchy(None)
    assert hb.member_copy(geo, ons, 2) is not None  # countries and regions
    small = CubeBrowser(hb.ws, hb.cube)
    small.MEMBER_COPY_ROWS = 30  # fewer than the local authorities
    assert small.member_copy(geo, ons, 2) is not None
    assert small.member_copy(geo, ons, 3) is None
    path = ["E92000001", "E12000007"]
    la = small.members("geography", level="la", pagesize=1).members.to_pylist()[0]
    deep = f"geography:{la['geography.country_code']},{la['geography.region_code']}," \
           f"{la['geography.la_code']}"
    assert small.cell_details(deep) == plain(hb).cell_details(deep)  # asked of the engine
    assert small.cell_details("geography:" + ",".join(path)) == \
        plain(hb).cell_details("geography:" + ",".join(path))


def test_a_views_copy_holds_no_later_month(model: Model, warehouse: Path) -> None:
    """The future release's browser is asked first, so its copy of the months exists; the
    published release's browser still answers an embargoed month as one that does not
    exist, and lists none."""
    cal = Calendar.from_data({"release": [
        {"id": "2026-11", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "2027-02", "published": "2027-02-09T09:30", "last_period": "2026-11"}]})
    rs = ReleaseSet(model, cal, warehouse)
    try:
        published, future = cal.releases
        later = rs.browser(future, "housing_benefit")
        assert cell_details(later, "time:2026,4,11")[0]["paths"][0] is not None
        assert later.members("time", depth=3).members.column("time.month").to_pylist()[-1] \
            == 11
        hb = rs.browser(published, "housing_benefit")
        assert cell_details(hb, "time:2026,4,11")[0]["paths"] == [None]
        assert cell_details(hb, "time:2026,4")[0]["paths"] == [None]  # Q4 begins in October
        months = hb.members("time", depth=3).members.column("time.month").to_pylist()
        assert months == [6, 7, 8]
        quarters = hb.members("time", depth=2, pagesize=10)
        assert quarters.members.column("time.quarter").to_pylist() == [2, 3]
        assert quarters.total_member_count == 2
    finally:
        rs.close()


def test_a_replaced_build_is_not_answered_from_the_old_copy(model: Model, warehouse: Path,
                                                             tmp_path: Path) -> None:
    place = tmp_path / "warehouse.duckdb"
    shutil.copyfile(warehouse, place)
    rs = ReleaseSet(model, None, place, lazy=True)
    try:
        release = rs.calendar.releases[-1]
        rs.pin()
        before = rs.browser(release, "housing_benefit")
        assert cell_details(before, "tenure:private")[0]["paths"][0][0]["_label"] == \
            "Private rented"
        rs.unpin()
        rebuilt = tmp_path / "rebuilt.duckdb"
        shutil.copyfile(place, rebuilt)
        with duckdb.connect(str(rebuilt)) as con:  # a rebuild that renamed a member
            con.execute("UPDATE dim_tenure SET tenure_name = 'Renting privately' "
                        "WHERE tenure_code = 'private'")
            con.execute("UPDATE statcube_meta SET value = '\"2099-01-01T00:00:00+00:00\"' "
                        "WHERE key = 'built_at'")
        rebuilt.replace(place)
        rs.pin()
        after = rs.browser(release, "housing_benefit")
        assert after is not before
        assert cell_details(after, "tenure:private")[0]["paths"][0][0]["_label"] == \
            "Renting privately"
        labels = after.members("tenure").members.column("tenure.tenure_name").to_pylist()
        assert "Renting privately" in labels and "Private rented" not in labels
        rs.unpin()
    finally:
        rs.close()


# --- whole responses ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def apps(any_warehouse: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Flask, Flask]]:
    """Two apps over the same warehouse: the second's browsers are made without copies."""
    with_copies = make_app(any_warehouse, tmp_path_factory.mktemp("copies"))
    without = make_app(any_warehouse, tmp_path_factory.mktemp("no-copies"))
    yield with_copies, without
    for app in (with_copies, without):
        service(app).releases.close()


ROLES = {"guest": {}, "registered": {"APIKey": KEYS["registered"]},
         "prerelease": {"APIKey": KEYS["prerelease"]}}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_responses_from_copies_are_byte_identical(
        apps: tuple[Flask, Flask], paths: dict[tuple[str, str, str], list[list[str]]],
        monkeypatch: pytest.MonkeyPatch, data: st.DataObject) -> None:
    role = data.draw(st.sampled_from(sorted(ROLES)))
    release = data.draw(st.sampled_from(["", "&release=2026-08", "&release=2027-02"]))
    if data.draw(st.booleans()):
        cube = data.draw(st.sampled_from(CUBES))
        url = f"/cube/{cube}/cell?cut={data.draw(cuts(sorted(paths), paths, cube))}"
    else:
        cube, kw = data.draw(listings(service(apps[0]).model))
        dim = kw.pop("dimension")
        query = "&".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                         for k, v in kw.items() if v is not None)
        fmt = data.draw(st.sampled_from(["", "", "&format=csv", "&format=arrow",
                                         "&format=json_lines"]))
        url = f"/cube/{cube}/members/{dim}?{query}{fmt}"
    url += release + data.draw(st.sampled_from(["", "", "&lang=cy"]))
    got = apps[0].test_client().get(url, headers=ROLES[role])
    with monkeypatch.context() as m:
        m.setattr(CubeBrowser, "MEMBER_COPY_ROWS", 0)
        expected = apps[1].test_client().get(url, headers=ROLES[role])
    assert got.status_code == expected.status_code, url
    if got.status_code >= 400:  # errors carry the request id
        got_json, expected_json = got.get_json(), expected.get_json()
        got_json.pop("request_id"), expected_json.pop("request_id")
        assert got_json == expected_json, url
        return
    assert got.data == expected.data, url
    for name in ("Content-Type", "ETag", "Cache-Control", "X-Statcube-Release"):
        assert got.headers.get(name) == expected.headers.get(name), (url, name)



@pytest.mark.parametrize("fmt", ["json", "csv", "arrow", "parquet", "json_lines"])
def test_member_pages_in_every_format_are_byte_identical(apps: tuple[Flask, Flask],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         fmt: str) -> None:
    """Pages are where a copy could differ in bytes and not in values (a slice of the
    copy's arrays is written differently in Arrow IPC): every page of a few listings."""
    urls = [f"/cube/{cube}/members/{dim}?format={fmt}&pagesize={size}&page={page}{extra}"
            for cube, dim in (("benefit_cap", "geography"), ("pip", "time"),
                              ("sanctions", "benefit"))
            for size, page in ((1, 0), (1, 2), (3, 1), (40, 1), (7, 900))
            for extra in ("", "&lang=cy", "&depth=1")]
    got = [apps[0].test_client().get(u) for u in urls]
    with monkeypatch.context() as m:
        m.setattr(CubeBrowser, "MEMBER_COPY_ROWS", 0)
        expected = [apps[1].test_client().get(u) for u in urls]
    for u, g, e in zip(urls, got, expected, strict=True):
        assert (g.status_code, g.data) == (e.status_code, e.data), u
        assert g.status_code == 200, u


def test_a_key_out_of_any_columns_range_is_a_path_no_member_has(apps: tuple[Flask, Flask]
                                                                 ) -> None:
    """On PostgreSQL this was a 503 (the integer did not fit the bound parameter's type);
    DuckDB answered null. From the copy both answer null, as for any missing member."""
    resp = apps[0].test_client().get(
        "/cube/housing_benefit/cell?cut=time:2026,4,99999999999999999999999|tenure:nope")
    assert resp.status_code == 200
    assert [c["details"] for c in resp.get_json()["cuts"]] == [None, None]
