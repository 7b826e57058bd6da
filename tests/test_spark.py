"""Same cells, any engine: the Spark build gives the DuckDB build's warehouse.

One small input (scale 0.002, two months) is built by :func:`cube.build.build` and by
:func:`cube.spark.build.build_spark` on a real local Spark (``local[2]``, Java 17); every table
must match row for row and column type for column type, and the API must answer the same. A
second test puts bad rows into one cube's input: Spark must report them in the DuckDB build's
words (file, row, column, value), refuse by default, and with ``skip_bad_rows`` build exactly
what the DuckDB build builds without them. One SparkSession serves the module (starting one
costs about 15 s here).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import TEST_SECRET
from test_build import _edit  # one helper for rewriting input Parquet in tests

from cube.build import BuildOptions, BuildReport, build
from cube.errors import InputDataError
from cube.model import Model
from cube.synthetic import GenerateOptions, generate
from cube.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = GenerateOptions(scale=0.002, seed=11, start="2026-01", months=2)
HB = "housing_benefit"
HB_JAN = Path("microdata") / HB / "2026-01.parquet"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from cube.spark.session import local_session

    # Not stopped here: tests/test_spark_io.py reuses it (a session costs ~15 s to start);
    # pyspark stops it when the interpreter exits.
    yield local_session("local[2]")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark-in") / "gb"
    generate(out, SMALL)
    return out


@pytest.fixture(scope="module")
def both(model: Model, small: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[BuildReport, BuildReport]:
    from cube.spark.build import build_spark

    root = tmp_path_factory.mktemp("spark-out")
    on_duckdb = build(model, small, root / "duckdb", TEST_SECRET, BuildOptions())
    on_spark = build_spark(model, small, root / "spark", TEST_SECRET, spark)
    return on_duckdb, on_spark


def _tables(path: Path) -> dict[str, tuple[list[Any], list[Any]]]:
    """Every table but the metadata: (column names and types, rows in order)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'statcube_meta' "
            "ORDER BY 1").fetchall()]
        return {n: (con.execute(f"DESCRIBE {n}").fetchall(),
                    con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall()) for n in names}
    finally:
        con.close()


def test_spark_builds_the_duckdb_warehouse_row_for_row(
        both: tuple[BuildReport, BuildReport], model: Model) -> None:
    on_duckdb, on_spark = both
    a, b = _tables(on_duckdb.warehouse), _tables(on_spark.warehouse)
    assert sorted(a) == sorted(b)
    assert {f"fact_{c}" for c in model.cubes} <= set(a)
    for table in a:
        assert a[table][0] == b[table][0], f"{table}: columns differ"
        assert a[table][1] == b[table][1], f"{table}: rows differ"
        assert a[table][1] or table == "boundaries", f"{table} is empty"
    assert {c: r.records for c, r in on_spark.cubes.items()} == {
        c: r.records for c, r in on_duckdb.cubes.items()}
    assert on_spark.release == on_duckdb.release == "2026-02"
    assert not on_spark.report_path.exists()


def test_the_release_is_also_a_parquet_directory(both: tuple[BuildReport, BuildReport],
                                                 model: Model) -> None:
    """Facts partitioned by period, dimension tables and metadata: any Parquet reader can
    use the release; no temporary file is left behind."""
    _, on_spark = both
    tree = on_spark.warehouse.with_name(f"{on_spark.release}.parquet")
    months = sorted(p.name for p in (tree / "fact_housing_benefit").iterdir() if p.is_dir())
    assert months == ["month_id=202601", "month_id=202602"]
    assert (tree / "dim_geography.parquet").exists()
    meta = json.loads((tree / "statcube_meta.json").read_text(encoding="utf-8"))
    assert meta["engine"] == "spark" and meta["release"] == "2026-02"
    assert sorted(meta["cubes"]) == sorted(model.cubes)
    assert sorted(p.name for p in on_spark.warehouse.parent.iterdir()) == [
        "2026-02.duckdb", "2026-02.parquet"]


QUERIES = [
    (HB, {"drilldown": "geography:region"}),
    (HB, {"drilldown": "tenure|geography:la", "cut": "time:2026,1,1"}),
    ("universal_credit", {"drilldown": "conditionality"}),
    ("pip", {"drilldown": "daily_living|mobility"}),
    ("sanctions", {"drilldown": "reason"}),
    ("nino_registrations", {"drilldown": "world_area"}),
]


@pytest.mark.parametrize(("cube", "kw"), QUERIES, ids=[f"{c}-{kw}" for c, kw in QUERIES])
def test_the_api_answers_the_same_from_either_build(
        both: tuple[BuildReport, BuildReport], model: Model, cube: str,
        kw: dict[str, str]) -> None:
    answers = []
    for rep in both:
        ws = Workspace.open(model, rep.warehouse)
        try:
            answers.append(ws.cube(cube).aggregate(**kw).to_json())
        finally:
            ws.close()
    assert answers[0] == answers[1]
    assert answers[0]["cells"]


def test_bad_rows_are_refused_or_skipped_as_the_duckdb_build_does(
        model: Model, small: Path, spark: Any, tmp_path: Path) -> None:
    from cube.spark.build import build_spark

    inp = tmp_path / "in"
    shutil.copytree(small / "geography", inp / "geography")
    shutil.copytree(small / "microdata" / HB, inp / "microdata" / HB)
    unit = pq.read_table(inp / HB_JAN, columns=["unit_id"]).column(0)[3].as_py()
    _edit(inp / HB_JAN, {10: {"oa_code": "S00999999"}, 20: {"weekly_award": -1},
                         30: {"tenure": "council"}, 7: {"unit_id": unit}})
    expected = (
        f"{HB_JAN} row 11: oa_code='S00999999': unknown output area code",
        f"{HB_JAN} row 31: tenure='council': unknown tenure type code",
        f"{HB_JAN} row 21: weekly_award='-1': amount must be a whole, non-negative number "
        "of pence",
        f"{HB_JAN} row 4: unit_id='{unit}': unit appears 2 times in month 2026-01",
        f"{HB_JAN} row 8: unit_id='{unit}': unit appears 2 times in month 2026-01",
    )
    with pytest.raises(InputDataError) as duck:
        build(model, inp, tmp_path / "duck-refused", TEST_SECRET)
    with pytest.raises(InputDataError) as info:
        build_spark(model, inp, tmp_path / "refused", TEST_SECRET, spark)
    assert info.value.message == duck.value.message
    assert info.value.message.startswith(f"{HB}: 5 bad input row(s); nothing was built")
    assert info.value.problems == duck.value.problems == expected
    assert list((tmp_path / "refused").iterdir()) == []  # nothing written, no temporary

    skip = BuildOptions(skip_bad_rows=True)
    a = build(model, inp, tmp_path / "duck", TEST_SECRET, skip)
    b = build_spark(model, inp, tmp_path / "spark", TEST_SECRET, spark, skip)
    assert b.cubes[HB].skipped == a.cubes[HB].skipped == 5
    report = json.loads(b.report_path.read_text(encoding="utf-8"))
    assert report["cubes"][HB]["problems"] == list(expected)
    assert _tables(a.warehouse) == _tables(b.warehouse)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_export_on_spark_writes_the_duckdb_exports_bytes_and_resumes(
        both: tuple[BuildReport, BuildReport], model: Model, spark: Any,
        tmp_path: Path) -> None:
    """Every file of a Spark-computed export (partitions, codelists, datapackage.json,
    SHA256SUMS) equals the DuckDB export of the same release byte for byte; its cells equal
    those exported from the DuckDB build too. A run stopped after one partition leaves no
    visible grain, and a rerun keeps that partition and finishes."""
    from cube.export import export_grain, export_release
    from cube.spark.engine import SparkEngine, parquet_tree

    on_duckdb, on_spark = both
    cubes = [HB, "sanctions"]
    for rep, out in ((on_duckdb, "duckdb-build"), (on_spark, "duckdb")):
        ws = Workspace.open(model, rep.warehouse)
        try:
            export_release(ws, tmp_path / out, cubes=cubes)
        finally:
            ws.close()
    ws = Workspace.open(model, on_spark.warehouse)
    try:
        engine = SparkEngine(spark, parquet_tree(on_spark.warehouse))
        stopped = export_grain(ws, HB, "oa", tmp_path / "spark", stop_after=1, engine=engine)
        assert not stopped.complete
        assert not (tmp_path / "spark" / "2026-02" / HB / "oa").exists()
        results = export_release(ws, tmp_path / "spark", cubes=cubes, engine=engine)
    finally:
        ws.close()
    oa = next(r for r in results if r.path.name == "oa" and r.path.parent.name == HB)
    assert oa.skipped_partitions == 1  # the partition written before the stop was kept
    want, got = _files(tmp_path / "duckdb"), _files(tmp_path / "spark")
    assert sorted(got) == sorted(want)
    assert any(name.endswith("SHA256SUMS") for name in want)
    assert [n for n in want if want[n] != got[n]] == []
    # The other build differs only in its build id (datapackage.json, SHA256SUMS, README).
    other = _files(tmp_path / "duckdb-build")
    cells = [n for n in want if n.endswith(".parquet")]
    assert cells and [n for n in cells if other[n] != got[n]] == []


def test_a_duckdb_release_becomes_a_parquet_tree_for_spark(
        both: tuple[BuildReport, BuildReport], tmp_path: Path) -> None:
    """Releases built on one machine can be exported on Spark too: their tables are written
    as the same tree a Spark build leaves (facts partitioned by period)."""
    from cube.spark.engine import parquet_tree

    on_duckdb, _ = both
    copy = tmp_path / on_duckdb.warehouse.name
    shutil.copy(on_duckdb.warehouse, copy)
    tree = parquet_tree(copy)
    assert tree == tmp_path / "2026-02.parquet"
    assert sorted(p.name for p in (tree / "fact_pip").iterdir()) == [
        "month_id=202601", "month_id=202602"]
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT count(*) FROM read_parquet($p, hive_partitioning = true)",
            {"p": str(tree / "fact_pip" / "*" / "*.parquet")}).fetchone()
    finally:
        con.close()
    ro = duckdb.connect(str(copy), read_only=True)
    try:
        assert rows == ro.execute("SELECT count(*) FROM fact_pip").fetchone()
    finally:
        ro.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-02.duckdb", "2026-02.parquet"]


def test_csv_input_is_read_validated_and_located_by_line_as_on_duckdb(
        model: Model, small: Path, spark: Any, tmp_path: Path) -> None:
    """CSV microdata (text ids, amounts as text) gives the same cells as on DuckDB, and a
    bad row is named by its line (the header is line 1)."""
    import pyarrow.csv as pacsv

    from cube.spark.build import build_spark

    inp = tmp_path / "in"
    shutil.copytree(small / "geography", inp / "geography")
    for path in sorted((small / "microdata" / HB).glob("*.parquet")):
        target = inp / "microdata" / HB / path.with_suffix(".csv").name
        target.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(pq.read_table(path), target)
    a = build(model, inp, tmp_path / "duck", TEST_SECRET)
    b = build_spark(model, inp, tmp_path / "spark", TEST_SECRET, spark)
    assert _tables(a.warehouse) == _tables(b.warehouse)

    csv = inp / HB_JAN.with_suffix(".csv")
    lines = csv.read_text(encoding="utf-8").splitlines()
    header = [h.strip('"') for h in lines[0].split(",")]
    fields = lines[41].split(",")
    fields[header.index("oa_code")] = '"W00000000"'
    lines[41] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputDataError) as info:
        build_spark(model, inp, tmp_path / "bad", TEST_SECRET, spark)
    assert info.value.problems == (
        f"{HB_JAN.with_suffix('.csv')} line 42: oa_code='W00000000': unknown output area code",)
