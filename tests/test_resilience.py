"""Resilience of ``statcube serve`` (real gunicorn, 2 workers, loopback, a free port): no outage
of the warehouse takes the service down, a replaced warehouse is served by every worker at
once, and the access log cannot be forged nor hold a key.

One server for the whole module, started with its warehouse *missing*; the tests run in
order and move the warehouse file in, replace it and move it away again (issue 13).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from test_server_support import (
    PEPPER,
    ROOT,
    Server,
    check_error,
    start_server,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HB = "/cube/housing_benefit"
AGG = f"{HB}/aggregate?drilldown=geography:region&aggregates=claimants"
SECRET = "sc_live_5ecret_never_in_a_log_0123456789abcdef"


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the served warehouse lives (nothing there at first)."""
    return tmp_path_factory.mktemp("resilience") / "served" / "warehouse.duckdb"


@pytest.fixture(scope="module")
def live(place: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("resilience-config")
    cal, keys = write_config(directory, relative=True)
    env = {"STATCUBE_MODEL": str(ROOT / "model.json"), "STATCUBE_WAREHOUSE": str(place),
           "STATCUBE_RELEASES": str(cal), "STATCUBE_API_KEYS": str(keys),
           "STATCUBE_API_KEY_PEPPER": PEPPER,
           "STATCUBE_RATE_LIMIT_GUEST": "100000/minute"}
    server = start_server(["serve", "--port", "0", "--workers", "2", "--threads", "2"], env,
                          directory / "server.log")
    yield server
    server.stop()


def workers(server: Server) -> set[int]:
    """The gunicorn worker processes (children of the master we started)."""
    pid = server.process.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return {int(p) for p in text.split()}


def until(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``check()`` held (fails after ``seconds``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - start


def statuses(server: Server, path: str, n: int = 16) -> list[int]:
    return [server.get(path)[0] for _ in range(n)]


def unavailable(server: Server, path: str) -> None:
    code, headers, body = server.get(path)
    assert code == 503, (path, code, body[:300])
    doc = json.loads(body)
    check_error(doc, "engine_unavailable")
    assert "warehouse" not in doc["message"] or str(ROOT) not in doc["message"]
    assert int(headers["Retry-After"]) > 0


def install(source: Path, place: Path) -> None:
    """Put a warehouse in place the way a deployment does: copy beside it, then rename."""
    place.parent.mkdir(parents=True, exist_ok=True)
    tmp = place.with_name(".incoming.duckdb")
    shutil.copyfile(source, tmp)
    tmp.replace(place)


def test_workers_boot_without_the_warehouse_and_answer_503(live: Server) -> None:
    code, headers, body = live.get("/health/live")
    assert (code, json.loads(body)) == (200, {"status": "live"})
    assert "Retry-After" not in headers
    for path in ("/health/ready", "/cubes", AGG, f"{HB}/model", "/exports"):
        unavailable(live, path)
    code, headers, _ = live.get("/version")
    assert code == 200 and "Retry-After" not in headers
    assert live.get("/info")[0] == 200  # the calendar is configuration, not the warehouse


def test_a_killed_worker_is_replaced_while_the_warehouse_is_missing(live: Server) -> None:
    until(lambda: len(workers(live)) == 2, 30)  # both booted, without their warehouse
    before = workers(live)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    until(lambda: victim not in workers(live) and len(workers(live)) == 2, 30)
    assert live.process.poll() is None  # the master survived
    assert statuses(live, "/health/live", 8) == [200] * 8
    unavailable(live, AGG)


def test_the_service_recovers_when_the_warehouse_arrives(live: Server, place: Path,
                                                          warehouse: Path) -> None:
    install(warehouse, place)
    took = until(lambda: live.get("/health/ready")[0] == 200, 5)
    assert took < 5
    assert statuses(live, AGG) == [200] * 16  # every worker, without a restart


def test_a_replaced_build_is_served_by_every_worker_at_once(live: Server, place: Path,
                                                             warehouse: Path, tmp_path: Path
                                                             ) -> None:
    old_tags = {live.get(AGG)[1]["ETag"] for _ in range(8)}
    assert len(old_tags) == 1  # one build, one ETag, whichever worker answers
    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copyfile(warehouse, rebuilt)
    with duckdb.connect(str(rebuilt)) as con:  # a rebuild: same data, a new built_at
        con.execute("UPDATE statcube_meta SET value = '\"2099-01-01T00:00:00+00:00\"' "
                    "WHERE key = 'built_at'")
    install(rebuilt, place)
    tags = [live.get(AGG)[1]["ETag"] for _ in range(16)]
    assert len(set(tags)) == 1 and set(tags) != old_tags  # the first request after: new build
    assert live.get(AGG, {"If-None-Match": tags[0]})[0] == 304


def test_a_vanished_warehouse_is_503_everywhere_then_recovers(live: Server,
                                                               place: Path) -> None:
    away = place.with_name("moved-away.duckdb")
    place.rename(away)
    try:
        assert set(statuses(live, AGG)) == {503}  # no worker serves the vanished build
        unavailable(live, "/health/ready")
    finally:
        away.rename(place)
    until(lambda: live.get("/health/ready")[0] == 200, 5)
    assert statuses(live, AGG) == [200] * 16


def test_the_access_log_cannot_be_forged_and_holds_no_key(live: Server) -> None:
    forged = "x%0a0000000000000000%20GET%20/admin%20200%201.0ms%20role=admin%20key=root"
    assert live.get(f"/cube/{forged}")[0] == 404
    assert live.get(f"/cubes?apikey={SECRET}")[0] == 400
    assert live.get(f"/cubes?api_key={SECRET}&token={SECRET}&KEY={SECRET}")[0] == 400
    raw = socket.create_connection(urllib_host(live.url))
    with raw:  # a raw CR in the path: gunicorn refuses it before Flask
        raw.sendall(b"GET /cubes\r/forged HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.recv(4096)
    time.sleep(0.5)  # the log line is written after the response
    log = live.log.read_text(encoding="utf-8")
    assert SECRET not in log
    assert "apikey=[redacted]" in log and "token=[redacted]" in log
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith("0000000000000000 GET /admin")]
    assert any("/cube/x\\x0a0000000000000000 GET /admin" in line for line in lines)


def urllib_host(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw_request(server: Server, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these) and read the answer."""
    with socket.create_connection(urllib_host(server.url), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(rest) >= int(length.group(1)):
                    break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),       # request line
    (b"GET /version HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET /version HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),          # too many headers
    (b"GET /cu\x01bes HTTP/1.1\r\nHost: x\r\n\r\n", 400),                 # control byte
    (b"GET /cubes HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),     # bad header name
    (b"POST /cube/housing_benefit/report HTTP/1.1\r\nHost: x\r\nContent-Type: "
     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n", 400),
])
def test_errors_before_flask_use_the_one_shape(live: Server, request_bytes: bytes,
                                               status: int) -> None:
    code, headers, body = raw_request(live, request_bytes)
    assert code == status, body[:300]
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    check_error(doc)
    assert "<html" not in body.decode("latin-1") and "bbbb" not in doc["message"]


def test_no_traceback_in_the_server_log(live: Server) -> None:
    assert live.get("/health/live")[0] == 200
    assert "Traceback" not in live.log.read_text(encoding="utf-8")
