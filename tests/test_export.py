"""Bulk Parquet exports (cube/export.py): grains, files, metadata, resumption, consistency.

Everything runs for real on the session warehouse: exports are written to temporary
directories, read back with pyarrow, DuckDB, Polars, pandas and Frictionless, killed (a real
SIGKILL of ``statcube export`` in a subprocess) and resumed, and compared cell by cell with
the API (``CubeBrowser.aggregate``). To stay fast, most tests use one period of every grain
(a workspace view up to June 2026); resumption uses the six periods of Housing Benefit by OA.

Exports are computed on DuckDB or on Spark (``export_engine``, tests/conftest.py): the tests
of metadata, layout, withheld flags, codelists, resumption, refusals and the release calendar
run on both, and every file written on Spark must equal the DuckDB export's byte for byte.
On Spark, where each grain and period is a Spark job (about a second on two cores), the
one-period export covers a representative subset (``SPARK_SUBSET``) instead of every grain.
"""

from __future__ import annotations

import copy
import fcntl
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import frictionless
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from cli.main import main
from cube.disclosure.rules import check_query
from cube.engine import Engine
from cube.errors import ConfigError, ModelError, StatcubeError
from cube.export import (
    CHECKSUMS,
    DATAPACKAGE,
    ROW_GROUP_ROWS,
    ExportResult,
    Grain,
    _one_ahead,
    _rechunk,
    choose_release,
    column_names,
    export_grain,
    export_release,
    grain,
    grain_query,
    grains_for,
    period_label,
    sha256_file,
    verify_export,
    visible_periods,
)
from cube.grammar import PointCut, format_cuts
from cube.model import Model, parse_model
from cube.releases import LONDON, Calendar, build_id
from cube.workspace import CubeBrowser, Workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
#: Names of internal columns that must never appear in an export (DESIGN §5 "never output").
RAW_NAMES = {"n", "rk", "rk2", "ckey", "pcv", "pvalue", "x_max", "__n", "__rk", "__rk2"}
RAW_IN_TEXT = re.compile(r"__\w|\brk2?\b|\bckey\b|\bpcv\b|\bpvalue\b|\w_max\b")
ONE_PERIOD = (2026, 6)
ONE_RELEASE = "t-2026-06"


def files_of(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name → bytes)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def partition_files(path: Path) -> list[Path]:
    return sorted((path / "data").glob("period=*/part-0.parquet"))


@pytest.fixture(scope="module")
def one_period(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Workspace, list[ExportResult]]:
    """Every grain of every cube, one period (June 2026), as release ``t-2026-06``."""
    ws = workspace.view(ONE_PERIOD)
    out = tmp_path_factory.mktemp("exports-one-period")
    return ws, export_release(ws, out, release=ONE_RELEASE)


#: What the Spark export of one period covers (each grain is a Spark job): the LA grain by
#: every dimension of two cubes with amounts and withheld flags (housing benefit, benefit cap)
#: and of a quarterly cube (NINo registrations); its codelists, README, datapackage.json and
#: SHA256SUMS. The OA grain is exported on Spark by the resumption test.
SPARK_SUBSET = {"cubes": ["housing_benefit", "benefit_cap", "nino_registrations"],
                "grains": ["la_all"]}


@pytest.fixture(scope="module")
def spark_one_period(one_period: tuple[Workspace, list[ExportResult]], spark_engine: Engine,
                     tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[Workspace, list[ExportResult]]:
    """``SPARK_SUBSET`` of ``one_period``, its protected cells computed on Spark."""
    ws = one_period[0]
    out = tmp_path_factory.mktemp("exports-one-period-spark")
    return ws, export_release(ws, out, release=ONE_RELEASE, engine=spark_engine,
                              cubes=SPARK_SUBSET["cubes"], grains=SPARK_SUBSET["grains"])


@pytest.fixture(scope="module")
def exported(export_engine: Engine | None, request: pytest.FixtureRequest
             ) -> tuple[Workspace, list[ExportResult]]:
    """One period exported on the export engine: all of ``one_period`` on DuckDB,
    ``spark_one_period`` on Spark."""
    name = "one_period" if export_engine is None else "spark_one_period"
    result: tuple[Workspace, list[ExportResult]] = request.getfixturevalue(name)
    return result


def result_for(results: list[ExportResult], cube: str, grain_name: str) -> ExportResult:
    return next(r for r in results if r.path.parent.name == cube and r.path.name == grain_name)


@pytest.fixture(scope="module")
def hb_oa(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted export of Housing Benefit by OA, all six periods: the reference."""
    out = tmp_path_factory.mktemp("exports-reference")
    result = export_grain(workspace, "housing_benefit", "oa", out)
    assert result.complete and result.partitions == 6 and result.skipped_partitions == 0
    return result.path


# --- 1. Export definitions ----------------------------------------------------------------------

def _model_with_exports(cube: str, exports: Any, **disclosure: Any) -> Model:
    raw = json.loads((ROOT / "model.json").read_text(encoding="utf-8"))
    for c in raw["cubes"]:
        if c["name"] == cube:
            if exports is not None:
                c["info"]["exports"] = exports
            c["info"].setdefault("disclosure", {}).update(disclosure)
    return parse_model(copy.deepcopy(raw))


@pytest.mark.unit
def test_default_grains_are_la_by_everything_oa_and_oa_by_each_category(model: Model) -> None:
    for cube in model.cubes.values():
        names = [g.name for g in grains_for(cube)]
        cats = [d.name for d in cube.dimensions if d.members]
        assert names == ["la_all", "oa", *(f"oa_{c}" for c in cats)], cube.name
        la_all = grain(cube, "la_all")
        assert la_all.levels == (("geography", "la"), *((c, c) for c in cats))


def test_every_default_grain_passes_the_disclosure_limits(model: Model,
                                                          workspace: Workspace) -> None:
    for cube in model.cubes.values():
        browser = workspace.cube(cube.name)
        latest = visible_periods(browser)[-1]
        for g in grains_for(cube):
            check_query(grain_query(browser, g, latest))  # raises if refused


@pytest.mark.unit
def test_a_grain_the_limits_refuse_is_rejected_when_declared() -> None:
    exports = {"grains": [
        {"name": "oa_tenure", "levels": {"geography": "oa", "tenure": "tenure"}},
        {"name": "oa_two", "levels": {"geography": "oa", "tenure": "tenure",
                                      "age_band": "age_band"}},
    ]}
    m = _model_with_exports("housing_benefit", exports)
    cube = m.cube("housing_benefit")
    with pytest.raises(ModelError) as err:
        grains_for(cube)
    text = str(err.value)
    assert "export grain 'oa_two'" in text and "refused by the disclosure limits" in text
    assert "at most 1 dimension(s) besides geography and time" in text
    assert err.value.path == "$.cubes[housing_benefit].info.exports.grains[1]"
    # the same levels as a query are refused by the grammar limits themselves
    ok = _model_with_exports("housing_benefit", {"grains": exports["grains"][:1]})
    assert [g.name for g in grains_for(ok.cube("housing_benefit"))] == ["oa_tenure"]


@pytest.mark.unit
@pytest.mark.parametrize(("levels", "name", "message"), [
    ({"geography": "ward"}, "g", "level"),
    ({"nope": "oa"}, "g", "dimension"),
    ({"time": "month"}, "g", "partitioned by period"),
    ({"geography": "oa"}, "../escape", "directory"),
    ({}, "g", "names no level"),
])
def test_declared_grains_are_checked(levels: dict[str, str], name: str, message: str) -> None:
    m = _model_with_exports("pip", {"grains": [{"name": name, "levels": levels}]})
    with pytest.raises(ModelError, match=message):
        grains_for(m.cube("pip"))


@pytest.mark.unit
def test_defaults_drop_grains_the_cube_limits_refuse() -> None:
    m = _model_with_exports("pip", None, max_category_dims_at_oa=0)
    assert [g.name for g in grains_for(m.cube("pip"))] == ["la_all", "oa"]


def test_declared_grain_on_another_hierarchy(workspace: Workspace, tmp_path: Path) -> None:
    m = _model_with_exports("housing_benefit", {"grains": [
        {"name": "pcon_tenure", "description": "Constituency by period by tenure",
         "levels": {"geography@constituency": "pcon", "tenure": "tenure"}}]})
    ws = Workspace(m, workspace.engine, ONE_PERIOD, workspace.meta, workspace.gate)
    result = export_grain(ws, "housing_benefit", "pcon_tenure", tmp_path)
    table = pq.read_table(partition_files(result.path)[0])
    assert {"pcon_code", "pcon_name", "tenure_code"} <= set(table.column_names)
    assert "la_code" not in table.column_names
    assert_cells_match_api(ws.cube("housing_benefit"), grain(m.cube("housing_benefit"),
                                                                "pcon_tenure"), result.path)


# --- 2. Files -------------------------------------------------------------------------------------

def _normalised(table: pa.Table, keys: list[str]) -> pa.Table:
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        cols[name] = col
    t = pa.table(cols)
    return t.sort_by([(k, "ascending") for k in ["period", *keys]])


def test_every_reader_sees_the_same_cells(hb_oa: Path) -> None:
    data = hb_oa / "data"
    package = json.loads((hb_oa / DATAPACKAGE).read_text(encoding="utf-8"))
    keys = package["statcube"]["primary_key"]
    read = {
        "pyarrow": ds.dataset(data, partitioning="hive").to_table(),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{data}/*/*.parquet', "
                             "hive_partitioning = true)").to_arrow_table(),
        "polars": pl.scan_parquet(f"{data}/**/*.parquet", hive_partitioning=True)
                    .collect().to_arrow(),
        "pandas": pa.Table.from_pandas(pd.read_parquet(data), preserve_index=False),
    }
    reference = _normalised(read["pyarrow"], keys)
    assert reference.num_rows == package["statcube"]["rows"] > 0
    assert set(reference.column("period").to_pylist()) == {
        "2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11"}
    for name, table in read.items():
        t = _normalised(table, keys).select(reference.column_names)
        assert t.schema == reference.schema, name
        assert t.equals(reference), name


@pytest.mark.parametrize("cube", ["nino_registrations", "benefit_cap"])
def test_frictionless_validates_the_package(exported: tuple[Workspace, list[ExportResult]],
                                            cube: str) -> None:
    path = result_for(exported[1], cube, "la_all").path
    report = frictionless.validate(str(path / DATAPACKAGE))
    assert report.valid, report.flatten(["resourceName", "type", "note"])
    package = json.loads((path / DATAPACKAGE).read_text(encoding="utf-8"))
    assert len(report.tasks) == len(package["resources"])


def test_spark_writes_the_duckdb_exports_bytes(
        spark_one_period: tuple[Workspace, list[ExportResult]],
        one_period: tuple[Workspace, list[ExportResult]]) -> None:
    """Same cells, any engine: every file of every grain (partitions, codelists, README,
    datapackage.json, SHA256SUMS) exported on Spark equals the DuckDB export's."""
    assert len(spark_one_period[1]) == 3
    for result in spark_one_period[1]:
        reference = result_for(one_period[1], result.path.parent.name, result.path.name)
        assert (result.rows, result.partitions) == (reference.rows, reference.partitions)
        assert files_of(result.path) == files_of(reference.path), result.path


def test_parquet_layout(exported: tuple[Workspace, list[ExportResult]]) -> None:
    """zstd everywhere, every attribute column dictionary-encoded, row groups as declared."""
    for result in exported[1]:
        package = json.loads((result.path / DATAPACKAGE).read_text(encoding="utf-8"))
        declared = package["statcube"]["parquet"]
        assert declared["compression"] == "zstd"
        assert declared["row_group_rows"] == ROW_GROUP_ROWS
        codes = set(declared["dictionary_encoded"])
        assert {"la_code", "country_code"} <= codes
        cube = exported[0].cube(result.path.parent.name).cube
        values = {a.name for a in cube.aggregates} | {
            f"{a.name}_withheld" for a in cube.aggregates if a.measure.kind == "amount"}
        for f in partition_files(result.path):
            meta = pq.ParquetFile(f).metadata
            assert codes == set(meta.schema.names) - values
            for rg in range(meta.num_row_groups):
                group = meta.row_group(rg)
                assert group.num_rows <= ROW_GROUP_ROWS
                for c in range(group.num_columns):
                    col = group.column(c)
                    assert col.compression == "ZSTD"
                    if col.path_in_schema in codes:
                        assert col.has_dictionary_page, (f, col.path_in_schema)
                        assert "RLE_DICTIONARY" in col.encodings


def test_row_groups_are_fixed_whatever_the_batches(workspace: Workspace, tmp_path: Path,
                                                   one_period: tuple[Workspace, list[ExportResult]]
                                                   ) -> None:
    ws = workspace.view(ONE_PERIOD)
    small = export_grain(ws, "housing_benefit", "la_all", tmp_path / "small",
                         release=ONE_RELEASE, row_group_rows=1000, batch_rows=300)
    (part,) = partition_files(small.path)
    meta = pq.ParquetFile(part).metadata
    rows = meta.num_rows
    assert rows > 3000
    assert meta.num_row_groups == math.ceil(rows / 1000)
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [1000] * (len(sizes) - 1) and 0 < sizes[-1] <= 1000
    package = json.loads((small.path / DATAPACKAGE).read_text(encoding="utf-8"))
    assert package["statcube"]["parquet"]["row_group_rows"] == 1000
    reference = result_for(one_period[1], "housing_benefit", "la_all").path
    (ref_part,) = partition_files(reference)
    assert pq.read_table(part).equals(pq.read_table(ref_part))
    # Batch size never changes the bytes: a 7-row stream writes the same files.
    tiny = export_grain(ws, "housing_benefit", "la_all", tmp_path / "tiny",
                        release=ONE_RELEASE, batch_rows=7)
    assert files_of(tiny.path) == files_of(reference)


def test_datapackage_metadata_and_checksums(exported: tuple[Workspace, list[ExportResult]]
                                            ) -> None:
    ws, results = exported
    for result in results:
        path = result.path
        package = json.loads((path / DATAPACKAGE).read_text(encoding="utf-8"))
        (licence,) = package["licenses"]
        assert licence["name"] == "OGL-UK-3.0"
        assert licence["title"] == "Open Government Licence v3.0"
        assert "open-government-licence/version/3" in licence["path"]
        assert package["sources"] and package["sources"][0]["title"]
        info = package["statcube"]
        record = info["provenance"]
        assert record["release"] == ONE_RELEASE and package["version"] == ONE_RELEASE
        assert record["last_period"] == "2026-06"  # the month; a quarterly cube's period
        assert info["periods"] in (["2026-06"], ["2026-Q2"])  # is the quarter
        assert "published" in record and record["published"] is None
        assert "created" not in package
        assert record["warehouse_build"] == build_id(ws.meta)
        assert record["warehouse_built_at"] == ws.meta["built_at"]
        assert record["ptable_sha256"] == ws.gate.protection.ptable.digest \
            == ws.meta["ptable_digest"]
        assert (record["cube"], record["grain"]) == (path.parent.name, path.name)
        # one home for each fact: the record's facts are not repeated beside it
        assert not set(info) & (set(record) - {"format_version"})
        method = info["methodology"]
        assert method["ptable"] == {"D": 3, "V": 2.0, "js": 2, "K": 4096}
        assert method["mean_threshold"] == 10 and method["notes"]
        listed = set(info["files"])
        on_disk = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
        assert on_disk == listed | {DATAPACKAGE, CHECKSUMS}
        assert {"README.txt", "codelists/geography_la.csv",
                "codelists/geography_la.parquet"} <= listed
        for rel, entry in info["files"].items():
            assert sha256_file(path / rel) == entry["sha256"], rel
            assert (path / rel).stat().st_size == entry["bytes"], rel
        sums = {rel: digest for digest, rel in (
            line.split("  ", 1)
            for line in (path / CHECKSUMS).read_text(encoding="utf-8").splitlines())}
        assert set(sums) == listed | {DATAPACKAGE}
        assert all(sha256_file(path / rel) == digest for rel, digest in sums.items())
        assert verify_export(path) == []
        assert info["rows"] == sum(pq.read_metadata(f).num_rows for f in partition_files(path))


def test_verify_export_finds_changed_and_stray_files(workspace: Workspace, tmp_path: Path
                                                     ) -> None:
    result = export_grain(workspace.view(ONE_PERIOD), "sanctions", "oa", tmp_path)
    (part,) = partition_files(result.path)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    (result.path / "extra.txt").write_text("x", encoding="utf-8")
    (result.path / "codelists" / "geography_oa.csv").unlink()
    problems = verify_export(result.path)
    assert any("part-0.parquet: size or SHA-256 differs" in p for p in problems)
    assert "extra.txt: not listed in datapackage.json" in problems
    assert "codelists/geography_oa.csv: missing" in problems


def test_cli_export_records_the_release_calendar(warehouse: Path, workspace: Workspace,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    calendar = tmp_path / "releases.toml"
    calendar.write_text('[[release]]\nid = "2026-08"\npublished = "2026-08-11T09:30"\n'
                        'last_period = "2026-07"\n', encoding="utf-8")
    out = tmp_path / "out"
    base = ["--model", str(ROOT / "model.json"), "--data-dir", str(tmp_path / "data")]
    argv = [*base, "export", "--warehouse", str(warehouse), "--releases", str(calendar),
            "--cube", "sanctions", "--grain", "la_all", "--out", str(out)]
    assert main(argv) == 0  # the calendar's latest published release: 2026-08
    path = out / "2026-08" / "sanctions" / "la_all"
    package = json.loads((path / DATAPACKAGE).read_text(encoding="utf-8"))
    record = package["statcube"]["provenance"]
    assert record["release"] == "2026-08" and record["last_period"] == "2026-07"
    assert record["published"] == "2026-08-11T09:30:00+01:00"
    assert record["warehouse_build"] == build_id(workspace.meta)
    assert package["created"] == "2026-08-11T09:30:00+01:00"
    assert package["statcube"]["periods"] == ["2026-06", "2026-07"]  # embargo: up to July
    assert "published 2026-08-11T09:30:00+01:00" in (path / "README.txt").read_text("utf-8")
    assert "exported release 2026-08 (data to 2026-07)" in " ".join(
        capsys.readouterr().err.split())
    # Without a calendar the warehouse is its one release (2026-11): no other can be named.
    assert main([*base, "export", "--warehouse", str(warehouse), "--release", "2026-08",
                 "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown release '2026-08'" in err and "2026-11" in err


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_cli_export_refuses_an_unpublished_release_on_either_engine(
        warehouse: Path, engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``statcube export --engine duckdb|spark`` refuses a release the calendar has not yet
    published (without ``--prerelease``) in one line, exit 2, before any engine runs and
    before anything is written."""
    monkeypatch.setenv("STATCUBE_CLOCK", "2026-11-21T12:00:00+00:00")
    calendar = tmp_path / "releases.toml"
    calendar.write_text('[[release]]\nid = "2027-02"\npublished = "2027-02-09T09:30"\n'
                        'last_period = "2026-11"\n', encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--model", str(ROOT / "model.json"), "--data-dir", str(tmp_path / "data"),
                 "export", "--engine", engine, "--warehouse", str(warehouse), "--releases",
                 str(calendar), "--release", "2027-02", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "release '2027-02' is not published until 2027-02-09T09:30" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not warehouse.with_suffix(".parquet").exists()  # Spark's tree was never written


@pytest.mark.unit
@pytest.mark.parametrize(("release", "now", "prerelease", "expected"), [
    (None, datetime(2026, 11, 21, 12, 0), False, "2026-11"),   # latest published
    (None, datetime(2026, 11, 10, 9, 29), False, "2026-08"),   # a minute before 2026-11
    (None, datetime(2026, 11, 10, 9, 30), False, "2026-11"),   # at its publication time
    ("2026-08", datetime(2026, 11, 21, 12, 0), False, "2026-08"),
    ("2027-02", datetime(2026, 11, 21, 12, 0), True, "2027-02"),
    ("2027-02", datetime(2026, 11, 21, 12, 0), False,
     "release '2027-02' is not published until 2027-02-09T09:30+00:00"),
    ("2026-12", datetime(2026, 11, 21, 12, 0), True, "unknown release '2026-12'"),
    (None, datetime(2026, 1, 1), True, "no release has been published yet"),
])
def test_the_release_to_export(release: str | None, now: datetime, prerelease: bool,
                               expected: str) -> None:
    """The default is the latest published release; an unpublished one only when named
    with prerelease; unknown ids are refused with the calendar's ids as hints."""
    cal = Calendar.from_data({"release": [
        {"id": "2026-08", "published": "2026-08-11T09:30", "last_period": "2026-06"},
        {"id": "2026-11", "published": "2026-11-10T09:30", "last_period": "2026-08"},
        {"id": "2027-02", "published": "2027-02-09T09:30", "last_period": "2026-11"}]})
    try:
        found = choose_release(cal, release, now.replace(tzinfo=LONDON),
                               prerelease=prerelease).id
    except StatcubeError as exc:
        assert exc.status in (400, 404)
        found = exc.message
    assert expected in found


# --- 3. Nothing lost ------------------------------------------------------------------------------

def _hidden_only(cube_dir: Path) -> list[str]:
    names = sorted(p.name for p in cube_dir.iterdir())
    assert all(n.startswith(".") for n in names), names
    return names


def test_stopped_export_resumes_to_identical_bytes(workspace: Workspace,
                                                   export_engine: Engine | None,
                                                   tmp_path: Path) -> None:
    """On either engine: a run stopped after two of three periods leaves nothing visible;
    a rerun keeps both, ignores a stray temporary file and finishes — the files equal an
    uninterrupted DuckDB export's byte for byte. (Three periods, not six, to keep the Spark
    run to three jobs.)"""
    ws = workspace.view((2026, 8))
    reference = export_grain(ws, "housing_benefit", "oa", tmp_path / "reference")
    out = tmp_path / "out"
    stopped = export_grain(ws, "housing_benefit", "oa", out, stop_after=2,
                           engine=export_engine)
    assert not stopped.complete and stopped.path.name == ".oa.partial"
    cube_dir = stopped.path.parent
    assert _hidden_only(cube_dir) == [".oa.partial"]
    assert len(partition_files(stopped.path)) == 2
    # A stray temporary file (as a kill mid-write leaves) must not reach the export.
    stray = stopped.path / "data" / "period=2026-08" / "part-0.parquet.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a file")
    resumed = export_grain(ws, "housing_benefit", "oa", out, engine=export_engine)
    assert resumed.complete and resumed.skipped_partitions == 2
    assert resumed.partitions == 3 and resumed.path == cube_dir / "oa"
    assert sorted(p.name for p in cube_dir.iterdir()) == ["oa"]
    assert files_of(resumed.path) == files_of(reference.path)


def test_corrupt_partitions_are_detected_and_rewritten(workspace: Workspace, hb_oa: Path,
                                                       tmp_path: Path) -> None:
    stopped = export_grain(workspace, "housing_benefit", "oa", tmp_path, stop_after=3)
    flipped, truncated, intact = partition_files(stopped.path)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, different bytes: only the checksum sees it
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    intact_bytes = intact.read_bytes()
    resumed = export_grain(workspace, "housing_benefit", "oa", tmp_path)
    assert resumed.skipped_partitions == 1
    assert files_of(resumed.path) == files_of(hb_oa)
    assert (resumed.path / intact.relative_to(stopped.path)).read_bytes() == intact_bytes


def test_killed_cli_export_resumes_to_identical_bytes(workspace: Workspace, warehouse: Path,
                                                      hb_oa: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "cli", "--model", str(ROOT / "model.json"),
           "--data-dir", str(tmp_path / "no-calendar"), "export",
           "--warehouse", str(warehouse), "--cube", "housing_benefit", "--grain", "oa",
           "--out", str(out)]
    cube_dir = out / "2026-11" / "housing_benefit"
    manifest = cube_dir / ".oa.partial" / "manifest.json"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                done = len(json.loads(manifest.read_text(encoding="utf-8"))["partitions"])
            except (OSError, ValueError):
                done = 0
            if done >= 2:
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"export ended before the kill: {proc.stderr.read()!r}" \
            if proc.stderr else "export ended before the kill"
        # while it runs, nothing is visible but hidden entries
        assert set(_hidden_only(cube_dir)) <= {".oa.partial", ".oa.lock"}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert set(_hidden_only(cube_dir)) <= {".oa.partial", ".oa.lock"}
    assert not (cube_dir / "oa").exists()
    resumed = export_grain(workspace, "housing_benefit", "oa", out)
    assert resumed.complete and resumed.skipped_partitions >= 2
    assert sorted(p.name for p in cube_dir.iterdir()) == ["oa"]
    assert files_of(resumed.path) == files_of(hb_oa)


def test_rerun_of_a_complete_export_is_a_no_op(workspace: Workspace,
                                               export_engine: Engine | None, hb_oa: Path,
                                               warehouse: Path) -> None:
    def state() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_ino) for p in hb_oa.rglob("*")}

    before = state()
    out = hb_oa.parents[2]
    again = export_grain(workspace, "housing_benefit", "oa", out, engine=export_engine)
    assert again.already_complete and again.path == hb_oa and again.partitions == 6
    assert main(["--model", str(ROOT / "model.json"), "--data-dir", str(out / "no-calendar"),
                 "export", "--warehouse", str(warehouse), "--cube", "housing_benefit",
                 "--grain", "oa", "--out", str(out)]) == 0
    assert state() == before
    assert sorted(p.name for p in hb_oa.parent.iterdir()) == ["oa"]


def test_an_export_from_other_settings_is_never_mixed(workspace: Workspace, hb_oa: Path,
                                                      tmp_path: Path) -> None:
    # complete, made with other row groups: refused, left alone
    with pytest.raises(ConfigError, match="row_group_rows"):
        export_grain(workspace, "housing_benefit", "oa", hb_oa.parents[2],
                     row_group_rows=1000)
    with pytest.raises(ConfigError, match="published"):
        export_grain(workspace, "housing_benefit", "oa", hb_oa.parents[2],
                     published="2026-11-10T09:30:00+00:00")
    # partial, made with other row groups: discarded and redone
    export_grain(workspace, "housing_benefit", "oa", tmp_path, row_group_rows=1000,
                 stop_after=2)
    redone = export_grain(workspace, "housing_benefit", "oa", tmp_path)
    assert redone.skipped_partitions == 0
    assert files_of(redone.path) == files_of(hb_oa)


def test_a_second_writer_is_refused(workspace: Workspace, export_engine: Engine | None,
                                    tmp_path: Path) -> None:
    lock = tmp_path / "2026-11" / "sanctions" / ".la_all.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another export is writing"):
            export_grain(workspace, "sanctions", "la_all", tmp_path, engine=export_engine)
    finally:
        os.close(fd)


# --- 4. Consistency with the API --------------------------------------------------------------

def _cell_cut(browser: CubeBrowser, g: Grain, period: int, row: dict[str, Any]) -> str:
    q = grain_query(browser, g, period)
    names = column_names(q)
    cuts = []
    for d in q.drilldown:
        hier = None if d.hierarchy.name == d.dimension.default_hierarchy_name else d.hierarchy.name
        cuts.append(PointCut(d.dimension.name, tuple(str(row[names[lvl.key.ref]])
                                                      for lvl in d.levels), hier))
    tdim = browser.cube.time_dimension
    assert tdim is not None
    (time_cut,) = q.cuts
    cuts.append(PointCut(tdim.name, tuple(str(k) for k in time_cut.paths[0])))
    return format_cuts(cuts)


def _sample(table: pa.Table, aggregates: list[str], k: int, seed: int) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    rng = random.Random(seed)
    picked = rng.sample(rows, min(k, len(rows)))
    first = aggregates[0]
    picked += [r for r in rows if r[first] == 0][:1]  # a count perturbed to zero
    picked += [r for r in rows if any(r.get(f"{a}_withheld") for a in aggregates)][:1]
    return picked


def assert_cells_match_api(browser: CubeBrowser, g: Grain, path: Path, k: int = 4) -> int:
    """Sampled exported cells equal ``browser.aggregate`` cut to the same members and period:
    counts, sums, means and withheld flags. Returns how many cells were compared."""
    cube = browser.cube
    by_label = {period_label(cube, p): p for p in visible_periods(browser)}
    aggregates = [a.name for a in cube.aggregates]
    checked = 0
    for f in partition_files(path):
        period = by_label[f.parent.name.removeprefix("period=")]
        table = pq.read_table(f)
        for row in _sample(table, aggregates, k, seed=period):
            summary = browser.aggregate(cut=_cell_cut(browser, g, period, row)).summary
            for a in cube.aggregates:
                assert row[a.name] == summary[a.name], (g.name, row, summary)
                if a.function == "avg":
                    flag = f"{a.name}_withheld"
                    assert row[flag] == summary[flag], (g.name, row, summary)
                    assert (row[a.name] is None) == row[flag]
            checked += 1
    return checked


def test_sampled_cells_equal_the_api_at_every_grain(
        one_period: tuple[Workspace, list[ExportResult]]) -> None:
    ws, results = one_period
    assert len(results) == sum(len(grains_for(c)) for c in ws.model.cubes.values())
    for result in results:
        browser = ws.cube(result.path.parent.name)
        g = grain(browser.cube, result.path.name)
        assert assert_cells_match_api(browser, g, result.path) >= 1, result.path


def test_cells_of_every_period_equal_the_api(workspace: Workspace, hb_oa: Path) -> None:
    browser = workspace.cube("housing_benefit")
    checked = assert_cells_match_api(browser, grain(browser.cube, "oa"), hb_oa, k=3)
    assert checked >= 6 * 3


def test_every_cell_of_a_grain_equals_the_api_drilldown(
        one_period: tuple[Workspace, list[ExportResult]]) -> None:
    ws, results = one_period
    browser = ws.cube("housing_benefit")
    path = result_for(results, "housing_benefit", "oa_tenure").path
    (part,) = partition_files(path)
    exported = pq.read_table(part)
    api = browser.aggregate(cut="time:2026,2,6", drilldown=["geography:oa", "tenure"],
                            pagesize=1_000_000)
    q = grain_query(browser, grain(browser.cube, "oa_tenure"), 202606)
    names = column_names(q)
    cells = api.cells.select(list(names)).rename_columns(list(names.values()))
    assert api.total_cell_count == exported.num_rows
    assert cells.equals(exported.select(cells.column_names))
    # and these are protected values, not the raw ones
    raw = browser._raw_aggregate(q).cells
    key = ["geography.oa_code", "tenure.tenure_code"]
    raw_by = {tuple(r[k] for k in key): r for r in raw.to_pylist()}
    exp_by = {(r["oa_code"], r["tenure_code"]): r for r in exported.to_pylist()}
    # Cells published as zero are left out like empty ones; every exported cell is a raw one.
    assert set(exp_by) < set(raw_by)
    assert exported.num_rows > raw.num_rows // 2
    pairs = [(exp_by[k], raw_by[k]) for k in exp_by]
    counts = [e["claimants"] for e, _ in pairs]
    assert sum(e["claimants"] != r["__n"] for e, r in pairs) > len(pairs) // 4
    assert sum(e["weekly_award_sum"] != r["__weekly_award_sum"] / 100 for e, r in pairs) \
        > len(pairs) // 4
    assert not any(0 <= c <= 2 for c in counts)  # js = 2: no 1s or 2s, and no zero rows


# --- 5. No raw column anywhere ------------------------------------------------------------------

def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def _field_names(package: dict[str, Any]) -> set[str]:
    return {f["name"] for r in package["resources"] for f in r["schema"]["fields"]}


def test_no_raw_column_in_files_or_metadata(exported: tuple[Workspace, list[ExportResult]]
                                            ) -> None:
    for result in exported[1]:
        path = result.path
        for f in sorted(path.rglob("*.parquet")):
            names = set(pq.read_schema(f).names)
            assert not names & RAW_NAMES, f
            assert not any(n.startswith("__") or n.endswith("_max") for n in names), f
            kv = pq.read_metadata(f).metadata or {}
            for key, value in kv.items():
                if key == b"ARROW:schema":
                    continue  # the Arrow schema, whose names are checked above
                text = key.decode() + " " + value.decode()
                assert not RAW_IN_TEXT.search(text), (f, text)
                assert not set(_keys(json.loads(value))) & RAW_NAMES
        for f in sorted(path.rglob("*.csv")):
            header = f.read_text(encoding="utf-8").splitlines()[0].split(",")
            assert header in (["code", "label"], ["code"]), f
        package = json.loads((path / DATAPACKAGE).read_text(encoding="utf-8"))
        assert not _field_names(package) & RAW_NAMES
        assert not any(n.startswith("__") or n.endswith("_max") for n in _field_names(package))
        assert not set(_keys(package)) & RAW_NAMES
        assert not RAW_IN_TEXT.search(json.dumps(package)), path
        assert not RAW_IN_TEXT.search((path / "README.txt").read_text(encoding="utf-8"))


# --- 6. Memory stays bounded ---------------------------------------------------------------------

@pytest.mark.unit
def test_rechunk_streams_fixed_groups_holding_one_group_and_one_batch() -> None:
    pulled = 0
    batch = 300

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal pulled
        for start in range(0, 10_000, batch):
            b = pa.record_batch({"x": pa.array(range(start, min(start + batch, 10_000)))})
            pulled += b.num_rows
            yield b

    seen = []
    yielded = 0
    for table in _rechunk(batches(), {"x": "y"}, 1000):
        yielded += table.num_rows
        assert pulled - yielded < batch  # never more than one batch read ahead
        seen.append(table)
    assert [t.num_rows for t in seen] == [1000] * 10
    assert pa.concat_tables(seen).column("y").to_pylist() == list(range(10_000))


@pytest.mark.unit
def test_the_next_period_is_queried_while_one_is_written_and_released_on_stop() -> None:
    opened: list[int] = []
    closed: list[int] = []

    class Stream:  # stands in for a RecordBatchReader: only ``close`` is used
        def __init__(self, period: int) -> None:
            self.period = period
            opened.append(period)

        def close(self) -> None:
            closed.append(self.period)

    streams = _one_ahead(Stream, [1, 2, 3])
    first = next(streams)
    assert first.period == 1
    deadline = time.monotonic() + 10
    while opened != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert opened == [1, 2]  # period 2's query started before period 1 is written
    streams.close()  # stop after one period (stop_after, or an error while writing)
    assert closed == [2] and opened == [1, 2]
    assert [s.period for s in _one_ahead(Stream, [4, 5])] == [4, 5]
    assert list(_one_ahead(Stream, [])) == []


def test_the_gate_streams_batches_of_bounded_size(workspace: Workspace) -> None:
    browser = workspace.cube("universal_credit")
    q = grain_query(browser, grain(browser.cube, "oa_age_band"), 202611)
    reader = workspace.gate.stream(browser.raw, q, 500)
    assert isinstance(reader, pa.RecordBatchReader)
    sizes = [b.num_rows for b in reader]
    assert len(sizes) > 5 and max(sizes) <= 500
    assert not [n for n in reader.schema.names if n.startswith("__")]


# --- 8. The README documents exports ------------------------------------------------------------

@pytest.mark.unit
def test_readme_documents_the_export_command_and_files() -> None:
    from cli.main import parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("<!-- section: exports -->"):
                     readme.index("<!-- section: maps -->")]
    sub = next(a for a in parser()._actions if a.dest == "command")
    export = sub.choices["export"]  # type: ignore[index]
    for action in export._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"{flag}" in section, flag
    for text in ("statcube export", "datapackage.json", "SHA256SUMS", ".<grain>.partial",
                 "la_all", "oa_<category>", "read_parquet", "pyarrow.dataset", "scan_parquet",
                 "read_parquet(", "Open Government Licence v3.0", "ptable_sha256",
                 "bench.bench_export"):
        assert text in section, text
