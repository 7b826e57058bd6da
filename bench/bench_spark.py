"""Build and export throughput on DuckDB and on Spark ``local[N]``: the same input and release.

    python -m bench.bench_spark [--scale 0.01] [--months 2] [--cores 1,2]

Generates synthetic GB data into a temporary folder, builds it once with
:func:`cube.build.build` (DuckDB) and once per ``--cores`` value with
:func:`cube.spark.build.build_spark` on a fresh ``local[N]`` session, then exports the same
release (every cube and grain) on DuckDB and on each Spark session. It prints wall time and
records/s for builds, exported cells/s for exports, the Spark jobs each step ran and the
latency of one trivial Spark job on the session: jobs x latency is the fixed cost a step pays
whatever the data size (the session's start-up is timed apart: a cluster pays it once per
application). Spark builds must give DuckDB's facts and Spark exports DuckDB's files, checked
here too, so a faster number is never bought with different cells.

Varying N shows what more cores buy Spark; on a 2-core machine N > 2 only adds contention.
All sessions share one JVM, so the first build also pays the JIT's warm-up (30-40 s here):
run ``--cores 1,2`` and ``--cores 2,1`` and compare the warm (second) builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from cube.build import BuildOptions, build
from cube.model import default_model_path, load_model
from cube.synthetic import GenerateOptions, generate

SECRET = b"bench-secret-not-for-production"


def _facts(path: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() "
                                           "WHERE starts_with(table_name, 'fact_')").fetchall()]
        return {n: con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    finally:
        con.close()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _jobs(spark: Any) -> int:
    """Spark jobs run so far on this session (none of statcube's set a job group)."""
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def _job_latency(spark: Any) -> float:
    """Median wall time of a trivial one-task job: the scheduling floor every job pays."""
    times = []
    for _ in range(7):
        t = time.perf_counter()
        spark.range(1).count()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _export(model: Any, warehouse: Path, out: Path, engine: Any = None) -> tuple[float, int]:
    from cube.export import export_release
    from cube.workspace import Workspace

    ws = Workspace.open(model, warehouse)
    try:
        t = time.perf_counter()
        results = export_release(ws, out, engine=engine)
        return time.perf_counter() - t, sum(r.rows for r in results)
    finally:
        ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--cores", default="1,2", help="comma-separated N for local[N]")
    args = parser.parse_args()
    from cube.spark.build import build_spark
    from cube.spark.engine import SparkEngine, parquet_tree
    from cube.spark.session import local_session

    model = load_model(default_model_path())
    with tempfile.TemporaryDirectory(prefix="statcube-bench-spark-") as tmp:
        root = Path(tmp)
        generate(root / "in", GenerateOptions(scale=args.scale, months=args.months,
                                              start="2026-01"))
        t = time.perf_counter()
        ref = build(model, root / "in", root / "duckdb", SECRET, BuildOptions())
        wall = time.perf_counter() - t
        print(f"scale {args.scale}, {args.months} months, {ref.records:,} records, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"duckdb        build  {wall:7.1f} s  {ref.records / wall:>10,.0f} records/s")
        expected = _facts(ref.warehouse)
        wall, cells = _export(model, ref.warehouse, root / "export-duckdb")
        print(f"duckdb        export {wall:7.1f} s  {cells / wall:>10,.0f} cells/s "
              f"({cells:,} cells)")
        exported = _files(root / "export-duckdb")
        for n in (int(c) for c in args.cores.split(",")):
            t = time.perf_counter()
            spark = local_session(f"local[{n}]")
            start = time.perf_counter() - t
            latency = _job_latency(spark)
            jobs = _jobs(spark)
            t = time.perf_counter()
            rep = build_spark(model, root / "in", root / f"spark{n}", SECRET, spark)
            wall = time.perf_counter() - t
            build_jobs, jobs = _jobs(spark) - jobs, _jobs(spark)
            same = _facts(rep.warehouse) == expected
            print(f"spark local[{n}] build  {wall:7.1f} s  {rep.records / wall:>10,.0f} "
                  f"records/s  {build_jobs} jobs x {latency:.2f} s/job "
                  f"(session start {start:.1f} s; facts equal DuckDB's: {same})")
            # The DuckDB build's release, so the files must equal the DuckDB export's.
            tree = parquet_tree(ref.warehouse)
            engine = SparkEngine(spark, tree)
            wall, cells = _export(model, ref.warehouse, root / f"export-spark{n}", engine)
            export_jobs = _jobs(spark) - jobs
            same = _files(root / f"export-spark{n}") == exported
            print(f"spark local[{n}] export {wall:7.1f} s  {cells / wall:>10,.0f} cells/s  "
                  f"{export_jobs} jobs x {latency:.2f} s/job (files equal DuckDB's: {same})")
            spark.stop()


if __name__ == "__main__":
    main()
