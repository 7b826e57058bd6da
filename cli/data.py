"""``generate``, ``build``, ``demo`` and ``serve``: from inputs to a served warehouse."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.context import model_of, settings_of
from cli.output import note, progress_bar
from cli.parsing import command, nonempty
from cube.errors import ArgumentError, ConfigError
from cube.settings import Settings

if TYPE_CHECKING:
    from cube.build import BuildOptions, BuildReport, ProgressFn
    from cube.model import Model


def cmd_generate(args: argparse.Namespace) -> int:
    from cube.synthetic import GenerateOptions, generate

    settings = settings_of(args)
    out = Path(args.out or Path(settings.data_dir) / "synthetic")
    opts = GenerateOptions(scale=args.scale, seed=args.seed, start=args.start,
                           months=args.months)
    with progress_bar("generate") as report:
        meta = generate(out, opts, report)
    g = meta["geography"]
    note(f"wrote synthetic GB data to {out}: {g['oa']:,} OAs, {g['lsoa']:,} LSOAs, "
         f"{g['msoa']:,} MSOAs, {g['la']} LAs, {g['pcon']} constituencies, "
         f"{len(meta['months'])} months ({meta['months'][0]} to {meta['months'][-1]})")
    return 0


def _secret(settings: Settings, data_dir: Path, *, create: bool) -> bytes:
    """The record-key secret; the demo makes a local one (never committed: .gitignore)."""
    try:
        return settings.secret()
    except ConfigError:
        if not create:
            raise
    import secrets

    path = data_dir / ".statcube-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
        path.chmod(0o600)
        note(f"demo: created a record-key secret in {path} (keep it private)")
    return settings.with_(key_file=str(path)).secret()


def cmd_build(args: argparse.Namespace) -> int:
    from cube.build import BuildOptions, build, check_input

    settings = settings_of(args)
    data_dir = Path(settings.data_dir)
    # A URI (hdfs://…, s3a://…, file:///…) is read through Spark's filesystems, never pathlib.
    from cube.spark.fs import is_uri  # no pyspark import: a string test

    remote = args.input is not None and is_uri(args.input)
    inp: Path | str = args.input if remote else Path(args.input or data_dir / "synthetic")
    out = Path(args.out or data_dir / "warehouse")
    if args.engine != "spark" and (remote or args.parquet_out):
        raise ArgumentError("a URI input and --parquet-out need --engine spark",
                            parameter="input" if remote else "parquet-out",
                            value=str(args.input if remote else args.parquet_out))
    model = model_of(settings)
    if not remote:
        check_input(model, Path(inp))  # a wrong folder is a wrong folder, not a missing secret
    secret = _secret(settings, data_dir, create=False)
    cache = settings.key_cache_dir()
    if cache is not None and args.engine == "duckdb":
        from cube.incremental import check_cache_location

        check_cache_location(cache, [out, Path(settings.export_dir)])
    options = BuildOptions(release=args.release, skip_bad_rows=args.skip_bad_rows,
                           threads=args.threads, full=args.full,
                           key_cache=cache if args.engine == "duckdb" else None)
    with progress_bar("build") as report:
        if args.engine == "spark":
            rep = _build_on_spark(model, inp, out, secret, options, args.master,
                                  args.parquet_out, report)
        else:
            rep = build(model, Path(inp), out, secret, options, report)
    for w in rep.warnings:
        note(f"warning: {w}")
    skipped = sum(c.skipped for c in rep.cubes.values())
    if args.engine == "duckdb":
        _note_reuse(rep)
    note(f"built {rep.warehouse} (release {rep.release}) from {len(rep.cubes)} cubes "
         f"in {rep.seconds:.1f}s" + (f"; skipped {skipped} bad rows, see build report"
                                     if skipped else ""))
    return 0


def _note_reuse(rep: BuildReport) -> None:
    """What an incremental build reused and what it found revised (one line each)."""
    carried = sum(len(c.carried) for c in rep.cubes.values())
    if rep.previous is None:
        note(f"full build: {rep.reuse}")
    else:
        note(f"reused {carried} unchanged cube-period(s) from release {rep.previous}")
    for cube, periods in rep.revisions.items():
        note(f"revised: {cube} {', '.join(periods)} (inputs changed since release "
             f"{rep.previous}; rebuilt)")


def _build_on_spark(model: Model, inp: Path | str, out: Path, secret: bytes,
                    options: BuildOptions, master: str, parquet_out: str | None,
                    report: ProgressFn) -> BuildReport:
    """The same build on Spark (cube/spark/): pyspark and Java are optional, so their
    absence is a one-line configuration error, not a traceback."""
    try:
        from cube.spark.build import SparkBuildOptions, build_spark
        from cube.spark.session import session
    except ImportError:
        raise ConfigError("--engine spark needs pyspark and Java 17: "
                          "pip install 'statcube[spark]'") from None
    return build_spark(model, inp, out, secret, session(master), options,
                       SparkBuildOptions(parquet_out=parquet_out), progress=report)


def cmd_demo(args: argparse.Namespace) -> int:
    from cube.build import BuildOptions, build
    from cube.synthetic import GenerateOptions, generate

    settings = settings_of(args)
    data_dir = Path(settings.data_dir)
    with progress_bar("generate") as report:
        generate(data_dir / "synthetic", GenerateOptions(scale=args.scale), report)
    secret = _secret(settings, data_dir, create=True)
    with progress_bar("build") as report:
        rep = build(model_of(settings), data_dir / "synthetic", data_dir / "warehouse", secret,
                    BuildOptions(), report)
    note(f"warehouse: {rep.warehouse} (release {rep.release}, built in {rep.seconds:.1f}s)")
    return _demo_next(args, settings, rep.warehouse)


def _demo_next(args: argparse.Namespace, settings: Settings, warehouse: Path) -> int:
    """What the demo does once data exists: write a quarterly release calendar (the newest
    release still under embargo) and serve the Slicer API on localhost, printing examples."""

    from cube.releases import quarterly_calendar
    from cube.workspace import Workspace

    ws = Workspace.open(model_of(settings), warehouse)
    months = list(ws.meta.get("months", []))
    ws.close()
    calendar = quarterly_calendar(months)
    cal_path = Path(settings.data_dir) / "releases.toml"
    cal_path.write_text(calendar.to_toml(), encoding="utf-8")
    now = settings.now()
    published = calendar.published(now)
    upcoming = [r for r in calendar.releases if not r.is_published(now)]
    note(f"release calendar: {cal_path} ({len(calendar.releases)} quarterly releases, "
         f"{len(published)} published)")
    notes = [("your role (guest), limits and the published releases", "/info"),
             ("regions of Great Britain, protected, latest published month",
              "/cube/housing_benefit/aggregate?drilldown=geography:region&prettyprint=true"),
             ("CSV, withheld values as '..'",
              "/cube/housing_benefit/aggregate?cut=geography:E92000001&drilldown=tenure"
              "&format=csv"),
             ("a stock by month (never added up over time)",
              "/cube/universal_credit/aggregate?drilldown=time:month&cut=time:2026&format=csv"),
             ("top five local authorities",
              "/cube/pip/aggregate?drilldown=geography:la&top=5:claimants"),
             ("the months you may see", "/cube/housing_benefit/members/time?depth=3"),
             ("the OpenAPI 3.1 description of every endpoint", "/openapi.json")]
    if published:
        notes.append((f"an older release ({published[0].id})",
                      f"/cube/housing_benefit/members/time?depth=3&release={published[0].id}"))
    if upcoming:
        r = upcoming[0]
        notes.append((f"release {r.id} is under embargo until "
                      f"{r.published:%d %b %Y %H:%M} London time: to guests it does not exist",
                      f"/cube/housing_benefit/aggregate?release={r.id}"))
    port = args.port if args.port is not None else settings.port
    served = settings.with_(warehouse=str(warehouse), releases=str(cal_path),
                            host="127.0.0.1", port=port if _port_free(port) else 0,
                            workers=args.workers)
    return _serve(served, examples=notes)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serve(settings: Settings, *, examples: Sequence[tuple[str, str]] = ()) -> int:
    from server.run import serve

    def ready(url: str) -> None:
        print(f"statcube is serving the Slicer API on {url}  (Ctrl-C stops it)", flush=True)
        if examples:
            print("try:", flush=True)
        for text, query in examples:
            print(f"  # {text}\n  curl '{url}{query}'", flush=True)

    return serve(settings, on_ready=ready)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_of(args).with_(warehouse=args.warehouse, releases=args.releases,
                                       api_keys=args.api_keys, host=args.host, port=args.port,
                                       workers=args.workers, threads=args.threads,
                                       sql_port=args.sql_port)
    if args.sql_port is None:
        return _serve(settings)
    from cli.sql import serve_beside

    return serve_beside(settings, lambda: _serve(settings))


def register(sub: Any) -> None:
    g = command(sub, "generate", help="write synthetic GB lookups and microdata",
                example="statcube generate --scale 0.01 --months 12 --start 2025-12")
    from cube.synthetic import GenerateOptions

    defaults = GenerateOptions()  # one home for the generator's defaults
    g.add_argument("--scale", type=float, default=defaults.scale,
                   help="fraction of GB, 0.0005 to 1.0 (1.0 = about 235k OAs, 13M "
                        f"claimants); default {defaults.scale}")
    g.add_argument("--seed", type=int, default=defaults.seed,
                   help="random seed: the same seed gives byte-identical files")
    g.add_argument("--start", default=defaults.start,
                   help=f"first month, YYYY-MM (default {defaults.start})")
    g.add_argument("--months", type=int, default=defaults.months,
                   help=f"number of months, 1 to 240 (default {defaults.months})")
    g.add_argument("--out", type=nonempty,
                   help="output directory (default DATA_DIR/synthetic)")
    g.set_defaults(func=cmd_generate)

    b = command(sub, "build", help="build a release warehouse (DuckDB) from inputs",
                example="STATCUBE_KEY_FILE=.statcube-secret statcube build --input data/real")
    b.add_argument("--input", type=nonempty,
                   help="input directory with geography/ and microdata/ "
                        "(default DATA_DIR/synthetic); with --engine spark also a URI "
                        "Spark can read (hdfs://…, s3a://…, file:///…)")
    b.add_argument("--out", type=nonempty,
                   help="warehouse directory (default DATA_DIR/warehouse)")
    b.add_argument("--release", type=nonempty,
                   help="release id (default: the latest month in the data)")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="build without bad input rows and write a report, instead of refusing")
    b.add_argument("--threads", type=int,
                   help="DuckDB threads (default: one per core)")
    b.add_argument("--full", action="store_true",
                   help="rebuild every period, even those the previous release in the "
                        "warehouse folder holds with unchanged inputs")
    b.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="where records are validated, keyed and aggregated: duckdb (this "
                        "machine) or spark (Apache Spark; the same warehouse, see README)")
    b.add_argument("--master", type=nonempty, default="local[2]",
                   help="Spark master URL with --engine spark (default local[2]; on a "
                        "cluster use spark-submit and cube.spark.submit)")
    b.add_argument("--parquet-out", type=nonempty,
                   help="with --engine spark: where the release's Parquet tree goes, a folder "
                        "or a URI Spark can write (default: beside the warehouse, which is "
                        "always a local file)")
    b.set_defaults(func=cmd_build)

    d = command(sub, "demo", help="generate small synthetic data, build it and serve it on "
                                  "localhost", example="statcube demo --port 8080")
    d.add_argument("--scale", type=float, default=defaults.scale,
                   help=f"fraction of GB to generate, 0.0005 to 1.0 (default {defaults.scale})")
    d.add_argument("--port", type=int, help="port (default STATCUBE_PORT or 8000; a free one "
                                            "if that is taken)")
    d.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    d.set_defaults(func=cmd_demo)

    sv = command(sub, "serve", help="serve the Slicer HTTP API (gunicorn, one worker per "
                                    "core, read-only warehouse)",
                 example="statcube serve --warehouse data/warehouse/2026-11.duckdb "
                         "--releases data/releases.toml --port 8000")
    sv.add_argument("--warehouse", type=nonempty,
                    help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE)")
    sv.add_argument("--releases", type=nonempty,
                    help="release calendar file (env STATCUBE_RELEASES)")
    sv.add_argument("--api-keys", type=nonempty, help="API keys file (env STATCUBE_API_KEYS)")
    sv.add_argument("--host", type=nonempty,
                    help="listen address (env STATCUBE_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (env STATCUBE_PORT, default 8000; 0: any)")
    sv.add_argument("--workers", type=int, help="processes (env STATCUBE_WORKERS; 0: cores)")
    sv.add_argument("--threads", type=int, help="threads per process (env STATCUBE_THREADS)")
    sv.add_argument("--sql-port", type=int,
                    help="also serve the SQL API (PostgreSQL protocol, for BI tools) on this "
                         "port, in a child process stopped with the server (0: any free port; "
                         "its address, TLS and threads are the sql-serve settings "
                         "STATCUBE_SQL_*); without it, run `statcube sql-serve` separately")
    sv.set_defaults(func=cmd_serve)
