"""Build a release on Apache Spark: the same warehouse as :func:`cube.build.build`.

Shape, and why. Spark does the work that grows with the microdata — reading every record,
validating it, keying its unit (HMAC) and aggregating to the finest grain — and writes each
cube's facts as Parquet partitioned by period (``fact_<cube>/month_id=202601/part-….parquet``).
Everything that is small — geography lookups, codelists, the p-table, boundaries, metadata —
stays on the driver, written by the same code the DuckDB build uses
(:func:`cube.build.write_dimensions`, :func:`cube.build.write_meta`). A last driver step loads
the facts into a DuckDB release warehouse, so the release is one file identical in content to
a DuckDB build: the server, ``load-pg``, the SQL API and exports open it unchanged. The facts
are small (finest-grain cells, not records: 4M records make about 1M cells), so loading them is
cheap next to the aggregation. The Parquet tree is kept beside the warehouse
(``<release>.parquet/``: facts, dimension tables, ``statcube_meta.json``) for engines that read
Parquet directly.

The rules are the DuckDB build's: the columns, the checks (column and message) and the fact
layout come from :func:`cube.build._plan`, the month pattern from ``_MONTH_RE``, the problem
report format and its limit from the same module; only their Spark SQL spelling lives here.
Rows are located by file and row (Parquet: ``_metadata.row_index``; CSV: line number, the
header being line 1), so messages read as the DuckDB build's do.

The record-key secret reaches executors as a broadcast variable read inside ``mapInArrow``: it
never appears in a query plan, a log or a file.

Inputs from any path Spark can read. A local folder is read as the DuckDB build reads it
(pathlib, the same checks). An input given as a URI (``hdfs://nn/statcube/in``,
``s3a://bucket/in``, ``file:///data/in``) is never touched through pathlib: microdata files are
listed through Hadoop's FileSystem (:mod:`cube.spark.fs`), their headers read by Spark, months
and rows read by Spark; the small geography lookups and boundaries are copied through the same
FileSystem to a local temporary folder and loaded by the shared code. The checks and their
messages are the same, files named relative to the input (``microdata/pip/2026-01.parquet row
7``).

Outputs. The warehouse (``<release>.duckdb``) is a local file: DuckDB writes it on the driver.
The Parquet tree (``<release>.parquet/``) goes beside it, or to any URI Spark can write
(:attr:`SparkBuildOptions.parquet_out`).

Atomic: facts go to ``.<release>.parquet.tmp-<host>-<pid>/``, the warehouse to
``.<release>.duckdb.tmp-<pid>``; both are renamed into place only when complete. Temporary
trees of earlier runs whose process is gone (killed builds) are removed when a build of the
same release starts; a run still going keeps its own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow as pa

from cube.build import (
    _MONTH_RE,
    CODELIST,
    MAX_PROBLEMS,
    BuildOptions,
    BuildReport,
    CubeBuildReport,
    ProgressFn,
    _category_dims,
    _drop_enums,
    _literal,
    _Plan,
    _plan,
    _remove_stale_temps,
    _where,
    build_rollups,
    check_input,
    load_inputs,
    read_jcp_lookup,
    release_id,
    require_columns,
    required_columns,
    write_dimensions,
    write_meta,
)
from cube.errors import ArgumentError, InputDataError
from cube.geography import GeographyLoad, find_lookups
from cube.keys import K_DEFAULT, RecordKeyer
from cube.model import Cube, Model
from cube.spark import collect
from cube.spark.fs import HadoopFS, basename, is_uri, join, owner_tag, remove_stale

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The build options used when none are given.
_DEFAULT_OPTIONS = BuildOptions()
#: Cubes aggregated at once (concurrent Spark jobs from driver threads). 1 on 2 cores:
#: measured 65 s sequential, 81 s with 3 at once (scale 0.002); a cluster may raise it.
_CONCURRENT_CUBES = 1


@dataclass(frozen=True)
class SparkBuildOptions:
    """How the Spark side runs (the build's own options are :class:`BuildOptions`)."""

    #: Keep ``<release>.parquet/`` (facts, dimensions, metadata) beside the warehouse.
    keep_parquet: bool = True
    #: Where ``<release>.parquet/`` goes instead: a local folder or a URI Spark can write
    #: (``hdfs://…``, ``s3a://…``); None: beside the warehouse.
    parquet_out: str | None = None


def build_spark(model: Model, input_dir: Path | str, warehouse_dir: Path, secret: bytes,
                spark: SparkSession, options: BuildOptions = _DEFAULT_OPTIONS,
                spark_options: SparkBuildOptions | None = None,
                progress: ProgressFn | None = None) -> BuildReport:
    """Build ``<warehouse_dir>/<release>.duckdb`` (and ``<release>.parquet/``) on Spark.

    Same contract as :func:`cube.build.build`: bad input raises :class:`InputDataError` and
    writes nothing, unless ``options.skip_bad_rows``, which leaves bad rows out and writes
    ``<release>.build-report.json``. ``input_dir`` is a local folder or a URI (``scheme://…``)
    Spark can read.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        return _build_spark(model, input_dir, warehouse_dir, secret, spark, options,
                            spark_options or SparkBuildOptions(), progress)
    except PySparkException as exc:  # an unreadable or inconsistent input file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputDataError(f"cannot read microdata on Spark: {first}",
                             parameter="microdata") from None
    except Py4JJavaError as exc:  # Hadoop's FileSystem: no such scheme, no access, …
        text = str(exc.java_exception).strip()
        first = text.splitlines()[0] if text else "Hadoop FileSystem error"
        raise InputDataError(f"cannot reach the input or output on Spark: {first}",
                             parameter="input") from None


def _build_spark(model: Model, input_dir: Path | str, warehouse_dir: Path, secret: bytes,
                 spark: SparkSession, options: BuildOptions, spark_options: SparkBuildOptions,
                 progress: ProgressFn | None) -> BuildReport:
    with tempfile.TemporaryDirectory(prefix="statcube-spark-") as scratch:
        return _build_in(model, input_dir, warehouse_dir, secret, spark, options, spark_options,
                         progress, Path(scratch))


def _build_in(model: Model, input_dir: Path | str, warehouse_dir: Path, secret: bytes,
              spark: SparkSession, options: BuildOptions, spark_options: SparkBuildOptions,
              progress: ProgressFn | None, scratch: Path) -> BuildReport:
    started = time.perf_counter()
    src = _inputs(spark, model, input_dir, scratch)
    cube_files = src.files
    cubes = [c for c in model.cubes.values() if cube_files[c.name]]
    steps = 3 + len(cubes)
    done = 0

    lock = threading.Lock()  # cubes run in threads

    def tick(what: str) -> None:
        nonlocal done
        with lock:
            done += 1
            if progress:
                progress(what, done, steps)

    timings: dict[str, float] = {}
    # Headers only, on the driver: a missing column names its file.
    geo = src.load(spark, cubes, timings)
    tick("geography")
    input_dir = src.local  # geography/ and boundaries/ from here on
    jcp = read_jcp_lookup(input_dir, src.lookups, cubes)
    frames = {c.name: _read(spark, c, cube_files[c.name]) for c in cubes}
    all_months = _months(frames.values())
    if not all_months:
        raise InputDataError("no valid month values (YYYY-MM) in the microdata")
    release = release_id(options, all_months)
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    final = warehouse_dir / f"{release}.duckdb"
    tmp = warehouse_dir / f".{release}.duckdb.tmp-{os.getpid()}"
    tree = _Tree(spark, spark_options.parquet_out or warehouse_dir, release)
    _remove_stale_temps(warehouse_dir, release)
    tree.remove_stale()
    tree.discard()
    report = BuildReport(warehouse=final, release=release, warnings=list(geo.warnings),
                         timings=timings)
    codes = _codelists(spark, model, cubes, geo.table, jcp)
    k = K_DEFAULT
    from cube.disclosure.ptable import PTableParams

    params = PTableParams.from_mapping(model.disclosure.get("ptable", {}))
    if params.K:
        k = params.K
    RecordKeyer(b"", k)  # checks k before any job starts
    secret_bc = spark.sparkContext.broadcast(secret)
    con: duckdb.DuckDBPyConnection | None = None
    try:
        plans = {c.name: _plan(model, c, {m: "VARCHAR" for m in required_columns(c)},
                               all_months) for c in cubes}

        def one(cube: Cube) -> CubeBuildReport:
            t = time.perf_counter()
            rep = _build_cube(frames[cube.name], plans[cube.name], codes, secret_bc, k,
                              options, src, tree.stage, len(cube_files[cube.name]))
            timings[cube.name] = time.perf_counter() - t
            tick(cube.name)
            return rep

        # Cubes run as concurrent Spark jobs: a small cube's job fills the cores a big one's
        # scheduling gaps leave. The first failure (in model order) is raised.
        with ThreadPoolExecutor(max_workers=_CONCURRENT_CUBES) as pool:
            futures = [(c, pool.submit(one, c)) for c in cubes]
            try:
                for c, future in futures:
                    report.cubes[c.name] = future.result()
            except BaseException:  # bad input in one cube: do not start the others
                for _, future in futures:
                    future.cancel()
                raise
        t = time.perf_counter()
        con = duckdb.connect(str(tmp))
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET memory_limit = {_literal(options.memory_limit)}")
        if options.threads:
            con.execute(f"SET threads = {int(options.threads)}")
        ptable, month_text, attribution = write_dimensions(
            con, model, cubes, geo.table, jcp, all_months, input_dir, report)
        for cube in cubes:
            _load_fact(con, plans[cube.name], tree.facts(plans[cube.name].fact))
            count_col = cube.physical.column(cube.count_measure.name).column
            row = con.execute(f"SELECT coalesce(sum({count_col}), 0), count(*) "
                              f"FROM {cube.physical.fact}").fetchone()
            rep = report.cubes[cube.name]
            rep.records, rep.fact_rows = (int(row[0]), int(row[1])) if row else (0, 0)
        _drop_enums(con)
        rollups = {c.name: build_rollups(con, c) for c in cubes}  # as the DuckDB build does
        write_meta(con, model, release, ptable, month_text, sorted(report.cubes), attribution,
                   engine="spark", rollups=rollups)
        con.execute("CHECKPOINT")
        if spark_options.keep_parquet:
            tree.add_dimensions(con, scratch)
        con.close()
        con = None
        timings["warehouse"] = time.perf_counter() - t
        tick("warehouse")
    except BaseException:
        if con is not None:
            con.close()
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        tree.discard()
        raise
    finally:
        secret_bc.destroy()
    if spark_options.keep_parquet:
        tree.publish()
    else:
        tree.discard()
    tmp.replace(final)
    report.seconds = time.perf_counter() - started
    if any(c.problems for c in report.cubes.values()):
        report.report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n",
                                      encoding="utf-8")
    else:
        report.report_path.unlink(missing_ok=True)
    return report


# --- Inputs ------------------------------------------------------------------------------------

def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def _is_microdata(name: str) -> bool:
    return name.lower().endswith((".parquet", ".csv"))


@dataclass
class _Inputs:
    """A build's input: the microdata files Spark reads (URIs) and a local folder holding the
    geography lookups and boundaries (the input folder itself, or a copy of them)."""

    local: Path
    lookups: dict[str, Path]
    files: dict[str, list[str]]
    #: The input's qualified URI; None for a local folder.
    root: str | None = None
    #: A local folder's microdata files as listed (for the shared header check).
    paths: dict[str, list[Path]] | None = None

    def name(self, file: str) -> str:
        """A file's name for messages: relative to the input (``microdata/pip/x.parquet``)."""
        if self.root is None:
            path = Path(_local(file))
            try:
                return str(path.relative_to(self.local))
            except ValueError:
                return path.name
        prefix = self.root + "/"
        return file[len(prefix):] if file.startswith(prefix) else basename(file)

    def where(self, file: str, row: int) -> str:
        if self.root is None:
            return _where(_local(file), row, self.local)
        name = self.name(file)
        return f"{name} {'line' if name.lower().endswith('.csv') else 'row'} {row}"

    def load(self, spark: SparkSession, cubes: Sequence[Cube], timings: dict[str, float]
             ) -> GeographyLoad:
        """The geography, loaded and checked, and every microdata file's header checked
        (local files as the DuckDB build checks them; URIs through Spark)."""
        if self.paths is not None:
            return load_inputs(self.local, self.lookups, self.paths, cubes, timings)
        geo = load_inputs(self.local, self.lookups, {c.name: [] for c in cubes}, cubes,
                          timings)
        for cube in cubes:
            self._check_columns(spark, cube)
        return geo

    def _check_columns(self, spark: SparkSession, cube: Cube) -> None:
        """cube.build's per-file header check, the headers read by Spark (a file's footer or
        first line), with its messages."""
        from pyspark.errors import PySparkException

        def headers() -> Iterator[tuple[str, set[str]]]:
            for f in self.files[cube.name]:
                try:
                    if f.lower().endswith(".parquet"):
                        have = set(spark.read.parquet(f).columns)
                    else:
                        have = set(spark.read.option("header", True)
                                   .option("inferSchema", False).csv(f).columns)
                except PySparkException as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise InputDataError(f"cannot read microdata file {basename(f)}: {first}",
                                         problems=[f"{self.name(f)}: {first}"],
                                         parameter="microdata") from None
                yield self.name(f), have

        require_columns(cube, headers())


def _inputs(spark: SparkSession, model: Model, input_dir: Path | str, scratch: Path
            ) -> _Inputs:
    """A local folder as :func:`cube.build.check_input` finds it; a URI through Hadoop's
    FileSystem, with the same rules and messages (and its geography/ and boundaries/
    copied to ``scratch``)."""
    if not is_uri(str(input_dir)):
        lookups, cube_files = check_input(model, Path(input_dir))
        return _Inputs(Path(input_dir), lookups,
                       {c: [_uri(p) for p in files] for c, files in cube_files.items()},
                       paths=cube_files)
    uri = str(input_dir)
    fs = HadoopFS(spark)
    if not fs.is_dir(uri):
        raise ArgumentError(f"input directory not found: {uri}", parameter="input", value=uri)
    root = fs.qualified(uri)
    files = {c: [f for f in fs.files(join(root, "microdata", c)) if _is_microdata(f)]
             for c in model.cubes}
    if not any(files.values()):
        raise InputDataError(f"no microdata found under {join(uri, 'microdata')}",
                             problems=[f"expected microdata/<cube>/*.parquet|csv for cubes "
                                       f"{', '.join(model.cubes)}"])
    for folder in ("geography", "boundaries"):  # small: copied, then read as local files
        for entry in fs.entries(join(root, folder)):
            if not entry.is_dir:
                fs.copy_to_local(entry.uri, scratch / folder / entry.name)
    return _Inputs(scratch, find_lookups(scratch / "geography"), files, root)


# --- Reading -----------------------------------------------------------------------------------

def _read(spark: SparkSession, cube: Cube, files: Sequence[str]) -> DataFrame:
    """One DataFrame of a cube's required columns over all its files, with ``_file`` (the
    file's URI) and ``_row`` (1-based Parquet row; CSV line, the header being line 1).

    When a cube mixes Parquet and CSV files, every column is read as text (as CSV is), so
    the union has one type per column."""
    from pyspark.sql import functions as F

    cols = required_columns(cube)
    parquet = [f for f in files if f.lower().endswith(".parquet")]
    csvs = [f for f in files if f.lower().endswith(".csv")]
    parts: list[DataFrame] = []
    if parquet:
        df = spark.read.parquet(*parquet)
        parts.append(df.select(*cols, F.col("_metadata.file_path").alias("_file"),
                               (F.col("_metadata.row_index") + 1).alias("_row")))
    for f in csvs:  # one file at a time: line numbers follow the file's own order
        df = spark.read.option("header", True).option("inferSchema", False).csv(f)
        schema = df.select(*cols).schema
        indexed = df.select(*cols).rdd.zipWithIndex().map(lambda p: (*p[0], p[1] + 2))
        from pyspark.sql.types import LongType, StructField, StructType

        located = spark.createDataFrame(
            indexed, StructType([*schema.fields, StructField("_row", LongType())]))
        parts.append(located.select(*cols, F.lit(f).alias("_file"), "_row"))
    if len(parts) > 1 and parquet and csvs:
        parts = [p.select(*(F.col(c).cast("string").alias(c) for c in cols), "_file", "_row")
                 for p in parts]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def _months(frames: Any) -> list[int]:
    """Every valid month (as yyyymm) in any cube's input, bad rows included (as the DuckDB
    build does, so both builds have the same dim_month)."""
    from pyspark.sql import functions as F

    months: DataFrame | None = None
    for df in frames:  # one job over every cube's input
        m = df.select(F.col("month").cast("string").alias("m")).distinct()
        months = m if months is None else months.union(m)
    found: set[int] = set()
    for (m,) in (months.distinct().collect() if months is not None else []):
        if m is not None and _MONTH_RE.fullmatch(m):
            found.add(int(m[:4]) * 100 + int(m[5:7]))
    return sorted(found)


def _codelists(spark: SparkSession, model: Model, cubes: Sequence[Cube],
               geography: pa.Table, jcp: pa.Table | None) -> dict[str, DataFrame]:
    """Valid codes per input column, as small DataFrames to broadcast-join against."""
    lists: dict[str, list[str]] = {"oa_code": [str(c) for c in
                                               geography.column("oa_code").to_pylist()]}
    if jcp is not None:
        lists["jcp_office"] = [str(c) for c in jcp.column("office_code").to_pylist()]
    for name in sorted({d for c in cubes for d in _category_dims(c)}):
        lists[name] = [m.code for m in model.dimensions[name].members]
    return {col: spark.createDataFrame([(c,) for c in values], f"_code_{col} string")
            for col, values in lists.items()}


# --- Rules -------------------------------------------------------------------------------------

def _amount(column: str, dtype: str) -> str:
    """Spark SQL for an amount in whole pence as BIGINT, NULL when it is not one (the Spark
    spelling of cube.build._amount_expr)."""
    if dtype in {"tinyint", "smallint", "int", "bigint"}:
        return f"CAST(`{column}` AS BIGINT)"
    if dtype.startswith(("double", "float", "decimal")):
        return f"CASE WHEN `{column}` = round(`{column}`) THEN try_cast(`{column}` AS BIGINT) END"
    text = f"trim(CAST(`{column}` AS STRING))"
    return f"CASE WHEN {text} RLIKE '^[0-9]+$' THEN try_cast({text} AS BIGINT) END"


def _bad_conditions(plan: _Plan, df: DataFrame) -> dict[str, str]:
    """Spark SQL true for a row that breaks each of the plan's checks (keyed by column)."""
    types = dict(df.dtypes)
    codelist_cols = {name for name, _ in plan.codelists}
    out: dict[str, str] = {}
    for check in plan.checks:
        c = check.column
        if c == "unit_id":
            out[c] = "unit_id IS NULL OR trim(CAST(unit_id AS STRING)) = ''"
        elif c == "month":
            out[c] = (f"NOT coalesce(CAST(month AS STRING) RLIKE '^{_MONTH_RE.pattern}$', "
                      "false)")
        elif c in codelist_cols:
            out[c] = f"`_code_{c}` IS NULL"
        else:  # an amount
            expr = _amount(c, types[c])
            out[c] = f"({expr}) IS NULL OR ({expr}) < 0"
    return out


def _with_code_checks(df: DataFrame, plan: _Plan, codes: dict[str, DataFrame]) -> DataFrame:
    """Left-join each code column to its codelist: ``_code_<col>`` is NULL when unknown."""
    from pyspark.sql import functions as F

    for col, _ in plan.codelists:
        df = df.join(F.broadcast(codes[col]),
                     F.col(col).cast("string") == F.col(f"_code_{col}"), "left")
    return df


# --- One cube ----------------------------------------------------------------------------------

def _build_cube(df: DataFrame, plan: _Plan, codes: dict[str, DataFrame], secret_bc: Any,
                k: int, options: BuildOptions, src: _Inputs, stage: str, files: int
                ) -> CubeBuildReport:
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    cube = plan.cube
    rep = CubeBuildReport(files=files)
    checked = _with_code_checks(df, plan, codes)
    bad = _bad_conditions(plan, df)
    any_bad = " OR ".join(f"({cond})" for cond in bad.values())
    flagged = checked.withColumn("_bad", F.expr(any_bad)).withColumn(
        "_m", F.col("month").cast("string"))
    if cube.kind == "stock":  # a unit counted twice in one month: every row of it is bad
        same = Window.partitionBy("unit_id", "_m")
        good_rows = F.sum(F.when(~F.col("_bad"), 1).otherwise(0)).over(same)
        flagged = flagged.withColumn("_dup", F.when(F.col("_bad"), F.lit(0)).otherwise(good_rows))
    else:
        flagged = flagged.withColumn("_dup", F.lit(0))
    flagged = flagged.cache()
    try:
        n_bad = flagged.filter(F.col("_bad") | (F.col("_dup") > 1)).count()
        if n_bad:
            problems = _problems(flagged, plan, bad, src)
            if not options.skip_bad_rows:
                raise InputDataError(
                    f"{cube.name}: {n_bad} bad input row(s); nothing was built "
                    "(use --skip-bad-rows to build without them and get a report)",
                    problems=problems, parameter="microdata")
            rep.problems = problems
            rep.skipped = n_bad
        good = flagged.filter(~F.col("_bad") & (F.col("_dup") <= 1))
        facts = _aggregate(good, plan, df.dtypes, secret_bc, k)
        facts.write.mode("overwrite").partitionBy(plan.period_col).parquet(
            join(stage, plan.fact))
    finally:
        flagged.unpersist()
    return rep


def _local(uri: str) -> str:
    """A file's name for messages: the local path of a ``file:`` URI, else the URI."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in {"", "file"} else uri


def _problems(flagged: DataFrame, plan: _Plan, bad: dict[str, str], src: _Inputs
              ) -> list[str]:
    """Up to MAX_PROBLEMS messages in the DuckDB build's words and order: per check, the
    first rows by file and row; then the rows of units counted twice in a month."""
    from pyspark.sql import functions as F

    problems: list[str] = []
    for check in plan.checks:
        if len(problems) >= MAX_PROBLEMS:
            break
        rows = (flagged.filter(F.expr(bad[check.column]))
                .select("_file", "_row", F.col(check.column).cast("string").alias("v"))
                .orderBy("_file", "_row").limit(MAX_PROBLEMS - len(problems)).collect())
        problems += [f"{src.where(f, r)}: {check.column}={v!r}: {check.what}"
                     for f, r, v in rows]
    if plan.cube.kind == "stock":
        rows = (flagged.filter(F.col("_dup") > 1)
                .select("_file", "_row", F.col("unit_id").cast("string").alias("u"), "_m",
                        "_dup")
                .orderBy("_file", "_row").limit(MAX_PROBLEMS).collect())
        problems += [f"{src.where(f, r)}: unit_id={u!r}: unit appears {c} "
                     f"times in month {m}" for f, r, u, m, c in rows]
    return problems[:MAX_PROBLEMS]


def _period(plan: _Plan) -> str:
    """Spark SQL for the fact period (month_id yyyymm or quarter_id yyyyq) of a valid month."""
    year = "CAST(substr(_m, 1, 4) AS INT)"
    month = "CAST(substr(_m, 6, 2) AS INT)"
    if plan.period_col == "quarter_id":
        return f"{year} * 10 + (({month} - 1) div 3) + 1"
    return f"{year} * 100 + {month}"


def _aggregate(good: DataFrame, plan: _Plan, dtypes: list[tuple[str, str]], secret_bc: Any,
               k: int) -> DataFrame:
    """Key every record's unit (HMAC with the broadcast secret, in Arrow batches) and sum to
    the finest grain, in the fact table's columns."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    types = dict(dtypes)
    cube = plan.cube
    code_cols = [name for name, _ in plan.codelists]
    narrow = good.select(
        *(F.col(c).cast("string").alias(c) for c in code_cols),
        F.expr(_period(plan)).cast("int").alias(plan.period_col),
        *(F.expr(_amount(col, types[col])).alias(f"_a{i}")
          for i, (col, _, _, _) in enumerate(plan.amounts)),
        F.col("unit_id").cast("string").alias("_uid"))
    fields = [StructField(c, StringType()) for c in code_cols]
    fields.append(StructField(plan.period_col, IntegerType()))
    fields += [StructField(f"_a{i}", LongType()) for i in range(len(plan.amounts))]
    keyed_schema = StructType([*fields, StructField("rkey", IntegerType()),
                               StructField("rkey2", IntegerType())])

    def key(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keyer = RecordKeyer(secret_bc.value, k)
        for batch in batches:
            rk, rk2 = keyer.keys(batch.column("_uid").cast(pa.binary()).to_pylist())
            cols = [batch.column(f.name) for f in fields]
            yield pa.RecordBatch.from_arrays(
                [*cols, pa.array(rk.astype("int32")), pa.array(rk2.astype("int32"))],
                names=[*(f.name for f in fields), "rkey", "rkey2"])

    keyed = narrow.mapInArrow(key, keyed_schema)
    aggs = [F.count(F.lit(1)).cast("long").alias(cube.physical.column(
                cube.count_measure.name).column),
            (F.sum("rkey") % k).cast("short").alias(cube.physical.record_key),
            (F.sum("rkey2") % k).cast("short").alias(cube.physical.magnitude_key)]
    for i, (_, _, sum_col, max_col) in enumerate(plan.amounts):
        aggs += [F.sum(f"_a{i}").cast("long").alias(sum_col),
                 F.max(f"_a{i}").cast("long").alias(max_col)]
    return keyed.groupBy(*code_cols, plan.period_col).agg(*aggs)


# --- Into the warehouse ------------------------------------------------------------------------

def _load_fact(con: duckdb.DuckDBPyConnection, plan: _Plan, facts: Path | DataFrame | None
               ) -> None:
    """Load one cube's Parquet facts into the warehouse in the DuckDB build's column order and
    types (codes as their codelist ENUMs, OA codes as text), stored in period order. ``facts``
    is the local folder DuckDB reads, or (a tree under a URI) Spark's reading of it, streamed
    to DuckDB in Arrow batches; None when every row was skipped."""
    cube = plan.cube
    count_col = cube.physical.column(cube.count_measure.name).column
    typed: list[tuple[str, str]] = [  # (column, DuckDB type)
        (name, enum if enum.startswith(CODELIST) else "VARCHAR") for name, enum in plan.codelists]
    typed += [(plan.period_col, "INTEGER"), (count_col, "BIGINT"),
              (cube.physical.record_key, "SMALLINT"), (cube.physical.magnitude_key, "SMALLINT")]
    typed += [(c, "BIGINT") for _, _, sum_col, max_col in plan.amounts for c in (sum_col, max_col)]
    cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in typed)
    files = sorted(facts.glob("*/*.parquet")) if isinstance(facts, Path) else []
    if files:
        source = (f"read_parquet([{', '.join(_literal(str(f)) for f in files)}], "
                  "hive_partitioning = true)")
        con.execute(f"CREATE TABLE {plan.fact} AS SELECT {cols} FROM {source} "
                    f"ORDER BY {plan.period_col}")
    elif facts is not None and not isinstance(facts, Path):
        reader = collect.stream(facts, collect.arrow_schema(facts), 100_000)
        con.register("_spark_facts", reader)
        try:
            con.execute(f"CREATE TABLE {plan.fact} AS SELECT {cols} FROM _spark_facts "
                        f"ORDER BY {plan.period_col}")
        finally:
            con.unregister("_spark_facts")
    else:  # every row was skipped: an empty table of the right shape
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in typed)
        con.execute(f"CREATE TABLE {plan.fact} AS SELECT {cols} WHERE false")


def _export_dimensions(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """Every non-fact table as ``<table>.parquet`` and the metadata as JSON, beside the facts:
    the release as a directory any Parquet reader can use."""
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT starts_with(table_name, 'fact_') "
        "AND table_name <> 'statcube_meta' ORDER BY 1").fetchall()]
    out.mkdir(parents=True, exist_ok=True)
    for table in tables:  # names from the warehouse this module wrote
        con.execute(f"COPY {table} TO {_literal(str(out / (table + '.parquet')))} "
                    "(FORMAT parquet)")
    meta = {key: json.loads(value) for key, value in
            con.execute("SELECT key, value FROM statcube_meta ORDER BY key").fetchall()}
    (out / "statcube_meta.json").write_text(json.dumps(meta, indent=2) + "\n",
                                            encoding="utf-8")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place; an older one is moved aside first and removed
    after, so a reader sees the old tree or the new one."""
    old = final.with_name(f".{final.name}.old-{owner_tag()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


class _Tree:
    """``<release>.parquet/`` in a local folder or under a URI: staged as
    ``.<release>.parquet.tmp-<host>-<pid>/`` and renamed into place when complete (atomic on
    local disks and HDFS; object stores copy on rename, so there a reader may briefly see
    no tree, never a partial one under the final name)."""

    def __init__(self, spark: SparkSession, root: Path | str, release: str) -> None:
        self.spark = spark
        self.name = f"{release}.parquet"
        tag = owner_tag()
        self.fs: HadoopFS | None = None
        if is_uri(str(root)):
            self.fs = HadoopFS(spark)
            self.root: Path | str = str(root).rstrip("/")
            self.fs.mkdirs(str(self.root))
            self.stage = join(str(root), f".{self.name}.tmp-{tag}")
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
            self._stage = self.root / f".{self.name}.tmp-{tag}"
            self.stage = _uri(self._stage)

    def remove_stale(self) -> list[str]:
        """Trees left by killed runs of this release (their process gone)."""
        return remove_stale(self.root, [f".{self.name}.tmp-", f".{self.name}.old-"], self.fs)

    def discard(self) -> None:
        if self.fs is None:
            shutil.rmtree(self._stage, ignore_errors=True)
        elif self.fs.exists(self.stage):
            self.fs.delete(self.stage)

    def facts(self, fact: str) -> Path | DataFrame | None:
        if self.fs is None:
            return self._stage / fact
        files = [f for f in self.fs.files(join(self.stage, fact)) if f.endswith(".parquet")]
        return self.spark.read.parquet(join(self.stage, fact)) if files else None

    def add_dimensions(self, con: duckdb.DuckDBPyConnection, scratch: Path) -> None:
        if self.fs is None:
            _export_dimensions(con, self._stage)
            return
        local = scratch / "tree"
        _export_dimensions(con, local)
        for path in sorted(local.iterdir()):
            self.fs.copy_from_local(path, join(self.stage, path.name))

    def publish(self) -> None:
        if self.fs is None:
            _replace_dir(self._stage, self.root / self.name)  # type: ignore[operator]
            return
        final = join(str(self.root), self.name)
        old = join(str(self.root), f".{self.name}.old-{owner_tag()}")
        if self.fs.exists(final):
            self.fs.rename(final, old)
        self.fs.rename(self.stage, final)
        if self.fs.exists(old):
            self.fs.delete(old)
