"""Release calendars and embargo in the core (cube/releases.py): publication times in
Europe/London, selection of releases, unpublished releases reported as unknown, and views of
the warehouse that cannot see past a release's last period."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_server_support import calendar_toml

from cube.errors import ConfigError, NoSuchCubeError, NotFoundError
from cube.model import Model
from cube.releases import (
    LONDON,
    Calendar,
    Release,
    ReleaseSet,
    build_id,
    cell_details,
    quarterly_calendar,
    warehouse_calendar,
)
from cube.workspace import Workspace

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=LONDON)
DEMO_MONTHS = [f"{y}-{m:02d}" for y, m in
               [(2025, m) for m in range(4, 13)] + [(2026, m) for m in range(1, 12)]]


@pytest.mark.unit
def test_demo_calendar_is_quarterly_with_one_future_release() -> None:
    cal = quarterly_calendar(DEMO_MONTHS)
    assert [(r.id, r.published.isoformat(), f"{r.last_period[0]}-{r.last_period[1]:02d}")
            for r in cal.releases] == [
        ("2025-08", "2025-08-12T09:30:00+01:00", "2025-05"),
        ("2025-11", "2025-11-11T09:30:00+00:00", "2025-08"),
        ("2026-02", "2026-02-10T09:30:00+00:00", "2025-11"),
        ("2026-05", "2026-05-12T09:30:00+01:00", "2026-02"),
        ("2026-08", "2026-08-11T09:30:00+01:00", "2026-05"),
        ("2026-11", "2026-11-10T09:30:00+00:00", "2026-08"),
        ("2027-02", "2027-02-09T09:30:00+00:00", "2026-11"),
    ]
    assert all(r.published.weekday() == 1 for r in cal.releases)  # Tuesdays
    assert [r.id for r in cal.published(NOW)][-1] == "2026-11"
    assert not cal.releases[-1].is_published(NOW)
    assert cal.next_publication(NOW) == datetime(2027, 2, 9, 9, 30, tzinfo=LONDON)


@pytest.mark.unit
def test_publication_is_london_wall_clock_across_summer_time() -> None:
    cal = Calendar.from_data(json.loads(json.dumps({"releases": [
        {"id": "summer", "published": "2026-08-11T09:30", "last_period": "2026-05"},
        {"id": "winter", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "explicit", "published": "2026-12-01T09:30:00+00:00", "last_period": "2026-09"},
    ]})))
    summer, winter, explicit = cal.releases
    assert summer.published.astimezone(UTC).hour == 8  # BST: 09:30 London = 08:30 UTC
    assert winter.published.astimezone(UTC).hour == 9  # GMT
    assert explicit.published == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    before = datetime(2026, 8, 11, 8, 29, 59, tzinfo=UTC)
    assert not summer.is_published(before)
    assert summer.is_published(datetime(2026, 8, 11, 8, 30, tzinfo=UTC))


@pytest.mark.unit
def test_select() -> None:
    cal = Calendar.from_data({"release": [
        {"id": "2026-08", "published": "2026-08-11T09:30", "last_period": "2026-06"},
        {"id": "2026-11", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "2027-02", "published": "2027-02-09T09:30", "last_period": "2026-11"},
    ]})
    assert cal.select(None, NOW, embargo_exempt=False).id == "2026-11"
    assert cal.select(None, NOW, embargo_exempt=True).id == "2026-11"  # default: published
    assert cal.select("2026-08", NOW, embargo_exempt=False).id == "2026-08"
    assert cal.select("2027-02", NOW, embargo_exempt=True).id == "2027-02"
    with pytest.raises(NotFoundError) as future:
        cal.select("2027-02", NOW, embargo_exempt=False)
    with pytest.raises(NotFoundError) as unknown:
        cal.select("2099-02", NOW, embargo_exempt=False)
    for exc, value in ((future.value, "2027-02"), (unknown.value, "2099-02")):
        assert exc.status == 404 and exc.parameter == "release" and exc.value == value
        assert str(exc) == f"unknown release {value!r}"
        assert "2027-02" not in (exc.hint or "")
    early = datetime(2026, 1, 1, tzinfo=LONDON)
    with pytest.raises(NotFoundError, match="no release has been published yet"):
        cal.select(None, early, embargo_exempt=False)


@pytest.mark.unit
def test_calendar_files_round_trip(tmp_path: Path) -> None:
    toml = tmp_path / "releases.toml"
    toml.write_text(calendar_toml(), encoding="utf-8")
    cal = Calendar.load(toml)
    assert [r.id for r in cal.releases] == ["2026-08", "2026-11", "2027-02"]
    again = tmp_path / "again.toml"
    again.write_text(cal.to_toml(), encoding="utf-8")
    assert Calendar.load(again) == cal
    as_json = tmp_path / "releases.json"
    as_json.write_text(json.dumps({"releases": [
        {"id": "r1", "published": "2026-11-10T09:30", "last_period": "2026-08",
         "warehouse": "w/r1.duckdb"}]}), encoding="utf-8")
    (r1,) = Calendar.load(as_json).releases
    assert r1.warehouse == str(tmp_path / "w" / "r1.duckdb")  # relative to the file
    native = tmp_path / "native.toml"  # TOML's own local date-time type works too
    native.write_text('[[release]]\nid = "n"\npublished = 2026-11-10T09:30:00\n'
                      'last_period = "2026-08"\n', encoding="utf-8")
    assert Calendar.load(native).releases[0].published.tzinfo is LONDON


@pytest.mark.unit
@pytest.mark.parametrize(("entries", "message"), [
    ([], "empty"),
    ([{"id": "a", "published": "2026-11-10T09:30"}], "needs id, published and last_period"),
    ([{"id": "a", "published": "soon", "last_period": "2026-08"}], "date-time"),
    ([{"id": "a", "published": "2026-11-10T09:30", "last_period": "2026-13"}], "month"),
    ([{"id": "a b", "published": "2026-11-10T09:30", "last_period": "2026-08"}], "release id"),
    ([{"id": "a", "published": "2026-11-10T09:30", "last_period": "2026-08", "x": 1}],
     "unknown keys"),
    ([{"id": "a", "published": "2026-11-10T09:30", "last_period": "2026-08"}] * 2,
     "more than once"),
])
def test_bad_calendars(entries: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Calendar.from_data({"release": entries})


@pytest.mark.unit
def test_release_needs_a_time_zone() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        Release("a", datetime(2026, 1, 1), (2025, 10))  # naive: the point of the test


@pytest.mark.integration
def test_views_hide_later_periods(model: Model, warehouse: Path) -> None:
    cal = Calendar.from_data({"release": [
        {"id": "2026-11", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "2027-02", "published": "2027-02-09T09:30", "last_period": "2026-11"}]})
    rs = ReleaseSet(model, cal, warehouse)
    try:
        published, future = cal.releases
        hb = rs.browser(published, "housing_benefit")
        assert hb is rs.browser(published, "housing_benefit")  # one browser per release
        assert hb.latest_period == (2026, 8)
        assert rs.browser(future, "housing_benefit").latest_period == (2026, 11)
        months = hb.members("time", depth=3).members.column("time.month").to_pylist()
        assert months == [6, 7, 8]
        cells = hb.aggregate(drilldown="time:month").cells
        assert cells.column("time.month").to_pylist() == [6, 7, 8]
        nino = rs.browser(published, "nino_registrations")
        quarters = nino.aggregate(drilldown="time:quarter").cells
        assert quarters.column("time.quarter").to_pylist() == [2]  # Q3 ends in September
        assert rs.fingerprint(published) != rs.fingerprint(future)
        with pytest.raises(NoSuchCubeError):
            rs.browser(published, "nope")
        hidden = cell_details(hb, "time:2026,4,11|time:2026,3,8")
        assert hidden[0]["paths"] == [None]  # exactly as a month that does not exist
        assert hidden[1]["paths"][0][2]["_label"] == "Aug 2026"
        shown = cell_details(rs.browser(future, "housing_benefit"), "time:2026,4,11")
        assert shown[0]["paths"][0][2]["_label"] == "Nov 2026"
    finally:
        rs.close()


@pytest.mark.integration
def test_without_a_calendar_the_warehouse_is_one_published_release(model: Model,
                                                                    warehouse: Path) -> None:
    rs = ReleaseSet.open(model, warehouse)
    try:
        (only,) = rs.calendar.releases
        assert only.is_published(NOW) and only.last_period == (2026, 11)
        assert rs.browser(only, "housing_benefit").latest_period == (2026, 11)
    finally:
        rs.close()


@pytest.mark.integration
def test_missing_warehouse_is_a_config_error(model: Model, tmp_path: Path) -> None:
    cal = Calendar.from_data({"release": [
        {"id": "r", "published": "2026-11-10T09:30", "last_period": "2026-08"}]})
    with pytest.raises(ConfigError, match="no default warehouse"):
        ReleaseSet(model, cal, None)
    with pytest.raises(ConfigError, match="not found"):
        ReleaseSet(model, cal, tmp_path / "missing.duckdb")


@pytest.mark.unit
@given(meta=st.dictionaries(st.sampled_from(["release", "built_at", "model", "months",
                                             "ptable_digest", "cubes"]),
                            st.one_of(st.text(max_size=8), st.lists(st.text(max_size=4))),
                            min_size=1),
       key=st.sampled_from(["release", "built_at", "model", "months", "ptable_digest"]),
       other=st.text(max_size=8))
def test_a_build_id_is_its_meta_whatever_the_order(meta: dict[str, object], key: str,
                                                    other: str) -> None:
    """Exports record it and the server compares it: the same meta in any order is the
    same build; any change to it — a rebuild's new built_at above all — is another."""
    assert build_id(dict(reversed(list(meta.items())))) == build_id(meta)
    assert re.fullmatch(r"[0-9a-f]{64}", build_id(meta))
    changed = {**meta, key: other}
    assert (build_id(changed) == build_id(meta)) == (changed == meta)


@pytest.mark.integration
def test_releases_served_from_one_warehouse_share_its_build(model: Model, warehouse: Path,
                                                            workspace: Workspace) -> None:
    rs = ReleaseSet(model, Calendar.from_data(tomllib.loads(calendar_toml())), warehouse)
    try:
        assert {rs.build(r) for r in rs.calendar.releases} == {build_id(workspace.meta)}
    finally:
        rs.close()
    single = warehouse_calendar(workspace)
    assert [(r.id, r.last_period) for r in single.releases] == [("2026-11", (2026, 11))]
    assert single.releases[0].is_published(NOW)


@pytest.mark.unit
def test_the_clock_setting_fixes_now_for_every_output() -> None:
    """STATCUBE_CLOCK: one 'now' for the server, the CLI and exports (demos, documentation
    tests, rehearsing a publication); a bad value is a one-line error naming it."""
    from cube.errors import ConfigError
    from cube.settings import Settings

    calendar = quarterly_calendar([f"2026-{m:02d}" for m in range(1, 12)])
    before = Settings.from_env({"STATCUBE_CLOCK": "2027-02-09T09:29:00+00:00"}).now()
    after = Settings.from_env({"STATCUBE_CLOCK": "2027-02-09T09:30Z"}).now()
    assert calendar.latest(before).id == "2026-11"
    assert calendar.latest(after).id == "2027-02"
    assert Settings(clock="2026-12-02T12:00").now().utcoffset() is not None  # naive is UTC
    with pytest.raises(ConfigError, match="'tomorrow'"):
        Settings(clock="tomorrow").now()
