"""Build throughput on DuckDB and on Spark ``local[N]``: the same input, records/s for each.

    python -m bench.bench_spark [--scale 0.01] [--months 2] [--cores 1,2]

Generates synthetic GB data into a temporary folder, builds it once with
:func:`cube.build.build` (DuckDB) and once per ``--cores`` value with
:func:`cube.spark.build.build_spark` on a fresh ``local[N]`` session, and prints wall time and
records/s for each (the Spark session's start-up is timed apart: a cluster pays it once per
job). Both builds must give the same fact tables, checked here too, so a faster number is
never bought with different cells.

Varying N shows what more cores buy Spark; on a 2-core machine N > 2 only adds contention.
All sessions share one JVM, so the first build also pays the JIT's warm-up (30–40 s here):
run ``--cores 1,2`` and ``--cores 2,1`` and compare the warm (second) builds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--cores", default="1,2", help="comma-separated N for local[N]")
    args = parser.parse_args()
    from cube.spark.build import build_spark
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
        print(f"duckdb        build {wall:7.1f} s  {ref.records / wall:>10,.0f} records/s")
        expected = _facts(ref.warehouse)
        for n in (int(c) for c in args.cores.split(",")):
            t = time.perf_counter()
            spark = local_session(f"local[{n}]")
            start = time.perf_counter() - t
            t = time.perf_counter()
            rep = build_spark(model, root / "in", root / f"spark{n}", SECRET, spark)
            wall = time.perf_counter() - t
            spark.stop()
            same = _facts(rep.warehouse) == expected
            print(f"spark local[{n}] build {wall:7.1f} s  {rep.records / wall:>10,.0f} "
                  f"records/s  (session start {start:.1f} s; facts equal DuckDB's: {same})")


if __name__ == "__main__":
    main()
