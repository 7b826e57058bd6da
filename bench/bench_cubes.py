"""statcube against its peer, Cubes 1.1's Slicer, on the same model.json and the same data.

    python -m bench.bench_cubes                     # scale 0.01, 20 months, 5 rounds
    python -m bench.bench_cubes --repeat 9 --json out.json

What runs, all on 127.0.0.1:

- **Cubes 1.1**: its own Slicer server (``cubes.server`` blueprint, SQL store, no
  authentication) in a Python 3.7 environment with ``cubes==1.1`` and SQLAlchemy 1.3.24 (the
  pins and cached environment of tests/test_cubes_conformance.py), over the warehouse loaded
  into PostgreSQL (``statcube load-pg``): tests/cubes11/slicer_server.py. Werkzeug's
  single-threaded server, one request at a time.
- **statcube** on the same DuckDB warehouse and on the same PostgreSQL schema, ``statcube
  serve`` (gunicorn, 1 worker, 1 thread), twice per engine: *uncached* with the result
  cache off (``STATCUBE_CACHE_BYTES=0``: every request compiles, runs its SQL, protects and
  serialises; nothing per query is kept — the only caches left are the p-table lookups per
  parameter set, which a production worker has warm too) and *cached* (the default LRU,
  filled by a warm-up round).

The mix (:data:`MIX`, 19 requests) covers what both servers answer: aggregates at country,
region, LA and constituency-region level, drilldowns over one to three dimensions, point, set
and range cuts, every cube, ``/members`` and ``/cell`` details. Each is sent sequentially on
a fresh connection to every server in turn, ``--repeat`` rounds after one warm-up round
(rounds interleave the servers so machine load hits them alike); the median is reported,
with each statcube median as a ratio of Cubes', and the geometric mean of the ratios.

Like for like, and where it is not:

- every stock query cuts one month: without a time cut Cubes sums a caseload over months
  while statcube answers the latest month, which would be different questions;
- statcube answers region and LA queries from its rollup tables (its compiler's choice);
  Cubes 1.1 reads the fact table (its SQL store has no aggregate navigation);
- statcube protects every value (cell key method) and Cubes publishes raw values: the
  protection is part of statcube's cost. The cell counts of both answers are compared and
  any difference printed: statcube leaves out cells published as zero (small counts), so a
  few cells fewer is expected;
- record-level ``/facts`` and ``/fact`` are not in the mix: statcube refuses them (403).

If Python 3.7, the Cubes environment or PostgreSQL is missing, the benchmark says so and
exits 2: there is no comparison without the peer.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import http.client
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_server import Running, announced
from bench.bench_server import start as start_statcube
from bench.common import warehouse_from_args

ROOT = Path(__file__).resolve().parent.parent
CUBES11 = ROOT / "tests" / "cubes11"
MONTH = "time:2026,4,11"  # the latest month of the benchmark warehouse
HB = "/cube/housing_benefit"

#: (name, path): every request both servers answer, in Cubes' URL syntax.
MIX: tuple[tuple[str, str], ...] = (
    ("hb total", f"{HB}/aggregate?cut={MONTH}"),
    ("hb country", f"{HB}/aggregate?drilldown=geography&cut={MONTH}"),
    ("hb region", f"{HB}/aggregate?drilldown=geography:region&cut={MONTH}"),
    ("hb region × tenure", f"{HB}/aggregate?drilldown=geography:region|tenure&cut={MONTH}"),
    ("hb LA in London", f"{HB}/aggregate?drilldown=geography:la"
                        f"&cut=geography:E92000001,E12000007|{MONTH}"),
    ("hb constituency regions", f"{HB}/aggregate?drilldown=geography@constituency:region"
                                f"&cut={MONTH}"),
    ("hb months of 2026", f"{HB}/aggregate?drilldown=time:month&cut=time:2026"),
    ("hb set × range", f"{HB}/aggregate?drilldown=time@ym:month|tenure"
                       "&cut=time@ym:2026,5-2026,8|tenure:private;other"),
    ("uc region × conditionality", "/cube/universal_credit/aggregate"
                                   f"?drilldown=geography:region|conditionality&cut={MONTH}"),
    ("uc London employment × gender × age", "/cube/universal_credit/aggregate"
                                            "?drilldown=employment|gender|age_band"
                                            f"&cut=geography:E92000001,E12000007|{MONTH}"),
    ("pip region × daily living × mobility", "/cube/pip/aggregate"
                                             "?drilldown=geography:region|daily_living|mobility"
                                             f"&cut={MONTH}"),
    ("pip England condition × age", "/cube/pip/aggregate?drilldown=condition|age_band"
                                    f"&cut=geography:E92000001|{MONTH}"),
    ("sanctions 2026 benefit × outcome", "/cube/sanctions/aggregate"
                                         "?drilldown=benefit|outcome&cut=time:2026"),
    ("sanctions region × reason", "/cube/sanctions/aggregate"
                                  f"?drilldown=geography:region|reason&cut={MONTH}"),
    ("benefit cap band × family", "/cube/benefit_cap/aggregate"
                                  f"?drilldown=cap_band|family_type&cut={MONTH}"),
    ("nino 2026 world area", "/cube/nino_registrations/aggregate"
                             "?drilldown=world_area&cut=time:2026"),
    ("members regions", f"{HB}/members/geography?depth=2"),
    ("members tenure", f"{HB}/members/tenure"),
    ("cell details", f"{HB}/cell?cut=geography:E92000001,E12000007|{MONTH}"),
)


class Unavailable(RuntimeError):
    """Something the comparison needs is missing: the benchmark says what and stops."""


# --- the peer: Cubes 1.1's environment and Slicer ------------------------------------------

def cubes_python() -> Path:
    """The Cubes 1.1 environment of tests/test_cubes_conformance.py (its pins, its cache
    directory), built here the same way when it is not there yet."""
    source = (ROOT / "tests" / "test_cubes_conformance.py").read_text(encoding="utf-8")
    pins: tuple[str, ...] = next(
        ast.literal_eval(node.value) for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PINS" for t in node.targets))
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    base = os.environ.get("STATCUBE_CUBES_VENV_DIR")
    target = (Path(base) if base else Path.home() / ".cache" / "statcube") / f"cubes11-{key}"
    python = target / "bin" / "python"
    if (target / "ready").exists():
        return python
    candidates = [os.environ.get("STATCUBE_PY37", ""), *sorted(
        (str(p) for p in (Path.home() / ".pyenv" / "versions").glob("3.7*/bin/python3.7")),
        reverse=True), *(str(p) for p in (Path("/usr/bin/python3.7"),
                                           Path("/usr/local/bin/python3.7")))]
    py37 = next((c for c in candidates if c and "/shims/" not in c and os.access(c, os.X_OK)),
                None)
    if py37 is None:
        raise Unavailable("Cubes 1.1 needs Python 3.7 (set STATCUBE_PY37): none found")
    print(f"building the Cubes 1.1 environment in {target} …", flush=True)
    for cmd in ([py37, "-m", "venv", str(target)],
                [str(python), "-m", "pip", "install", "-q", *pins]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise Unavailable(f"could not build the Cubes 1.1 environment: "
                              f"{(done.stderr or done.stdout)[-800:]}")
    (target / "ready").write_text("\n".join(pins) + "\n", encoding="utf-8")
    return python


def start_slicer(python: Path, url: str, schema: str, log: Path) -> Running:
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [str(python), str(CUBES11 / "slicer_server.py"), str(ROOT / "model.json"), url,
             schema], stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    running = announced(proc)
    if running is not None:
        return running
    raise Unavailable(f"Cubes' Slicer did not start: {log.read_text(encoding='utf-8')[-800:]}")


# --- PostgreSQL ---------------------------------------------------------------------------

def postgres() -> str:
    """A PostgreSQL URL: ``STATCUBE_TEST_PG_URL``, else the machine's Debian cluster started
    as the test suite starts it (tests/pg.py)."""
    url = os.environ.get("STATCUBE_TEST_PG_URL")
    if url:
        return url
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pg  # tests/pg.py: the one place that knows how to start the cluster
        found: str | None = pg._debian_cluster()
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(f"no PostgreSQL: {exc}") from None
    finally:
        sys.path.pop(0)
    if found is None:
        raise Unavailable("no PostgreSQL: set STATCUBE_TEST_PG_URL or install the server")
    return found


def load_schema(warehouse: Path, url: str) -> str:
    """The warehouse loaded into its own schema, named after the file's content stamp, and
    reused by later runs (like the benchmark warehouses under data/bench)."""
    import sqlalchemy as sa

    from cube.model import default_model_path, load_model
    from cube.pg_load import load_pg, pg_url

    stat = warehouse.stat()
    stamp = hashlib.sha256(f"{warehouse.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    schema = f"bench_cubes_{stamp.hexdigest()[:10]}"
    engine = sa.create_engine(pg_url(url))
    try:
        with engine.connect() as conn:
            done = conn.execute(sa.text(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = :s "
                "AND table_name = 'statcube_meta'"), {"s": schema}).first()
    finally:
        engine.dispose()
    if done is None:
        print(f"loading {warehouse.name} into PostgreSQL schema {schema} …", flush=True)
        load_pg(load_model(default_model_path()), warehouse, url, schema=schema, replace=True)
    return schema


# --- measuring ----------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    seconds: float
    cells: int | None


def get(base: str, path: str) -> Answer:
    """One request on a fresh connection (Werkzeug's server closes every connection, so
    statcube gets no keep-alive advantage either)."""
    parts = urllib.parse.urlsplit(base)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    took = time.perf_counter() - t0
    cells = None
    if resp.status == 200:
        doc = json.loads(body)
        rows = doc.get("cells", doc.get("data", doc.get("cuts")))
        cells = len(rows) if isinstance(rows, list) else None
    return Answer(resp.status, took, cells)


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def run(targets: dict[str, str], repeat: int, burst: int = 1) -> dict[str, Any]:
    """Every query of :data:`MIX` against every target, ``repeat`` interleaved rounds after a
    warm-up round; medians in ms, answer sizes, and failures.

    ``burst`` > 1 sends each measured request that many times back to back and keeps the
    last: the server then answers on a core that has just been busy. Why it is offered: on
    this development VM (cpuidle driver ``haltpoll``) a core idle for 20 ms wakes cold — a
    0.47 ms DuckDB statement takes 1.7 ms, a 2.7 ms statcube request 5.6 ms, measured
    2 December 2026 — and in the interleaved rounds every request follows another server's,
    so short answers pay that wake-up in full and long ones hardly notice it."""
    sizes: dict[str, dict[str, int | None]] = {}
    failures: list[str] = []
    for name, path in MIX:  # warm-up: fills statcube's cached LRU and every engine's buffers
        sizes[name] = {}
        for target, base in targets.items():
            a = get(base, path)
            sizes[name][target] = a.cells
            if a.status != 200:
                failures.append(f"{target}: {name} answered {a.status}")
    times: dict[str, dict[str, list[float]]] = {n: {t: [] for t in targets} for n, _ in MIX}
    for _ in range(repeat):
        for name, path in MIX:
            for target, base in targets.items():
                for _ in range(burst - 1):
                    get(base, path)
                times[name][target].append(get(base, path).seconds * 1000)
    medians = {n: {t: statistics.median(v) for t, v in per.items()} for n, per in times.items()}
    return {"medians_ms": medians, "cells": sizes, "failures": failures}


def report(result: dict[str, Any], peer: str, statcube: list[str]) -> tuple[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = result["medians_ms"]
    cols = ["query", f"{peer} ms", *(f"{t} ms" for t in statcube), *(f"{t} ×" for t in statcube)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    ratios: dict[str, list[float]] = {t: [] for t in statcube}
    for name, _ in MIX:
        m = medians[name]
        row = [name, f"{m[peer]:.1f}", *(f"{m[t]:.1f}" for t in statcube)]
        for t in statcube:
            r = m[t] / m[peer]
            ratios[t].append(r)
            row.append(f"{r:.2f}" + (" (slower)" if r > 1 else ""))
        lines.append("| " + " | ".join(row) + " |")
    means = {t: geomean(rs) for t, rs in ratios.items()}
    lines.append("| **geometric mean** | | " + " | " * (len(statcube) - 1) + " | "
                 + " | ".join(f"**{means[t]:.3f}**" for t in statcube) + " |")
    return "\n".join(lines), means


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--months", type=int, default=20)
    p.add_argument("--repeat", type=int, default=5, help="measured rounds (median)")
    p.add_argument("--burst", type=int, default=1,
                   help="requests sent back to back per measurement, the last one timed "
                        "(default 1: every request follows another server's; see run())")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--warehouse", type=Path, help="use this warehouse instead of building")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    from cube.model import default_model_path, load_model

    warehouse, described = warehouse_from_args(load_model(default_model_path()), args)
    logs = args.data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        python = cubes_python()
        url = postgres()
        schema = load_schema(warehouse, url)
    except Unavailable as exc:
        print(f"NO COMPARISON: {exc}. The benchmark needs Cubes 1.1 on PostgreSQL as its peer.",
              flush=True)
        return 2
    from cube.pg_load import pg_url

    sa_url = pg_url(url)
    psycopg2 = sa_url.set(drivername="postgresql+psycopg2", query={}).render_as_string(
        hide_password=False)
    with_path = sa_url.update_query_dict({"options": f"-csearch_path={schema}"}
                                         ).render_as_string(hide_password=False)
    servers: dict[str, Running] = {}
    starters: dict[str, Callable[[], Running]] = {
        "cubes": lambda: start_slicer(python, psycopg2, schema, logs / "cubes.log"),
        "duckdb uncached": lambda: start_statcube(
            warehouse, 1, 1, logs / "duck-uncached.log", {"STATCUBE_CACHE_BYTES": "0"}),
        "duckdb cached": lambda: start_statcube(warehouse, 1, 1, logs / "duck-cached.log"),
        "pg uncached": lambda: start_statcube(
            with_path, 1, 1, logs / "pg-uncached.log", {"STATCUBE_CACHE_BYTES": "0"}),
        "pg cached": lambda: start_statcube(with_path, 1, 1, logs / "pg-cached.log"),
    }
    try:
        for name, make in starters.items():
            servers[name] = make()
        bursts = f" (each the last of {args.burst} back-to-back requests)" \
            if args.burst > 1 else ""
        print(f"{described}; Cubes 1.1 Slicer on PostgreSQL schema {schema}; statcube on "
              f"DuckDB and PostgreSQL, 1 worker × 1 thread each; {len(MIX)} queries, "
              f"sequential, fresh connection per request, median of {args.repeat} rounds"
              f"{bursts}; "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
        print("uncached: statcube's result cache off (STATCUBE_CACHE_BYTES=0), every request "
              "runs its SQL, protection and serialisation; Cubes 1.1 has no result cache. "
              "Not like for like: statcube reads its rollups where its compiler picks them "
              "(Cubes reads the fact table) and protects every value (Cubes publishes raw "
              "ones); /facts is not compared (statcube refuses record-level data).", flush=True)
        result = run({n: s.url for n, s in servers.items()}, args.repeat, max(1, args.burst))
    except Unavailable as exc:
        print(f"NO COMPARISON: {exc}", flush=True)
        return 2
    finally:
        for s in servers.values():
            try:
                s.stop()
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(s.process.pid, signal.SIGKILL)
    text, means = report(result, "cubes", [n for n in servers if n != "cubes"])
    print(text)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    differ = [f"{n}: " + ", ".join(f"{t} {c}" for t, c in per.items())
              for n, per in result["cells"].items() if len(set(per.values())) > 1]
    if differ:
        print("answer sizes differ (cells/members/cuts per server; statcube leaves out cells its "
              "protection publishes as zero, as both leave out empty ones):\n  "
              + "\n  ".join(differ))
    for f in result["failures"]:
        print(f"FAILED {f}")
    slower = [n for n, m in result["medians_ms"].items()
              if any(m[t] > m["cubes"] for t in ("duckdb uncached", "pg uncached"))]
    print("uncached geometric mean vs Cubes: " + ", ".join(
        f"{t} {means[t]:.3f}×" for t in ("duckdb uncached", "pg uncached"))
        + f" (target ≤ 0.10×); queries slower than Cubes uncached: {slower or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({**result, "geomean": means}, indent=1) + "\n",
                             encoding="utf-8")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
