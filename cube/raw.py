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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.sql import Select

from cube import sql as compiler
from cube.engine import Compiled, Engine
from cube.model import Cube
from cube.query import Query


@dataclass(frozen=True)
class RawResult:
    """Unprotected cells: internal only. Never serialise this."""

    query: Query
    cells: pa.Table
    summary: pa.Table
    total_cell_count: int | None


class RawCube:
    """Raw statements of one cube on one engine, with a small LRU of compiled statements."""

    #: Compiled statements kept (LRU): a repeated query skips SQL compilation.
    COMPILED_CACHE = 256

    def __init__(self, engine: Engine, cube: Cube, k: int) -> None:
        self.engine = engine
        self.cube = cube
        self.k = k
        self._compiled: OrderedDict[tuple[Any, ...], Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, role: str, query: Query, build: Callable[[], Select[Any]]) -> pa.Table:
        """Execute one of the query's statements (``role`` names which), compiling it only
        if this exact query was not compiled recently."""
        key = (role, query.key)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
        if compiled is None:
            compiled = self.engine.compile(build())
            with self._lock:
                self._compiled[key] = compiled
                while len(self._compiled) > self.COMPILED_CACHE:
                    self._compiled.popitem(last=False)
        return self.engine.run(compiled)

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
            summary = self.run("summary", query, lambda: compiler.summary(query, k))
            return RawResult(query, _no_cells(query, summary), summary, None)
        complete = query.pagesize is None and not query.filters and query.top is None
        if complete:
            cells = self.run("cells", query, lambda: compiler.finish(query, k))
            return RawResult(query, cells, summary_of(query.cube, cells, k), None)
        cells = self.run("cells+totals", query,
                         lambda: compiler.finish(query, k, totals=True))
        total = None
        if cells.num_rows:
            first = cells.slice(0, 1)
            summary = pa.table({name: first.column(compiler.ALL + name)
                                for name, _ in compiler.raw_rollup(query.cube)})
            if query.pagesize is not None:
                total = first.column(compiler.TOTAL)[0].as_py()
        else:
            summary = self.run("summary", query, lambda: compiler.summary(query, k))
            if query.pagesize is not None:
                total = self.count_cells(query)
        windows = [c for c in cells.column_names
                   if c == compiler.TOTAL or c.startswith(compiler.ALL)]
        return RawResult(query, cells.drop_columns(windows), summary, total)

    def count_cells(self, query: Query) -> int:
        """Total raw cells when the requested page is past the end (the window saw no rows)."""
        sub = compiler.finish(replace(query, page=None, pagesize=None), self.k)
        return int(self.engine.scalar(sa.select(sa.func.count()).select_from(
            sub.subquery())) or 0)


def summary_of(cube: Cube, cells: pa.Table, k: int) -> pa.Table:
    """The summary row from a complete set of cells (see ``compiler.raw_rollup``)."""
    out = {}
    for name, how in compiler.raw_rollup(cube):
        col = cells.column(name)
        if how == "max":
            value = pc.max(col).as_py()
        else:
            value = pc.sum(col).as_py()
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
