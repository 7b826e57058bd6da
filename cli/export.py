"""``export``: write (or resume) protected Parquet exports of a release (cube/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.context import model_of, settings_of
from cli.output import note, progress_bar
from cli.parsing import command, nonempty
from cube.errors import ArgumentError, ConfigError

if TYPE_CHECKING:
    from cube.engine import Engine
    from cube.workspace import Workspace


def cmd_export(args: argparse.Namespace) -> int:
    """Write (or resume) protected Parquet exports of a release: see cube/export.py."""
    from cube.export import export_release, format_bytes, open_release

    settings = settings_of(args).with_(warehouse=args.warehouse, releases=args.releases)
    ws, release, published = open_release(
        model_of(settings), data_dir=settings.data_dir, warehouse=settings.warehouse,
        release=args.release, calendar=settings.release_calendar(),
        prerelease=args.prerelease, now=settings.now())
    out = Path(args.out or settings.export_dir)
    try:
        engine = _spark_engine(ws, args.master, args.tables) \
            if args.engine == "spark" else None
        with progress_bar(f"export {release}") as report:
            results = export_release(ws, out, cubes=args.cube, grains=args.grain,
                                     release=release, published=published, progress=report,
                                     engine=engine, carry=not args.no_carry,
                                     memory_limit=args.memory_limit)
    finally:
        ws.close()
    rows = sum(r.rows for r in results)
    size = sum(r.bytes for r in results)
    kept = sum(1 for r in results if r.already_complete)
    carried = sum(r.carried_partitions for r in results)
    parts = sum(r.partitions for r in results if not r.already_complete)
    last = f"{ws.visible_until[0]:04d}-{ws.visible_until[1]:02d}" if ws.visible_until else "?"
    note(f"exported release {release} (data to {last}) to {out / release}: "
         f"{len(results)} grains"
         + (f" ({kept} already complete, left as they were)" if kept else "")
         + f", {rows:,} rows, {format_bytes(size)} of data"
         + (f"; carried {carried} of {parts} partitions over unchanged from an earlier "
            "release" if carried else "")
         + (f"; published {published}" if published else ""))
    return 0


def _spark_engine(ws: Workspace, master: str, tables: str | None) -> Engine:
    """The protected SQL run on Spark over the release's Parquet tables (cube/spark/): the
    tree beside the warehouse, or ``--tables`` (a folder or URI) when it is that release's."""
    warehouse = Path(ws.engine.target)
    if not warehouse.is_file():
        raise ConfigError("--engine spark exports a release warehouse file (a DuckDB file), "
                          f"not {warehouse}")
    try:
        from cube.spark.engine import SparkEngine, parquet_tree, tree_meta
        from cube.spark.session import session
    except ImportError:
        raise ConfigError("--engine spark needs pyspark and Java 17: "
                          "pip install 'statcube[spark]'") from None
    spark = session(master)
    if tables is None:
        return SparkEngine(spark, parquet_tree(warehouse))
    meta = tree_meta(spark, tables)
    for key in ("release", "ptable_digest"):
        if meta.get(key) != ws.meta.get(key):
            raise ArgumentError(f"--tables is not this release's Parquet tree ({key} differs "
                                "from the warehouse's)", parameter="tables", value=tables)
    return SparkEngine(spark, tables)


def register(sub: Any) -> None:
    e = command(sub, "export", help="write protected Parquet cube exports of a release "
                                    "(resumes an interrupted run)",
                example="statcube export --release 2026-11 --cube housing_benefit --grain oa")
    e.add_argument("--release", type=nonempty,
                   help="release id in the calendar in force (default: the latest published "
                        "release)")
    e.add_argument("--prerelease", action="store_true",
                   help="allow --release to name a release not yet published (served only to "
                        "prerelease and admin keys until its publication time)")
    e.add_argument("--cube", action="append", type=nonempty,
                   help="cube to export (repeatable; default all)")
    e.add_argument("--grain", action="append", type=nonempty,
                   help="export grain, e.g. oa or la_all (repeatable; default all)")
    e.add_argument("--out", type=nonempty,
                   help="export directory (env STATCUBE_EXPORT_DIR, default exports)")
    e.add_argument("--warehouse", type=nonempty,
                   help="DuckDB file for releases the calendar names no warehouse for, as for "
                        "serve (env STATCUBE_WAREHOUSE; default: the newest in "
                        "DATA_DIR/warehouse)")
    e.add_argument("--releases", type=nonempty,
                   help="release calendar file (env STATCUBE_RELEASES; default "
                        "DATA_DIR/releases.toml if it exists)")
    e.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="where protected cells are computed: duckdb (the warehouse) or spark "
                        "(Apache Spark over the release's Parquet tables; the same files)")
    e.add_argument("--master", type=nonempty, default="local[2]",
                   help="Spark master URL with --engine spark (default local[2])")
    e.add_argument("--no-carry", action="store_true",
                   help="compute every partition, even those unchanged since an earlier "
                        "release's export in the same directory (default: carry them over, "
                        "checksums verified)")
    e.add_argument("--memory-limit", type=nonempty, default="1GB",
                   help="memory DuckDB may hold while exporting, e.g. 1GB or 512MB (default "
                        "1GB; it evicts cached blocks and spills beyond it)")
    e.add_argument("--tables", type=nonempty,
                   help="with --engine spark: the release's Parquet tree, a folder or a URI "
                        "Spark can read (default: <release>.parquet beside the warehouse)")
    e.set_defaults(func=cmd_export)
