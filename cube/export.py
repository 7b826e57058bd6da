"""Bulk "raw aggregate" cube exports: protected Parquet datasets with codelists and metadata.

A release's export is ``exports/<release>/<cube>/<grain>/`` holding

- ``data/period=<YYYY-MM or YYYY-Qn>/part-0.parquet`` — one hive partition per period, zstd,
  dictionary-encoded codes, fixed row-group size; only protected columns (attributes,
  published aggregates, ``<aggregate>_withheld`` flags) — the rows come from the disclosure
  gate's SQL path, the same template and p-table as the API, so a cell has the same value in
  both;
- ``codelists/<dimension>_<level>.parquet|csv`` — members and labels of every level used;
- ``README.txt``;
- ``datapackage.json`` — a Frictionless Data Package (schemas, Open Government Licence v3.0,
  sources, method, SHA-256 and size of every file) whose ``statcube.provenance`` is the
  export's record: release, its last period and publication time, warehouse build, p-table
  hash, grain;
- ``SHA256SUMS`` — the same checksums plus that of datapackage.json, for ``sha256sum -c``.

An export is always of a release of the calendar in force (:func:`open_release`): by default
the latest published one, seen up to its last period exactly as the API serves it; with no
calendar, the warehouse as its one release. The download server serves it only while its
record matches the calendar and the warehouse build it serves (:func:`record_matches`).

Grains (which levels of which dimensions; the period is always one of them) come from a cube's
``info.exports.grains`` in model.json, else the defaults: local authority × every category,
output area alone, output area × each category in turn. A grain the disclosure grammar limits
would refuse as a query is refused as an export, with the same reason.

Nothing lost: a grain is written under a hidden ``.<grain>.partial`` directory and renamed
into place only when complete, so a reader never sees half an export. Each finished partition
is recorded with its checksum in a manifest; a rerun after a kill verifies and skips finished
partitions, rewrites anything missing or corrupt, and produces byte-identical files
(deterministic order, fixed row groups, no timestamps other than the release's own). A
complete export is never rewritten: a rerun is a no-op.

Incremental: a partition whose fingerprint (:func:`partition_fingerprints` — digests of the
period's facts and of the cube's dimension tables, computed in cube/disclosure/fingerprint.py,
plus the model, p-table, grain, format and writer) equals the one recorded in another
release's complete export of the same grain under the same root is carried over — hard-linked
or copied, its checksum verified — instead of computed; the files are byte-identical to a
fresh export either way, so a quarterly release computes only its new and revised months.

Memory stays bounded by the size of a period, never of the export: rows are streamed from the
engine in record batches and written in fixed-size row groups, and at most two periods are in
flight (the one being written, and the next one's query running meanwhile in the engine).

This module reads the warehouse only through the workspace and the disclosure gate; it never
sees a raw column.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import (
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cube.disclosure.fingerprint import dimension_digest, engine_tag, period_digests
from cube.disclosure.protect import has_withheld_flag, withheld_column
from cube.disclosure.rules import check_query
from cube.engine import Engine
from cube.errors import (
    ArgumentError,
    ConfigError,
    DisclosureRuleError,
    ModelError,
    StatcubeError,
    suggest,
)
from cube.model import Cube, Dimension, Level, Model
from cube.query import MAX_PAGESIZE, CutPart, Drill, Query
from cube.raw import RawCube
from cube.releases import LONDON, Calendar, Release, build_id, format_period, warehouse_calendar
from cube.workspace import CubeBrowser, Workspace, resolve_warehouse

#: Rows per Parquet row group (the last group of a partition may be smaller).
ROW_GROUP_ROWS = 250_000
#: Rows per record batch streamed from the engine.
BATCH_ROWS = 100_000
#: Largest dictionary page per column chunk; big enough that OA codes stay dictionary-encoded
#: in a full row group (Parquet writers fall back to plain encoding past the limit).
DICTIONARY_PAGE_BYTES = 8 << 20
#: Bump when the bytes an export produces change for the same warehouse (resumes then restart).
#: 2: the record (release, last period, publication time, warehouse build) lives in
#: ``statcube.provenance`` alone; the download server serves only exports of this format.
#: 3: a partition's bytes no longer name the release (so an unchanged partition can be
#: carried over to the next release) and the record holds each partition's fingerprint.
FORMAT_VERSION = 3
LICENCE = {
    "name": "OGL-UK-3.0",
    "title": "Open Government Licence v3.0",
    "path": "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
}
ProgressFn = Callable[[str, int, int], None]

_GRAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DATAPACKAGE = "datapackage.json"
CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.json"


# --- Grains ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grain:
    """Which levels of which dimensions an export is broken down by (the period always).

    ``levels`` pairs a dimension — ``name`` or ``name@hierarchy`` — with a level name.
    """

    name: str
    levels: tuple[tuple[str, str], ...]
    description: str = ""


def _category_dims(cube: Cube) -> list[Dimension]:
    return [d for d in cube.dimensions if d.members]


def _geography(cube: Cube) -> Dimension | None:
    return next((d for d in cube.dimensions if d.geographic), None)


def _drills(cube: Cube, g: Grain, where: str) -> tuple[Drill, ...]:
    """The grain's levels as drilldowns; a ModelError naming ``where`` if one does not exist."""
    drills: list[Drill] = []
    for spec, level_name in g.levels:
        dim_name, _, hier_name = spec.partition("@")
        try:
            dim = cube.dimension(dim_name)
            hier = dim.hierarchy(hier_name or None)
            level = hier.level(level_name)
        except StatcubeError as exc:
            raise ModelError(f"export grain {g.name!r}: {exc.message}",
                             path=f"{where}.levels") from None
        if dim.is_time:
            raise ModelError(f"export grain {g.name!r}: leave out {dim.name!r}; every export "
                             "is partitioned by period", path=f"{where}.levels")
        if any(d.dimension.name == dim.name for d in drills):
            raise ModelError(f"export grain {g.name!r} names dimension {dim.name!r} twice",
                             path=f"{where}.levels")
        drills.append(Drill(dim, hier, level))
    if not drills:
        raise ModelError(f"export grain {g.name!r} names no level", path=f"{where}.levels")
    return tuple(drills)


def check_grain(cube: Cube, g: Grain, where: str | None = None) -> tuple[Drill, ...]:
    """Refuse a grain the disclosure grammar limits would refuse as a query (ModelError, with
    the rule's own reason), or that names unknown dimensions or levels."""
    where = where or f"$.cubes[{cube.name}].info.exports.grains[{g.name}]"
    if not _GRAIN_NAME.match(g.name):
        raise ModelError(f"export grain name {g.name!r}: use lower-case letters, digits and "
                         "'_' (it names a directory)", path=f"{where}.name")
    drills = _drills(cube, g, where)
    query = Query(cube=cube, cuts=(), drilldown=drills, aggregates=cube.aggregates, order=())
    try:
        check_query(query)
    except DisclosureRuleError as exc:
        raise ModelError(f"export grain {g.name!r} of cube {cube.name!r} would be refused by "
                         f"the disclosure limits: {exc.message}", path=where) from None
    return drills


def _passes(cube: Cube, g: Grain) -> bool:
    try:
        check_grain(cube, g)
    except ModelError:
        return False
    return True


def default_grains(cube: Cube) -> tuple[Grain, ...]:
    """LA × period × every category; OA × period; OA × period × each category in turn —
    keeping only those the cube's disclosure limits allow (e.g. none with a category at OA
    level if ``max_category_dims_at_oa`` is 0)."""
    geo = _geography(cube)
    if geo is None:
        return ()
    hier = geo.hierarchy()
    names = [lv.name for lv in hier.levels]
    finest = hier.levels[-1]
    cats = _category_dims(cube)
    candidates = []
    min_level = cube.disclosure.group_cut_min_level.get(geo.name, "la")
    la = min_level if min_level in names else names[min(2, len(names) - 1)]
    candidates.append(Grain(
        f"{la}_all", ((geo.name, la), *((d.name, d.levels[0].name) for d in cats)),
        f"{hier.level(la).label} by period by every category"))
    candidates.append(Grain(finest.name, ((geo.name, finest.name),),
                            f"{finest.label} by period"))
    for d in cats:
        candidates.append(Grain(f"{finest.name}_{d.name}",
                                ((geo.name, finest.name), (d.name, d.levels[0].name)),
                                f"{finest.label} by period by {d.label.lower()}"))
    return tuple(g for g in candidates if _passes(cube, g))


def grains_for(cube: Cube) -> tuple[Grain, ...]:
    """The cube's export grains: ``info.exports.grains`` in model.json, else the defaults.

    A declared grain is ``{"name": "oa_tenure", "levels": {"geography": "oa", "tenure":
    "tenure"}, "description": "…"}``; a dimension may name its hierarchy
    (``"geography@constituency": "pcon"``). Every grain is checked against the disclosure
    limits; one they would refuse is a ModelError naming it and the rule.
    """
    spec = cube.info.get("exports")
    if spec is None:
        return default_grains(cube)
    base = f"$.cubes[{cube.name}].info.exports"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("grains"), list) \
            or not spec["grains"]:
        raise ModelError("expected {\"grains\": [ … ]} with at least one grain", path=base)
    out: list[Grain] = []
    for i, raw in enumerate(spec["grains"]):
        where = f"{base}.grains[{i}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) \
                or not isinstance(raw.get("levels"), Mapping):
            raise ModelError("each grain needs a name and a levels object "
                             "({\"dimension\": \"level\"})", path=where)
        levels = tuple((str(k), str(v)) for k, v in raw["levels"].items())
        g = Grain(raw["name"], levels, str(raw.get("description", "")))
        if any(o.name == g.name for o in out):
            raise ModelError(f"export grain {g.name!r} is declared twice", path=f"{where}.name")
        check_grain(cube, g, where)
        out.append(g)
    return tuple(out)


def grain(cube: Cube, name: str) -> Grain:
    for g in grains_for(cube):
        if g.name == name:
            return g
    raise ArgumentError(f"cube {cube.name!r} has no export grain {name!r}", parameter="grain",
                        value=name, hint="grains: " + ", ".join(g.name for g in grains_for(cube)))


# --- Queries -----------------------------------------------------------------------------------

def _finest_time(cube: Cube) -> tuple[Dimension, Level]:
    tdim = cube.time_dimension
    if tdim is None:
        raise ModelError(f"cube {cube.name!r} has no time dimension")
    return tdim, tdim.hierarchy().levels[-1]


def period_label(cube: Cube, period: int) -> str:
    """``202607`` → ``2026-07``; ``20263`` (quarterly cubes) → ``2026-Q3``."""
    if cube.grain == "quarter":
        return f"{period // 10:04d}-Q{period % 10}"
    return f"{period // 100:04d}-{period % 100:02d}"


def _period_path(cube: Cube, period: int) -> tuple[int, ...]:
    tdim, _ = _finest_time(cube)
    hier = tdim.hierarchy()
    if cube.grain == "quarter":
        values = {"year": period // 10, "quarter": period % 10}
    else:
        m = period % 100
        values = {"year": period // 100, "quarter": (m - 1) // 3 + 1, "month": m}
    return tuple(values[lv.name] for lv in hier.levels)


def grain_query(browser: CubeBrowser, g: Grain, period: int) -> Query:
    """The protected query for one period of a grain (checked like any other query)."""
    cube = browser.cube
    drills = check_grain(cube, g)
    tdim, _ = _finest_time(cube)
    cut = CutPart(tdim, tdim.hierarchy(), "point", (_period_path(cube, period),))
    q = Query(cube=cube, cuts=(cut,), drilldown=drills, aggregates=cube.aggregates,
              order=(), period_limit=browser.period_limit)
    check_query(q)
    return q


def visible_periods(browser: CubeBrowser) -> list[int]:
    """The periods the workspace may see (YYYYMM, or YYYYQ for quarterly cubes), oldest first."""
    tdim, finest = _finest_time(browser.cube)
    members = browser.members(tdim.name, level=finest.name).members
    cube = browser.cube
    out = []
    for row in members.to_pylist():
        if cube.grain == "quarter":
            out.append(int(row["time.year"]) * 10 + int(row["time.quarter"]))
        else:
            out.append(int(row["time.year"]) * 100 + int(row["time.month"]))
    return sorted(out)


def column_names(query: Query) -> dict[str, str]:
    """Public result column → export column: attribute names without the dimension prefix
    (prefixed only on a clash), time attributes dropped (the period is the partition key)."""
    mapping: dict[str, str] = {}
    for a in query.cell_attributes:
        if query.cube.dimension(a.dimension).is_time:
            continue
        mapping[a.ref] = a.name if a.name not in mapping.values() else f"{a.dimension}_{a.name}"
    for agg in query.aggregates:
        mapping[agg.name] = agg.name
        if has_withheld_flag(agg):
            mapping[withheld_column(agg.name)] = withheld_column(agg.name)
    return mapping


def _code_columns(query: Query) -> list[str]:
    """Export columns that hold attributes (dictionary-encoded)."""
    names = column_names(query)
    return [names[a.ref] for a in query.cell_attributes if a.ref in names]


def key_columns(query: Query) -> list[str]:
    """Export columns that identify a cell: the key of every drilled level."""
    names = column_names(query)
    return [names[d.level.key.ref] for d in query.drilldown if not d.dimension.is_time]


# --- Files ---------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(final)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync_replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _rechunk(batches: Iterable[pa.RecordBatch], names: Mapping[str, str], rows: int
             ) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter) from a batch stream, so row
    groups do not depend on batch sizes. Holds at most ``rows`` plus one batch."""
    pending: list[pa.RecordBatch] = []
    count = 0
    keep = list(names)
    for batch in batches:
        batch = batch.select(keep).rename_columns([names[k] for k in keep])
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def _write_partition(reader: pa.RecordBatchReader, query: Query, path: Path, *,
                     metadata: Mapping[str, str], row_group_rows: int) -> int:
    """Stream one period's protected cells into ``path`` (via a temporary file); the rows."""
    names = column_names(query)
    schema = pa.schema([reader.schema.field(k).with_name(v) for k, v in names.items()],
                       metadata=dict(metadata))
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd",
                              use_dictionary=_code_columns(query),
                              dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES,
                              write_statistics=True) as writer:
            for table in _rechunk(reader, names, row_group_rows):
                writer.write_table(table, row_group_size=row_group_rows)
                rows += table.num_rows
        _fsync_replace(tmp, path)
    finally:
        reader.close()
        tmp.unlink(missing_ok=True)
    return rows


def _one_ahead(open_stream: Callable[[int], pa.RecordBatchReader], periods: Sequence[int]
               ) -> Generator[pa.RecordBatchReader, None, None]:
    """The periods' protected streams in order, the next period's query running (in DuckDB,
    outside the GIL) while the current one is written: the engine never waits for Parquet
    encoding. At most two periods are in flight, so memory stays bounded by the period."""
    if not periods:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="statcube-export") as pool:
        future: Future[pa.RecordBatchReader] | None = pool.submit(open_stream, periods[0])
        try:
            for following in [*periods[1:], None]:
                assert future is not None
                reader = future.result()
                future = None if following is None else pool.submit(open_stream, following)
                yield reader
        finally:
            if future is not None:  # stopped early: release the query started for nothing
                with contextlib.suppress(Exception):
                    future.result().close()


#: Members of a level already read in this export run: (dimension, hierarchy, depth) → table.
MembersCache = MutableMapping[tuple[str, str, int], pa.Table]


def _members(browser: CubeBrowser, drill: Drill, depth: int,
             cache: MembersCache | None = None) -> pa.Table:
    """Every member of a level (paged, as the API pages them); ``cache`` keeps them for the
    other grains of the same cube (a cube's grains share its geography's codelists)."""
    key = (drill.dimension.name, drill.hierarchy.name, depth)
    if cache is not None and key in cache:
        return cache[key]
    found = _read_members(browser, drill, depth)
    if cache is not None:
        cache[key] = found
    return found


def _read_members(browser: CubeBrowser, drill: Drill, depth: int) -> pa.Table:
    pages = []
    page = 0
    while True:
        found = browser.members(drill.dimension.name, hierarchy=drill.hierarchy.name,
                                depth=depth, page=page, pagesize=MAX_PAGESIZE).members
        pages.append(found)
        if found.num_rows < MAX_PAGESIZE:
            return pa.concat_tables(pages)
        page += 1


def _write_codelists(browser: CubeBrowser, query: Query, directory: Path,
                     cache: MembersCache | None = None) -> list[tuple[Path, list[str]]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for drill in query.drilldown:
        if drill.dimension.is_time:
            continue
        for depth, lvl in enumerate(drill.levels, start=1):
            cols = [lvl.key.ref] + ([lvl.label_attribute.ref]
                                    if lvl.label_attribute != lvl.key else [])
            t = _members(browser, drill, depth, cache).select(cols).rename_columns(
                ["code"] + (["label"] if len(cols) > 1 else []))
            base = directory / f"{drill.dimension.name}_{lvl.name}"
            pq_path = base.with_suffix(".parquet")
            tmp = pq_path.with_name(pq_path.name + ".tmp")
            pq.write_table(t, tmp, compression="zstd")
            _fsync_replace(tmp, pq_path)
            csv_path = base.with_suffix(".csv")
            tmp = csv_path.with_name(csv_path.name + ".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(t.column_names)
                w.writerows(zip(*(t.column(c).to_pylist() for c in t.column_names),
                                strict=True))
            _fsync_replace(tmp, csv_path)
            out += [(pq_path, t.column_names), (csv_path, t.column_names)]
    return out


_FRICTIONLESS_TYPES = {"string": "string", "large_string": "string", "int64": "integer",
                       "int32": "integer", "int16": "integer", "int8": "integer",
                       "double": "number", "float": "number", "bool": "boolean"}


def _fields(schema: pa.Schema, descriptions: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": _FRICTIONLESS_TYPES.get(str(f.type), "any"),
             **({"description": descriptions[f.name]} if f.name in descriptions else {})}
            for f in schema]


@dataclass(frozen=True)
class ExportResult:
    """What one call did: ``path`` is the finished grain (or, if stopped, the partial one)."""

    path: Path
    partitions: int
    rows: int
    skipped_partitions: int
    already_complete: bool = False
    complete: bool = True
    bytes: int = 0
    #: Partitions carried over unchanged from a previous release's export (not recomputed).
    carried_partitions: int = 0


def _licence(ws: Workspace) -> dict[str, str]:
    """model.json's ``info.licence``, else the Open Government Licence v3.0."""
    found = ws.model.info.get("licence")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) \
        else dict(LICENCE)


def release_id(ws: Workspace, release: str | None = None) -> str:
    """The export's release id: given, or the warehouse's own (a view limited to a period
    without a release id is named by that period)."""
    if release is None:
        release = ws.release if ws.visible_until is None else \
            f"{ws.visible_until[0]:04d}-{ws.visible_until[1]:02d}"
    if not _RELEASE_ID.match(release):
        raise ArgumentError(f"release id {release!r}: use letters, digits, '-' and '_'",
                            parameter="release", value=release)
    return release


def last_period(ws: Workspace) -> str:
    """The newest month the workspace may see (YYYY-MM): its embargo limit, else — a
    warehouse seen whole, as when no calendar is in force — its newest month."""
    if ws.visible_until is not None:
        return format_period(ws.visible_until)
    months = ws.meta.get("months") or []
    if not months:
        raise ConfigError("the warehouse lists no months")
    return str(months[-1])


def _provenance(ws: Workspace, browser: CubeBrowser, g: Grain, release: str,
                published: str | None, row_group_rows: int,
                fingerprints: Mapping[str, str]) -> dict[str, Any]:
    """The export's record — the one home of each fact about what it is of: its release, the
    release's last period and publication time, the warehouse build, the p-table, the grain.
    Everything here decides the bytes of a grain's files: a partial export made with other
    values is discarded, and a complete one is refused rather than silently kept. The
    download server serves an export only while this record matches the calendar and the
    served warehouse (:func:`record_matches`). ``fingerprints`` (period → fingerprint, see
    :func:`partition_fingerprints`) is what the next release's export reads to carry
    unchanged partitions over."""
    return {
        "format_version": FORMAT_VERSION,
        "release": release,
        "last_period": last_period(ws),
        "published": published,
        "warehouse_build": build_id(ws.meta),
        "warehouse_release": ws.meta.get("release"),
        "warehouse_built_at": ws.meta.get("built_at"),
        "cube": browser.cube.name,
        "grain": g.name,
        "levels": [list(pair) for pair in g.levels],
        "ptable_sha256": ws.gate.protection.ptable.digest,
        "row_group_rows": row_group_rows,
        "fingerprints": dict(sorted(fingerprints.items())),
    }


def record_matches(package: Mapping[str, Any], release: Release, build: str, cube: str,
                   grain_name: str) -> bool:
    """Whether a finished export's ``datapackage.json`` is an export of ``release`` as the
    calendar defines it now (same last period), made from warehouse build ``build``, for
    this cube and grain. A missing or malformed record never matches: an export the
    calendar and the warehouse do not vouch for is not served."""
    info = package.get("statcube")
    record = info.get("provenance") if isinstance(info, Mapping) else None
    if not isinstance(record, Mapping):
        return False
    return (record.get("format_version") == FORMAT_VERSION
            and record.get("release") == release.id
            and record.get("last_period") == format_period(release.last_period)
            and record.get("warehouse_build") == build
            and record.get("cube") == cube and record.get("grain") == grain_name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer per grain: a second export of the same grain fails at once. The lock dies
    with its process, so a killed export never blocks the rerun; the file is checked to be
    the one at ``path`` after locking (another process may have removed it meanwhile)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"another export is writing {path.parent} "
                                  f"({path.name} is locked)") from None
            raise
        try:
            same = path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _load_manifest(partial: Path, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The partial export's manifest, or a fresh one (and an emptied directory) if it is
    missing, unreadable or was made from something else."""
    path = partial / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("provenance") == provenance and isinstance(
                manifest.get("partitions"), dict):
            return dict(manifest)
    except (OSError, ValueError, AttributeError):
        pass
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return {"provenance": dict(provenance), "partitions": {}}


def _partition_ok(path: Path, entry: Mapping[str, Any]) -> bool:
    try:
        if path.stat().st_size != entry["bytes"]:
            return False
    except OSError:
        return False
    return bool(sha256_file(path) == entry["sha256"])


# --- Carrying unchanged partitions over from a previous release ------------------------------

@dataclass(frozen=True)
class CubeDigests:
    """What a cube's partitions depend on in the warehouse, computed once per export run and
    shared by every grain of the cube: a digest of each period's facts and one of the cube's
    dimension tables (cube/disclosure/fingerprint.py). Empty on engines without digests
    (PostgreSQL): then nothing is carried over."""

    facts: Mapping[int, str]
    dimensions: str | None


def cube_digests(ws: Workspace, cube_name: str) -> CubeDigests:
    """The digests of a cube's visible periods and dimension tables (one scan of its facts)."""
    browser = ws.cube(cube_name)
    return CubeDigests(period_digests(ws.engine, browser.cube, visible_periods(browser)),
                       dimension_digest(ws.engine, browser.cube))


def partition_fingerprints(ws: Workspace, browser: CubeBrowser, g: Grain,
                           periods: Sequence[int], row_group_rows: int,
                           digests: CubeDigests) -> dict[str, str]:
    """Period label → SHA-256 of everything the bytes of that period's partition depend on:
    the period's fact rows and the cube's dimension tables (as digests), the cube's model
    definition (levels, members, labels, mappings, disclosure limits), the model's protection
    parameters and p-table digest, the licence named in the file, the grain, the row-group
    size, the export format, the engine version that computes the digests, and the Parquet
    writer's version. Not the engine that computes the cells: DuckDB and Spark write the same
    bytes (tests/test_spark.py), and the record must not tell them apart. Deliberately not
    the release, its last period or the warehouse build: those change every release while
    the partition's bytes do not. Two partitions with the same fingerprint are
    byte-identical, so one may stand for the other. Empty when the warehouse's engine
    computes no digests."""
    tag = engine_tag(ws.engine)
    if tag is None or digests.dimensions is None:
        return {}
    cube = browser.cube
    p = ws.gate.protection
    common = {
        "format_version": FORMAT_VERSION,
        "digests": tag,
        "writer": f"pyarrow-{pa.__version__}",
        "parquet": [row_group_rows, DICTIONARY_PAGE_BYTES, "zstd"],
        "model": hashlib.sha256(repr(cube).encode()).hexdigest(),
        "disclosure": hashlib.sha256(repr(ws.model.disclosure).encode()).hexdigest(),
        "protection": p.report_parameters(),
        "k": p.k,
        "ptable_sha256": p.ptable.digest,
        "licence": _licence(ws)["title"],
        "cube": cube.name,
        "grain": g.name,
        "levels": [list(pair) for pair in g.levels],
        "dimensions": digests.dimensions,
    }
    out: dict[str, str] = {}
    for period in periods:
        facts = digests.facts.get(period)
        if facts is None:
            continue
        label = period_label(cube, period)
        text = json.dumps({**common, "period": label, "facts": facts}, sort_keys=True)
        out[label] = hashlib.sha256(text.encode()).hexdigest()
    return out


@dataclass(frozen=True)
class _Source:
    """A finished partition of a previous release's export that may be carried over."""

    path: Path
    sha256: str
    bytes: int


def carry_sources(out_root: Path, release: str, cube_name: str, grain_name: str,
                  fingerprints: Mapping[str, str]) -> dict[str, _Source]:
    """Period label → a partition of another release's *complete* export of the same cube
    and grain under ``out_root`` whose recorded fingerprint equals this one's. Newest
    release (by last period) first. Exports of another format, unreadable records and
    partitions their datapackage.json does not list are ignored; the checksum is verified
    when the file is carried (:func:`_carry`)."""
    found: dict[str, _Source] = {}
    if not fingerprints:
        return found
    candidates = []
    for package_path in Path(out_root).glob(f"*/{cube_name}/{grain_name}/{DATAPACKAGE}"):
        directory = package_path.parent
        if directory.parents[1].name == release:
            continue
        try:
            info = json.loads(package_path.read_text(encoding="utf-8"))["statcube"]
            record = info["provenance"]
            if record.get("format_version") != FORMAT_VERSION:
                continue
            files = info["files"]
            prints = record.get("fingerprints") or {}
            candidates.append((str(record.get("last_period", "")), directory, files, prints))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for _, directory, files, prints in sorted(candidates, key=lambda c: c[:2], reverse=True):
        for label, fp in fingerprints.items():
            rel = f"data/period={label}/part-0.parquet"
            entry = files.get(rel)
            if label in found or prints.get(label) != fp or not isinstance(entry, Mapping):
                continue
            found[label] = _Source(directory / rel, str(entry["sha256"]), int(entry["bytes"]))
    return found


def _carry(source: _Source, path: Path) -> bool:
    """Put ``source`` at ``path`` — a hard link when both are on one filesystem (no bytes
    copied, no space used), else a copy — and verify its size and SHA-256 against the
    previous export's record. False (and nothing left behind) if the source is missing or
    does not match: the partition is then computed afresh. Exports are never edited in
    place (every write goes to a temporary file renamed over the old one), so a shared
    inode cannot change under either release."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            os.link(source.path, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(source.path, tmp)
        if tmp.stat().st_size != source.bytes or sha256_file(tmp) != source.sha256:
            return False
        _fsync_replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def export_grain(ws: Workspace, cube_name: str, grain_name: str, out_root: Path, *,
                 release: str | None = None, published: str | None = None,
                 progress: ProgressFn | None = None, stop_after: int | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS, batch_rows: int = BATCH_ROWS,
                 engine: Engine | None = None, carry: bool = True,
                 digests: CubeDigests | None = None,
                 members: MembersCache | None = None) -> ExportResult:
    """Write (or resume) one grain of one cube to ``out_root/<release>/<cube>/<grain>``.

    ``engine`` runs the protected cells' SQL somewhere else than the workspace's own
    warehouse connection (cube/spark/engine.py: on Spark, over the release's Parquet
    tables); the gate, the SQL template, the p-table and every file written are the same.

    ``release`` names the export (default: the warehouse's release); ``published`` is the
    release's publication time (ISO 8601), recorded in the metadata. ``stop_after`` stops
    after that many newly written partitions, leaving the partial directory as a kill would
    (tests use it to prove resumption).

    With ``carry`` (the default), a partition whose fingerprint (:func:`partition_fingerprints`)
    equals that of the same period in another release's complete export of this grain under
    ``out_root`` is carried over — hard-linked or copied, its checksum verified — instead of
    computed; the files are byte-identical to a fresh export either way. ``digests`` are the
    cube's (:func:`cube_digests`), when the caller already has them; ``members`` keeps the
    codelists' members read for the cube's other grains.
    """
    if row_group_rows < 1 or batch_rows < 1:
        raise ArgumentError("row groups and batches need at least one row")
    browser = ws.cube(cube_name)
    cube = browser.cube
    g = grain(cube, grain_name)
    release = release_id(ws, release)
    final = Path(out_root) / release / cube.name / g.name
    periods = visible_periods(browser)
    if digests is None:
        digests = cube_digests(ws, cube.name)
    fingerprints = partition_fingerprints(ws, browser, g, periods, row_group_rows, digests)
    provenance = _provenance(ws, browser, g, release, published, row_group_rows, fingerprints)
    if (final / DATAPACKAGE).exists():
        return _complete(final, provenance)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f".{g.name}.lock"):
        if (final / DATAPACKAGE).exists():  # finished by another process meanwhile
            return _complete(final, provenance)
        partial = final.with_name(f".{g.name}.partial")
        manifest = _load_manifest(partial, provenance)
        parts: dict[str, Any] = manifest["partitions"]
        if not periods:
            raise ArgumentError(f"no published periods for {cube.name} in release {release}",
                                parameter="release", value=release)
        labels = {p: period_label(cube, p) for p in periods}
        rels = {p: f"data/period={labels[p]}/part-0.parquet" for p in periods}
        finished = {p for p in periods
                    if rels[p] in parts and _partition_ok(partial / rels[p], parts[rels[p]])}
        sources = carry_sources(Path(out_root), release, cube.name, g.name,
                                fingerprints) if carry else {}
        carried = 0
        for p in periods:
            source = sources.get(labels[p])
            if p in finished or source is None or not _carry(source, partial / rels[p]):
                continue
            path = partial / rels[p]
            parts[rels[p]] = {"sha256": source.sha256, "rows": pq.read_metadata(path).num_rows,
                              "bytes": source.bytes, "period": labels[p], "carried": True}
            _write_json(partial / MANIFEST, manifest)
            finished.add(p)
            carried += 1
        todo = [p for p in periods if p not in finished][:stop_after]

        raw = browser.raw if engine is None else RawCube(engine, cube, browser.raw.k)

        def open_stream(period: int) -> pa.RecordBatchReader:
            return ws.gate.stream(raw, grain_query(browser, g, period), batch_rows)

        written = rows = nbytes = 0
        with contextlib.closing(_one_ahead(open_stream, todo)) as streams:
            for i, period in enumerate(periods):
                label, rel = labels[period], rels[period]
                path = partial / rel
                if period not in finished:
                    if written == len(todo):  # stop_after reached
                        return ExportResult(partial, written + len(finished), rows,
                                            len(finished) - carried, complete=False,
                                            bytes=nbytes, carried_partitions=carried)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    metadata = {"statcube": json.dumps(
                        {"cube": cube.name, "grain": g.name, "period": label,
                         "ptable_sha256": provenance["ptable_sha256"],
                         "licence": _licence(ws)["title"]}, sort_keys=True)}
                    n = _write_partition(next(streams), grain_query(browser, g, period), path,
                                         metadata=metadata, row_group_rows=row_group_rows)
                    parts[rel] = {"sha256": sha256_file(path), "rows": n,
                                  "bytes": path.stat().st_size, "period": label}
                    _write_json(partial / MANIFEST, manifest)
                    written += 1
                rows += int(parts[rel]["rows"])
                nbytes += int(parts[rel]["bytes"])
                if progress:
                    progress(f"{cube.name}/{g.name} {label}: {rows:,} rows, "
                             f"{format_bytes(nbytes)}", i + 1, len(periods))
        skipped = len(finished) - carried
        _finish(ws, browser, g, partial, manifest, periods, release, published, row_group_rows,
                members)
        if final.exists():  # a directory without datapackage.json is not an export
            shutil.rmtree(final)
        partial.rename(final)
        _fsync_dir(final.parent)
    return ExportResult(final, len(periods), rows, skipped, bytes=nbytes,
                        carried_partitions=carried)


def _complete(final: Path, provenance: Mapping[str, Any]) -> ExportResult:
    """A finished grain: left exactly as it is, unless it was made from something else."""
    package = json.loads((final / DATAPACKAGE).read_text(encoding="utf-8"))
    info = package.get("statcube", {})
    found = info.get("provenance") or {}
    if found != provenance:
        differs = sorted(k for k in provenance if found.get(k) != provenance[k])
        raise ConfigError(
            f"{final} is a complete export made from a different warehouse or setup "
            f"({', '.join(differs)} differ); it is never overwritten: remove it to export "
            "again")
    files = info.get("files", {})
    parts = [v for k, v in files.items() if k.startswith("data/")]
    return ExportResult(final, len(parts), int(info.get("rows", 0)), len(parts),
                        already_complete=True,
                        bytes=sum(int(v["bytes"]) for v in parts))


def _finish(ws: Workspace, browser: CubeBrowser, g: Grain, partial: Path,
            manifest: Mapping[str, Any], periods: Sequence[int], release: str,
            published: str | None, row_group_rows: int,
            members: MembersCache | None = None) -> None:
    """Codelists, README, datapackage and checksums; then remove anything else."""
    q0 = grain_query(browser, g, periods[-1])
    parts: Mapping[str, Any] = manifest["partitions"]
    schema = pq.read_schema(partial / next(iter(sorted(parts))))
    codelists = _write_codelists(browser, q0, partial / "codelists", members)
    readme = partial / "README.txt"
    _write_text(readme, _readme(ws, browser, g, release, published, q0))
    files = {rel: {"sha256": e["sha256"], "bytes": e["bytes"]} for rel, e in parts.items()}
    for path in [*(p for p, _ in codelists), readme]:
        files[str(path.relative_to(partial))] = {"sha256": sha256_file(path),
                                                 "bytes": path.stat().st_size}
    package = _datapackage(ws, browser, g, q0, partial, manifest, codelists, schema, release,
                           published, files, row_group_rows)
    _write_json(partial / DATAPACKAGE, package)
    sums = {**{k: v["sha256"] for k, v in files.items()},
            DATAPACKAGE: sha256_file(partial / DATAPACKAGE)}
    _write_text(partial / CHECKSUMS, "".join(f"{sums[k]}  {k}\n" for k in sorted(sums)))
    keep = set(sums) | {CHECKSUMS}
    for path in sorted(partial.rglob("*"), reverse=True):  # stray .tmp files, the manifest
        rel = str(path.relative_to(partial))
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif rel not in keep:
            path.unlink()
    for directory in sorted({(partial / k).parent for k in keep}):
        _fsync_dir(directory)


def format_bytes(n: float) -> str:
    """``1234567`` → ``1.2 MB`` (decimal units, as download pages give them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def _descriptions(browser: CubeBrowser, query: Query) -> dict[str, str]:
    p = browser.ws.gate.protection
    names = column_names(query)
    out: dict[str, str] = {}
    for d in query.drilldown:
        for lvl in d.levels:
            for a in lvl.attributes:
                if a.ref not in names:
                    continue
                what = "code" if a == lvl.key else ("name" if a == lvl.label_attribute
                                                    else a.label.lower())
                out[names[a.ref]] = (f"{lvl.label} {what}" + (
                    f" (codes and labels: codelists/{d.dimension.name}_{lvl.name}.csv)"
                    if a == lvl.key else ""))
    for agg in query.aggregates:
        out[agg.name] = f"{agg.label} (published value, cell-key protected)"
        if has_withheld_flag(agg):
            what = "mean" if agg.function == "avg" else "total"
            out[agg.name] += f"; empty where {withheld_column(agg.name)} is true"
            out[withheld_column(agg.name)] = (
                f"True where the {what} is withheld because fewer than {p.mean_threshold} "
                "are counted")
    return out


def _datapackage(ws: Workspace, browser: CubeBrowser, g: Grain, query: Query,
                 directory: Path, manifest: Mapping[str, Any],
                 codelists: Sequence[tuple[Path, list[str]]], schema: pa.Schema,
                 release: str, published: str | None, files: Mapping[str, Any],
                 row_group_rows: int) -> dict[str, Any]:
    cube = browser.cube
    p = ws.gate.protection
    descriptions = _descriptions(browser, query)
    fields = _fields(schema, descriptions)
    keys = key_columns(query)
    parts: Mapping[str, Any] = manifest["partitions"]
    resources: list[dict[str, Any]] = []
    for rel, entry in sorted(parts.items()):
        resources.append({
            "name": f"data-{entry['period'].lower()}",
            "path": rel, "format": "parquet", "mediatype": "application/vnd.apache.parquet",
            "schema": {"fields": fields, "primaryKey": keys},
            "description": f"{cube.label}, {g.description[:1].lower()}{g.description[1:]}, "
                           f"period {entry['period']} ({entry['rows']:,} cells)",
        })
    for path, cols in codelists:
        fmt = path.suffix.lstrip(".")
        rel = str(path.relative_to(directory))
        resource: dict[str, Any] = {
            "name": f"codelist-{path.stem.replace('_', '-')}-{fmt}",
            "path": rel, "format": fmt,
            "schema": {"fields": [{"name": c, "type": "string"} for c in cols],
                       "primaryKey": ["code"]},
        }
        if fmt == "csv":  # frictionless checks these itself (it reads Parquet via pandas)
            resource |= {"bytes": files[rel]["bytes"], "hash": f"sha256:{files[rel]['sha256']}"}
        resources.append(resource)
    params = p.ptable.params
    licence = _licence(ws)
    package: dict[str, Any] = {
        "name": f"statcube-{release}-{cube.name}-{g.name}".lower().replace("_", "-"),
        "title": f"{cube.label}: {g.description} (release {release})",
        "description": cube.description,
        "version": release,
        "licenses": [dict(licence)],
        "sources": [{"title": str(ws.model.info.get("source", "statcube warehouse"))}],
        "keywords": ["statcube", cube.name, g.name, "official statistics",
                     "statistical disclosure control"],
        "resources": resources,
        "statcube": {
            "kind": cube.kind,
            "unit": cube.unit,
            "periods": [e["period"] for _, e in sorted(parts.items())],
            "partitioning": {"style": "hive", "key": "period",
                             "format": "YYYY-Qn" if cube.grain == "quarter" else "YYYY-MM"},
            "rows": sum(int(e["rows"]) for e in parts.values()),
            "primary_key": keys,
            "parquet": {"compression": "zstd", "row_group_rows": row_group_rows,
                        "dictionary_encoded": _code_columns(query)},
            "provenance": dict(manifest["provenance"]),
            "files": dict(sorted(files.items())),
            "methodology": {
                "method": "cell key method (ABS / ONS Census 2021)",
                "ptable": {"D": params.D, "V": params.V, "js": params.js, "K": params.K},
                "magnitude": p.report_parameters()["magnitude"],
                "mean_threshold": p.mean_threshold,
                "notes": [
                    f"Counts are adjusted by up to ±{params.D}; no count from 1 to {params.js} "
                    "is published; true zeros stay zero and empty cells are absent.",
                    "Each cell is adjusted on its own: totals are not the sum of their parts, "
                    "and the same cell has the same value in the API and in every export "
                    "of the same release.",
                    "Amounts are in pounds; means are published totals over published "
                    f"counts. Totals and means are withheld where fewer than "
                    f"{p.mean_threshold} are counted.",
                    "Amount totals carry noise of a share of the cell's largest single amount "
                    "(a flex function: large in small cells, small in large ones); a total "
                    "dominated by one or two amounts (p% rule) is never published exactly.",
                ],
            },
        },
    }
    if published:
        package["created"] = published
    return package


def _readme(ws: Workspace, browser: CubeBrowser, g: Grain, release: str,
            published: str | None, query: Query) -> str:
    cube = browser.cube
    params = ws.gate.protection.ptable.params
    keys = ", ".join(key_columns(query))
    return (
        f"{cube.label}: {g.description}\nRelease {release}"
        + (f", published {published}" if published else "") + "\n\n"
        f"{cube.description}\n\n"
        "data/period=*/part-0.parquet  one file per period (hive partitioning; the period\n"
        "                              is the directory name, not a column in the file)\n"
        f"                              one row per cell, identified by: {keys}\n"
        "codelists/                    codes and labels of every level used (Parquet, CSV)\n"
        "datapackage.json              Frictionless Data Package: schema, licence, method,\n"
        "                              SHA-256 and size of every file\n"
        "SHA256SUMS                    checksums: sha256sum -c SHA256SUMS\n\n"
        "Read with DuckDB:  SELECT * FROM read_parquet('data/*/*.parquet', "
        "hive_partitioning = true);\n"
        "Read with pyarrow: pyarrow.dataset.dataset('data', partitioning='hive')\n"
        "Read with polars:  polars.scan_parquet('data/**/*.parquet', hive_partitioning=True)\n"
        "Read with pandas:  pandas.read_parquet('data')\n\n"
        "Figures are protected by the cell key method: small counts are adjusted, no count "
        f"from 1 to {params.js} is published,\nand totals may not equal the sum of their parts. "
        "Values equal those of the statcube API for the same\ncell in the same release.\n"
        "Licence: Open Government Licence v3.0.\n"
    )


# --- Whole releases ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportJob:
    cube: str
    grain: str
    partitions: int


def plan(ws: Workspace, cubes: Sequence[str] | None = None,
         grains: Sequence[str] | None = None) -> list[ExportJob]:
    """The (cube, grain) pairs to export: every cube of the warehouse and every grain of each
    by default. A named grain must exist in at least one selected cube (and in the cube, if
    exactly one is named)."""
    names = list(cubes) if cubes else ws.cube_names
    jobs: list[ExportJob] = []
    for name in names:
        browser = ws.cube(name)
        available = grains_for(browser.cube)
        if grains and cubes and len(names) == 1:
            chosen = [grain(browser.cube, gname) for gname in grains]
        else:
            chosen = [g for g in available if not grains or g.name in grains]
        n = len(visible_periods(browser)) if chosen else 0
        jobs += [ExportJob(name, g.name, n) for g in chosen]
    missing = sorted(set(grains or ()) - {j.grain for j in jobs})
    if missing:
        raise ArgumentError(f"no selected cube has export grain {missing[0]!r}",
                            parameter="grain", value=missing[0])
    return jobs


def export_release(ws: Workspace, out_root: Path, *, cubes: Sequence[str] | None = None,
                   grains: Sequence[str] | None = None, release: str | None = None,
                   published: str | None = None, progress: ProgressFn | None = None,
                   engine: Engine | None = None, carry: bool = True,
                   memory_limit: str | None = None) -> list[ExportResult]:
    """Export (or resume) every selected grain; ``progress`` counts partitions overall and
    describes rows and bytes written and partitions carried over from a previous release.
    ``engine`` and ``carry``: see :func:`export_grain`. Each cube's facts are digested once
    (one scan) for all its grains. ``memory_limit`` (e.g. ``"1GB"``) caps the DuckDB
    warehouse connection's memory (:func:`limit_memory`)."""
    if memory_limit:
        limit_memory(ws, memory_limit)
    jobs = plan(ws, cubes, grains)
    total = sum(j.partitions for j in jobs)
    done = rows = nbytes = carried = 0
    results = []
    digests: dict[str, CubeDigests] = {}
    members: MembersCache = {}
    for job in jobs:
        if job.cube not in digests:  # one cube's digests and members at a time
            digests = {job.cube: cube_digests(ws, job.cube)}
            members.clear()
        def report(what: str, i: int, n: int, *, _base: int = done) -> None:
            if progress:
                progress(what, _base + i, total)

        result = export_grain(ws, job.cube, job.grain, out_root, release=release,
                              published=published, progress=report, engine=engine,
                              carry=carry, digests=digests[job.cube], members=members)
        results.append(result)
        done += job.partitions
        rows += result.rows
        nbytes += result.bytes
        carried += result.carried_partitions
        if progress:
            state = "already complete" if result.already_complete else "done"
            progress(f"{job.cube}/{job.grain} {state}; {rows:,} rows, "
                     f"{format_bytes(nbytes)} in all; carried {carried} of {done} "
                     "partitions", done, total)
    return results


_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


def limit_memory(ws: Workspace, limit: str) -> None:
    """Cap what DuckDB holds for this workspace's connection — its buffer pool above all,
    which otherwise may keep the blocks of every fact table an export has read (up to 80% of
    the machine's memory), so a process exporting every cube can grow with the warehouse,
    not with the period. Beyond the limit DuckDB evicts cached blocks and spills to disk. The
    setting is the whole DuckDB instance's: meant for a process that exports (the CLI sets
    it), not for a server. No effect on other engines."""
    if not _MEMORY.match(limit.strip()):
        raise ArgumentError(f"memory limit {limit!r}: give a size such as 1GB or 512MB",
                            parameter="memory-limit", value=limit)
    if ws.engine.name != "duckdb":
        return
    with ws.engine.raw_duckdb() as cursor:
        cursor.execute(f"SET memory_limit = '{limit.strip()}'")


def choose_release(calendar: Calendar, release: str | None, now: datetime, *,
                   prerelease: bool = False) -> Release:
    """The release to export: ``release``, else the latest one published at ``now``.

    An unpublished release is exported only with ``prerelease`` (``--prerelease``): writing
    it ahead of publication is how its files are ready at 09:30, and the download server
    still shows it only to prerelease and admin keys until then — but it must be asked for,
    so a typo or a stale default never writes embargoed months. The operator who runs the
    export can read the calendar, so the refusal names the publication time."""
    if release is None:
        return calendar.latest(now)
    found = next((r for r in calendar.releases if r.id == release), None)
    if found is None:
        ids = [r.id for r in calendar.releases]
        raise ArgumentError(f"unknown release {release!r}: the release calendar in force "
                            f"lists {', '.join(ids[-8:])}", parameter="release", value=release,
                            hint=suggest(release, ids))
    if not found.is_published(now) and not prerelease:
        when = found.published.astimezone(LONDON).isoformat(timespec="minutes")
        raise ArgumentError(f"release {release!r} is not published until {when}; export it "
                            "ahead of publication with --prerelease",
                            parameter="release", value=release)
    return found


def open_release(model: Model, *, data_dir: str | Path, warehouse: str | None = None,
                 release: str | None = None, calendar: str | Path | None = None,
                 prerelease: bool = False, now: datetime | None = None
                 ) -> tuple[Workspace, str, str | None]:
    """The workspace, release id and publication time (ISO 8601, London) to export: always
    a release of the calendar in force, seen exactly as the API serves it.

    ``calendar`` is the calendar in force (``Settings.release_calendar()``). The release is
    ``release``, else the latest published at ``now`` (default: the clock); unpublished ones
    only with ``prerelease`` (:func:`choose_release`). It is read from the warehouse the
    server serves it from — the one the calendar names for it, else ``warehouse`` (else the
    newest in ``data_dir``) — and seen up to its last period, so later months cannot reach
    the export. With no calendar the warehouse is one release, its own, up to its newest
    month, and no publication time is recorded (the server serves it the same way).
    """
    if release is not None and not _RELEASE_ID.match(release):
        raise ArgumentError(f"release id {release!r}: use letters, digits, '-' and '_'",
                            parameter="release", value=release)
    when = now if now is not None else datetime.now(UTC)
    if not calendar:
        base = Workspace.open(model, resolve_warehouse(warehouse, data_dir))
        try:
            chosen = choose_release(warehouse_calendar(base), release, when,
                                    prerelease=prerelease)
        except BaseException:
            base.close()
            raise
        return base.view(chosen.last_period), release_id(base, chosen.id), None
    chosen = choose_release(Calendar.load(calendar), release, when, prerelease=prerelease)
    base = Workspace.open(model, chosen.warehouse or resolve_warehouse(warehouse, data_dir))
    published = chosen.published.astimezone(LONDON).isoformat(timespec="seconds")
    return base.view(chosen.last_period), release_id(base, chosen.id), published


def verify_export(path: Path) -> list[str]:
    """Problems with a finished grain directory: files whose size or SHA-256 differ from
    datapackage.json, missing files and files it does not list. Empty when intact."""
    path = Path(path)
    try:
        package = json.loads((path / DATAPACKAGE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{DATAPACKAGE}: {exc}"]
    files: Mapping[str, Any] = package.get("statcube", {}).get("files", {})
    problems = []
    for rel, entry in sorted(files.items()):
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
            problems.append(f"{rel}: size or SHA-256 differs from {DATAPACKAGE}")
    listed = set(files) | {DATAPACKAGE, CHECKSUMS}
    for f in sorted(path.rglob("*")):
        rel = str(f.relative_to(path))
        if f.is_file() and rel not in listed:
            problems.append(f"{rel}: not listed in {DATAPACKAGE}")
    return problems
