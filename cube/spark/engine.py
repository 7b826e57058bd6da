"""Run the gate's protected SQL on Spark, over a release's tables as Parquet.

Exports on Spark (``statcube export --engine spark``) do not reimplement protection: the gate
compiles the same SQLAlchemy statement it runs on DuckDB and PostgreSQL (cube/sql.py's
template with cube/disclosure/sql_path.py's cell key stage — the p-table is a join with the
small ``sdc_ptable`` table, which Spark broadcasts), and this engine renders it for Spark:
SQLAlchemy's PostgreSQL dialect with values inlined, then sqlglot from PostgreSQL to Spark
SQL. The export then writes the same files, with the same checks and resumption, as on DuckDB
(cube/export.py); tests/test_spark.py requires the bytes of every partition to be equal.

The tables are the release's Parquet tree, ``<release>.parquet/`` (a Spark build writes it;
:func:`parquet_tree` writes it from any DuckDB release warehouse): each table becomes a
temporary view of the same name. Values inlined into the SQL come from the query the export
builds (periods, model codes), never from a file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
from sqlalchemy.sql import ClauseElement

from cube.engine import BATCH_ROWS, Compiled, Engine, canonical
from cube.spark import collect
from cube.spark.fs import HadoopFS, is_uri, owner_tag, remove_stale

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkEngine(Engine):
    """An :class:`~cube.engine.Engine` whose statements run on a SparkSession.

    Only what the export path uses: ``compile``, ``run``/``execute``, ``stream``. ``stream``
    (what exports call) brings results to the driver a partition at a time as Arrow batches
    (:mod:`cube.spark.collect`); ``run`` collects a whole (small) result.

    ``tables`` is a local directory or a URI Spark can read (``hdfs://…/2026-01.parquet``),
    listed through Hadoop's FileSystem."""

    def __init__(self, spark: SparkSession, tables: Path | str) -> None:
        from sqlalchemy.dialects.postgresql.base import PGDialect

        # Engine's own state, without opening a warehouse: nothing here is DuckDB's.
        self.target = str(tables)
        self.statement_timeout_ms = None
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._duck = None
        self._sa = None
        # Named parameters: no psycopg-style doubling of '%' in the rendered SQL.
        self.dialect = PGDialect(paramstyle="named")  # type: ignore[no-untyped-call]
        self.spark = spark
        if is_uri(str(tables)):
            entries = [(e.uri, e.name, e.is_dir) for e in HadoopFS(spark).entries(str(tables))]
        else:
            entries = [(p.resolve().as_uri(), p.name, p.is_dir())
                       for p in sorted(Path(tables).iterdir())]
        for uri, file_name, is_dir in entries:
            if file_name.startswith((".", "_")):
                continue  # Spark's and Hadoop's own files (_SUCCESS, .crc)
            if is_dir or file_name.endswith(".parquet"):
                spark.read.parquet(uri).createOrReplaceTempView(
                    file_name.removesuffix(".parquet"))

    @property
    def name(self) -> str:
        return "spark"

    def compile(self, stmt: ClauseElement) -> Compiled:
        import sqlglot

        text = str(stmt.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True}))
        return Compiled(sqlglot.transpile(text, read="postgres", write="spark")[0], {})

    def run(self, compiled: Compiled) -> pa.Table:
        sql, _ = compiled
        return canonical(self.spark.sql(sql).toArrow())

    def stream(self, stmt: ClauseElement, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        """The result as Arrow batches fetched a partition at a time (driver memory bounded by
        a partition, not the result), with the types ``run`` would give."""
        sql, _ = self.compile(stmt)
        df = self.spark.sql(sql)
        schema = canonical(collect.arrow_schema(df).empty_table()).schema
        return collect.stream(df, schema, batch_rows)

    def close(self) -> None:
        """The session belongs to the caller; nothing of this engine's to close."""


def parquet_tree(warehouse: Path) -> Path:
    """``<release>.parquet/`` beside a DuckDB release warehouse: the tree a Spark build wrote,
    else written now from the warehouse (facts partitioned by period, every other table one
    file), into a temporary directory renamed into place."""
    import shutil

    final = warehouse.with_suffix(".parquet")
    if final.is_dir():
        return final
    # Trees of runs killed while writing (their process gone) are removed first.
    remove_stale(warehouse.parent, [f".{final.name}.tmp-"])
    tmp = warehouse.with_name(f".{final.name}.tmp-{owner_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        for table in tables:  # names from the warehouse, not from input
            columns = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
            period = next((c for c in ("month_id", "quarter_id") if c in columns), None)
            if table.startswith("fact_") and period:
                target = _quoted(str(tmp / table))
                con.execute(f"COPY {table} TO {target} (FORMAT parquet, "
                            f"PARTITION_BY ({period}))")
            else:
                con.execute(f"COPY {table} TO {_quoted(str(tmp / (table + '.parquet')))} "
                            "(FORMAT parquet)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    tmp.rename(final)
    return final


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tree_meta(spark: SparkSession, tables: Path | str) -> dict[str, object]:
    """A Parquet tree's ``statcube_meta.json`` (local or at a URI; {} when absent): lets an
    export check that the tree it computes from is the release it exports."""
    import json
    import tempfile

    if not is_uri(str(tables)):
        path = Path(tables) / "statcube_meta.json"
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}
    fs = HadoopFS(spark)
    uri = str(tables).rstrip("/") + "/statcube_meta.json"
    if not fs.exists(uri):
        return {}
    with tempfile.TemporaryDirectory(prefix="statcube-meta-") as tmp:
        local = Path(tmp) / "statcube_meta.json"
        fs.copy_to_local(uri, local)
        return dict(json.loads(local.read_text(encoding="utf-8")))
