"""Load and fault test of ``statcube serve``: many concurrent clients on a mix of cached and
uncached aggregates over every cube, against ``/version`` on the same stack, then the same
load while the warehouse goes away and comes back and a worker is killed.

    python -m bench.bench_load                      # 50 clients, 60 s per run, scale 0.01
    python -m bench.bench_load --clients 20 --seconds 20 --version-seconds 10

Starts ``statcube serve`` (gunicorn, ``--workers`` × ``--threads``) on a free port of
127.0.0.1, serving a private copy of the benchmark warehouse (so it can be moved away), and
drives it with ``--clients`` threads, each with its own keep-alive connection (a Python load
generator: no extra tool to install; bounded by ``--seconds`` per run, loopback only).

Runs, one after another:

- ``version``: ``GET /version`` — the whole stack without a query: the floor;
- ``mix``: half repeated aggregates (one per cube: served from each worker's LRU after the
  first request) and half distinct ones (every cube, each local authority × each category
  dimension: SQL, the disclosure gate and serialisation every time);
- ``fault``: the ``mix`` again while, at 25 % of the run, the warehouse file is moved away
  (DuckDB; the database stopped, for PostgreSQL) and, at 50 %, moved back; at 70 % one
  worker is killed with SIGKILL.

Reports per run: requests, errors (any status other than the expected one, or a broken
connection), req/s, p50/p99 latency; for the fault run also the 503s (documented while the
warehouse is away), other errors (including a 503 answered outside the outage), connections
broken by the kill (the killed worker's requests in flight: a client or proxy retries an
idempotent GET), and the recovery time: from the warehouse's return to the last 503. Targets:
no errors but documented 503s during the outage, recovery within 5 s.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_server import ROOT, Running, build_warehouse, every_cube, start

Item = tuple[str, int]  # path, expected status


@dataclass
class Sample:
    at: float       # seconds since the run started
    took: float     # latency, seconds
    status: int     # 0: the connection broke


@dataclass
class Run:
    name: str
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    unexpected: int = 0  # a status other than the expected one (not counting 503 / 0)

    def percentile(self, p: float) -> float:
        xs = sorted(s.took for s in self.samples)
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000 if xs else 0.0

    def row(self) -> dict[str, Any]:
        n = len(self.samples)
        unavailable = sum(1 for s in self.samples if s.status == 503)
        broken = sum(1 for s in self.samples if s.status == 0)
        return {"run": self.name, "requests": n, "errors": self.unexpected + unavailable + broken,
                "rps": round(n / self.seconds, 1), "p50_ms": round(self.percentile(50), 1),
                "p99_ms": round(self.percentile(99), 1), "503s": unavailable,
                "broken_connections": broken, "other_errors": self.unexpected}


def drive(url: str, name: str, items: Callable[[], Iterator[Item]], clients: int,
          seconds: float, events: list[tuple[float, Callable[[], object]]] | None = None
          ) -> Run:
    """``clients`` threads send requests from ``items`` for ``seconds``; ``events`` run at
    their times (seconds into the run) on a thread of their own."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if host != "127.0.0.1":
        raise ValueError("the load test only talks to 127.0.0.1")
    run = Run(name, seconds)
    lock = threading.Lock()
    source = items()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, parts.port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                path, expected = next(source)
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(host, parts.port, timeout=60)
            now = time.perf_counter()
            with lock:
                run.samples.append(Sample(started - t0, now - started, status))
                if status not in (expected, 0, 503):
                    run.unexpected += 1
        conn.close()

    def scheduler() -> None:
        for at, action in sorted(events or [], key=lambda e: e[0]):
            time.sleep(max(0.0, t0 + at - time.perf_counter()))
            action()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    threads.append(threading.Thread(target=scheduler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return run


def get_json(url: str, path: str) -> Any:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def mix(url: str, seed: int = 7) -> Callable[[], Iterator[Item]]:
    """Half cached (one aggregate per cube, repeated), half distinct (every cube × local
    authority × category dimension: ``bench_server``'s ``every_cube``), interleaved."""
    cached: list[Item] = [(f"/cube/{cube['name']}/aggregate?drilldown=geography:region", 200)
                          for cube in get_json(url, "/cubes")]
    distinct: list[Item] = [(path, status) for path, _, status in every_cube(url, {}, seed)]

    def items() -> Iterator[Item]:
        cycle_cached = itertools.cycle(cached)
        cycle_distinct = itertools.cycle(distinct)
        while True:
            yield next(cycle_cached)
            yield next(cycle_distinct)

    print(f"mix: {len(cached)} cached aggregates, {len(distinct)} distinct ones", flush=True)
    return items


def workers(server: Running) -> list[int]:
    pid = server.process.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return sorted(int(p) for p in text.split())


def recovery(run: Run, back_at: float) -> float:
    """Seconds from the warehouse's return to the last 503 answered (0: none after)."""
    failed = [s.at + s.took for s in run.samples if s.status == 503 and s.at + s.took >= back_at]
    return round(max(failed) - back_at, 2) if failed else 0.0


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["run", "requests", "errors", "rps", "p50_ms", "p99_ms", "503s",
            "broken_connections", "other_errors"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warehouse", type=Path, help="copy and serve this warehouse")
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--months", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0, help="per mix and fault run")
    p.add_argument("--version-seconds", type=float, default=20.0)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 200 or not 1 <= args.seconds <= 600:
        p.error("--clients 1..200 and --seconds 1..600")
    source = args.warehouse or build_warehouse(args.scale, args.months, ROOT / "data" / "bench")
    with tempfile.TemporaryDirectory(prefix="statcube-load-") as tmp:
        served = Path(tmp) / "served" / "warehouse.duckdb"
        served.parent.mkdir()
        shutil.copyfile(source, served)
        log = ROOT / "data" / "bench" / "load-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        server = start(served, args.workers, args.threads, log)
        try:
            print(f"server {server.url}: {args.workers} workers × {args.threads} threads, "
                  f"{args.clients} clients, {args.seconds:g} s per run", flush=True)
            items = mix(server.url)
            drive(server.url, "warm-up", items, args.clients, 5)
            rows = [drive(server.url, "version", lambda: itertools.repeat(("/version", 200)),
                          args.clients, args.version_seconds).row()]
            print(table(rows), flush=True)
            rows.append(drive(server.url, "mix", items, args.clients, args.seconds).row())
            print(table(rows[-1:]), flush=True)
            away = served.with_name("moved-away.duckdb")
            s = args.seconds
            killed: list[int] = []

            def kill_one() -> None:
                pid = workers(server)[0]
                os.kill(pid, signal.SIGKILL)  # a worker of the server this run started
                killed.append(pid)

            fault = drive(server.url, "fault", items, args.clients, s, [
                (0.25 * s, lambda: served.rename(away)),
                (0.50 * s, lambda: away.rename(served)),
                (0.70 * s, kill_one)])
            row = fault.row()
            row["recovery_s"] = recovery(fault, 0.50 * s)
            # a 503 is documented while the file is away: answered after it left and before
            # it was back (plus the recovery); anything else is an error
            row["503s_outside_outage"] = sum(
                1 for x in fault.samples if x.status == 503
                and not 0.25 * s <= x.at + x.took <= 0.50 * s + row["recovery_s"])
            row["other_errors"] += row["503s_outside_outage"]
            rows.append(row)
            alive = server.process.poll() is None
        finally:
            server.stop()
    print(table(rows))
    print(f"fault run: recovery {row['recovery_s']} s after the warehouse returned; "
          f"worker {killed} killed; master alive: {alive}; "
          f"503s outside the outage: {row['503s_outside_outage']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    ok = (all(r["other_errors"] == 0 for r in rows) and rows[0]["errors"] == 0
          and rows[1]["errors"] == 0 and row["recovery_s"] <= 5 and alive)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
