"""HTTP throughput and latency of the running server, against a trivial endpoint of the same
stack, in one run.

    python -m bench.bench_server                         # scale 0.01, 20 months, built once
    python -m bench.bench_server --clients 16 --requests 3000 --seconds 20
    python -m bench.bench_server --warehouse data/warehouse/2026-11.duckdb
    python -m bench.bench_server --against 92ef855 --scenarios uncached --clients 50 --rounds 3

Starts ``statcube serve`` (gunicorn, ``--workers`` processes, one read-only DuckDB connection
each) on a free port of 127.0.0.1 with generous limits, then drives it with ``--clients``
concurrent keep-alive HTTP clients, one scenario after another, each bounded by a request
count and a time limit:

- ``version``: ``GET /version`` — the whole stack (gunicorn, Flask, auth, rate limiter,
  request log) with no query: the floor;
- ``cached``: one aggregate (regions × tenure) repeated: after the first request per worker
  it comes from the in-process LRU of serialised results;
- ``revalidated``: the same with ``If-None-Match``: a 304 without a body;
- ``uncached``: a stream of distinct aggregates (local authority × category × month), none
  repeated, so every request runs SQL, the disclosure gate and serialisation;
- ``every_cube``: distinct aggregates over every cube — each local authority × each category
  dimension of each cube, no time cut, shuffled (the distinct half of ``bench_load``'s mix;
  what issue 16 measured at 68 req/s), none repeated.

Reports requests/s and latency percentiles (p50, p90, p99, max) per scenario, and each
scenario's median latency as a multiple of the ``version`` floor. Loopback only.

``--against REF`` measures an older statcube in the same run: the code at git revision REF
(``git archive``, under ``data/bench/against-<commit>/``) builds its own warehouse from the
same synthetic input with its own ``statcube build`` and serves it with its own ``statcube
serve``; the two servers take turns (``--rounds``), never at once, and the output ends with
this code's throughput and CPU time per request as ratios of REF's, scenario by scenario.
(Issue 16 measured the code at ``92ef855``.) Each side serves a warehouse its own build
wrote: formats change between revisions.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("tenure", "age_band", "family_type", "passported", "spare_room")


# --- the warehouse and the server -------------------------------------------------------

def build_warehouse(scale: float, months: int, data: Path) -> Path:
    """Build (once) a synthetic warehouse ending 2026-11 under ``data`` (shared builder)."""
    from bench.common import warehouse_for
    from cube.model import default_model_path, load_model

    return warehouse_for(load_model(default_model_path()), scale, months, data)


@dataclass
class Running:
    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the process group we started
            self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(warehouse: Path | str, workers: int, threads: int, log: Path,
          settings: Mapping[str, str] | None = None, root: Path = ROOT) -> Running:
    """``statcube serve`` over ``warehouse`` (a DuckDB file or a SQLAlchemy URL), with
    generous limits and any further ``STATCUBE_*`` ``settings``; the code of the checkout
    at ``root`` (this one unless told)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env.update({"STATCUBE_WAREHOUSE": str(warehouse), "STATCUBE_MODEL": str(root / "model.json"),
                "STATCUBE_RATE_LIMIT_GUEST": "100000000/minute",
                "STATCUBE_MAX_CELLS_GUEST": "1000000",
                "PYTHONPATH": str(root) + os.pathsep + env.get("PYTHONPATH", ""),
                **(settings or {})})
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0",
             "--workers", str(workers), "--threads", str(threads)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True)
    running = announced(proc)
    if running is None:
        raise RuntimeError(f"the server did not start; see {log}")
    return running


def announced(proc: subprocess.Popen[str]) -> Running | None:
    """The server ``proc`` once a line of its stdout names its loopback URL (the rest of
    its stdout drained in the background, so it never blocks on a full pipe); None if the
    process ends without naming one."""
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return Running(m.group(1), proc)
    return None


# --- load generation ----------------------------------------------------------------------

@dataclass
class Result:
    name: str
    latencies: list[float]
    errors: int
    seconds: float

    def percentile(self, p: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000

    def row(self) -> dict[str, Any]:
        n = len(self.latencies)
        return {"scenario": self.name, "requests": n, "errors": self.errors,
                "rps": round(n / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(self.percentile(50), 2), "p90_ms": round(self.percentile(90), 2),
                "p99_ms": round(self.percentile(99), 2), "max_ms": round(self.percentile(100), 2)}


def measure(url: str, name: str, paths: Iterator[tuple[str, dict[str, str], int]],
            clients: int, requests: int, seconds: float) -> Result:
    """``clients`` threads with keep-alive connections take (path, headers, expected status)
    from ``paths`` until ``requests`` are done or ``seconds`` have passed."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if host != "127.0.0.1":
        raise ValueError("the benchmark only talks to 127.0.0.1")
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    issued = [0]
    deadline = time.perf_counter() + seconds

    def take() -> tuple[str, dict[str, str], int] | None:
        with lock:
            if issued[0] >= requests or time.perf_counter() > deadline:
                return None
            issued[0] += 1
            return next(paths, None)

    def client() -> None:
        conn = http.client.HTTPConnection(host, parts.port, timeout=60)
        try:
            while (item := take()) is not None:
                path, headers, expected = item
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    if resp.status != expected:
                        errors[0] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Result(name, latencies, errors[0], time.perf_counter() - t0)


def _get(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def scenarios(url: str, auth: dict[str, str]
              ) -> dict[str, Callable[[], Iterator[tuple[str, dict[str, str], int]]]]:
    cached = "/cube/housing_benefit/aggregate?drilldown=geography:region|tenure"
    status, headers, _ = _get(url, cached, auth)
    if status != 200:
        raise RuntimeError(f"{cached} answered {status}")
    etag = headers["ETag"]
    _, _, raw = _get(url, "/cube/housing_benefit/members/geography?level=la", auth)
    las = [f"{m['geography.country_code']},{m['geography.region_code']},"
           f"{m['geography.la_code']}" for m in json.loads(raw)["data"]]
    _, _, raw = _get(url, "/cube/housing_benefit/members/time?depth=3", auth)
    months = [(m["time.year"], m["time.quarter"], m["time.month"])
              for m in json.loads(raw)["data"]]

    def distinct() -> Iterator[tuple[str, dict[str, str], int]]:
        for (y, q, m), cat, la in itertools.product(reversed(months), CATEGORIES, las):
            yield (f"/cube/housing_benefit/aggregate?cut=geography:{la}|time:{y},{q},{m}"
                   f"&drilldown={cat}", auth, 200)

    every: list[tuple[str, dict[str, str], int]] = []

    def every_stream() -> Iterator[tuple[str, dict[str, str], int]]:
        if not every:  # asked of the server once, on first use (the warm-up), not per run
            every.extend(every_cube(url, auth))
        return iter(every)

    return {
        "version": lambda: itertools.repeat(("/version", auth, 200)),
        "cached": lambda: itertools.repeat((cached, auth, 200)),
        "revalidated": lambda: itertools.repeat((cached, {**auth, "If-None-Match": etag}, 304)),
        "uncached": distinct,
        "every_cube": every_stream,
    }


def every_cube(url: str, auth: dict[str, str], seed: int = 7
               ) -> list[tuple[str, dict[str, str], int]]:
    """Each cube × local authority × category dimension (geography where a cube has none),
    no time cut, in a fixed shuffled order."""
    def get(path: str) -> Any:
        status, _, raw = _get(url, path, auth)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        return json.loads(raw)

    out: list[tuple[str, dict[str, str], int]] = []
    for cube in get("/cubes"):
        name = cube["name"]
        dims = [d["name"] for d in get(f"/cube/{name}/model")["dimensions"]
                if d["name"] not in ("geography", "time")]
        for la, dim in itertools.product(get(f"/cube/{name}/members/geography?level=la")["data"],
                                         dims or ["geography"]):
            path = (f"{la['geography.country_code']},{la['geography.region_code']},"
                    f"{la['geography.la_code']}")
            out.append((f"/cube/{name}/aggregate?cut=geography:{path}&drilldown={dim}", auth, 200))
    random.Random(seed).shuffle(out)
    return out


def server_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of process group ``pgid``
    (the server: gunicorn's master and workers), from /proc; 0 where /proc is missing."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, …
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run(url: str, clients: int, requests: int, seconds: float, uncached_requests: int,
        auth: dict[str, str] | None = None, pgid: int | None = None,
        only: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Every scenario after a short warm-up; ``auth`` headers go with every request. With
    the server's process group ``pgid``, each row also has the server's CPU milliseconds per
    request and the requests/s that CPU time allows on this machine's cores (``cpu_rps``):
    on a machine shared with other work, throughput measures the neighbours too, CPU time
    per request much less so."""
    rows = []
    for name, make in scenarios(url, auth or {}).items():
        if only and name not in only and name != "version":  # version: the floor, always
            continue
        distinct = name in ("uncached", "every_cube")
        n = uncached_requests if distinct else requests
        measure(url, name, make(), clients, min(n, clients * 5), seconds)  # warm-up
        cpu = server_cpu_seconds(pgid) if pgid else 0.0
        result = measure(url, name, _skip(make(), clients * 5) if distinct else make(),
                         clients, n, seconds)
        row = result.row()
        if pgid and result.latencies:
            per = (server_cpu_seconds(pgid) - cpu) / len(result.latencies)
            row["cpu_ms"] = round(per * 1000, 2)
            row["cpu_rps"] = round((os.cpu_count() or 1) / per, 1) if per else None
        rows.append(row)
    floor = rows[0]["p50_ms"]
    for r in rows:
        r["p50_vs_version"] = round(r["p50_ms"] / floor, 1) if floor else None
    return rows


def _skip(it: Iterator[Any], n: int) -> Iterator[Any]:
    """Queries the warm-up already ran would be cache hits: skip them."""
    return itertools.islice(it, n, None)


def table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    """``rows`` as a Markdown table: the scenario columns, or ``cols``."""
    cols = cols or ["scenario", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms",
                    "max_ms", "p50_vs_version",
                    *(["cpu_ms", "cpu_rps"] if rows and "cpu_ms" in rows[0] else [])]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def checkout(ref: str, data: Path) -> tuple[str, Path]:
    """The statcube code at git revision ``ref`` (full commit id, folder): extracted once by
    ``git archive`` under ``data/against-<commit>/code`` (written beside, then renamed)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if commit.returncode != 0:
        raise SystemExit(f"--against {ref!r}: not a commit of this repository "
                         f"({commit.stderr.strip()})")
    sha = commit.stdout.strip()
    code = data / f"against-{sha[:12]}" / "code"
    if not code.exists():
        part = code.with_name("code.part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(part)], input=archive, check=True)
        part.rename(code)
    return sha, code


def built_by(code: Path, synthetic: Path) -> Path:
    """The warehouse that the statcube at ``code`` builds from ``synthetic`` with its own
    ``statcube build`` (once; a throwaway secret: only timings leave a benchmark)."""
    out = code.parent / "warehouse"
    found = sorted(out.glob("*.duckdb"))
    if found:
        return found[-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env.update({"STATCUBE_KEY_SECRET": secrets.token_hex(32),
                "PYTHONPATH": str(code) + os.pathsep + env.get("PYTHONPATH", "")})
    print(f"building the warehouse of {code.parent.name} …", flush=True)
    subprocess.run([sys.executable, "-m", "cli", "--model", str(code / "model.json"), "build",
                    "--input", str(synthetic), "--out", str(out)], cwd=code, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    found = sorted(out.glob("*.duckdb"))
    if not found:
        raise SystemExit(f"the build of {code.parent.name} wrote no warehouse under {out}")
    return found[-1]


def ratios(runs: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per scenario, this code against the baseline over all rounds: throughput (median
    requests/s, ratio this/baseline) and CPU per request (median ms, ratio baseline/this:
    how many times less CPU a request costs now)."""
    out = []
    scenarios = [r["scenario"] for r in runs[0][1]]
    for name in scenarios:
        def med(side: str, key: str, name: str = name) -> float | None:
            xs = [r[key] for who, rows in runs if who == side
                  for r in rows if r["scenario"] == name and r.get(key) is not None]
            return round(statistics.median(xs), 2) if xs else None
        row: dict[str, Any] = {"scenario": name}
        for key in ("rps", "cpu_ms"):
            row[f"baseline_{key}"], row[f"this_{key}"] = med("baseline", key), med("this", key)
        b, t = row["baseline_rps"], row["this_rps"]
        row["rps_ratio"] = round(t / b, 2) if b and t else None
        b, t = row["baseline_cpu_ms"], row["this_cpu_ms"]
        row["cpu_ratio"] = round(b / t, 2) if b and t else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warehouse", type=Path, help="serve this warehouse instead of building one")
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--months", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=3000, help="per scenario (bound)")
    p.add_argument("--uncached-requests", type=int, default=600)
    p.add_argument("--seconds", type=float, default=15.0, help="per scenario (bound)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--scenarios", help="comma-separated subset (version always runs)")
    p.add_argument("--against", metavar="REF",
                   help="also serve the statcube of git revision REF, in turns (see above)")
    p.add_argument("--rounds", type=int, default=2, help="turns per side with --against")
    args = p.parse_args(argv)
    if args.against and args.warehouse:
        p.error("--against builds both warehouses from one synthetic input: "
                "leave out --warehouse")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, not {args.rounds}")
    data = ROOT / "data" / "bench"
    warehouse = args.warehouse or build_warehouse(args.scale, args.months, data)
    sides: list[tuple[str, Path, Path]] = [("this", warehouse, ROOT)]
    if args.against:
        sha, code = checkout(args.against, data)
        sides.insert(0, ("baseline", built_by(code, warehouse.parent.parent / "synthetic"),
                         code))
        print(f"baseline: statcube at {sha[:12]} ({code})", flush=True)
    log = data / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    only = args.scenarios.split(",") if args.scenarios else None
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for _ in range(args.rounds if args.against else 1):
        for side, served, root in sides:
            server = start(served, args.workers, args.threads, log, root=root)
            try:
                print(f"{side}: server {server.url}: {args.workers} workers × {args.threads} "
                      f"threads, {args.clients} concurrent clients, warehouse {served}, "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
                rows = run(server.url, args.clients, args.requests, args.seconds,
                           args.uncached_requests, pgid=server.process.pid, only=only)
            finally:
                server.stop()
            print(table(rows), flush=True)
            runs.append((side, rows))
    summary = ratios(runs) if args.against else []
    if summary:
        print(f"\nthis code against {args.against}, medians of {args.rounds} turns each:")
        print(table(summary, list(summary[0])))
    if args.json:
        out = [{"side": side, **r} for side, rows in runs for r in rows] + summary
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["errors"] == 0 for _, rows in runs for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
