"""Bulk "raw aggregate" cube exports: protected Parquet datasets with codelists and metadata.

A release's export is ``exports/<release>/<cube>/<grain>/`` holding

- ``data/period=<YYYY-MM or YYYY-Qn>/part-0.parquet`` — one hive partition per period, zstd,
  dictionary-encoded codes, fixed row-group size; only protected columns (attributes,
  published aggregates, ``<aggregate>_withheld`` flags) — the rows come from the disclosure
  gate's SQL path, the same template and p-table as the API, so a cell has the same value in
  both;
- ``codelists/<dimension>_<level>.parquet|csv`` — members and labels of every level used;
- ``datapackage.json`` — a Frictionless Data Package (schemas, Open Government Licence v3.0,
  sources, method, release and publication time, p-table hash, SHA-256 and size of every file);
- ``README.txt``.

Nothing lost: a grain is written under a hidden ``.<grain>.partial`` directory and renamed
into place only when complete, so a reader never sees half an export. Each finished partition
is recorded with its checksum in a manifest; a rerun after a kill verifies and skips finished
partitions, and produces byte-identical files (deterministic order, fixed row groups, no
timestamps other than the release's own). Memory stays bounded: rows are streamed from the
engine in record batches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cube.disclosure.protect import withheld_column
from cube.disclosure.rules import check_query
from cube.errors import ArgumentError, ModelError
from cube.model import Cube, Dimension, Level
from cube.query import CutPart, Drill, Query
from cube.workspace import CubeBrowser, Workspace

ROW_GROUP_ROWS = 250_000
BATCH_ROWS = 100_000
LICENCE = {
    "name": "OGL-UK-3.0",
    "title": "Open Government Licence v3.0",
    "path": "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
}
ProgressFn = Callable[[str, int, int], None]


# --- Grains ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grain:
    """Which level of which dimension an export is broken down by (time always included)."""

    name: str
    levels: tuple[tuple[str, str], ...]  # (dimension, level), time excluded
    description: str = ""


def _category_dims(cube: Cube) -> list[Dimension]:
    return [d for d in cube.dimensions if d.members]


def default_grains(cube: Cube) -> tuple[Grain, ...]:
    """LA × period × every category; OA × period; OA × period × each category in turn."""
    cats = _category_dims(cube)
    grains = [Grain("la_all", (("geography", "la"), *((d.name, d.levels[0].name) for d in cats)),
                    "Local authority by period by every category")]
    grains.append(Grain("oa", (("geography", "oa"),), "Output area by period"))
    for d in cats:
        grains.append(Grain(f"oa_{d.name}", (("geography", "oa"), (d.name, d.levels[0].name)),
                            f"Output area by period by {d.label.lower()}"))
    return tuple(grains)


def grains_for(cube: Cube) -> tuple[Grain, ...]:
    """Grains from the cube's ``info.exports.grains`` or the defaults."""
    spec = cube.info.get("exports")
    if not spec:
        return default_grains(cube)
    out = []
    for i, g in enumerate(spec.get("grains", [])):
        try:
            levels = tuple((str(k), str(v)) for k, v in g["levels"].items())
            out.append(Grain(str(g["name"]), levels, str(g.get("description", ""))))
        except (KeyError, AttributeError, TypeError):
            raise ModelError("each grain needs a name and a levels object",
                             path=f"$.cubes[{cube.name}].info.exports.grains[{i}]") from None
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
    hier = tdim.hierarchy()
    return tdim, hier.levels[-1]


def period_label(cube: Cube, period: int) -> str:
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
    """The protected query for one period of a grain (validated like any other query)."""
    cube = browser.cube
    drills = []
    for dim_name, level_name in g.levels:
        dim = cube.dimension(dim_name)
        hier = dim.hierarchy()
        drills.append(Drill(dim, hier, hier.level(level_name)))
    tdim, _ = _finest_time(cube)
    cut = CutPart(tdim, tdim.hierarchy(), "point", (_period_path(cube, period),))
    q = Query(cube=cube, cuts=(cut,), drilldown=tuple(drills), aggregates=cube.aggregates,
              order=(), period_limit=browser.period_limit)
    check_query(q)
    return q


def visible_periods(browser: CubeBrowser) -> list[int]:
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


# --- Files ---------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(final)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    _fsync_replace(tmp, path)


def column_names(query: Query) -> dict[str, str]:
    """Public result column → export column: attribute names without the dimension prefix,
    time attributes dropped (the period is the partition key)."""
    mapping: dict[str, str] = {}
    for a in query.cell_attributes:
        if query.cube.dimension(a.dimension).is_time:
            continue
        mapping[a.ref] = a.name if a.name not in mapping.values() else f"{a.dimension}_{a.name}"
    for agg in query.aggregates:
        mapping[agg.name] = agg.name
        if agg.function == "avg":
            mapping[withheld_column(agg.name)] = withheld_column(agg.name)
    return mapping


def _rechunk(reader: pa.RecordBatchReader, names: Mapping[str, str], rows: int
             ) -> Iterator[pa.Table]:
    """Fixed-size tables from a batch stream, so row groups do not depend on batch sizes."""
    pending: list[pa.RecordBatch] = []
    count = 0
    keep = list(names)
    for batch in reader:
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


def _write_partition(browser: CubeBrowser, query: Query, path: Path) -> tuple[int, pa.Schema]:
    names = column_names(query)
    reader = browser.ws.gate.stream(browser, query, BATCH_ROWS)
    tmp = path.with_name(path.name + ".tmp")
    codes = [v for k, v in names.items()
             if not k.endswith("_withheld") and k not in {a.name for a in query.aggregates}]
    writer: pq.ParquetWriter | None = None
    rows = 0
    schema = None
    try:
        for table in _rechunk(reader, names, ROW_GROUP_ROWS):
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema, compression="zstd",
                                          use_dictionary=codes, write_statistics=True)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += table.num_rows
        if writer is None:  # no rows: still write a valid empty file with the schema
            schema = pa.schema([(v, reader.schema.field(k).type) for k, v in names.items()])
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        writer.close()
        writer = None
        _fsync_replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    assert schema is not None
    return rows, schema


def _write_codelists(browser: CubeBrowser, query: Query, directory: Path
                     ) -> list[tuple[Path, list[str]]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for drill in query.drilldown:
        if drill.dimension.is_time:
            continue
        for depth, lvl in enumerate(drill.levels, start=1):
            members = browser.members(drill.dimension.name, hierarchy=drill.hierarchy.name,
                                      depth=depth, pagesize=1_000_000).members
            cols = [lvl.key.ref] + ([lvl.label_attribute.ref]
                                    if lvl.label_attribute != lvl.key else [])
            t = members.select(cols).rename_columns(
                ["code"] + (["label"] if len(cols) > 1 else []))
            base = directory / f"{drill.dimension.name}_{lvl.name}"
            pq_path = base.with_suffix(".parquet")
            tmp = pq_path.with_name(pq_path.name + ".tmp")
            pq.write_table(t, tmp, compression="zstd")
            _fsync_replace(tmp, pq_path)
            csv_path = base.with_suffix(".csv")
            tmp = csv_path.with_name(csv_path.name + ".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
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
    path: Path
    partitions: int
    rows: int
    skipped_partitions: int
    already_complete: bool = False


def export_grain(ws: Workspace, cube_name: str, grain_name: str, out_root: Path, *,
                 published: str | None = None, progress: ProgressFn | None = None,
                 stop_after: int | None = None) -> ExportResult:
    """Write (or resume) one grain of one cube for the workspace's release.

    ``stop_after`` stops after that many newly written partitions, leaving the partial
    directory as a kill would (tests use it to prove resumption).
    """
    browser = ws.cube(cube_name)
    cube = browser.cube
    g = grain(cube, grain_name)
    release = ws.release if ws.visible_until is None else \
        f"{ws.visible_until[0]:04d}-{ws.visible_until[1]:02d}"
    final = out_root / release / cube.name / g.name
    if (final / "datapackage.json").exists():
        return ExportResult(final, 0, 0, 0, already_complete=True)
    partial = final.with_name(f".{g.name}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    manifest_path = partial / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8")) \
        if manifest_path.exists() else {}
    periods = visible_periods(browser)
    if not periods:
        raise ArgumentError(f"no published periods for {cube.name} in release {release}",
                            parameter="release", value=release)
    written = skipped = rows = 0
    schema: pa.Schema | None = None
    for i, period in enumerate(periods):
        label = period_label(cube, period)
        part_dir = partial / "data" / f"period={label}"
        path = part_dir / "part-0.parquet"
        rel = str(path.relative_to(partial))
        entry = manifest.get(rel)
        if entry and path.exists() and _sha256(path) == entry["sha256"]:
            skipped += 1
            rows += int(entry["rows"])
        else:
            if stop_after is not None and written >= stop_after:
                return ExportResult(partial, written + skipped, rows, skipped)
            part_dir.mkdir(parents=True, exist_ok=True)
            q = grain_query(browser, g, period)
            n, schema = _write_partition(browser, q, path)
            manifest[rel] = {"sha256": _sha256(path), "rows": n, "bytes": path.stat().st_size,
                             "period": label}
            _write_json(manifest_path, manifest)
            written += 1
            rows += n
        if progress:
            progress(f"{cube.name}/{g.name} {label} ({rows:,} rows)", i + 1, len(periods))
    q0 = grain_query(browser, g, periods[-1])
    if schema is None:  # every partition was already complete: read the schema back
        schema = pq.read_schema(partial / next(iter(manifest)))
    codelists = _write_codelists(browser, q0, partial / "codelists")
    _write_metadata(ws, browser, g, q0, partial, manifest, codelists, schema, release,
                    published)
    manifest_path.unlink()
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return ExportResult(final, len(periods), rows, skipped)


def _write_metadata(ws: Workspace, browser: CubeBrowser, g: Grain, query: Query,
                    directory: Path, manifest: Mapping[str, Any],
                    codelists: Sequence[tuple[Path, list[str]]], schema: pa.Schema,
                    release: str, published: str | None) -> None:
    cube = browser.cube
    p = ws.gate.protection
    descriptions = {a.name: f"{a.label} (published, cell-key protected)"
                    for a in query.aggregates}
    for a in query.aggregates:
        if a.function == "avg":
            descriptions[withheld_column(a.name)] = (
                f"True where the mean is withheld because fewer than {p.mean_threshold} "
                "are counted")
    resources: list[dict[str, Any]] = []
    files: dict[str, dict[str, Any]] = {}
    for rel, entry in sorted(manifest.items()):
        files[rel] = {"sha256": entry["sha256"], "bytes": entry["bytes"]}
        resources.append({
            "name": f"data-{entry['period'].lower()}",
            "path": rel, "format": "parquet", "mediatype": "application/vnd.apache.parquet",
            "schema": {"fields": _fields(schema, descriptions)},
            "description": f"{cube.label}, {g.description.lower()}, period {entry['period']}",
        })
    for path, cols in codelists:
        fmt = path.suffix.lstrip(".")
        rel = str(path.relative_to(directory))
        digest, size = _sha256(path), path.stat().st_size
        files[rel] = {"sha256": digest, "bytes": size}
        resource: dict[str, Any] = {
            "name": f"codelist-{path.stem.replace('_', '-')}-{fmt}",
            "path": rel, "format": fmt,
            "schema": {"fields": [{"name": c, "type": "string"} for c in cols]},
        }
        if fmt == "csv":  # frictionless verifies these itself; Parquet it reads via pyarrow
            resource |= {"bytes": size, "hash": f"sha256:{digest}"}
        resources.append(resource)
    params = p.ptable.params
    package = {
        "name": f"statcube-{release}-{cube.name}-{g.name}".lower().replace("_", "-"),
        "title": f"{cube.label}: {g.description} (release {release})",
        "description": cube.description,
        "version": release,
        "licenses": [LICENCE],
        "sources": [{"title": str(ws.model.info.get("source", "statcube warehouse"))}],
        "resources": resources,
        "statcube": {
            "release": release,
            "published": published,
            "cube": cube.name,
            "grain": g.name,
            "levels": {d: lv for d, lv in g.levels},
            "kind": cube.kind,
            "ptable_sha256": p.ptable.digest,
            "files": files,
            "methodology": {
                "method": "cell key method (ABS / ONS Census 2021)",
                "ptable": {"D": params.D, "V": params.V, "js": params.js, "K": params.K},
                "magnitude_delta": p.delta,
                "mean_threshold": p.mean_threshold,
                "notes": [
                    f"Counts are adjusted by up to ±{params.D}; no count from 1 to {params.js} "
                    "is published; true zeros stay zero and empty cells are absent.",
                    "Each cell is adjusted on its own: totals are not the sum of their parts, "
                    "and the same cell has the same value in the API and in every export.",
                    "Amounts are in pounds; means are published sums over published counts, "
                    f"withheld where fewer than {p.mean_threshold} are counted.",
                ],
            },
        },
    }
    _write_json(directory / "datapackage.json", package)
    readme = (
        f"{cube.label}: {g.description}\nRelease {release}"
        + (f", published {published}" if published else "") + "\n\n"
        f"{cube.description}\n\n"
        "data/period=*/part-0.parquet  one file per period (hive partitioning)\n"
        "codelists/                    codes and labels for every level used\n"
        "datapackage.json              Frictionless Data Package: schema, licence, checksums\n\n"
        "Read with DuckDB:  SELECT * FROM read_parquet('data/*/*.parquet', "
        "hive_partitioning = true);\n"
        "Read with pyarrow: pyarrow.dataset.dataset('data', partitioning='hive')\n\n"
        "Figures are protected by the cell key method: small counts are adjusted, no count "
        f"from 1 to {params.js} is published, and totals may not equal the sum of their parts.\n"
        "Licence: Open Government Licence v3.0.\n"
    )
    tmp = directory / "README.txt.tmp"
    tmp.write_text(readme, encoding="utf-8")
    _fsync_replace(tmp, directory / "README.txt")
