"""Resident rollups: small rollup tables answered from an in-memory Arrow copy, without an SQL
statement. Internal only: what comes out are *raw* cells, for cube/raw.py to hand to the gate.

Why: DuckDB spends 0.5–1 ms (1.7 ms when the core wakes from idle) parsing, planning and
binding any statement, however small its input; the rollups the compiler picks for region,
local authority and category queries (``compiler.choose_rollup``) hold hundreds to tens of
thousands of rows, which ``pyarrow.compute`` and numpy filter and group in a fraction of
that. A held table is sorted by period, so a query's periods are first narrowed to a slice
by binary search.

What it reproduces, exactly as cube/sql.py's stages give it on DuckDB: the cut conditions
(time cuts on the period column, ``period_range``; point, set and lexicographic range cuts on
level keys, ``_compare``; ``invert``), ``query.within``, the period limit of a release view
(embargo), the split flag; the join to a dimension table for attributes the rollup does not
hold (labels, order columns, time attributes), from the process's copy of that table; the
raw columns of ``compiler.raw_rollup`` (sums and maxima of empty groups 0, key sums mod K);
canonical column types; the order of ``compiler.cell_order`` (Arrow, like DuckDB, compares
text byte by byte and puts nulls last). Conditions use SQL's three-valued logic (Kleene
``and``/``or``; a row whose condition is unknown is dropped, also under ``NOT``).

Anything else declines (None): measure filters, top-N, paging, ordering on values, a table
joined through another, a dimension table not copied or missing a key the rollup holds, a key
whose type is not its column's, an Arrow error. The caller then runs the SQL, so the answer
never depends on which path gave it.

Memory is bounded twice: a table of more than :data:`MAX_ROWS` rows is never held, and the
tables one :class:`Store` (one warehouse file: one per :class:`cube.engine.Engine`) holds
never exceed :data:`BUDGET_BYTES` together; a table that would go over stays in SQL. Copies
are read once, under a lock, and never change: a warehouse file is immutable, and a new
build is a new engine with a new store.

Pure functions over (query, held table, dimension copies, K) apart from :class:`Store`;
imports no engine, workspace or disclosure code, and logs nothing (raw values never leave
through here except as the cells returned).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cube import sql as compiler
from cube.model import Attribute, Cube
from cube.query import CutPart, Query, period_range
from cube.rollups import Rollup

#: A rollup table with more rows than this is never held in memory (its queries run SQL).
MAX_ROWS = 50_000
#: Bytes of resident tables one warehouse (one engine) holds at most, all cubes together.
BUDGET_BYTES = 64 * 2**20
#: A table is held only if every additive column's absolute values add up to less than this,
#: so that no sum over any of its rows can overflow int64 (DuckDB sums into 128 bits).
_SAFE_TOTAL = 2**62

#: ``dimension(table)``: the process's copy of a small dimension table, or None.
Dimensions = Callable[[str], pa.Table | None]
#: ``source(attribute)``: (table, column) the SQL reads the attribute from when the rollup
#: is the source, i.e. ``compiler.attribute_source`` (which a caller may cache).
Sources = Callable[[Attribute], tuple[str, str]]
#: ``read(table, limit)``: at most ``limit`` rows of a warehouse table, canonical types.
Reader = Callable[[str, int], pa.Table]


@dataclass(frozen=True)
class Held:
    """A resident rollup table: sorted by period (see :func:`prepare`), with its period
    column as numpy values to find a period range in by binary search."""

    table: pa.Table
    periods: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes + self.periods.nbytes)


class _Declined(Exception):
    """The query needs something the resident path does not do: the SQL answers."""


class Store:
    """The resident tables of one warehouse file, each read on first use.

    Lookups of a table already decided take no lock; the first use of a table reads it under
    the store's lock, so threads asking at once get the one copy. A table over the row cap,
    over the remaining byte budget or refused by ``prepare`` is remembered as not resident."""

    def __init__(self, max_rows: int = MAX_ROWS, budget_bytes: int = BUDGET_BYTES) -> None:
        self.max_rows = max_rows
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        #: Tables read from the warehouse (for tests: each at most once).
        self.reads = 0
        self._tables: dict[str, Held | None] = {}
        self._lock = threading.Lock()

    def table(self, name: str, rows: int, read: Reader,
              prepare: Callable[[pa.Table], Held | None]) -> Held | None:
        """The resident copy of table ``name`` (``rows``: its row count as the warehouse
        metadata records it, 0 if unknown), or None if it is not to be held. ``prepare``
        turns the table read into the copy to hold (e.g. :func:`prepare`), or refuses it."""
        if name in self._tables:
            return self._tables[name]
        with self._lock:
            if name in self._tables:
                return self._tables[name]
            copy = None
            if rows <= self.max_rows:
                self.reads += 1
                found = read(name, self.max_rows + 1)
                held = prepare(found) if found.num_rows <= self.max_rows else None
                if held is not None and self.used_bytes + held.nbytes <= self.budget_bytes:
                    copy = held
                    self.used_bytes += held.nbytes
            self._tables[name] = copy
            return copy


def raw_sources(cube: Cube) -> list[tuple[str, str, str]]:
    """(raw column, how it rolls up, source column) in ``compiler.raw_rollup`` order: the
    columns ``compiler.raw_columns`` aggregates, under the fact's names a rollup keeps."""
    phys = cube.physical
    source = {compiler.N: phys.column(cube.count_measure.name).column,
              compiler.RK: phys.record_key, compiler.RK2: phys.magnitude_key}
    for m in cube.measures:
        if m.kind == "amount":
            source[compiler.sum_col(m.name)] = phys.column(m.name).column
            source[compiler.max_col(m.name)] = phys.max_columns[m.name]
    return [(name, how, source[name]) for name, how in compiler.raw_rollup(cube)]


def prepare(cube: Cube, table: pa.Table) -> Held | None:
    """A rollup table of ``cube`` as it is held: sorted by its period column (which has no
    nulls), in one chunk — so a query's period range is a slice of it, found by binary
    search (:func:`_where`); None (not held) unless it has that column and every raw source
    column, as integers, and no sum over its rows can overflow int64."""
    period = compiler.fact_period_column(cube)
    if period not in table.column_names:
        return None
    for name in [period, *(column for _, _, column in raw_sources(cube))]:
        if name not in table.column_names or not pa.types.is_integer(table.column(name).type):
            return None
    if table.column(period).null_count:
        return None
    for _, how, column in raw_sources(cube):
        if how != "max":
            total = pc.sum(pc.abs(pc.cast(table.column(column), pa.float64()))).as_py()
            if total is not None and total >= _SAFE_TOTAL:
                return None
    held = table.sort_by(period).combine_chunks()
    return Held(held, np.asarray(held.column(period).to_numpy(), dtype=np.int64))


def cells(query: Query, rollup: Rollup, table: Held, dimension: Dimensions, k: int,
          limit: int | None = None, source: Sources | None = None) -> pa.Table | None:
    """``compiler.cells(query, k, limit)`` from ``table``, the resident copy of ``rollup``
    (which must be ``compiler.choose_rollup(query)``): drilled attributes, the split flag,
    the raw columns, in :func:`compiler.cell_order`, at most ``limit`` rows (the first in
    that order); None if the query is not one this path answers."""
    if query.filters or query.top is not None or query.pagesize is not None or any(
            o.aggregate is not None for o in query.order) or not (query.drilldown
                                                                 or query.split):
        return None  # (no drilldown: the SQL's cells are none at all; the summary path)
    try:
        return _cells(query, _From(query.cube, rollup, dimension, source), table, k, limit)
    except (_Declined, pa.ArrowException):
        return None


def summary(query: Query, rollup: Rollup, table: Held, dimension: Dimensions, k: int,
            source: Sources | None = None) -> pa.Table | None:
    """``compiler.summary(query, k)`` (one row of raw columns) from ``table``, the resident
    copy of ``compiler.choose_rollup(query, summary=True)``; None if declined."""
    try:
        rows = _where(query, _From(query.cube, rollup, dimension, source), table)
        out: dict[str, pa.Array] = {}
        for name, how, column in raw_sources(query.cube):
            col = rows.column(column)
            value = (pc.max(col) if how == "max" else pc.sum(col)).as_py()
            value = 0 if value is None else int(value)
            out[name] = pa.array([_mod(value, k) if how == "sum_mod" else value], pa.int64())
        return pa.table(out)
    except (_Declined, pa.ArrowException):
        return None


def _mod(value: int, k: int) -> int:
    """SQL's ``%``: the remainder takes the sign of the dividend."""
    return int(np.fmod(value, k))


def _cells(query: Query, src: _From, table: Held, k: int, limit: int | None) -> pa.Table:
    rows = _where(query, src, table)
    keys: dict[str, Any] = {a.ref: src.column(rows, a) for a in query.cell_attributes}
    if query.split:
        cond = _all([_cut(src, rows, c) for c in query.split])
        keys[compiler.SPLIT] = pc.fill_null(cond, False)
    grouped = _groups(list(keys.values()), rows.num_rows)
    out: dict[str, Any] = {name: col if grouped is None else col.take(grouped[0])
                           for name, col in keys.items()}
    for name, how, column in raw_sources(query.cube):
        col = rows.column(column)
        if how == "max":  # nulls are ignored, as by SQL's max; none at all gives 0
            values = _numpy(col, _LOWEST)
            if grouped is not None:
                values = np.maximum.reduceat(values[grouped[1]], grouped[2])
            values = np.where(values == _LOWEST, 0, values)
        else:  # coalesce(sum(x), 0): the nulls count as 0
            values = _numpy(col, 0)
            if grouped is not None:
                values = np.add.reduceat(values[grouped[1]], grouped[2])
            if how == "sum_mod":
                values = np.fmod(values, k)
        out[name] = pa.array(values, pa.int64())
    result = pa.table(out)
    order = [(name, "descending" if desc else "ascending")
             for name, desc in compiler.cell_order(query)]
    result = result.take(pc.sort_indices(result, sort_keys=order))  # nulls last
    return result if limit is None else result.slice(0, limit)


def _numpy(col: pa.ChunkedArray, null: int) -> np.ndarray:
    """An integer column as int64 numpy values, ``null`` in place of nulls."""
    if col.null_count:
        col = pc.fill_null(col, null)
    return np.asarray(col.to_numpy(), dtype=np.int64)


#: Stands in for a null while taking maxima (no amount is this small).
_LOWEST = np.iinfo(np.int64).min


def _groups(keys: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """GROUP BY ``keys`` (columns of ``n`` rows; null is a value of its own, as in SQL):
    (the first row of each group, the rows ordered group by group, where each group starts
    in that order), or None when every row is a group of its own (a rollup read at
    its own grain). Groups come in no particular order: the caller sorts them."""
    if n <= 1:
        return None
    for key in list(keys)[::-1][:2]:  # one key unique over the rows: every row its group
        if pc.count_distinct(key, mode="all").as_py() == n:
            return None
    codes = np.zeros(n, np.int64)
    radix = 1
    for key in keys:
        encoded = pc.dictionary_encode(key.combine_chunks() if isinstance(
            key, pa.ChunkedArray) else key, null_encoding="encode")
        size = max(len(encoded.dictionary), 1)
        if radix * size >= 2**62:
            raise _Declined
        codes += encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) * radix
        radix *= size
    unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    if len(unique) == n:
        return None
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(np.bincount(inverse))[:-1]))
    return first, order, starts


# --- Columns and conditions -------------------------------------------------------------------

class _From:
    """Where the attributes of a query on a rollup are read from."""

    def __init__(self, cube: Cube, rollup: Rollup, dimension: Dimensions,
                 source: Sources | None) -> None:
        self.cube = cube
        self.rollup = rollup
        self.dimension = dimension
        self.source: Sources = source if source is not None else (
            lambda a: compiler.attribute_source(cube, rollup, a))
        #: Per dimension table: the rows joined last, and where each found its key.
        self._joined: dict[str, tuple[pa.Table, pa.Array]] = {}

    def column(self, rows: pa.Table, attribute: Attribute) -> pa.ChunkedArray:
        """The attribute over ``rows`` (rows of the rollup), read where the SQL reads it:
        the rollup's own column, or its dimension table's, joined on the key the rollup
        holds (an inner join: a key the copy lacks declines, as a row the join drops)."""
        table, column = self.source(attribute)
        if table == self.rollup.table:
            return rows.column(column)
        join = compiler.source_join(self.cube, table)
        copy = self.dimension(table)
        if join is None or copy is None:
            raise _Declined
        done = self._joined.get(table)
        if done is not None and done[0] is rows:
            at = done[1]
        else:
            fk, pk = join
            keys = copy.column(pk)
            if keys.null_count or pc.count_distinct(keys).as_py() != len(keys):
                raise _Declined  # the join could repeat or drop rows
            at = pc.index_in(rows.column(fk), value_set=keys)
            if at.null_count:
                raise _Declined
            self._joined[table] = (rows, at)
        return copy.column(column).take(at)


def _where(query: Query, src: _From, table: Held) -> pa.Table:
    """The rows of ``table`` (held by :func:`prepare`: sorted by period) that meet the
    WHERE of ``compiler.aggregation``: every cut, ``within``, the period limit (which the
    slice applies: it is one period range).

    First the slice of periods the query can read at all (the period limit, and the range
    each plain time cut spans), found by binary search; then every other condition over
    that slice. A condition that is one period range is met by every row of the slice (the
    slice lies within each such range), so it is not evaluated again; a time cut over
    several ranges is (a row between them is in the slice but fails it)."""
    rows, exact = _period_slice(query, table)
    conds = [_cut(src, rows, c) for i, c in enumerate(query.cuts) if i not in exact]
    for attribute, keys in query.within:
        col = src.column(rows, attribute)
        conds.append(pc.is_in(col, value_set=pa.array(
            [_scalar(v, col.type).as_py() for v in keys], col.type)))
    return rows.filter(_all(conds)) if conds else rows


def _period_slice(query: Query, held: Held) -> tuple[pa.Table, set[int]]:
    """The rows of ``held`` (sorted by period) in the narrowest period range that every
    plain (not inverted) time cut and the period limit confine the query to, and which cuts
    (by position) are exactly one such range — met by every row of the slice."""
    lo, hi = None, query.period_limit
    exact: set[int] = set()
    for i, cut in enumerate(query.cuts):
        if not cut.dimension.is_time or cut.invert:
            continue
        if cut.kind == "range":
            spans = [None if p is None else period_range(query.cube, cut.hierarchy, p)
                     for p in (cut.from_path, cut.to_path)]
            if any(p is not None and s is None for p, s in
                   zip((cut.from_path, cut.to_path), spans, strict=True)):
                continue  # not a period condition: the level keys decide
            low = spans[0][0] if spans[0] is not None else None
            high = spans[1][1] if spans[1] is not None else None
            if low is not None or high is not None:
                exact.add(i)
        else:
            found = [period_range(query.cube, cut.hierarchy, p) for p in cut.paths]
            if not found or any(s is None for s in found):
                continue
            low = min(s[0] for s in found if s is not None)
            high = max(s[1] for s in found if s is not None)
            if len(found) == 1:
                exact.add(i)
        lo = low if lo is None or (low is not None and low > lo) else lo
        hi = high if hi is None or (high is not None and high < hi) else hi
    if lo is None and hi is None:
        return held.table, exact
    period = held.periods
    start = 0 if lo is None else int(np.searchsorted(period, lo, side="left"))
    end = len(period) if hi is None else int(np.searchsorted(period, hi, side="right"))
    return held.table.slice(start, max(end - start, 0)), exact


def _all(conds: Sequence[Any]) -> Any:
    out = conds[0]
    for c in conds[1:]:
        out = pc.and_kleene(out, c)
    return out


def _any(conds: Sequence[Any]) -> Any:
    out = conds[0]
    for c in conds[1:]:
        out = pc.or_kleene(out, c)
    return out


def _scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    """A key as a scalar of its column's type ``kind``: an integer for an integer column, a
    string for a text column; a key of another type declines (the SQL engine would cast,
    and decide what the comparison means). (A typed scalar: comparing with it is quicker
    than with a Python value, which each call would convert.)"""
    if isinstance(value, bool) or not (
            (isinstance(value, int) and pa.types.is_integer(kind))
            or (isinstance(value, str) and pa.types.is_string(kind))):
        raise _Declined
    return pa.scalar(value, kind)


def _cut(src: _From, rows: pa.Table, cut: CutPart) -> Any:
    """``compiler.cut_condition``: a time cut on the period column when every path is a
    well-formed period prefix, else conditions on the level keys; negated if inverted."""
    cond = _period(src.cube, rows, cut)
    if cond is None:
        cond = _generic(src, rows, cut)
    return pc.invert(cond) if cut.invert else cond


def _period(cube: Cube, rows: pa.Table, cut: CutPart) -> Any | None:
    """``compiler._period_condition``."""
    if not cut.dimension.is_time:
        return None
    col = rows.column(compiler.fact_period_column(cube))

    def value(v: int) -> pa.Scalar:
        return _scalar(v, col.type)

    if cut.kind in ("point", "set"):
        spans = [period_range(cube, cut.hierarchy, p) for p in cut.paths]
        if not spans or any(s is None for s in spans):
            return None
        return _any([pc.equal(col, value(lo)) if lo == hi else
                     pc.and_kleene(pc.greater_equal(col, value(lo)),
                                   pc.less_equal(col, value(hi)))
                     for lo, hi in (s for s in spans if s is not None)])
    parts = []
    if cut.from_path is not None:
        low = period_range(cube, cut.hierarchy, cut.from_path)
        if low is None:
            return None
        parts.append(pc.greater_equal(col, value(low[0])))
    if cut.to_path is not None:
        high = period_range(cube, cut.hierarchy, cut.to_path)
        if high is None:
            return None
        parts.append(pc.less_equal(col, value(high[1])))
    if not parts:
        raise _Declined
    return _all(parts)


def _generic(src: _From, rows: pa.Table, cut: CutPart) -> Any:
    """``compiler._generic_condition``: conditions on the level keys."""
    levels = cut.hierarchy.levels

    def key(i: int) -> pa.ChunkedArray:
        return src.column(rows, levels[i].key)

    def path_condition(path: Sequence[Any]) -> Any:
        if not path:
            raise _Declined
        return _all([pc.equal(col, _scalar(v, col.type))
                     for col, v in ((key(i), v) for i, v in enumerate(path))])

    if cut.kind == "point":
        return path_condition(cut.paths[0])
    if cut.kind == "set":
        if not cut.paths:
            raise _Declined
        return _any([path_condition(p) for p in cut.paths])
    parts = []
    if cut.from_path is not None:
        parts.append(_compare(cut.from_path, key, ">="))
    if cut.to_path is not None:
        parts.append(_compare(cut.to_path, key, "<="))
    if not parts:
        raise _Declined
    return _all(parts)


def _compare(path: Sequence[Any], key: Callable[[int], pa.ChunkedArray], op: str) -> Any:
    """``compiler._compare``: the row's path ``op`` ``path``, lexicographically over the
    levels of ``path``, written out as the SQL is (so nulls propagate the same way)."""
    if not path:
        raise _Declined
    cols = [key(i) for i in range(len(path))]
    values = [_scalar(v, c.type) for v, c in zip(path, cols, strict=True)]
    strict = pc.greater if op == ">=" else pc.less
    weak = pc.greater_equal if op == ">=" else pc.less_equal
    cond = weak(cols[-1], values[-1])
    for i in range(len(cols) - 2, -1, -1):
        cond = pc.or_kleene(strict(cols[i], values[i]),
                            pc.and_kleene(pc.equal(cols[i], values[i]), cond))
    if len(cols) > 1:
        cond = pc.and_kleene(weak(cols[0], values[0]), cond)
    return cond
