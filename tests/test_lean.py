"""The lean uncached path (issue 16): what was removed from every uncached request answers
exactly as before.

- Rate limiting without a thread per request (server/ratestore.py): the same fixed-window
  counts as flask-limiter's ``memory://`` store, expiry by window, and no timer thread left
  behind by a request.
- One DuckDB thread per server statement: the same answers as DuckDB's default.
- PostgreSQL without a ping before every statement: a dropped pooled connection is retried
  once, transparently.
- /cell details without a second members query per time path: a time path is shown iff the
  view's member listing has it (the check the removed query made), for every month and
  release view.
- SQL compiled once per query shape (cube/raw.py): a stream of distinct queries gets what
  compiling each afresh gives, values bound, in a bounded cache.
- Labels and order columns from a per-process copy of the small dimension tables instead of
  a join (DuckDB): the same published cells, order, summary and Welsh labels as the join.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Select
from test_server_support import make_app

from bench import bench_cubes
from cube import sql as compiler
from cube.model import Model
from cube.query import Query, Request
from cube.raw import RawCube
from cube.releases import Calendar, ReleaseSet, cell_details, open_releases
from cube.workspace import Workspace
from server.execute import in_language
from server.ratestore import SCHEME, WorkerMemoryStorage, storage_uri

pytest_plugins = ["pg"]
HB = "/cube/housing_benefit"


# --- rate limits without a thread per request ---------------------------------------------

class _Clocked(WorkerMemoryStorage):
    now = 1_000.0

    def __init__(self) -> None:
        self.clock = lambda: _Clocked.now
        super().__init__(f"{SCHEME}://")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 3)), max_size=40))
def test_counts_match_flask_limiters_memory_store(hits: list[tuple[str, int]]) -> None:
    """Within one window, the lean store allows and refuses exactly the requests
    ``memory://`` does (same fixed-window limiter over both)."""
    limit = parse("5/minute")
    ours, theirs = _Clocked(), MemoryStorage()
    try:
        a, b = FixedWindowRateLimiter(ours), FixedWindowRateLimiter(theirs)
        for key, cost in hits:
            assert a.hit(limit, key, cost=cost) == b.hit(limit, key, cost=cost)
            assert a.get_window_stats(limit, key).remaining == \
                b.get_window_stats(limit, key).remaining
    finally:
        theirs.timer.cancel()


def test_a_window_expires_and_unread_keys_are_swept() -> None:
    store = _Clocked()
    limiter = FixedWindowRateLimiter(store)
    limit = parse("2/second")
    assert limiter.hit(limit, "k") and limiter.hit(limit, "k")
    assert not limiter.hit(limit, "k")  # third in the window: refused
    _Clocked.now += 1.01
    assert limiter.hit(limit, "k")  # a new window
    limiter.hit(limit, "gone")
    _Clocked.now += 5
    store.incr("other", 60)  # any increment sweeps expired keys (at most once a second)
    assert set(store._counts) == {"other"}
    store.clear("other")
    assert store.get("other") == 0 and store.reset() == 0


def test_memory_setting_selects_the_lean_store() -> None:
    assert storage_uri("memory://") == f"{SCHEME}://"
    assert storage_uri("redis://cache:6379") == "redis://cache:6379"


@pytest.mark.integration
def test_requests_leave_no_timer_thread(warehouse: Path, tmp_path: Path) -> None:
    """``memory://`` started a ``threading.Timer`` for nearly every request; the lean store
    starts none, and the rate limit still answers 429 past the budget."""
    app = make_app(warehouse, tmp_path, rate_limit_guest="30/minute", cache_bytes=0)
    client = app.test_client()
    before = {t.ident for t in threading.enumerate()}
    for _ in range(12):
        assert client.get(f"{HB}/aggregate?drilldown=tenure").status_code == 200
        timers = [t for t in threading.enumerate()
                  if isinstance(t, threading.Timer) and t.ident not in before]
        assert timers == []
        time.sleep(0.012)  # past memory://'s 10 ms timer, which would start a new one
    statuses = [client.get("/version").status_code for _ in range(30)]
    assert statuses.count(429) == 12  # 30 per minute, 42 asked


# --- /cell details with one lookup per path -------------------------------------------------

@pytest.mark.integration
def test_time_paths_shown_exactly_when_the_view_lists_the_month(model: Model,
                                                                warehouse: Path) -> None:
    cal = Calendar.from_data({"release": [
        {"id": "2026-08", "published": "2026-08-11T09:30", "last_period": "2026-05"},
        {"id": "2026-11", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "2027-02", "published": "2027-02-09T09:30", "last_period": "2026-11"}]})
    rs = ReleaseSet(model, cal, warehouse)
    try:
        for release in cal.releases:
            for cube in ("housing_benefit", "nino_registrations"):
                browser = rs.browser(release, cube)
                full = rs.browser(cal.releases[-1], cube)  # every month the data has
                depth = 3 if cube == "housing_benefit" else 2
                every = full.members("time", depth=depth).members.to_pylist()
                listed = {tuple(r.values()) for r in
                          browser.members("time", depth=depth).members.to_pylist()}
                for row in every:
                    keys = [str(v) for k, v in row.items() if k in (
                        "time.year", "time.quarter", "time.month")]
                    (detail,) = cell_details(browser, "time:" + ",".join(keys))
                    (path,) = detail["paths"]
                    assert (path is not None) == (tuple(row.values()) in listed), (
                        release.id, cube, keys)
    finally:
        rs.close()


# --- one DuckDB thread per server statement ----------------------------------------------------

class _MixArgs(TypedDict, total=False):
    """The arguments the aggregate paths of ``bench_cubes.MIX`` carry."""

    cut: str
    drilldown: str


class _Variant(TypedDict, total=False):
    """What the test adds to them."""

    order: str
    pagesize: int


@pytest.mark.integration
def test_server_statements_run_on_one_duckdb_thread_with_the_same_answers(
        model: Model, warehouse: Path) -> None:
    """The server's release set opens DuckDB with ``duckdb_threads`` (1 by default; 0 keeps
    DuckDB's one per core). Every aggregate of the peer mix, also ordered or paged, answers
    identically on one thread and on the default."""
    from cube.settings import Settings

    lean = open_releases(Settings(warehouse=str(warehouse)), model, lazy=True)
    general = open_releases(Settings(warehouse=str(warehouse), duckdb_threads=0), model,
                            lazy=True)
    try:
        release = lean.calendar.releases[-1]
        for rs, want in ((lean, 1), (general, os.cpu_count() or 1)):
            engine = rs.browser(release, "housing_benefit").ws.engine
            got = engine._cursor().execute("SELECT current_setting('threads')").fetchone()
            assert got is not None and int(got[0]) == want
        for _, path in bench_cubes.MIX:
            if "/aggregate?" not in path:
                continue
            cube = path.split("/")[2]
            args = cast("_MixArgs", dict(p.split("=", 1)
                                         for p in path.split("?", 1)[1].split("&")))
            variants: tuple[_Variant, _Variant] = (
                {}, {"order": "geography.region_code:desc"} if
                "region" in args.get("drilldown", "") else {"pagesize": 3})
            for variant in variants:
                mine = lean.browser(release, cube).aggregate(**args, **variant)
                theirs = general.browser(release, cube).aggregate(**args, **variant)
                assert mine.cells.equals(theirs.cells), (path, variant)
                assert mine.summary == theirs.summary, (path, variant)
    finally:
        lean.close()
        general.close()


# --- PostgreSQL: no ping before each statement, one retry after a dropped connection --------

@pytest.mark.integration
def test_postgres_statement_survives_a_dropped_pooled_connection(pg_warehouse: str,
                                                                 pg_url: str) -> None:
    """Without a ping (SELECT 1) before every statement, a pooled connection the server has
    dropped (a restart, an idle timeout) is noticed by the statement itself: it is run once
    more on a fresh connection, and the caller gets its answer, as with the ping."""
    import sqlalchemy as sa

    from cube.engine import Engine
    from cube.pg_load import pg_url as to_pg_url

    engine = Engine(pg_warehouse)
    admin = sa.create_engine(to_pg_url(pg_url))
    try:
        stmt = sa.text("SELECT count(*) AS n FROM dim_tenure")
        first = engine.execute(stmt)
        pids = engine.execute(sa.text("SELECT pg_backend_pid() AS pid")).column("pid")
        with admin.begin() as conn:  # the server drops every pooled connection
            for pid in pids.to_pylist():
                conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert engine.execute(stmt).equals(first)
    finally:
        admin.dispose()
        engine.close()


# --- compiled SQL per query shape; labels from a copy of the dimension tables ------------------

_CATEGORIES = ("tenure", "age_band", "family_type", "passported", "spare_room")


@pytest.fixture(scope="session")
def hb_keys(any_workspace: Workspace) -> dict[str, list[Any]]:
    """Member paths of the session warehouse to cut on: regions, local authorities, months
    and tenures (as the query layer types them)."""
    b = any_workspace.cube("housing_benefit")

    def paths(dim: str, **kw: Any) -> list[Any]:
        m = b.members(dim, **kw)
        keys = [lvl.key.ref for lvl in b.cube.dimension(dim).hierarchy().levels[: m.depth]]
        return [tuple(row[k] for k in keys) for row in m.members.to_pylist()]

    return {"region": paths("geography", level="region"), "la": paths("geography", level="la"),
            "month": paths("time", depth=3), "tenure": paths("tenure")}


@st.composite
def _hb_requests(draw: st.DrawFn, keys: dict[str, list[Any]]) -> Request:
    """Requests of the shape a stream of distinct uncached requests has: cuts on a region or
    local authority, a month (or a range of months, drilled by month), a set of tenures;
    one to three drilled categories or levels; sometimes an order or a split."""
    drill = draw(st.lists(st.sampled_from(_CATEGORIES), min_size=0, max_size=2, unique=True))
    cut: list[str] = []
    geo = draw(st.sampled_from(["", "region", "la"]))
    if geo:
        path = draw(st.sampled_from(keys[geo]))
        cut.append(("!" if draw(st.booleans()) else "") + "geography:" +
                   ",".join(str(k) for k in path))
    elif draw(st.booleans()):
        drill.append("geography:region")
    months = keys["month"]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(months) - 2))
        j = draw(st.integers(i, len(months) - 1))
        cut.append("time:" + "-".join(",".join(str(k) for k in months[x]) for x in (i, j)))
        drill.append("time:month")
    else:
        cut.append("time:" + ",".join(str(k) for k in draw(st.sampled_from(months))))
    if draw(st.booleans()):
        tenures = draw(st.lists(st.sampled_from(keys["tenure"]), min_size=2, max_size=3,
                                unique=True))
        cut.append("tenure:" + ";".join(str(t[0]) for t in tenures))
    if not drill:
        drill.append("tenure")
    order = None
    if draw(st.booleans()):
        order = draw(st.sampled_from([d.split(":")[0] for d in drill])) + ":desc"
    split = None
    if draw(st.integers(0, 4)) == 0:
        split = "geography:" + ",".join(str(k) for k in draw(st.sampled_from(keys["region"])))
    return Request.make("housing_benefit", cut="|".join(cut), drilldown=drill, order=order,
                        split=split)


@pytest.mark.integration
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_compiled_sql_per_shape_is_what_compiling_afresh_gives(
        any_workspace: Workspace, hb_keys: dict[str, list[Any]], data: st.DataObject) -> None:
    """A stream of distinct queries through one cube's statement cache: each gets exactly
    the SQL and bound values that compiling it afresh gives (never another query's keys),
    the same cells, and values stay bound (no key appears in the SQL text)."""
    b = any_workspace.cube("housing_benefit")
    k = any_workspace.gate.k
    requests = data.draw(st.lists(_hb_requests(hb_keys), min_size=2, max_size=6))
    for request in [*requests, *reversed(requests)]:
        q = b.query(request)
        builds: tuple[tuple[str, Callable[[Query], Select[Any]]], ...] = (
            ("cells-test", lambda x: compiler.cells(x, k)),
            ("finish-test", lambda x: compiler.finish(x, k)))
        for role, build in builds:
            cached = b.raw.compiled(role, q, build)
            fresh = any_workspace.engine.compile(build(q))
            assert cached == fresh, request
            for cut in q.cuts:
                for path in cut.paths:
                    assert not any(isinstance(v, str) and f"'{v}'" in cached.sql
                                   for v in path)
        assert b.raw.run("cells-test", q, lambda x: compiler.cells(x, k)).equals(
            any_workspace.engine.execute(compiler.cells(q, k)))


@pytest.mark.integration
def test_the_statement_cache_is_bounded(any_workspace: Workspace) -> None:
    """The cache keeps at most ``COMPILED_CACHE`` shapes, the least recently used leaving
    first, and answers the same after an eviction."""
    b = any_workspace.cube("housing_benefit")
    raw = RawCube(any_workspace.engine, b.cube, any_workspace.gate.k)
    raw.COMPILED_CACHE = 3
    shapes = [b.query(Request.make("housing_benefit", drilldown=d, cut="time:2026,4,11"))
              for d in _CATEGORIES]
    first = raw.cells(shapes[0])
    for q in shapes:
        raw.cells(q)
        assert len(raw._compiled) <= 3
    assert raw.cells(shapes[0]).equals(first)


@pytest.mark.integration
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_labels_from_the_dimension_copy_equal_the_join(
        any_workspace: Workspace, hb_keys: dict[str, list[Any]], data: st.DataObject) -> None:
    """Published answers with labels (and order columns) read from the process's copy of
    the dimension tables equal those of the statement that joins them — cells, order,
    summary and total — and so do their Welsh labels."""
    b = any_workspace.cube("housing_benefit")
    joined = RawCube(any_workspace.engine, b.cube, any_workspace.gate.k)
    joined.DIMENSION_COPY_ROWS = 0  # every table over the limit: always joined
    request = data.draw(_hb_requests(hb_keys))
    q = b.query(request)
    for variant in (q, dataclasses.replace(q, page=0, pagesize=5)):
        mine = any_workspace.gate.aggregate(b.raw, variant)
        theirs = any_workspace.gate.aggregate(joined, variant)
        assert mine.cells.equals(theirs.cells), request
        assert mine.summary == theirs.summary
        assert mine.total_cell_count == theirs.total_cell_count
        assert in_language(b, mine, "cy").cells.equals(in_language(b, theirs, "cy").cells)


@pytest.mark.integration
def test_peer_mix_labels_without_joins(any_workspace: Workspace) -> None:
    """Every aggregate of the peer mix (two and three drilled categories, time drilled,
    Welsh and English areas) publishes the same cells with and without the label joins,
    and on DuckDB the lean statement joins no category table."""
    for _, path in bench_cubes.MIX:
        if "/aggregate?" not in path:
            continue
        cube = path.split("/")[2]
        args = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
        b = any_workspace.cube(cube)
        q = b.query(Request.make(cube, **args))
        joined = RawCube(any_workspace.engine, b.cube, any_workspace.gate.k)
        joined.DIMENSION_COPY_ROWS = 0
        mine = any_workspace.gate.aggregate(b.raw, q)
        theirs = any_workspace.gate.aggregate(joined, q)
        assert mine.cells.equals(theirs.cells), path
        assert mine.summary == theirs.summary, path
        assert in_language(b, mine, "cy").cells.equals(in_language(b, theirs, "cy").cells)
        plan = compiler.lookups(q)
        lean = str(compiler.cells(q, any_workspace.gate.k, lookup=plan).compile())
        assert not any(f"JOIN {table} " in lean for table in plan), path
