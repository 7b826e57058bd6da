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
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from test_server_support import make_app

from bench import bench_cubes
from cube.model import Model
from cube.releases import Calendar, ReleaseSet, cell_details, open_releases
from server.ratestore import SCHEME, WorkerMemoryStorage, storage_uri

pytest_plugins = ["pg"]
HB = "/cube/housing_benefit"


# --- rate limits without a thread per request ---------------------------------------------

class _Clocked(WorkerMemoryStorage):
    now = 1_000.0

    def __init__(self) -> None:
        self.clock = lambda: _Clocked.now  # type: ignore[method-assign]
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
            args = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
            for variant in ({}, {"order": "geography.region_code:desc"} if
                            "region" in args.get("drilldown", "") else {"pagesize": "3"}):
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
