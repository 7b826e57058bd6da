"""Spark past the local disk: inputs and outputs at URIs, streamed results, stale temp trees.

The inputs live behind a Hadoop ``viewfs://`` mount whose path exists nowhere on the local
disk: listing, header checks, geography, months and records can only have been reached
through Hadoop's FileSystem (any pathlib, DuckDB or pyarrow access to the URI would fail), and
the build must still equal the DuckDB build of the same files, table for table. A ``file://``
URI exercises Hadoop's local filesystem for the error messages (file, row, value: the DuckDB
build's words). No HDFS or object store runs here; a scheme without a filesystem
(``s3a://``, whose jars are not on PyPI) must be one clear error.

One SparkSession for the module, shared with tests/test_spark.py when run together.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import TEST_SECRET
from test_build import _edit
from test_export import files_of
from test_spark import _tables

from cube.build import BuildReport, build
from cube.errors import ArgumentError, InputDataError
from cube.model import Model
from cube.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HB = "housing_benefit"


#: The cubes these tests build, export or break: a Spark build costs seconds per cube
#: whatever its size, and what is tested here (Hadoop paths, URIs, the CLI) is the same for
#: every cube. tests/test_spark.py builds them all.
IO_CUBES = (HB, "pip", "sanctions")


@pytest.fixture(scope="module")
def io_input(spark_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's Spark input with the microdata of :data:`IO_CUBES` only (read-only)."""
    out = tmp_path_factory.mktemp("spark-io-in") / "gb"
    shutil.copytree(spark_input, out, ignore=lambda folder, names: [
        n for n in names if Path(folder).name == "microdata" and n not in IO_CUBES])
    assert sorted(p.name for p in (out / "microdata").iterdir()) == sorted(IO_CUBES)
    return out


@pytest.fixture(scope="module")
def reference(model: Model, io_input: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> BuildReport:
    """The DuckDB build of the same input."""
    return build(model, io_input, tmp_path_factory.mktemp("spark-io-ref"), TEST_SECRET)


def _mount(spark: Any, target: Path) -> str:
    """A ``viewfs://`` URI for ``target`` whose path (/statcube-remote) is not on this disk."""
    table = f"statcube{uuid.uuid4().hex[:10]}"
    spark._jsc.hadoopConfiguration().set(f"fs.viewfs.mounttable.{table}.link./statcube-remote",
                                         target.resolve().as_uri())
    assert not Path("/statcube-remote").exists()
    return f"viewfs://{table}/statcube-remote"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_uri_input_builds_through_hadoop_the_duckdb_warehouse(
        model: Model, io_input: Path, reference: BuildReport, spark: Any,
        tmp_path: Path) -> None:
    """Inputs and the Parquet tree behind a viewfs mount: the same warehouse as DuckDB's, the
    tree written at the URI (dimension tables and metadata included), stale trees of dead
    runs removed and live or foreign ones kept, and an export on Spark read from the tree at
    the URI equals the DuckDB export byte for byte."""
    from cube.export import export_grain
    from cube.spark.build import SparkBuildOptions, build_spark
    from cube.spark.engine import SparkEngine

    real = tmp_path / "remote"
    shutil.copytree(io_input, real / "in")
    uri = _mount(spark, real)
    trees = real / "trees"
    host, dead = socket.gethostname(), _dead_pid()
    planted = {f".2026-02.parquet.tmp-{host}-{dead}": False,  # a killed run of this host
               f".2026-02.parquet.tmp-{dead}": False,  # one named by pid alone
               f".2026-02.parquet.old-{host}-{dead}": False,
               f".2026-02.parquet.tmp-{host}-{os.getppid()}": True,  # still running
               f".2026-02.parquet.tmp-otherhost-{dead}": True,  # pid means nothing here
               f".2026-01.parquet.tmp-{host}-{dead}": True}  # another release's
    for name in planted:
        (trees / name / "fact_pip").mkdir(parents=True)
        (trees / name / "fact_pip" / "part-0.parquet").write_bytes(b"partial")

    rep = build_spark(model, f"{uri}/in", tmp_path / "wh", TEST_SECRET, spark,
                      spark_options=SparkBuildOptions(parquet_out=f"{uri}/trees"))
    assert _tables(rep.warehouse) == _tables(reference.warehouse)
    assert rep.records == reference.records
    assert sorted(p.name for p in (tmp_path / "wh").iterdir()) == ["2026-02.duckdb"]
    kept = sorted(name for name, keep in planted.items() if keep)
    assert sorted(p.name for p in trees.iterdir()) == sorted(["2026-02.parquet", *kept])
    tree = trees / "2026-02.parquet"
    assert (tree / "statcube_meta.json").is_file() and (tree / "dim_geography.parquet").is_file()
    assert sorted(p.name for p in (tree / "fact_pip").iterdir()
                  if not p.name.startswith(("_", "."))) == ["month_id=202601", "month_id=202602"]

    ws = Workspace.open(model, reference.warehouse)
    try:
        want = export_grain(ws, HB, "oa", tmp_path / "duckdb")
        engine = SparkEngine(spark, f"{uri}/trees/2026-02.parquet")
        got = export_grain(ws, HB, "oa", tmp_path / "spark", engine=engine)
    finally:
        ws.close()
    assert got.rows == want.rows > 0
    a, b = files_of(tmp_path / "duckdb"), files_of(tmp_path / "spark")
    assert sorted(a) == sorted(b) and [n for n in a if a[n] != b[n]] == []


def test_errors_through_a_file_uri_read_as_the_duckdb_builds(
        model: Model, io_input: Path, spark: Any, tmp_path: Path) -> None:
    """Through Hadoop's ``file://`` filesystem: a missing folder, a file missing a column and
    bad values are refused with the DuckDB build's messages (files relative to the input,
    row, column, value); a scheme with no filesystem is one clear error."""
    from cube.spark.build import build_spark

    inp = tmp_path / "in"
    shutil.copytree(io_input, inp)
    uri = inp.resolve().as_uri()  # file:///…

    with pytest.raises(ArgumentError, match="input directory not found: file:///nowhere"):
        build_spark(model, "file:///nowhere", tmp_path / "wh", TEST_SECRET, spark)
    with pytest.raises(InputDataError, match="S3AFileSystem not found"):
        build_spark(model, "s3a://statcube-bucket/in", tmp_path / "wh", TEST_SECRET, spark)

    def problems(run: Any) -> tuple[str, tuple[str, ...]]:
        with pytest.raises(InputDataError) as info:
            run()
        return info.value.message, info.value.problems

    pip = inp / "microdata" / "pip"
    original = (pip / "2026-02.parquet").read_bytes()
    _edit(pip / "2026-02.parquet", {}, drop="mobility")
    on_duckdb = problems(lambda: build(model, inp, tmp_path / "d1", TEST_SECRET))
    on_spark = problems(lambda: build_spark(model, uri, tmp_path / "s1", TEST_SECRET, spark))
    assert on_spark == on_duckdb
    assert on_spark[1] == ("microdata/pip/2026-02.parquet: missing column(s) mobility",)

    (pip / "2026-02.parquet").write_bytes(original)
    _edit(pip / "2026-02.parquet", {9: {"mobility": "high"}, 20: {"oa_code": "W00000000"}})
    on_duckdb = problems(lambda: build(model, inp, tmp_path / "d2", TEST_SECRET))
    on_spark = problems(lambda: build_spark(model, uri, tmp_path / "s2", TEST_SECRET, spark))
    assert on_spark == on_duckdb
    assert "microdata/pip/2026-02.parquet row 10: mobility='high': unknown mobility award " \
           "code" in on_spark[1]
    assert not (tmp_path / "s2").exists() or not list((tmp_path / "s2").iterdir())


def test_results_stream_to_the_driver_in_order_in_bounded_batches(spark: Any) -> None:
    """A sorted result over several partitions arrives as toArrow() gives it, in batches of
    at most the asked size; an empty one still has its schema."""
    from cube.spark import collect

    df = spark.range(0, 30_000, numPartitions=3).selectExpr(
        "id", "cast(id % 7 as string) AS code").orderBy("code", "id")
    whole = df.toArrow()
    reader = collect.stream(df, whole.schema, 4_000)
    got = list(reader)
    assert max(b.num_rows for b in got) <= 4_000 and len(got) >= 8
    assert pa.Table.from_batches(got, whole.schema).equals(whole)
    empty = df.filter("id < 0")
    assert collect.stream(empty, collect.arrow_schema(empty), 10).read_all().equals(
        whole.schema.empty_table())


def test_the_cli_builds_a_uri_input_and_exports_from_a_tree_at_a_uri(
        io_input: Path, reference: BuildReport, spark: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``statcube build --engine spark --input file:///…`` builds the same warehouse, and
    ``statcube export --engine spark --tables file:///…`` exports from the tree it wrote; a URI
    input without ``--engine spark``, or a tree of another release, is one line and exit 2."""
    from cli.main import main

    monkeypatch.setenv("STATCUBE_KEY_SECRET", TEST_SECRET.decode())
    uri = io_input.resolve().as_uri()
    assert main(["build", "--input", uri, "--out", str(tmp_path / "wh")]) == 2
    err = capsys.readouterr().err
    assert "a URI input and --parquet-out need --engine spark" in err
    assert "Traceback" not in err
    assert main(["build", "--engine", "spark", "--input", uri, "--out", str(tmp_path / "wh"),
                 "--parquet-out", str(tmp_path / "trees")]) == 0
    assert _tables(tmp_path / "wh" / "2026-02.duckdb") == _tables(reference.warehouse)
    tree = tmp_path / "trees" / "2026-02.parquet"
    assert (tree / "statcube_meta.json").is_file()
    capsys.readouterr()

    export = ["export", "--engine", "spark",
              "--warehouse", str(tmp_path / "wh" / "2026-02.duckdb"),
              "--cube", "sanctions", "--grain", "la_all", "--out", str(tmp_path / "exports")]
    other = tmp_path / "other.parquet"
    other.mkdir()
    (other / "statcube_meta.json").write_text('{"release": "2025-12"}', encoding="utf-8")
    assert main([*export, "--tables", other.as_uri()]) == 2
    err = capsys.readouterr().err
    assert "--tables is not this release's Parquet tree (release differs" in err
    assert main([*export, "--tables", tree.as_uri()]) == 0
    assert (tmp_path / "exports" / "2026-02" / "sanctions" / "la_all" / "datapackage.json"
            ).is_file()


def test_a_stale_tree_beside_a_duckdb_release_is_removed_when_its_owner_is_gone(
        reference: BuildReport, tmp_path: Path) -> None:
    """parquet_tree (a DuckDB release as a tree for Spark exports) removes the temporary
    trees of killed runs, and only those."""
    from cube.spark.engine import parquet_tree

    copy = tmp_path / reference.warehouse.name
    shutil.copy(reference.warehouse, copy)
    host, dead = socket.gethostname(), _dead_pid()
    stale = tmp_path / f".2026-02.parquet.tmp-{host}-{dead}"
    live = tmp_path / f".2026-02.parquet.tmp-{host}-{os.getppid()}"
    for d in (stale, live):
        d.mkdir()
        (d / "dim_month.parquet").write_bytes(b"partial")
    parquet_tree(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["2026-02.duckdb", "2026-02.parquet", live.name])
