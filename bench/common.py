"""What the benchmarks share: a synthetic warehouse built once per (scale, months, cubes)
under ``data/bench`` and reused by later runs (rebuilt when the build now writes a newer
warehouse format, so a benchmark never times an outdated layout), and the common
command-line flags."""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from cube.build import WAREHOUSE_FORMAT, BuildOptions, build
from cube.model import Model
from cube.synthetic import GenerateOptions, generate

ROOT = Path(__file__).resolve().parent.parent


def warehouse_for(model: Model, scale: float, months: int, data: Path,
                  cubes: Sequence[str] | None = None, prefix: str = "") -> Path:
    """Build (once) a warehouse of ``months`` months ending 2026-11 at ``scale``, for every
    cube or only ``cubes``; a throwaway secret, since only timings leave a benchmark."""
    base = data / f"{prefix}scale-{scale:g}-m{months}"
    found = sorted((base / "warehouse").glob("*.duckdb"))
    if found and _format(found[-1]) == WAREHOUSE_FORMAT:
        return found[-1]
    if found:
        print(f"{found[-1]} has an older warehouse format: rebuilding", flush=True)
        shutil.rmtree(base)
    start_index = 2026 * 12 + 10 - (months - 1)
    start = f"{start_index // 12:04d}-{start_index % 12 + 1:02d}"
    what = ", ".join(cubes) if cubes else "GB"
    t0 = time.perf_counter()
    print(f"generating synthetic {what} at scale {scale} ({months} months from {start}) …",
          flush=True)
    options = (GenerateOptions(scale=scale, start=start, months=months, cubes=tuple(cubes))
               if cubes else GenerateOptions(scale=scale, start=start, months=months))
    generate(base / "synthetic", options)
    print(f"building the warehouse … ({time.perf_counter() - t0:.0f}s so far)", flush=True)
    report = build(model, base / "synthetic", base / "warehouse", secrets.token_bytes(32),
                   BuildOptions())
    rows = sum(c.fact_rows for c in report.cubes.values())
    print(f"built {report.warehouse} ({rows:,} fact rows) in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    return report.warehouse


def _format(warehouse: Path) -> int:
    """The ``format`` a warehouse records (1 before warehouses recorded one)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        row = con.execute("SELECT value FROM statcube_meta WHERE key = 'format'").fetchone()
    finally:
        con.close()
    return int(json.loads(row[0])) if row else 1


def warehouse_from_args(model: Model, args: argparse.Namespace) -> tuple[Path, str]:
    """The warehouse a benchmark run asked for (``--warehouse``, else the cached synthetic
    one for ``--scale``/``--months``) and how to name it in the report."""
    if args.warehouse:
        return args.warehouse, f"warehouse {args.warehouse}"
    return (warehouse_for(model, args.scale, args.months, args.data),
            f"scale {args.scale}, {args.months} months")


def warehouse_args(p: argparse.ArgumentParser, *, scale: float = 0.05, months: int = 12,
                   repeat: int = 25) -> None:
    p.add_argument("--scale", type=float, default=scale)
    p.add_argument("--months", type=int, default=months)
    p.add_argument("--repeat", type=int, default=repeat)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--warehouse", type=Path, help="use this warehouse instead of building")
