"""Copy a built DuckDB warehouse into PostgreSQL, for server deployments.

    statcube load-pg data/warehouse/2026-11.duckdb postgresql://user@host/statcube

What is copied is exactly the warehouse the model describes: for every cube of the release,
its fact table, its rollup tables (those the build recorded in the metadata) and the
dimension tables its joins name, plus ``sdc_ptable`` and ``statcube_meta`` (and
``boundaries`` when present), each with every column it has — so the optional translated
labels (``dim_geography.la_name_cy`` …, cube/labels.py) come along when the warehouse has
them, and a warehouse without them loads as before. Any other
table a DuckDB file might hold is ignored — microdata never
reaches a warehouse, and this loader would not carry it if it did.

How:
- columns get PostgreSQL types from the DuckDB ones (``TINYINT`` → ``smallint``, ``VARCHAR``
  and the ``ENUM`` code columns → ``text`` …); nothing is stored as text that was not text
  (an ENUM reads as text in DuckDB too). Text uses the ``"C"``
  collation, so ordering and range cuts compare bytes exactly as DuckDB does (a locale
  collation would sort "Isle of Wight" and codes differently and change paging);
- rows travel as CSV written by DuckDB and read by ``COPY … FROM STDIN`` (no Python row
  objects), then row counts are checked against the source;
- dimension tables get a primary key on their join key, fact tables an index on every
  foreign key into a dimension that is not tiny (geography, period, office), and everything
  is ANALYZEd;
- all of it happens in one transaction: a reader sees the old tables or the new ones, never
  a half load, and a failure leaves the database as it was.

The target may be a schema (``--schema``); existing tables are only replaced when asked
(``--replace``). Identifiers come from the model and the warehouse, and are quoted by the
PostgreSQL dialect; the URL's password is never printed.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import sqlalchemy as sa

from cube.engine import database_url
from cube.errors import ArgumentError, ConfigError, EngineUnavailableError
from cube.model import Model

META_TABLES = ("sdc_ptable", "statcube_meta")
#: Copied when the warehouse has them: area boundaries for maps (no values in them).
OPTIONAL_TABLES = ("boundaries",)
CHUNK = 1 << 20
ProgressFn = Callable[[str, int, int], None]

#: DuckDB column type → PostgreSQL column type. DECIMAL(p,s) is handled separately.
PG_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric(38,0)",
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "numeric(20,0)",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": 'text COLLATE "C"',
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}
_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class TablePlan:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type)
    primary_key: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()


@dataclass
class LoadReport:
    target: str
    schema: str | None
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def pg_url(url: str) -> sa.URL:
    """A SQLAlchemy URL that uses psycopg 3 (``postgresql://`` alone would pick psycopg2)."""
    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ArgumentError(f"not a database URL: {exc}", parameter="url") from None
    if u.get_backend_name() != "postgresql":
        raise ArgumentError(f"not a PostgreSQL URL: {u.render_as_string(hide_password=True)}",
                            parameter="url")
    return database_url(u)  # psycopg 3, or one line naming the extra to install


def pg_type(duck_type: str) -> str:
    if duck_type in PG_TYPES:
        return PG_TYPES[duck_type]
    if duck_type.startswith("ENUM("):  # a code column (cube/build.py codelists): text, as read
        return PG_TYPES["VARCHAR"]
    m = _DECIMAL.fullmatch(duck_type)
    if m:
        return f"numeric({m.group(1)},{m.group(2)})"
    raise ConfigError(f"no PostgreSQL type for DuckDB type {duck_type!r}")


def plan(model: Model, con: duckdb.DuckDBPyConnection) -> list[TablePlan]:
    """The tables to copy, with their types and keys: dimensions first, facts, then meta."""
    present = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()}
    if "statcube_meta" not in present:
        raise ArgumentError("not a statcube warehouse (no statcube_meta table)",
                            parameter="warehouse")
    row = con.execute("SELECT value FROM statcube_meta WHERE key = 'cubes'").fetchone()
    cube_names = json.loads(row[0]) if row else []
    keys: dict[str, set[str]] = {}  # dimension table → its join key column(s)
    fks: dict[str, list[str]] = {}  # fact table → indexed foreign key columns
    for name in cube_names:
        cube = model.cube(name)
        fact = cube.physical.fact
        fks.setdefault(fact, [])
        tiny = {(cube.physical.column(lvl.key.ref).table, cube.physical.column(lvl.key.ref).column)
                for d in cube.dimensions for lvl in d.levels if lvl.cardinality == "tiny"}
        for j in cube.physical.joins:
            keys.setdefault(j.detail.table, set()).add(j.detail.column)
            # A b-tree over a handful of codes (tenure, gender…) is never used by the planner:
            # index only keys into dimensions with more members.
            if (j.detail.table, j.detail.column) not in tiny and j.master.column not in fks[fact]:
                fks[fact].append(j.master.column)
    # The rollups the build recorded (none in a warehouse built before rollups): small
    # tables the compiler reads instead of the fact, so they must exist wherever it runs.
    row = con.execute("SELECT value FROM statcube_meta WHERE key = 'rollups'").fetchone()
    recorded = json.loads(row[0]) if row else {}
    rollups = [r["table"] for name in cube_names for r in recorded.get(name, ())]
    wanted = sorted(keys) + sorted(fks) + rollups + list(META_TABLES) + [
        t for t in OPTIONAL_TABLES if t in present]
    missing = [t for t in wanted if t not in present]
    if missing:
        raise ArgumentError(f"warehouse lacks table(s) {', '.join(missing)} that the model "
                            "needs", parameter="warehouse")
    plans = []
    for table in wanted:
        cols = tuple((c, pg_type(t)) for c, t, *_ in con.execute(
            f"DESCRIBE {table}").fetchall())  # table name from the model, checked above
        pk: tuple[str, ...] = ()
        if table in keys and len(keys[table]) == 1:
            pk = (next(iter(keys[table])),)
        elif table == "sdc_ptable":
            pk = ("pcv", "ckey")
        elif table == "statcube_meta":
            pk = ("key",)
        elif table == "boundaries":
            pk = ("level", "code")
        plans.append(TablePlan(table, cols, pk, tuple(fks.get(table, ()))))
    return plans


def _csv_chunks(con: duckdb.DuckDBPyConnection, table: str, tmp: Path) -> Iterator[bytes]:
    path = tmp / f"{table}.csv"
    literal = "'" + str(path).replace("'", "''") + "'"  # COPY cannot take a bound file name
    con.execute(f"COPY {table} TO {literal} (FORMAT csv, HEADER false)")
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def load_pg(model: Model, warehouse: Path | str, url: str, *, schema: str | None = None,
            replace: bool = False, progress: ProgressFn | None = None) -> LoadReport:
    """Copy ``warehouse`` (a DuckDB file) into the PostgreSQL database at ``url``."""
    started = time.perf_counter()
    source = Path(warehouse)
    if not source.is_file():
        raise ArgumentError(f"warehouse not found: {source}", parameter="warehouse")
    if schema is not None and not _SCHEMA.fullmatch(schema):
        raise ArgumentError("schema names are lower-case letters, digits and '_'",
                            parameter="schema", value=schema)
    target = pg_url(url)
    report = LoadReport(target.render_as_string(hide_password=True), schema)
    duck = duckdb.connect(str(source), read_only=True)
    engine = sa.create_engine(target)
    try:
        plans = plan(model, duck)
        q = engine.dialect.identifier_preparer.quote

        def name(table: str) -> str:
            return f"{q(schema)}.{q(table)}" if schema else q(table)

        with tempfile.TemporaryDirectory(prefix="statcube-pg-") as tmp, \
                engine.begin() as conn:
            if schema:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
            existing = set(sa.inspect(conn).get_table_names(schema=schema))
            clash = [p.name for p in plans if p.name in existing]
            if clash and not replace:
                raise ArgumentError(
                    f"table(s) {', '.join(clash)} already exist in the target; pass "
                    "--replace to replace them", parameter="url")
            for p in plans:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name(p.name)}")
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            for i, p in enumerate(plans):
                cols = ", ".join(f"{q(c)} {t}" for c, t in p.columns)
                conn.exec_driver_sql(f"CREATE TABLE {name(p.name)} ({cols})")
                col_list = ", ".join(q(c) for c, _ in p.columns)
                with cursor.copy(f"COPY {name(p.name)} ({col_list}) FROM STDIN "
                                 "(FORMAT csv)") as copy:
                    for chunk in _csv_chunks(duck, p.name, Path(tmp)):
                        copy.write(chunk)
                expected = duck.execute(f"SELECT count(*) FROM {p.name}").fetchone()
                got = conn.exec_driver_sql(f"SELECT count(*) FROM {name(p.name)}").scalar()
                if expected is None or got != expected[0]:
                    raise EngineUnavailableError(
                        f"{p.name}: copied {got} rows, expected {expected}")
                report.rows[p.name] = int(got)
                if p.primary_key:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {name(p.name)} ADD CONSTRAINT {q('pk_' + p.name)} "
                        f"PRIMARY KEY ({', '.join(q(c) for c in p.primary_key)})")
                for col in p.indexes:
                    conn.exec_driver_sql(
                        f"CREATE INDEX {q(f'ix_{p.name}_{col}')} ON {name(p.name)} ({q(col)})")
                conn.exec_driver_sql(f"ANALYZE {name(p.name)}")
                if progress:
                    progress(p.name, i + 1, len(plans))
    except sa.exc.OperationalError as exc:
        raise EngineUnavailableError(f"cannot load into {report.target}: {exc.orig}") from None
    except sa.exc.DBAPIError as exc:
        raise EngineUnavailableError(
            f"loading into {report.target} failed, nothing was changed: {exc.orig}") from None
    finally:
        duck.close()
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report
