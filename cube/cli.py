"""The ``statcube`` command line.

Parses arguments, calls cube/ functions, prints results. Errors from the StatcubeError
hierarchy are printed as one clear line (plus their problem list) with exit status 2; nothing
here prints a stack trace for a user mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cube.errors import ConfigError, StatcubeError
from cube.settings import SETTINGS, Settings

console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line in logs


@contextmanager
def progress_bar(title: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar that long-running cube/ functions report to."""
    with Progress(
        TextColumn(f"[bold]{title}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield report


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        model=getattr(args, "model", None),
        data_dir=getattr(args, "data_dir", None),
    )


def _model(settings: Settings) -> Any:
    from cube.model import default_model_path, load_model

    path = Path(settings.model)
    if not path.exists() and settings.model == "model.json":
        path = default_model_path()
    return load_model(path)


def cmd_generate(args: argparse.Namespace) -> int:
    from cube.synthetic import GenerateOptions, generate

    settings = _settings(args)
    out = Path(args.out or Path(settings.data_dir) / "synthetic")
    opts = GenerateOptions(scale=args.scale, seed=args.seed, start=args.start,
                           months=args.months)
    with progress_bar("generate") as report:
        meta = generate(out, opts, report)
    g = meta["geography"]
    console.print(
        f"wrote synthetic GB data to {out}: {g['oa']:,} OAs, {g['lsoa']:,} LSOAs, "
        f"{g['msoa']:,} MSOAs, {g['la']} LAs, {g['pcon']} constituencies, "
        f"{len(meta['months'])} months ({meta['months'][0]} to {meta['months'][-1]})"
    )
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
        console.print(f"demo: created a record-key secret in {path} (keep it private)")
    return settings.with_(key_file=str(path)).secret()


def cmd_build(args: argparse.Namespace) -> int:
    from cube.build import BuildOptions, build

    settings = _settings(args)
    data_dir = Path(settings.data_dir)
    inp = Path(args.input or data_dir / "synthetic")
    out = Path(args.out or data_dir / "warehouse")
    secret = _secret(settings, data_dir, create=False)
    with progress_bar("build") as report:
        rep = build(_model(settings), inp, out, secret,
                    BuildOptions(release=args.release, skip_bad_rows=args.skip_bad_rows,
                                 threads=args.threads),
                    report)
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    skipped = sum(c.skipped for c in rep.cubes.values())
    console.print(
        f"built {rep.warehouse} (release {rep.release}) from {len(rep.cubes)} cubes "
        f"in {rep.seconds:.1f}s" + (f"; skipped {skipped} bad rows, see build report"
                                    if skipped else "")
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cube.build import BuildOptions, build
    from cube.synthetic import GenerateOptions, generate

    settings = _settings(args)
    data_dir = Path(settings.data_dir)
    with progress_bar("generate") as report:
        generate(data_dir / "synthetic", GenerateOptions(scale=args.scale), report)
    secret = _secret(settings, data_dir, create=True)
    with progress_bar("build") as report:
        rep = build(_model(settings), data_dir / "synthetic", data_dir / "warehouse", secret,
                    BuildOptions(), report)
    console.print(f"warehouse: {rep.warehouse} (release {rep.release}, built in "
                  f"{rep.seconds:.1f}s)")
    return _demo_next(args, settings, rep.warehouse)


def _demo_next(args: argparse.Namespace, settings: Settings, warehouse: Path) -> int:
    """What the demo does once data exists: write a quarterly release calendar (the newest
    release still under embargo) and serve the Slicer API on localhost, printing examples."""
    from datetime import UTC, datetime

    from cube.releases import quarterly_calendar
    from cube.workspace import Workspace

    ws = Workspace.open(_model(settings), warehouse)
    months = list(ws.meta.get("months", []))
    ws.close()
    calendar = quarterly_calendar(months)
    cal_path = Path(settings.data_dir) / "releases.toml"
    cal_path.write_text(calendar.to_toml(), encoding="utf-8")
    now = datetime.now(UTC)
    published = calendar.published(now)
    upcoming = [r for r in calendar.releases if not r.is_published(now)]
    console.print(f"release calendar: {cal_path} ({len(calendar.releases)} quarterly releases, "
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
        for note, query in examples:
            print(f"  # {note}\n  curl '{url}{query}'", flush=True)

    return serve(settings, on_ready=ready)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args).with_(warehouse=args.warehouse, releases=args.releases,
                                     api_keys=args.api_keys, host=args.host, port=args.port,
                                     workers=args.workers, threads=args.threads)
    return _serve(settings)


def cmd_export(args: argparse.Namespace) -> int:
    """Write (or resume) protected Parquet exports of a release: see cube/export.py."""
    from cube.export import export_release, format_bytes, open_release

    settings = _settings(args).with_(warehouse=args.warehouse, releases=args.releases)
    ws, release, published = open_release(
        _model(settings), data_dir=settings.data_dir, warehouse=settings.warehouse,
        release=args.release, calendar=settings.release_calendar(),
        prerelease=args.prerelease)
    out = Path(args.out or settings.export_dir)
    try:
        with progress_bar(f"export {release}") as report:
            results = export_release(ws, out, cubes=args.cube, grains=args.grain,
                                     release=release, published=published, progress=report)
    finally:
        ws.close()
    rows = sum(r.rows for r in results)
    size = sum(r.bytes for r in results)
    kept = sum(1 for r in results if r.already_complete)
    last = f"{ws.visible_until[0]:04d}-{ws.visible_until[1]:02d}" if ws.visible_until else "?"
    console.print(f"exported release {release} (data to {last}) to {out / release}: "
                  f"{len(results)} grains"
                  + (f" ({kept} already complete, left as they were)" if kept else "")
                  + f", {rows:,} rows, {format_bytes(size)} of data"
                  + (f"; published {published}" if published else ""))
    return 0


def cmd_sdc_report(args: argparse.Namespace) -> int:
    """Utility figures of disclosure control for a cube and level: see
    cube/disclosure/report.py. Aggregate statistics only, never a raw cell value."""
    import json

    from cube.disclosure.report import sdc_report
    from cube.workspace import Workspace, resolve_warehouse

    settings = _settings(args)
    target = resolve_warehouse(args.warehouse or settings.warehouse, settings.data_dir)
    ws = Workspace.open(_model(settings), target)
    try:
        report = sdc_report(ws.cube(args.cube), args.level, args.period)
    finally:
        ws.close()
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    for s in SETTINGS:
        print(f"{s.env:24} {s.default!s:12} {s.help}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="statcube", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model.json path (env STATCUBE_MODEL)")
    p.add_argument("--data-dir", help="data directory (env STATCUBE_DATA_DIR, default ./data)")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write synthetic GB lookups and microdata")
    g.add_argument("--scale", type=float, default=0.01,
                   help="fraction of GB (1.0 = about 235k OAs, 13M claimants); default 0.01")
    g.add_argument("--seed", type=int, default=20261121)
    g.add_argument("--start", default="2025-04", help="first month, YYYY-MM")
    g.add_argument("--months", type=int, default=20)
    g.add_argument("--out", help="output directory (default DATA_DIR/synthetic)")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("build", help="build a release warehouse (DuckDB) from inputs")
    b.add_argument("--input", help="input directory with geography/ and microdata/")
    b.add_argument("--out", help="warehouse directory (default DATA_DIR/warehouse)")
    b.add_argument("--release", help="release id (default: latest month in the data)")
    b.add_argument("--skip-bad-rows", action="store_true",
                   help="build without bad input rows and write a report, instead of refusing")
    b.add_argument("--threads", type=int)
    b.set_defaults(func=cmd_build)

    d = sub.add_parser("demo", help="generate small synthetic data, build it and serve it "
                                    "on localhost")
    d.add_argument("--scale", type=float, default=0.01)
    d.add_argument("--port", type=int, help="port (default STATCUBE_PORT or 8000; a free one "
                                            "if that is taken)")
    d.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    d.set_defaults(func=cmd_demo)

    sv = sub.add_parser("serve", help="serve the Slicer HTTP API (gunicorn, one worker per "
                                      "core, read-only warehouse)")
    sv.add_argument("--warehouse", help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE)")
    sv.add_argument("--releases", help="release calendar file (env STATCUBE_RELEASES)")
    sv.add_argument("--api-keys", help="API keys file (env STATCUBE_API_KEYS)")
    sv.add_argument("--host", help="listen address (env STATCUBE_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (env STATCUBE_PORT, default 8000; 0: any)")
    sv.add_argument("--workers", type=int, help="processes (env STATCUBE_WORKERS; 0: cores)")
    sv.add_argument("--threads", type=int, help="threads per process (env STATCUBE_THREADS)")
    sv.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write protected Parquet cube exports of a release "
                                      "(resumes an interrupted run)")
    e.add_argument("--release", help="release id in the calendar in force (default: the "
                                     "latest published release)")
    e.add_argument("--prerelease", action="store_true",
                   help="allow --release to name a release not yet published (served only "
                        "to prerelease and admin keys until its publication time)")
    e.add_argument("--cube", action="append", help="cube to export (repeatable; default all)")
    e.add_argument("--grain", action="append",
                   help="export grain, e.g. oa or la_all (repeatable; default all)")
    e.add_argument("--out", help="export directory (env STATCUBE_EXPORT_DIR, default exports)")
    e.add_argument("--warehouse", help="DuckDB file for releases the calendar names no "
                                       "warehouse for, as for serve (env STATCUBE_WAREHOUSE; "
                                       "default: the newest in DATA_DIR/warehouse)")
    e.add_argument("--releases", help="release calendar file (env STATCUBE_RELEASES; default "
                                      "DATA_DIR/releases.toml if it exists)")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("sdc-report", help="utility of disclosure control for a cube and "
                                          "level (aggregate figures only)")
    r.add_argument("--cube", required=True, help="cube name, e.g. housing_benefit")
    r.add_argument("--level", required=True, help="dim:level, e.g. geography:la")
    r.add_argument("--period", help="YYYY-MM (YYYY-Qn for quarterly cubes; default: latest)")
    r.add_argument("--warehouse", help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE;"
                                       " default: newest release in DATA_DIR/warehouse)")
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.set_defaults(func=cmd_sdc_report)

    s = sub.add_parser("settings", help="list settings and their environment variables")
    s.set_defaults(func=cmd_settings)

    from cube.cli_query import add_commands  # aggregate, members, sql, load-pg

    add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StatcubeError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: no partial output is visible; rerun the same command to "
                      "resume (exports continue from their last finished partition)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
