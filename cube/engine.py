"""Run compiled SQLAlchemy statements and return pyarrow Tables.

Two kinds of warehouse:
- a DuckDB file (the embedded default): opened read-only, statements compiled by
  SQLAlchemy's DuckDB dialect with bound parameters and executed on a per-thread DuckDB
  cursor, fetching Arrow natively (no Python row objects);
- any other SQLAlchemy URL (PostgreSQL in tests and deployments): executed through a
  SQLAlchemy engine and converted to Arrow in batches, typed from the cursor description
  (PostgreSQL type OIDs), so an empty result still has typed columns.

Every result has *canonical* Arrow types — ``int64`` for every integer width, ``float64`` for
every floating type, ``bool``, ``string`` (UTF-8), whole-number decimals as ``int64`` — so the
same query gives equal tables on every engine (DuckDB's TINYINT/SMALLINT and PostgreSQL's
``smallint`` both arrive as ``int64``; PostgreSQL ``numeric`` sums as ``int64``; the fact
tables' ENUM code columns, which DuckDB returns dictionary-encoded, as ``string``).

Every statement may run under a time limit (``statement_timeout_ms``): DuckDB statements are
interrupted from a timer thread (``DuckDBPyConnection.interrupt``), PostgreSQL sessions set
``statement_timeout``; either way the caller gets a :class:`QueryTimeoutError`, so one request
cannot hold a server worker for minutes.

This is the only module that talks to a database at query time. It knows nothing of cubes,
queries or disclosure control.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy.sql import ClauseElement

from cube.errors import ConfigError, EngineUnavailableError, QueryTimeoutError

BATCH_ROWS = 50_000
#: What to install for PostgreSQL support (the ``postgres`` extra declares psycopg 3).
POSTGRES_EXTRA = "pip install 'statcube[postgres]'"
#: PostgreSQL's SQLSTATE for a statement cancelled by ``statement_timeout``.
_PG_QUERY_CANCELED = "57014"
#: Seconds a PostgreSQL connection attempt may take (a server that is down must answer 503
#: quickly, not after the operating system's TCP timeout).
PG_CONNECT_TIMEOUT = 3


def _keep_inherited_default_connection() -> None:
    """In a forked child (gunicorn workers), never destroy the DuckDB module's default
    connection inherited from the parent.

    Why: ``import duckdb`` (1.5) opens a default in-memory database, and its scheduler
    threads exist only in the process that imported it. A forked child that destroys it —
    duckdb's own ``atexit`` cleanup does — aborts in C++ ("terminate called without an
    active exception"): every gunicorn worker died by SIGABRT at shutdown. Statcube never
    uses that connection, so the child keeps one reference it never releases (a C-level
    one: a Python global would be released during interpreter teardown).
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(duckdb.default_connection()))


os.register_at_fork(after_in_child=_keep_inherited_default_connection)


def database_url(text: str | sa.URL) -> sa.URL:
    """``text`` as a SQLAlchemy URL whose driver is installed. ``postgresql://`` means
    psycopg 3 (SQLAlchemy alone would pick psycopg2, which statcube does not declare).

    Why check here: SQLAlchemy imports the driver deep inside ``create_engine``, and a
    missing psycopg surfaced as a traceback from ``statcube load-pg`` or a server start.
    This is where a URL becomes an engine, so this is where a missing driver becomes one
    line naming the extra to install (a :class:`ConfigError`)."""
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL: {exc}") from None
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        if url.get_driver_name() == "psycopg":
            try:
                importlib.import_module("psycopg")
            except ImportError:
                raise ConfigError("PostgreSQL needs the psycopg driver, which is not "
                                  f"installed: {POSTGRES_EXTRA}") from None
    return url


class Compiled(NamedTuple):
    """SQL text for one engine and the values bound to it."""

    sql: str
    params: list[Any] | dict[str, Any]


class Engine:
    """A warehouse connection. ``execute`` is safe to call from several threads.

    ``statement_timeout_ms``: cancel any statement running longer (None: no limit).
    ``threads``: DuckDB threads per statement (None: DuckDB's default, one per core). A server
    sets 1: its requests already run in parallel, and under concurrent load (or on a busy
    machine) handing a small query's pipeline to other threads cost more than it saved —
    measured on the Cubes peer mix, 1 thread answered 25% faster than 2 (geometric mean)."""

    def __init__(self, target: str | Path, *, statement_timeout_ms: int | None = None,
                 threads: int | None = None) -> None:
        text = str(target)
        self.target = text
        self.statement_timeout_ms = statement_timeout_ms if statement_timeout_ms else None
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # per-thread, closed with it
        self._cursors_lock = threading.Lock()
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._watchdog = _Watchdog()
        self._sa: sa.Engine | None = None
        if "://" not in text or text.startswith("duckdb:///"):
            path = Path(text.removeprefix("duckdb:///"))
            if not path.exists():
                raise ConfigError(f"warehouse not found: {path}")
            try:
                self._duck = _attach(path)
                if threads:
                    self._duck.execute(f"SET threads = {int(threads)}")
            except duckdb.Error as exc:
                raise EngineUnavailableError(f"cannot open warehouse {path}: {exc}") from None
            self.dialect: sa.engine.Dialect = DuckDBDialect(paramstyle="numeric_dollar")
        else:
            url = database_url(text)
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
            try:
                self._sa = sa.create_engine(url, connect_args=connect_args)
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
                raise ConfigError(f"bad warehouse URL: {exc}") from None
            self.dialect = self._sa.dialect
            if self.statement_timeout_ms and self.dialect.name == "postgresql":
                sa.event.listen(self._sa, "connect", self._set_pg_timeout)

    def _set_pg_timeout(self, dbapi_connection: Any, _record: Any) -> None:
        """Every pooled PostgreSQL connection gets the statement time limit (a session
        setting, so it holds for every statement on that connection)."""
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            with dbapi_connection.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(self.statement_timeout_ms or 0)}")
        finally:
            dbapi_connection.autocommit = autocommit

    def _timeout(self) -> QueryTimeoutError:
        limit = (self.statement_timeout_ms or 0) / 1000
        return QueryTimeoutError(
            f"the query ran longer than the time limit of {limit:g} s and was cancelled",
            hint="cut to fewer members, drill less deeply, or page (pagesize=…)")

    @contextmanager
    def _deadline(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[threading.Event]:
        """Interrupt ``cursor`` if the block runs longer than the time limit; the event is
        set when it did (DuckDB reports an interruption like any other error)."""
        fired = threading.Event()
        if self.statement_timeout_ms is None:
            yield fired
            return
        token = self._watchdog.arm(self.statement_timeout_ms / 1000, cursor, fired)
        try:
            yield fired
        finally:
            self._watchdog.disarm(token)

    @property
    def name(self) -> str:
        return "duckdb" if self._duck is not None else self.dialect.name

    def _new_cursor(self) -> duckdb.DuckDBPyConnection:
        assert self._duck is not None
        cur = self._duck.cursor()
        cur.execute("SET enable_progress_bar = false")
        cur.execute(f"USE {_ATTACHED}")
        return cur

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._new_cursor()
            with self._cursors_lock:  # one per thread: a bounded list
                self._cursors.append(cur)
        return cur

    def compile(self, stmt: ClauseElement) -> Compiled:
        """The statement as this engine's SQL text and bound values (never inlined):
        positional for DuckDB, a dict for PostgreSQL. Pure; the result may be cached and
        run many times with :meth:`run`."""
        compiled = stmt.compile(dialect=self.dialect,
                                compile_kwargs={"render_postcompile": True})
        params = compiled.params
        if self._duck is not None:
            order = getattr(compiled, "positiontup", None) or []
            return Compiled(str(compiled), [params[name] for name in order])
        return Compiled(str(compiled), dict(params))

    def execute(self, stmt: ClauseElement) -> pa.Table:
        return self.run(self.compile(stmt))

    def run(self, compiled: Compiled) -> pa.Table:
        """Execute compiled SQL; the result as a pyarrow Table with canonical types."""
        sql, params = compiled
        if self._duck is not None:
            cursor = self._cursor()
            with self._deadline(cursor) as fired:
                try:
                    table = cursor.execute(sql, params).to_arrow_table()
                except duckdb.Error as exc:
                    if fired.is_set() or isinstance(exc, duckdb.InterruptException):
                        raise self._timeout() from None
                    raise EngineUnavailableError(f"query failed: {exc}") from exc
            return canonical(table)
        return self._run_sa(sql, params, stream=False)

    def _run_sa(self, sql: str, params: list[Any] | dict[str, Any], *, stream: bool
                ) -> pa.Table:
        """A statement on a SQLAlchemy engine (PostgreSQL), as Arrow.

        ``stream``: fetch through a server-side cursor (exports). Queries do not: their
        results are bounded by the cell limits, and a server-side cursor costs extra round
        trips (DECLARE, FETCH until empty, CLOSE) — 1.4–2 ms of a small query's 2–4 ms."""
        assert self._sa is not None
        for attempt in (1, 2):
            try:
                names, oids, batches = self._fetch_sa(sql, params, stream)
                break
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) == _PG_QUERY_CANCELED:
                    raise self._timeout() from None
                # A pooled connection the server dropped (it restarted): SQLAlchemy has
                # invalidated the pool; a read-only statement is run once more on a fresh
                # connection. This replaces a ping (SELECT 1) before every statement.
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise EngineUnavailableError(f"engine unavailable: {exc.orig}") from exc
            except sa.exc.DBAPIError as exc:
                raise EngineUnavailableError(f"query failed: {exc.orig}") from exc
        if not batches:
            types = [pa.null() if oid is None else _PG_TYPES.get(oid, pa.null())
                     for oid in oids]
            return pa.table({n: pa.array([], t) for n, t in zip(names, types, strict=True)})
        return canonical(pa.Table.from_batches(_unify(batches)))

    def _fetch_sa(self, sql: str, params: list[Any] | dict[str, Any], stream: bool
                  ) -> tuple[list[str], list[int | None], list[pa.RecordBatch]]:
        assert self._sa is not None
        with self._sa.connect() as conn:
            result = conn.execution_options(stream_results=stream).exec_driver_sql(sql, params)
            names: list[str] = list(result.keys())
            oids: list[int | None] = _type_codes(result, len(names)) \
                if self.dialect.name == "postgresql" else [None] * len(names)
            batches: list[pa.RecordBatch] = []
            while rows := result.fetchmany(BATCH_ROWS):
                columns = list(zip(*rows, strict=True))
                batches.append(pa.RecordBatch.from_arrays(
                    [_column(values, oids[i]) for i, values in enumerate(columns)],
                    names=names))
        return names, oids, batches

    def scalar(self, stmt: ClauseElement) -> Any:
        t = self.execute(stmt)
        return t.column(0)[0].as_py() if t.num_rows else None

    def stream(self, stmt: ClauseElement, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        """The result as a stream of record batches of at most ``batch_rows`` rows, with
        canonical types (for exports: memory bounded by the batch, not the result).

        DuckDB streams natively, on a cursor of its own so other queries on this thread do
        not cut the stream short. Other engines fetch the whole result first (exports are
        written from the DuckDB warehouse)."""
        if self._duck is None:
            return self._run_sa(*self.compile(stmt), stream=True).to_reader(
                max_chunksize=batch_rows)
        sql, params = self.compile(stmt)
        cursor = self._new_cursor()
        try:
            reader = cursor.execute(sql, params).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            cursor.close()
            raise EngineUnavailableError(f"query failed: {exc}") from exc
        schema = pa.schema([pa.field(f.name, _canonical_type(f.type)) for f in reader.schema])

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    yield batch if batch.schema == schema else batch.cast(schema)
            except duckdb.Error as exc:
                raise EngineUnavailableError(f"query failed: {exc}") from exc
            finally:
                cursor.close()

        return pa.RecordBatchReader.from_batches(schema, batches())

    @contextmanager
    def raw_duckdb(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The DuckDB cursor of this thread, for exports that stream record batches."""
        if self._duck is None:
            raise ConfigError("this operation needs a DuckDB warehouse")
        yield self._cursor()

    def close(self) -> None:
        """Close the connection and every cursor made from it (per-thread cursors of server
        threads included: a DuckDB instance left to interpreter shutdown crashed the
        exiting process)."""
        self._watchdog.stop()
        if self._duck is not None:
            with self._cursors_lock:
                cursors, self._cursors = self._cursors, []
            for cur in cursors:
                cur.close()
            self._duck.close()
        if self._sa is not None:
            self._sa.dispose()


class _Watchdog:
    """One thread per engine that interrupts DuckDB cursors whose statement outlives its
    deadline. Why not a ``threading.Timer`` per statement: starting and joining a thread
    cost 1–3 ms per query (profiled on an uncached HTTP request), more than a rollup query
    itself. Started on first use; a daemon, stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[float, duckdb.DuckDBPyConnection, threading.Event]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: When the thread wakes next; an arm due later needs no wake-up call (waking the
        #: thread for every statement cost a third of a millisecond of GIL hand-offs).
        self._wake_at = float("inf")
        self._idle = 1.0

    def arm(self, seconds: float, cursor: duckdb.DuckDBPyConnection,
            fired: threading.Event) -> int:
        with self._cond:
            self._next += 1
            due = time.monotonic() + seconds
            self._pending[self._next] = (due, cursor, fired)
            self._idle = seconds
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="statcube-statement-watchdog")
                self._thread.start()
            elif due < self._wake_at:
                self._cond.notify()
            return self._next

    def disarm(self, token: int) -> None:
        with self._cond:
            self._pending.pop(token, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for token in [t for t, (due, _, _) in self._pending.items() if due <= now]:
                    _, cursor, fired = self._pending.pop(token)
                    fired.set()
                    cursor.interrupt()
                # Nothing pending: wake after one time limit anyway, so that a statement
                # armed meanwhile (due a time limit after it starts) needs no wake-up call.
                due = min((d for d, _, _ in self._pending.values()), default=now + self._idle)
                self._wake_at = due
                self._cond.wait(max(due - now, 0.001))
                self._wake_at = float("inf")


#: The name a DuckDB warehouse file is attached under.
_ATTACHED = "warehouse"


def _attach(path: Path) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB instance with the warehouse file attached read-only.

    Why not ``duckdb.connect(path, read_only=True)``: DuckDB caches database instances by
    path within a process, so reconnecting to a path whose file was replaced (a rebuild
    renamed into place) silently returned the *old* file's instance (duckdb/duckdb#15912) —
    a server could never pick up a new build. An in-memory instance is never cached, and
    the file is opened afresh by its ``ATTACH``."""
    con = duckdb.connect(":memory:")
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {_ATTACHED} (READ_ONLY)")
        con.execute(f"USE {_ATTACHED}")
    except BaseException:
        con.close()
        raise
    return con


# PostgreSQL type OIDs (pg_type.dat) → canonical Arrow types. numeric (1700) is decided per
# column by its values: whole numbers become int64, anything else float64.
_PG_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 26: pa.int64(),
    700: pa.float64(), 701: pa.float64(),
    18: pa.string(), 19: pa.string(), 25: pa.string(), 1042: pa.string(), 1043: pa.string(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}
_NUMERIC = 1700


def _type_codes(result: sa.CursorResult[Any], n: int) -> list[int | None]:
    """The PostgreSQL type OID of each result column (None where unknown)."""
    description = result.cursor.description if result.cursor is not None else None
    codes = [col[1] for col in description or ()]
    return [c if isinstance(c, int) else None for c in codes] if len(codes) == n \
        else [None] * n


def _column(values: tuple[Any, ...], oid: int | None) -> pa.Array:
    if oid == _NUMERIC:
        return pa.array(_plain(values))
    arrow_type = _PG_TYPES.get(oid) if oid is not None else None
    if arrow_type is not None:
        return pa.array(values, arrow_type)
    return pa.array(_plain(values))


def _plain(values: Any) -> list[Any]:
    """Decimals (PostgreSQL numeric) become ints when the whole column holds whole numbers,
    else floats, so a column never mixes the two."""
    from decimal import Decimal

    decimals = [v for v in values if isinstance(v, Decimal)]
    if not decimals:
        return list(values)
    whole = all(v == v.to_integral_value() for v in decimals)
    return [(int(v) if whole else float(v)) if isinstance(v, Decimal) else v for v in values]


def _canonical_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):  # a DuckDB ENUM (cube/build.py stores codes as ENUMs)
        return _canonical_type(t.value_type)
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_decimal(t):
        return pa.int64() if t.scale == 0 else pa.float64()
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    return t


def canonical(table: pa.Table) -> pa.Table:
    """``table`` with canonical column types (see the module docstring): cast to the
    canonical schema (fields and schema without metadata) when some type differs, else
    unchanged.

    The canonical schema is worked out once per result schema (a server sees a few
    hundred): building it for every result was a tenth of a millisecond of each small
    query's CPU."""
    schema = table.schema
    target = _CANONICAL.get(schema)
    if target is None:
        target = pa.schema([pa.field(f.name, _canonical_type(f.type)) for f in schema])
        if len(_CANONICAL) >= 1024:
            _CANONICAL.clear()
        _CANONICAL[schema] = target
    return table if target == schema else table.cast(target)


#: Result schema → its canonical schema (bounded).
_CANONICAL: dict[pa.Schema, pa.Schema] = {}


def _unify(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    schema = pa.unify_schemas([b.schema for b in batches], promote_options="permissive")
    return [b.cast(schema) if b.schema != schema else b for b in batches]
