"""Raw execution: run a Query's statements and return *unprotected* cells. Internal only.

This is the one home of raw values. The disclosure gate (cube/disclosure/gate.py) depends on
it, one way: the gate asks :class:`RawCube` for raw cells and turns them into published ones;
nothing here knows about protection, and nothing outside the gate, the build checks, the
disclosure report and the tests may call it. The workspace (cube/workspace.py) owns one
``RawCube`` per cube and hands it to the gate.

Why a class: it keeps the per-cube cache of compiled statements (compiling a SQLAlchemy
statement costs 3–5 ms of Python; values are bound, so a cached statement is exactly what
compiling again would give) next to the engine that runs it.

Must not import the disclosure package, the workspace, the CLI or the HTTP layer.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.sql import Select

from cube import resident
from cube import sql as compiler
from cube.engine import Compiled, Engine
from cube.model import Attribute, Cube
from cube.query import CutPart, Query
from cube.rollups import Rollup


@dataclass(frozen=True)
class RawResult:
    """Unprotected cells: internal only. Never serialise this."""

    query: Query
    cells: pa.Table
    summary: pa.Table
    total_cell_count: int | None


class RawCube:
    """Raw statements of one cube on one engine, with a small LRU of compiled statements
    per query *shape*."""

    #: Compiled statements kept (LRU), one per (role, shape): bounded memory, a few KB each.
    COMPILED_CACHE = 256
    #: Dimension tables up to this many rows are copied into the process for labels (the
    #: category and time tables: a few to a few hundred rows); larger ones are joined.
    DIMENSION_COPY_ROWS = 5_000

    def __init__(self, engine: Engine, cube: Cube, k: int, *, resident: bool = True) -> None:
        """``resident``: answer from resident rollups where possible (DuckDB only; False
        for benchmarks and tests that compare with the SQL)."""
        self.engine = engine
        self.cube = cube
        self.k = k
        self.resident = resident and engine.name == "duckdb"
        self._compiled: OrderedDict[tuple[Any, ...], _Template | None] = OrderedDict()
        self._lock = threading.Lock()
        self._dimensions: dict[str, pa.Table | None] = {}
        self._plans: dict[tuple[Any, ...], dict[str, compiler.Lookup]] = {}
        #: Per query shape (and role), the rollup that answers it (it depends on the shape
        #: only); per (rollup, attribute), where the SQL reads the attribute.
        self._rollups: dict[tuple[Any, ...], Rollup | None] = {}
        self._sources: dict[tuple[str, str], tuple[str, str]] = {}

    def run(self, role: str, query: Query, build: Callable[[Query], Select[Any]]) -> pa.Table:
        """Execute one of the query's statements (``role`` names which; ``build`` makes it
        from a query), compiling it only if no query of the same shape was compiled
        recently — the same drilldown, aggregates, order, paging, time cuts and the same
        number and types of keys in every other cut, whatever those keys are."""
        return self.engine.run(self.compiled(role, query, build))

    def compiled(self, role: str, query: Query, build: Callable[[Query], Select[Any]],
                 shaped: tuple[tuple[Any, ...], list[Any], Query] | None = None) -> Compiled:
        """The statement of ``query`` as SQL with its bound values (see :meth:`run`).

        How a shape is cached: the first query of a shape is compiled once more with every
        key of its non-time cuts replaced by a sentinel of the same type (a string holding
        NUL, which no key may contain, or an integer no key takes), and the positions where
        each sentinel lands among the bound values are kept with the SQL. A later query of
        that shape gets the same SQL and those values with its own keys put in place of the
        sentinels — exactly what compiling it would give. Values stay bound; if a sentinel
        does not come back verbatim among the values (the compiler derived something from
        it), the shape is not cached and every query of it is compiled afresh."""
        shape, values, sentinel_query = shaped or _shape(query)
        key = (role, shape)
        with self._lock:
            known = key in self._compiled
            template = self._compiled.get(key)
            if known:
                self._compiled.move_to_end(key)
        if known:
            return template.fill(values) if template is not None \
                else self.engine.compile(build(query))
        template = _Template.make(self.engine.compile(build(sentinel_query)), len(values))
        with self._lock:
            self._compiled[key] = template
            while len(self._compiled) > self.COMPILED_CACHE:
                self._compiled.popitem(last=False)
        return template.fill(values) if template is not None \
            else self.engine.compile(build(query))

    def execute(self, stmt: Select[Any]) -> pa.Table:
        """Run a one-off statement (not cached): e.g. a custom group's tiling."""
        return self.engine.execute(stmt)

    def scalar(self, stmt: Select[Any]) -> Any:
        return self.engine.scalar(stmt)

    def aggregate(self, query: Query) -> RawResult:
        """Raw cells and summary of ``query``.

        One statement where possible. The cells' raw columns roll up exactly (sums, key sums
        mod K, maxima), so the summary of a complete, unpaged set of cells is computed from
        them; otherwise (paging, measure filters, top-N) the statement carries it as window
        totals over all cells. A second statement runs only without a drilldown (no cells:
        the summary alone) or when no row came back (a page past the end, everything
        filtered out)."""
        k = self.k
        if not query.drilldown and not query.split:
            summary = self._resident_summary(query)
            if summary is None:
                summary = self.run("summary", query, lambda q: compiler.summary(q, k))
            return RawResult(query, _no_cells(query, summary), summary, None)
        complete = query.pagesize is None and not query.filters and query.top is None
        if complete:
            cells = self.run("cells", query, lambda q: compiler.finish(q, k))
            return RawResult(query, cells, summary_of(query.cube, cells, k), None)
        cells = self.run("cells+totals", query,
                         lambda q: compiler.finish(q, k, totals=True))
        total = None
        if cells.num_rows:
            first = cells.slice(0, 1)
            summary = pa.table({name: first.column(compiler.ALL + name)
                                for name, _ in compiler.raw_rollup(query.cube)})
            if query.pagesize is not None:
                total = first.column(compiler.TOTAL)[0].as_py()
        else:
            summary = self.run("summary", query, lambda q: compiler.summary(q, k))
            if query.pagesize is not None:
                total = self.count_cells(query)
        windows = [c for c in cells.column_names
                   if c == compiler.TOTAL or c.startswith(compiler.ALL)]
        return RawResult(query, cells.drop_columns(windows), summary, total)

    def cells(self, query: Query, limit: int | None = None) -> pa.Table:
        """The raw cells of a query that orders and filters on attributes only, unpaged:
        drilled attributes and internal raw columns, nothing else (``compiler.cells``),
        at most ``limit`` rows (in order only when there are fewer).

        Labels and order columns of small dimension tables come from this process's copy of
        the table, by key, instead of a join in every statement; the cells are then put in
        the order the SQL would give (``compiler.cell_order``; DuckDB, like Arrow, compares
        text byte by byte and puts nulls last). Other engines keep the join: their
        collation decides the order of text.

        A query whose rollup is resident (:meth:`resident_table`) is answered from it,
        without a statement (cube/resident.py): the same cells, in the same order."""
        shaped = _shape(query)
        found = self._resident_cells(query, shaped[0], limit)
        if found is not None:
            return found
        plan = self._plans.get(shaped[0]) if self.engine.name == "duckdb" else {}
        if plan is None:  # what the lookups are depends on the shape only
            plan = compiler.lookups(query)
            with self._lock:
                if len(self._plans) >= self.COMPILED_CACHE:
                    self._plans.clear()
                self._plans[shaped[0]] = plan
        copies = {name: copy for name in plan
                  if (copy := self._dimension(name)) is not None}
        role = f"cells-only<{limit}>" + "".join(f"-{name}" for name in sorted(copies))
        table = self.engine.run(self.compiled(
            role, query, lambda q: compiler.cells(q, self.k, limit, copies), shaped))
        if not copies:
            return table
        for name, copy in copies.items():
            lookup = plan[name]
            at = pc.index_in(table.column(lookup.key.ref), copy.column(lookup.key_column))
            if at.null_count:  # a key the copy lacks (never, by the build): the join decides
                return self.run(f"cells-only<{limit}>", query,
                                lambda q: compiler.cells(q, self.k, limit))
            for attribute, column in lookup.attributes:
                table = table.append_column(attribute.ref, copy.column(column).take(at))
        names = [a.ref for a in query.cell_attributes]
        if query.split:
            names.append(compiler.SPLIT)
        table = table.select(names + [n for n in table.column_names if n not in names])
        if limit is not None and table.num_rows >= limit:
            return table  # over the bound: the caller takes another path, order unused
        keys = [(name, "descending" if desc else "ascending")
                for name, desc in compiler.cell_order(query)]
        return table.take(pc.sort_indices(table, sort_keys=keys))  # nulls last

    def resident_table(self, rollup: Rollup) -> resident.Held | None:
        """The in-memory copy of a rollup table, shared by every RawCube over this engine
        (one warehouse file), read on first use; None when residency is off or the table is
        over the caps of cube/resident.py (``MAX_ROWS``, ``BUDGET_BYTES``)."""
        if not self.resident:
            return None
        return _store(self.engine).table(rollup.table, rollup.rows, self._read_whole,
                                         lambda t: resident.prepare(self.cube, t))

    def _read_whole(self, table: str, limit: int) -> pa.Table:
        return self.engine.execute(
            sa.select(sa.text("*")).select_from(sa.table(table)).limit(limit))

    def _resident_cells(self, query: Query, shape: tuple[Any, ...], limit: int | None
                        ) -> pa.Table | None:
        if not (query.drilldown or query.split):
            return None
        found = self._resident(query, ("cells", shape))
        return None if found is None else resident.cells(
            query, found[0], found[1], self._dimension, self.k, limit, self._source(found[0]))

    def _resident_summary(self, query: Query) -> pa.Table | None:
        found = self._resident(query, ("summary", _shape(query)[0]))
        return None if found is None else resident.summary(
            query, found[0], found[1], self._dimension, self.k, self._source(found[0]))

    def _resident(self, query: Query, key: tuple[Any, ...]
                  ) -> tuple[Rollup, resident.Held] | None:
        """The rollup answering ``query`` (``key``: see :meth:`_rollup`) and its resident
        copy, or None when residency is off, no rollup answers or it is not held."""
        if not (self.resident and query.rollups):
            return None
        rollup = self._rollup(query, key)
        table = None if rollup is None else self.resident_table(rollup)
        return None if rollup is None or table is None else (rollup, table)

    def _rollup(self, query: Query, key: tuple[Any, ...]) -> Rollup | None:
        """``compiler.choose_rollup`` (of the summary for a ``"summary"`` key), once per
        shape: which attributes a query reads, hence its rollup, depends on its shape."""
        if key in self._rollups:
            return self._rollups[key]
        rollup = compiler.choose_rollup(query, summary=key[0] == "summary")
        with self._lock:
            if len(self._rollups) >= self.COMPILED_CACHE:
                self._rollups.clear()
            self._rollups[key] = rollup
        return rollup

    def _source(self, rollup: Rollup) -> resident.Sources:
        def source(attribute: Attribute) -> tuple[str, str]:
            key = (rollup.table, attribute.ref)
            found = self._sources.get(key)
            if found is None:
                found = self._sources[key] = compiler.attribute_source(self.cube, rollup,
                                                                       attribute)
            return found
        return source

    def _dimension(self, table: str) -> pa.Table | None:
        """This process's copy of a small dimension table (every column), read once per
        connection; None for a table over :attr:`DIMENSION_COPY_ROWS` rows (joined)."""
        if table not in self._dimensions:
            stmt = sa.select(sa.text("*")).select_from(sa.table(table)).limit(
                self.DIMENSION_COPY_ROWS + 1)
            copy = self.engine.execute(stmt)
            self._dimensions[table] = copy if copy.num_rows <= self.DIMENSION_COPY_ROWS \
                else None
        return self._dimensions[table]

    def lean(self, query: Query) -> RawResult:
        """:meth:`aggregate` for the disclosure gate's numpy path: the same cells and
        summary without the per-aggregate raw value columns (the gate publishes its own)."""
        if not query.drilldown and not query.split:
            return self.aggregate(query)
        cells = self.cells(query)
        return RawResult(query, cells, summary_of(query.cube, cells, self.k), None)

    def count_cells(self, query: Query) -> int:
        """Total raw cells when the requested page is past the end (the window saw no rows)."""
        sub = compiler.finish(replace(query, page=None, pagesize=None), self.k)
        return int(self.engine.scalar(sa.select(sa.func.count()).select_from(
            sub.subquery())) or 0)


#: The resident tables of each open engine (one warehouse file each): a new build is a new
#: engine, so a copy can never answer for another file; dropped with its engine.
_STORES: weakref.WeakKeyDictionary[Engine, resident.Store] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def _store(engine: Engine) -> resident.Store:
    store = _STORES.get(engine)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.setdefault(engine, resident.Store())
    return store


def summary_of(cube: Cube, cells: pa.Table, k: int) -> pa.Table:
    """The summary row from a complete set of cells (see ``compiler.raw_rollup``)."""
    out = {}
    for name, how in compiler.raw_rollup(cube):
        col = cells.column(name)
        value: Any
        if col.null_count or not pa.types.is_integer(col.type):
            value = (pc.max(col) if how == "max" else pc.sum(col)).as_py()
        elif how == "max":  # numpy for the usual whole columns: a tenth of the time
            value = int(np.max(col.to_numpy())) if len(col) else None
        else:
            value = int(np.sum(col.to_numpy(), dtype=np.int64))
        if value is not None and how == "sum_mod":
            value %= k
        out[name] = pa.array([value or 0], pa.int64())
    return pa.table(out)


def _no_cells(query: Query, summary: pa.Table) -> pa.Table:
    """The (typed, empty) cells of a query without a drilldown: the summary is everything."""
    cols: dict[str, pa.Array] = {}
    for a in query.aggregates:
        kind = pa.int64() if a.measure.kind == "count" or a.function == "sum" else pa.float64()
        cols[a.name] = pa.array([], kind)
    for name in summary.column_names:
        cols[name] = pa.array([], summary.schema.field(name).type)
    return pa.table(cols)


# --- Compiled statements per query shape --------------------------------------------------------

#: Sentinels stand in for keys while a shape is compiled: a text key never holds NUL (the
#: query layer refuses it), and no integer key is this negative.
_TEXT_SENTINEL = "\x00statcube-key-{}\x00"
_INT_SENTINEL = -(2**62)


def _shape(query: Query) -> tuple[tuple[Any, ...], list[Any], Query]:
    """(shape key, the query's keys in order, the query with sentinels for them).

    The keys abstracted are those of point, set and range cuts (and splits) on dimensions
    other than time: the ones a stream of distinct requests varies. Time cuts stay in the
    shape (a time path becomes a period range computed from it, not a bound copy of it)."""
    values: list[Any] = []

    def stand_in(v: Any) -> Any:
        i = len(values)
        values.append(v)
        return _TEXT_SENTINEL.format(i) if isinstance(v, str) else _INT_SENTINEL + i

    def abstract(c: CutPart) -> CutPart:
        if c.dimension.is_time:
            return c
        def path(p: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
            return None if p is None else tuple(stand_in(v) for v in p)
        return replace(c, paths=tuple(path(p) or () for p in c.paths),
                       from_path=path(c.from_path), to_path=path(c.to_path))

    sentinel = replace(query, cuts=tuple(abstract(c) for c in query.cuts),
                       split=tuple(abstract(c) for c in query.split))
    return sentinel.key, values, sentinel


@dataclass(frozen=True)
class _Template:
    """Compiled SQL whose bound values hold sentinels, and where each sentinel sits."""

    sql: str
    params: list[Any] | dict[str, Any]
    #: (position or parameter name, index of the key) for every bound sentinel.
    slots: tuple[tuple[int | str, int], ...]

    @classmethod
    def make(cls, compiled: Compiled, n: int) -> _Template | None:
        """The template, or None if some key's sentinel is not among the bound values."""
        sentinels: dict[Any, int] = {}
        for i in range(n):
            sentinels[_TEXT_SENTINEL.format(i)] = i
            sentinels[_INT_SENTINEL + i] = i
        params = compiled.params
        items = list(params.items()) if isinstance(params, dict) else list(enumerate(params))
        slots = tuple((where, sentinels[v]) for where, v in items
                      if type(v) in (str, int) and v in sentinels)
        if {i for _, i in slots} != set(range(n)):
            return None
        return cls(compiled.sql, params, slots)

    def fill(self, values: list[Any]) -> Compiled:
        params: Any = dict(self.params) if isinstance(self.params, dict) else list(self.params)
        for where, i in self.slots:
            params[where] = values[i]
        return Compiled(self.sql, params)
