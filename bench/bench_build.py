"""Build throughput: microdata records per second, end to end, against a plain DuckDB baseline.

    python -m bench.bench_build [--scale 0.05] [--months 6] [--repeat 3] [--threads N]

Generates synthetic GB data at the given scale into a temporary folder, then times, on the
same files and in the same run:

- **build** — ``cube.build.build`` end to end: geography, dimension tables, validation of
  every record, record keys, finest-grain facts, checkpoint;
- **baseline** — what the same machine does with no validation and no keys: for each cube, a
  plain ``CREATE TABLE fact AS SELECT <codes>, month, count(*), sum/max(amount) FROM
  read_parquet(...) GROUP BY ALL`` into a fresh DuckDB file.

Each is run ``--repeat`` times, alternating; the best run of each is reported with the ratio
build/baseline (1.0 = validation and keys are free). The machine's load average is printed
too: on a shared machine, absolute numbers say less than the ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from cube.build import BuildOptions, BuildReport, build, microdata_files, required_columns
from cube.model import Model, default_model_path, load_model
from cube.synthetic import GenerateOptions, generate

SECRET = b"bench-secret-not-for-production"


def cpu_seconds() -> float:
    """CPU time of this process, all threads: steadier than wall time on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def baseline(model: Model, input_dir: Path, out: Path, threads: int | None) -> tuple[float, int]:
    """Seconds and records for a plain GROUP BY of every cube into a DuckDB file."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(out))
    if threads:
        con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    records = 0
    for cube in model.cubes.values():
        files = microdata_files(input_dir, cube.name)
        if not files:
            continue
        amounts = [m.name for m in cube.measures if m.kind == "amount"]
        codes = [c for c in required_columns(cube) if c not in {"unit_id", *amounts}]
        aggs = "".join(f", sum({a}) AS {a}_sum, max({a}) AS {a}_max" for a in amounts)
        paths = ", ".join(f"'{f}'" for f in files)
        con.execute(f"CREATE TABLE {cube.physical.fact} AS SELECT {', '.join(codes)}, "
                    f"count(*) AS n{aggs} FROM read_parquet([{paths}]) GROUP BY ALL")
        row = con.execute(f"SELECT sum(n) FROM {cube.physical.fact}").fetchone()
        records += int(row[0]) if row else 0
    con.execute("CHECKPOINT")
    con.close()
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds, records


def run_build(model: Model, input_dir: Path, out: Path, threads: int | None) -> BuildReport:
    return build(model, input_dir, out, SECRET, BuildOptions(release="bench", threads=threads))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_build", description=__doc__)
    p.add_argument("--scale", type=float, default=0.05, help="fraction of GB (default 0.05)")
    p.add_argument("--months", type=int, default=6, help="months of microdata (default 6)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (default 3)")
    p.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    p.add_argument("--input", type=Path, help="use this generated folder instead of a new one")
    args = p.parse_args(argv)
    model = load_model(default_model_path())
    with tempfile.TemporaryDirectory(prefix="statcube-bench-") as tmp:
        work = Path(tmp)
        input_dir = args.input
        if input_dir is None:
            input_dir = work / "in"
            t = time.perf_counter()
            meta = generate(input_dir, GenerateOptions(scale=args.scale, months=args.months,
                                                       start="2025-01"))
            gen_s = time.perf_counter() - t
            total = sum(c["records"] for c in meta["cubes"].values())
            print(f"generated scale {args.scale}, {args.months} months: {total:,} records, "
                  f"{meta['geography']['oa']:,} OAs in {gen_s:.1f}s "
                  f"({total / gen_s:,.0f} records/s)")
        print(f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}")
        builds: list[BuildReport] = []
        bases: list[float] = []
        build_cpu: list[float] = []
        base_cpu: list[float] = []
        records = 0
        for i in range(args.repeat):
            c = cpu_seconds()
            b_s, records = baseline(model, input_dir, work / "baseline.duckdb", args.threads)
            base_cpu.append(cpu_seconds() - c)
            bases.append(b_s)
            c = cpu_seconds()
            report = run_build(model, input_dir, work / "wh", args.threads)
            build_cpu.append(cpu_seconds() - c)
            builds.append(report)
            assert report.records == records, "build and baseline disagree on record counts"
            print(f"run {i + 1}: build {report.seconds:6.2f}s (cpu {build_cpu[-1]:6.2f}s)   "
                  f"baseline {b_s:6.2f}s (cpu {base_cpu[-1]:6.2f}s)")
        best = min(builds, key=lambda r: r.seconds)
        base = min(bases)
        print(f"records            {records:,}")
        print(f"build              {best.seconds:.2f}s  {records / best.seconds:,.0f} records/s"
              f"   (cpu {min(build_cpu):.2f}s)")
        print(f"baseline           {base:.2f}s  {records / base:,.0f} records/s"
              f"   (cpu {min(base_cpu):.2f}s)")
        print(f"ratio build/base   {best.seconds / base:.2f} wall, "
              f"{min(build_cpu) / min(base_cpu):.2f} cpu")
        stages = dict(best.timings)
        print("stages of the best build (two cubes run at a time, so cube times overlap):")
        for cube, rep in best.cubes.items():
            detail = ", ".join(f"{k} {v:.2f}s" for k, v in rep.timings.items())
            print(f"  {cube:20} {stages.pop(cube, 0.0):6.2f}s  {rep.records:>10,} records "
                  f"{rep.units:>9,} units  ({detail})")
        for stage, s in stages.items():
            print(f"  {stage:20} {s:6.2f}s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:,.0f} MB; load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
