"""End to end: ``statcube serve`` (gunicorn, 2 worker processes with their own read-only
warehouse connections) started as a real process on a free loopback port, queried over real
HTTP, and fuzzed by schemathesis against its own /openapi.json.

The calendar is relative to the real clock: release 2026-08 (data to June) and 2026-11 (to
August) are published, 2027-02 (to November) is 80 days away. Guests may get 20 cells;
registered keys 5 requests a minute (per worker).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_server_support import (
    EMBARGOED_LABELS,
    KEYS,
    PEPPER,
    ROOT,
    Server,
    check_error,
    internal_keys,
    start_server,
    write_config,
)

from cube.releases import Calendar
from cube.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRERELEASE = {"APIKey": KEYS["prerelease"]}
HB = "/cube/housing_benefit"


@pytest.fixture(scope="module")
def live(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("live")
    cal, keys = write_config(directory, relative=True)
    env = {"STATCUBE_MODEL": str(ROOT / "model.json"), "STATCUBE_WAREHOUSE": str(warehouse),
           "STATCUBE_RELEASES": str(cal), "STATCUBE_API_KEYS": str(keys),
           "STATCUBE_API_KEY_PEPPER": PEPPER, "STATCUBE_MAX_CELLS_GUEST": "20",
           "STATCUBE_RATE_LIMIT_GUEST": "100000/minute",
           "STATCUBE_RATE_LIMIT_REGISTERED": "5/minute",
           "STATCUBE_RATE_LIMIT_PRERELEASE": "100000/minute"}
    server = start_server(["serve", "--port", "0", "--workers", "2", "--threads", "4"], env,
                          directory / "server.log")
    yield server
    server.stop()
    log = server.log.read_text(encoding="utf-8")
    assert "Traceback" not in log
    # Workers exit cleanly: none killed by SIGABRT at shutdown (cube/engine.py, fork).
    assert "SIGABRT" not in log and "terminate called" not in log, log[-2000:]


def get_json(live: Server, path: str, headers: dict[str, str] | None = None,
             status: int = 200) -> Any:
    code, hdrs, body = live.get(path, headers)
    assert code == status, (path, code, body[:500])
    assert hdrs["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert internal_keys(doc) == []
    if status >= 400:
        check_error(doc)
        assert hdrs["X-Request-ID"] == doc["request_id"]
    return doc


def test_slicer_endpoints_over_http(live: Server, workspace: Workspace) -> None:
    version = get_json(live, "/version")
    assert set(version) == {"version", "server_version", "api_version", "product"}
    info = get_json(live, "/info")
    assert info["default_release"] == "2026-11"
    assert [r["id"] for r in info["releases"]] == ["2026-11", "2026-08"]
    assert info["limits"]["max_cells"] == 20
    assert get_json(live, "/cubes")[0]["name"] == "housing_benefit"
    model = get_json(live, f"{HB}/model")
    assert model["latest_period"] == "2026-08" and model["release"] == "2026-11"

    body = get_json(live, f"{HB}/aggregate?cut=geography:E92000001&drilldown=geography")
    core = workspace.view((2026, 8)).cube("housing_benefit").aggregate(
        cut="geography:E92000001", drilldown="geography:region").to_json()
    assert body == {**json.loads(json.dumps(core)), "release": "2026-11"}

    members = get_json(live, f"{HB}/members/geography?depth=2")
    assert (members["level"], len(members["data"])) == ("region", 11)
    cell = get_json(live, f"{HB}/cell?cut=geography:E92000001")
    assert cell["cuts"][0]["details"] == [{"geography.country_code": "E92000001",
                                           "geography.country_name": "England",
                                           "_key": "E92000001", "_label": "England"}]
    code, _, raw = live.get(f"{HB}/report", {"Content-Type": "application/json"},
                            data=json.dumps({"queries": {"r": {"drilldown": "geography:region",
                                                               "aggregates": "claimants"}}})
                            .encode())
    assert code == 200
    report = json.loads(raw)
    assert report["r"]["total_cell_count"] == 11
    get_json(live, f"{HB}/facts", status=403)
    get_json(live, f"{HB}/fact/42", status=403)
    get_json(live, "/no/such/route", status=404)
    assert get_json(live, f"{HB}/aggregate?drilldown=nope", status=404)["parameter"] == \
        "drilldown"
    code, hdrs, raw = live.get(f"{HB}/aggregate", method="DELETE")
    assert code == 405 and "GET" in hdrs["Allow"]
    check_error(json.loads(raw), "method_not_allowed")


def test_formats_over_http(live: Server) -> None:
    url = "/cube/benefit_cap/aggregate?drilldown=geography:msoa"
    body = get_json(live, url, PRERELEASE)
    assert body["disclosure"]["withheld_values"] > 0
    code, hdrs, raw = live.get(url + "&format=csv", PRERELEASE)
    assert code == 200 and hdrs["Content-Type"] == "text/csv; charset=utf-8"
    assert hdrs.get("Transfer-Encoding") == "chunked" or "Content-Length" in hdrs
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    assert len(rows) == len(body["cells"])
    for row, cell in zip(rows, body["cells"], strict=True):
        for col, text in row.items():
            value = cell[col]
            if col in body["aggregates"] and (value is None or cell.get(f"{col}_withheld")):
                assert text == ".."
            else:
                assert text == (repr(value) if isinstance(value, float) else str(value))
    code, hdrs, raw = live.get(url, {**PRERELEASE,
                                     "Accept": "application/vnd.apache.arrow.stream"})
    assert hdrs["Content-Type"] == "application/vnd.apache.arrow.stream"
    assert pa.ipc.open_stream(raw).read_all().to_pylist() == body["cells"]
    code, hdrs, raw = live.get(url + "&format=parquet", PRERELEASE)
    assert pq.read_table(pa.BufferReader(raw)).to_pylist() == body["cells"]


def test_conditional_requests_over_http(live: Server) -> None:
    url = f"{HB}/aggregate?drilldown=tenure&release=2026-11"
    code, hdrs, first = live.get(url)
    assert code == 200 and hdrs["Cache-Control"] == "public, max-age=86400"
    code, hdrs2, again = live.get(url, {"If-None-Match": hdrs["ETag"]})
    assert code == 304 and again == b"" and hdrs2["ETag"] == hdrs["ETag"]
    # every worker computes the same ETag and the same bytes
    assert {live.get(url)[2] for _ in range(6)} == {first}


def test_embargo_over_http(live: Server) -> None:
    for headers in ({}, {"APIKey": KEYS["registered"]}):
        code, _, raw = live.get(f"{HB}/members/time?depth=3", headers)
        if code == 429:  # the registered key's small budget; its embargo is unit-tested
            continue
        assert code == 200
        labels = [m["time.month_label"] for m in json.loads(raw)["data"]]
        assert labels[-1] == "Aug 2026"
        assert not set(labels) & set(EMBARGOED_LABELS)
    future = get_json(live, f"{HB}/aggregate?release=2027-02&drilldown=time:month", status=404)
    assert future["message"] == "unknown release '2027-02'"
    pre = get_json(live, f"{HB}/aggregate?release=2027-02&drilldown=time:month", PRERELEASE)
    assert [c["time.month_label"] for c in pre["cells"]][-3:] == list(EMBARGOED_LABELS[:3])
    code, hdrs, _ = live.get(f"{HB}/members/time?release=2027-02", PRERELEASE)
    assert code == 200 and hdrs["Cache-Control"] == "private, no-store"


def test_guest_size_limit_over_http(live: Server) -> None:
    url = f"{HB}/aggregate?drilldown=geography:la"
    body = get_json(live, url, status=413)
    assert body["error"] == "too_large" and "limit of 20 cells" in body["message"]
    assert len(get_json(live, url, PRERELEASE)["cells"]) == 35
    assert len(get_json(live, url + "&pagesize=20&page=1")["cells"]) == 15


def test_rate_limit_over_http(live: Server) -> None:
    headers = {"Authorization": f"Bearer {KEYS['registered']}"}
    seen = []
    for _ in range(14):  # 5 a minute per worker, 2 workers: a 429 by the 11th at the latest
        code, hdrs, raw = live.get("/version", headers)
        seen.append(code)
        assert hdrs["X-RateLimit-Limit"] == "5"
        assert {"X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(hdrs)
        if code == 429:
            body = json.loads(raw)
            check_error(body, "rate_limited")
            assert int(hdrs["Retry-After"]) > 0
            break
    assert seen[-1] == 429 and set(seen[:-1]) <= {200}


def test_benchmark_runs_against_the_live_server(live: Server) -> None:
    """bench/bench_server.py, tiny and bounded, against this server: every scenario answers
    as expected (the real numbers are in the README)."""
    spec = importlib.util.spec_from_file_location("bench_server", ROOT / "bench" /
                                                  "bench_server.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_server"] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    rows = bench.run(live.url, clients=2, requests=20, seconds=10, uncached_requests=6,
                     auth=PRERELEASE)  # guests here may only get 20 cells
    assert [r["scenario"] for r in rows] == ["version", "cached", "revalidated", "uncached",
                                             "every_cube"]
    for r in rows:
        assert r["errors"] == 0 and r["requests"] > 0 and r["rps"] > 0
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]


# --- schemathesis -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_schema(live: Server) -> Any:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_openapi_conformance(case: Any, live: Server) -> None:
    """Generated requests (examples, boundary values, fuzz) against the real server: never a
    5xx, and every response matches the documented status codes, media types and schemas.

    ``positive_data_acceptance`` is not run: a schema can say "a string" but only the
    grammar (cube/grammar.py) says which strings are cuts, so a 400 there is correct."""
    assert urllib.parse.urlsplit(live.url).hostname == "127.0.0.1"  # loopback only
    case.call_and_validate(base_url=live.url, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance,
        response_schema_conformance, response_headers_conformance])


# --- statcube demo --------------------------------------------------------------------------------

def test_demo_generates_builds_and_serves(tmp_path: Path) -> None:
    """`statcube demo`: synthetic data, a warehouse, a quarterly calendar with one future
    release, and a server on 127.0.0.1 whose printed example queries all work."""
    server = start_server(["--data-dir", str(tmp_path / "data"), "demo", "--scale", "0.002",
                           "--port", "0", "--workers", "1"],
                          {"STATCUBE_MODEL": str(ROOT / "model.json")}, tmp_path / "demo.log",
                          timeout=600)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("/openapi.json" in line
                                                      for line in server.output):
            time.sleep(0.1)
        urls = [m.group(1) for line in server.output
                for m in [re.search(r"curl '(http://127\.0\.0\.1:\d+/[^']*)'", line)] if m]
        assert len(urls) == 9, server.output
        calendar = Calendar.load(tmp_path / "data" / "releases.toml")
        assert [r.id for r in calendar.releases] == [
            "2025-08", "2025-11", "2026-02", "2026-05", "2026-08", "2026-11", "2027-02"]
        now = datetime.now(UTC)
        latest = calendar.published(now)[-1]
        for url in urls:
            code, _, raw = server.get(url.removeprefix(server.url))
            embargoed = any(f"release={r.id}" in url for r in calendar.releases
                            if not r.is_published(now))
            assert code == (404 if embargoed else 200), (url, raw[:300])
        assert get_json(server, "/info")["default_release"] == latest.id
        months = get_json(server, f"{HB}/members/time?depth=3")["data"]
        assert months[0]["time.month_label"] == "Apr 2025"
        assert (months[-1]["time.year"], months[-1]["time.month"]) == latest.last_period
    finally:
        server.stop()
