"""Shared fixtures: one small synthetic GB dataset and one warehouse per test session.

Everything is real: the generator writes files, the build writes a DuckDB warehouse, and
queries run on it. Session scope keeps the suite fast; tests must not modify these files
(use ``tmp_path`` and their own builds for that).

Same cells, any engine: a behaviour is tested once, on every engine that can do the step.

- serving (``any_workspace``, ``any_warehouse``): ``duckdb`` | ``postgresql`` — the session
  warehouse, and its copy loaded once per session into its own PostgreSQL schema by the
  ``load-pg`` code path (tests/pg.py);
- exporting (``export_engine``): ``duckdb`` | ``spark`` — where the protected cells of an
  export are computed (``statcube export --engine``);
- building (``build_on``): ``duckdb`` | ``spark`` — which build writes a warehouse
  (``statcube build --engine``).

The engine is the fixture's parameter, so it is in every test id (``test_x[postgresql]``) and
``-k postgresql`` / ``-k spark`` / ``-k duckdb`` selects one engine's runs. Spark runs on one
SparkSession (``local[2]``) shared by the whole session: starting a JVM costs ~15 s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest

from cube.build import BuildOptions, BuildReport, build
from cube.engine import Engine
from cube.model import Model, load_model
from cube.synthetic import GenerateOptions, generate
from cube.workspace import Workspace

#: tests/pg.py: the PostgreSQL fixtures (a real server; see its docstring).
pytest_plugins = ["pg"]

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = b"statcube-test-secret-not-for-production"
#: Small but realistic: ~2.4k OAs, 35 LAs, 6 months of every cube.
TEST_OPTIONS = GenerateOptions(scale=0.01, seed=7, start="2026-06", months=6)


class QueryArgs(TypedDict, total=False):
    """Keyword arguments of :meth:`cube.workspace.CubeBrowser.aggregate` (and of
    :meth:`cube.query.Request.make`) but paging, for tests that keep a query as a dict."""

    cut: str | None
    drilldown: str | Sequence[str] | None
    aggregates: str | Sequence[str] | None
    order: str | Sequence[str] | None
    split: str | None
    having: str | None
    top: str | None


class AggregateArgs(QueryArgs, total=False):
    """Every keyword argument of :meth:`cube.workspace.CubeBrowser.aggregate`."""

    page: int | None
    pagesize: int | None


@pytest.fixture(scope="session")
def model() -> Model:
    return load_model(ROOT / "model.json")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "gb"
    generate(out, TEST_OPTIONS)
    return out


#: The small input the Spark build tests share (scale 0.002, every cube, two months).
SPARK_INPUT = GenerateOptions(scale=0.002, seed=11, start="2026-01", months=2)


@pytest.fixture(scope="session")
def spark_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated once per session for tests/test_spark.py and test_spark_io.py (read-only:
    tests that edit an input copy it first)."""
    out = tmp_path_factory.mktemp("spark-in") / "gb"
    generate(out, SPARK_INPUT)
    return out


@pytest.fixture(scope="session")
def built(model: Model, synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> BuildReport:
    out = tmp_path_factory.mktemp("warehouse")
    return build(model, synthetic_dir, out, TEST_SECRET, BuildOptions())


@pytest.fixture(scope="session")
def warehouse(built: BuildReport) -> Path:
    return built.warehouse


@pytest.fixture(scope="session")
def workspace(model: Model, warehouse: Path) -> Iterator[Workspace]:
    ws = Workspace.open(model, warehouse)
    yield ws
    ws.close()


# --- serving: DuckDB | PostgreSQL ---------------------------------------------------------------

SERVING = ("duckdb", "postgresql")


@pytest.fixture(scope="session", params=SERVING)
def serving_engine(request: pytest.FixtureRequest) -> str:
    """The serving engine of this run of a test; ``any_workspace`` and ``any_warehouse``
    follow it, so a test asking for both sees one engine."""
    return str(request.param)


@pytest.fixture(scope="session")
def any_workspace(serving_engine: str, request: pytest.FixtureRequest) -> Workspace:
    """The session warehouse, opened on the serving engine (the PostgreSQL copy is loaded
    only when a postgresql test runs)."""
    name = "workspace" if serving_engine == "duckdb" else "pg_workspace"
    ws: Workspace = request.getfixturevalue(name)
    return ws


@pytest.fixture(scope="session")
def any_warehouse(serving_engine: str, request: pytest.FixtureRequest) -> str:
    """What a user gives ``--warehouse`` / ``STATCUBE_WAREHOUSE`` for the session warehouse
    on the serving engine: the DuckDB file, or the PostgreSQL URL (schema on the search
    path)."""
    if serving_engine == "duckdb":
        return str(request.getfixturevalue("warehouse"))
    return str(request.getfixturevalue("pg_warehouse"))


#: ``serve(model, warehouse)``: a DuckDB warehouse a test built, opened on the serving engine.
Serve = Callable[[Model, Path], Workspace]


@pytest.fixture(scope="session")
def serve(serving_engine: str, request: pytest.FixtureRequest) -> Iterator[Serve]:
    """For tests that build their own warehouse (crafted microdata): open it on the serving
    engine — on PostgreSQL after ``load-pg`` into a schema of its own, dropped at the end."""
    import secrets

    import sqlalchemy as sa
    from pg import with_search_path

    from cube.pg_load import load_pg
    from cube.pg_load import pg_url as to_pg_url

    url = str(request.getfixturevalue("pg_url")) if serving_engine == "postgresql" else ""
    opened: list[Workspace] = []
    schemas: list[str] = []

    def open_on_engine(model: Model, warehouse: Path) -> Workspace:
        target: str | Path = warehouse
        if url:
            schema = f"t_{os.getpid()}_{secrets.token_hex(3)}"
            schemas.append(schema)
            load_pg(model, warehouse, url, schema=schema)
            target = with_search_path(url, schema)
        ws = Workspace.open(model, target)
        opened.append(ws)
        return ws

    yield open_on_engine
    for ws in opened:
        ws.close()
    if schemas:
        engine = sa.create_engine(to_pg_url(url))
        with engine.begin() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


# --- exporting and building: DuckDB | Spark ------------------------------------------------------

@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession (``local[2]``, Java 17) for every Spark test of the session."""
    from cube.spark.session import local_session

    session = local_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_engine(spark: Any, warehouse: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Engine:
    """The session release on Spark: its Parquet tree (written from a copy of the
    warehouse, which stays untouched) as Spark views."""
    import shutil

    from cube.spark.engine import SparkEngine, parquet_tree

    copy = tmp_path_factory.mktemp("spark-release") / warehouse.name
    shutil.copy(warehouse, copy)
    return SparkEngine(spark, parquet_tree(copy))


@pytest.fixture(scope="session", params=("duckdb", "spark"))
def export_engine(request: pytest.FixtureRequest) -> Engine | None:
    """Where an export's protected cells are computed: None is the workspace's own DuckDB
    warehouse (the default of ``export_grain``/``export_release``), else Spark."""
    if request.param == "duckdb":
        return None
    engine: Engine = request.getfixturevalue("spark_engine")
    return engine


#: ``build_on(model, input_dir, out_dir, secret, options)`` on one engine.
Builder = Callable[[Model, Path, Path, bytes, BuildOptions], BuildReport]


@pytest.fixture(scope="session", params=("duckdb", "spark"))
def build_on(request: pytest.FixtureRequest) -> Builder:
    """A build on one engine: :func:`cube.build.build` or :func:`cube.spark.build.build_spark`
    on the session's SparkSession; both take the same inputs and write the same warehouse."""
    if request.param == "duckdb":
        return build
    from cube.spark.build import build_spark

    session = request.getfixturevalue("spark")

    def on_spark(model: Model, inp: Path, out: Path, secret: bytes,
                 options: BuildOptions) -> BuildReport:
        return build_spark(model, inp, out, secret, session, options)
    return on_spark


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass secrets explicitly; an operator's environment must not leak in."""
    for var in ("STATCUBE_KEY_SECRET", "STATCUBE_KEY_FILE"):
        if var in os.environ:
            monkeypatch.delenv(var)


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by session fixture parameter
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs on Spark is marked for one pytest-xdist worker and comes first.

    Under ``-n 2 --dist loadgroup`` (the README's test command) the Spark tests are one unit
    of work, so the run starts one JVM and warms it up once, not once per worker competing
    for the same two cores; being the longest unit, it is handed out first, while the other
    worker takes the rest test by test. Without ``-n`` the mark does nothing and only the
    order changes."""
    spark: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if "spark" in getattr(item, "fixturenames", ()) or any(
                isinstance(p, str) and p == "spark" for p in params):
            item.add_marker(pytest.mark.xdist_group("spark"))
            spark.append(item)
        else:
            rest.append(item)
    items[:] = spark + rest
