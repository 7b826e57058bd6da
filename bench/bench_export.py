"""Bulk export throughput and memory against a plain DuckDB ``COPY … TO parquet``, in one run.

    python -m bench.bench_export                     # Housing Benefit, scale 1.0, 12 months
    python -m bench.bench_export --scale 0.05 --months 6 --repeat 1

The warehouse holds one cube, Housing Benefit (counts *and* amounts, so the export runs the
whole protected path: both p-table look-ups, magnitudes, means and withheld flags), built once
from synthetic microdata and kept under ``data/bench/`` (git-ignored). Scale 1.0 with 12
months gives about 23 million fact rows (OA × month × five categories).

Five sides, each in a fresh process so its peak RSS is its own (``wait4``), run in ABBA
order so none always gets the warm page cache:

- **copy_grain** (the target's baseline): ``COPY (SELECT <the grain's columns: country,
  region, LA, MSOA, LSOA codes and names, OA code>, month_id, sum(n), sum(weekly_award_sum),
  max(weekly_award_max) FROM fact JOIN dim_geography … GROUP BY …) TO 'grain.parquet'`` —
  the same cells with the same attribute columns, unprotected, in one plain DuckDB
  statement over every month;
- **copy_two_step**: the same cells and columns, summed by ``oa_code, month_id`` first and
  joined to the geography after (as the export's SQL does; DuckDB does not reorder this);
- **copy_keys**: the same aggregation by ``oa_code, month_id`` alone (no attribute columns,
  no join) — the least any export of this grain could do;
- **copy**: ``COPY (SELECT * FROM fact_housing_benefit) TO 'fact.parquet'`` on a read-only
  connection — the unprotected fact table, DuckDB's defaults;
- **export**: ``cube.export.export_grain(ws, "housing_benefit", "oa", …)`` — the OA × month
  grain: protected cells per period through the disclosure gate, streamed to zstd Parquet
  with dictionary-encoded codes, plus codelists, datapackage.json and checksums.

All read every fact row once, so throughput is compared in fact rows per second (the export
also reports the cells it wrote). Targets: export ≥ 0.5 × the grain COPY's throughput (at
most twice its time), peak RSS < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from bench import common
from cube.model import Model, default_model_path, load_model

ROOT = Path(__file__).resolve().parent.parent
CUBE = "housing_benefit"
GRAIN = "oa"
FACT = f"fact_{CUBE}"
TARGET_RATIO = 0.5
TARGET_RSS = 2 << 30


def warehouse_for(model: Model, scale: float, months: int, data: Path) -> Path:
    """One cube's warehouse (the export benchmark needs only the cube it exports)."""
    return common.warehouse_for(model, scale, months, data, cubes=(CUBE,),
                                prefix=f"export-{CUBE}-")


# --- the two sides, each run in its own process ---------------------------------------------------

def side_copy(warehouse: Path, out: Path) -> dict[str, Any]:
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET enable_progress_bar = false")
    target = out / "fact.parquet"
    t0 = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM {FACT}) TO '{target}' (FORMAT parquet)")
    seconds = time.perf_counter() - t0
    con.close()
    return {"seconds": seconds, "rows": pq.read_metadata(target).num_rows,
            "bytes": target.stat().st_size}


SUMS = ("sum(n) AS claimants, sum(weekly_award_sum) AS weekly_award_sum, "
        "max(weekly_award_max) AS weekly_award_max")
GEO = ", ".join(f"g.{level}_code, g.{level}_name" for level in (
    "country", "region", "la", "msoa", "lsoa"))
GRAIN_SQL = (f"SELECT {GEO}, f.oa_code, f.month_id, {SUMS} FROM {FACT} f "
             f"JOIN dim_geography g ON f.oa_code = g.oa_code GROUP BY ALL")
KEYS_SQL = f"SELECT oa_code, month_id, {SUMS} FROM {FACT} GROUP BY oa_code, month_id"
TWO_STEP_SQL = (f"SELECT {GEO}, p.* FROM ({KEYS_SQL}) p "
                f"JOIN dim_geography g ON p.oa_code = g.oa_code")


def side_copy_grain(warehouse: Path, out: Path, sql: str = GRAIN_SQL) -> dict[str, Any]:
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET enable_progress_bar = false")
    target = out / "grain.parquet"
    t0 = time.perf_counter()
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    seconds = time.perf_counter() - t0
    con.close()
    return {"seconds": seconds, "rows": pq.read_metadata(target).num_rows,
            "bytes": target.stat().st_size}


def side_export(warehouse: Path, out: Path) -> dict[str, Any]:
    from cube.export import export_grain, limit_memory, verify_export
    from cube.workspace import Workspace

    ws = Workspace.open(load_model(default_model_path()), warehouse)
    limit_memory(ws, "1GB")  # as `statcube export` does by default
    t0 = time.perf_counter()
    result = export_grain(ws, CUBE, GRAIN, out)
    seconds = time.perf_counter() - t0
    ws.close()
    problems = verify_export(result.path)
    package = json.loads((result.path / "datapackage.json").read_text(encoding="utf-8"))
    codes = set(package["statcube"]["parquet"]["dictionary_encoded"])
    chunks = plain = groups = 0
    for f in sorted((result.path / "data").glob("*/part-0.parquet")):
        meta = pq.read_metadata(f)
        for g in range(meta.num_row_groups):
            groups += 1
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                if col.path_in_schema in codes:
                    chunks += 1
                    plain += not col.has_dictionary_page
    return {"seconds": seconds, "rows": result.rows, "bytes": result.bytes,
            "partitions": result.partitions, "row_groups": groups, "code_chunks": chunks,
            "code_chunks_not_dictionary": plain, "problems": problems}


def side_copy_keys(warehouse: Path, out: Path) -> dict[str, Any]:
    return side_copy_grain(warehouse, out, KEYS_SQL)


def side_copy_two_step(warehouse: Path, out: Path) -> dict[str, Any]:
    return side_copy_grain(warehouse, out, TWO_STEP_SQL)


SIDES = {"copy_grain": side_copy_grain, "copy_two_step": side_copy_two_step,
         "copy_keys": side_copy_keys, "copy": side_copy, "export": side_export}


def run_side(side: str, warehouse: Path, out: Path) -> dict[str, Any]:
    """One side in a fresh interpreter; its own peak RSS from the kernel (``wait4``)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "bench.bench_export", "--side", side,
           "--warehouse", str(warehouse), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed with status {proc.returncode}")
    result: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    shutil.rmtree(out)
    return result


# --- report ------------------------------------------------------------------------------------

def _gb(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def report(runs: dict[str, list[dict[str, Any]]], fact_rows: int, label: str) -> bool:
    best = {side: min(rs, key=lambda r: r["seconds"]) for side, rs in runs.items()}
    median = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    rss = {side: max(r["peak_rss"] for r in rs) for side, rs in runs.items()}
    print()
    print(f"{label}; {FACT}: {fact_rows:,} rows")
    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
          f"Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
          f"pyarrow {pa.__version__}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
          f"load average {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'side':<38}{'runs (s)':>26}{'best s':>9}{'fact rows/s':>14}"
          f"{'rows out':>12}{'bytes out':>12}{'peak RSS':>12}")
    names = {"copy_grain": f"COPY {GRAIN} grain aggregation → parquet",
             "copy_two_step": "COPY the same, summed before the join",
             "copy_keys": "COPY oa_code × month sums → parquet",
             "copy": f"COPY {FACT} → parquet", "export": f"export {CUBE}/{GRAIN} (protected)"}
    for side in SIDES:
        b = best[side]
        times = ", ".join(f"{r['seconds']:.1f}" for r in runs[side])
        print(f"{names[side]:<38}{times:>26}{b['seconds']:>9.1f}"
              f"{fact_rows / b['seconds']:>14,.0f}{b['rows']:>12,}{_mb(b['bytes']):>12}"
              f"{_gb(rss[side]):>12}")
    e = best["export"]
    ratio = best["copy_grain"]["seconds"] / e["seconds"]
    median_ratio = median["copy_grain"] / median["export"]
    fact_ratio = best["copy"]["seconds"] / e["seconds"]
    keys_ratio = best["copy_keys"]["seconds"] / e["seconds"]
    two_ratio = best["copy_two_step"]["seconds"] / e["seconds"]
    print()
    print(f"export: {e['partitions']} partitions, {e['row_groups']} row groups, "
          f"{e['rows'] / e['seconds']:,.0f} cells/s written; code column chunks "
          f"dictionary-encoded: {e['code_chunks'] - e['code_chunks_not_dictionary']} of "
          f"{e['code_chunks']}; checksums verified: {'ok' if not e['problems'] else e['problems']}")
    ok_ratio: bool = ratio >= TARGET_RATIO
    ok_rss: bool = rss["export"] < TARGET_RSS
    print(f"throughput ratio export / COPY of the grain's aggregation: {ratio:.2f}× (best), "
          f"{median_ratio:.2f}× (median) — target ≥ {TARGET_RATIO}×: "
          f"{'met' if ok_ratio else 'MISSED'}")
    print(f"throughput ratio export / the same COPY summed before the join: {two_ratio:.2f}× "
          "(best)")
    print(f"throughput ratio export / COPY of the sums by OA code alone: {keys_ratio:.2f}× "
          f"(best); / COPY of the fact table: {fact_ratio:.2f}× (best)")
    print(f"export peak RSS {_gb(rss['export'])} — target < {_gb(TARGET_RSS)}: "
          f"{'met' if ok_rss else 'MISSED'}")
    return ok_ratio and ok_rss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_export",
                                description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds; each runs both sides (ABBA order), default 2")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--warehouse", type=Path, help="use this warehouse instead of building")
    p.add_argument("--out", type=Path, help="scratch directory (default DATA/export-scratch)")
    p.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:  # a worker: one side, result as a JSON line
        print(json.dumps(SIDES[args.side](args.warehouse, args.out)), flush=True)
        return 0
    model = load_model(default_model_path())
    warehouse = args.warehouse or warehouse_for(model, args.scale, args.months, args.data)
    con = duckdb.connect(str(warehouse), read_only=True)
    row = con.execute(f"SELECT count(*) FROM {FACT}").fetchone()
    con.close()
    fact_rows = int(row[0]) if row else 0
    scratch = args.out or args.data / "export-scratch"
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    order = tuple(SIDES)
    for i in range(args.repeat):
        for side in (order if i % 2 == 0 else order[::-1]):
            r = run_side(side, warehouse, scratch / side)
            runs[side].append(r)
            print(f"round {i + 1}: {side:<10} {r['seconds']:6.1f}s  peak RSS "
                  f"{_gb(r['peak_rss'])}", flush=True)
    label = (f"warehouse {warehouse}" if args.warehouse else
             f"Housing Benefit at scale {args.scale:g}, {args.months} months")
    return 0 if report(runs, fact_rows, label) else 1


if __name__ == "__main__":
    raise SystemExit(main())
