"""Same cells, any engine: the Spark build gives the DuckDB build's warehouse.

One small input (scale 0.002, six cubes, two months) is built by :func:`cube.build.build` and
by :func:`cube.spark.build.build_spark` on a real local Spark (``local[2]``, Java 17); every
table must match row for row and column type for column type, and the API must answer the
same. What is not a comparison of the two builds runs in the engine-parametrised suite
instead: refusals, skip-bad-rows reports and CSV input in tests/test_build.py
(``build_on``), exports and their resumption in tests/test_export.py (``export_engine``).
The SparkSession is the test session's one (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import TEST_SECRET, QueryArgs

from cube.build import BuildOptions, BuildReport, build
from cube.model import Model
from cube.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HB = "housing_benefit"


@pytest.fixture(scope="module")
def both(model: Model, spark_input: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[BuildReport, BuildReport]:
    from cube.spark.build import build_spark

    root = tmp_path_factory.mktemp("spark-out")
    on_duckdb = build(model, spark_input, root / "duckdb", TEST_SECRET, BuildOptions())
    on_spark = build_spark(model, spark_input, root / "spark", TEST_SECRET, spark)
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


QUERIES: list[tuple[str, QueryArgs]] = [
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
        kw: QueryArgs) -> None:
    answers = []
    for rep in both:
        ws = Workspace.open(model, rep.warehouse)
        try:
            answers.append(ws.cube(cube).aggregate(**kw).to_json())
        finally:
            ws.close()
    assert answers[0] == answers[1]
    assert answers[0]["cells"]


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
