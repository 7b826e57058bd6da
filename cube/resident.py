"""Resident rollups: small rollup tables answered from an in-memory Arrow copy, without an SQL
statement. Internal only: what comes out are *raw* cells, for cube/raw.py to hand to the gate.

Why: DuckDB spends 0.5–1 ms (1.7 ms when the core wakes from idle) parsing, planning and
binding any statement, however small its input; the rollups the compiler picks for region,
local authority and category queries (``compiler.choose_rollup``) hold hundreds to tens of
thousands of rows, which numpy filters and groups in a fraction of that. A held table is
sorted by period, so a query's periods are first narrowed to a slice by binary search. Each
column a request compares or groups on is coded once per held table (``_Coded``: integer
ranks, -1 for null), so a request works on small integer arrays in numpy: a region question
reads a few dozen rows, where the fixed cost of each Arrow compute call (tens of them per
request) was most of the time — HB tenure × three regions took 1.20–1.28 ms with Arrow
compute and takes 0.78–0.80 ms on codes (quiet 2-core VM, 2 December 2026).

What it reproduces, exactly as cube/sql.py's stages give it on DuckDB: the cut conditions
(time cuts on the period column, ``period_range``; point, set and lexicographic range cuts on
level keys, ``_compare``; ``invert``), ``query.within``, the period limit of a release view
(embargo), the split flag; the join to a dimension table for attributes the rollup does not
hold (labels, order columns, time attributes), from the process's copy of that table; the
raw columns of ``compiler.raw_rollup`` (sums and maxima of empty groups 0, key sums mod K);
canonical column types; the order of ``compiler.cell_order`` (Arrow, like DuckDB, compares
text byte by byte and puts nulls last). Conditions use SQL's three-valued logic (Kleene
``and``/``or``, ``_Truth``; a row whose condition is unknown is dropped, also under ``NOT``),
tested against Arrow's Kleene functions.

Anything else declines (None): measure filters, top-N, paging, ordering on values, a table
joined through another, a dimension table not copied or missing a key the rollup holds, a key
whose type is not its column's or that its type cannot hold, an Arrow error. The caller then
runs the SQL, so the answer never depends on which path gave it.

Memory is bounded twice: a table of more than :data:`MAX_ROWS` rows is never held, and the
tables one :class:`Store` (one warehouse file: one per :class:`cube.engine.Engine`) holds
never exceed :data:`BUDGET_BYTES` together; a table that would go over stays in SQL (the
codes and int64 columns a held table gains as requests use it are not counted: 4 bytes per
row per coded column, labels joined from a dimension table included, and 8 per raw column —
4.4 MB for a table at the row cap with twelve coded and five raw columns). Copies
are read once, under a lock, and never change: a warehouse file is immutable, and a new
build is a new engine with a new store.

Pure functions over (query, held table, dimension copies, K) apart from :class:`Store`;
imports no engine, workspace or disclosure code, and logs nothing (raw values never leave
through here except as the cells returned).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    column as numpy values to find a period range in by binary search, and — filled on
    first use, as requests need them — its columns coded for comparing and grouping
    (``coded``, by source (table, column); see ``_Coded``) and its raw columns as int64
    (``numbers``, by (column, null stand-in)). Those add at most 4 bytes per row per
    column coded and 8 per raw column to the table's own size."""

    table: pa.Table
    periods: np.ndarray
    coded: dict[tuple[str, str], _Coded] = field(default_factory=dict, compare=False, repr=False)
    numbers: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, compare=False,
                                                       repr=False)

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
        return _cells(query, _From(query.cube, rollup, table, dimension, source), k, limit)
    except (_Declined, pa.ArrowException):
        return None


def summary(query: Query, rollup: Rollup, table: Held, dimension: Dimensions, k: int,
            source: Sources | None = None) -> pa.Table | None:
    """``compiler.summary(query, k)`` (one row of raw columns) from ``table``, the resident
    copy of ``compiler.choose_rollup(query, summary=True)``; None if declined."""
    try:
        src = _From(query.cube, rollup, table, dimension, source)
        rows = _where(query, src)
        out: dict[str, pa.Array] = {}
        for name, how, column in raw_sources(query.cube):
            values = src.numbers(column, how)[rows]
            if how == "max":  # nulls are ignored, as by SQL's max; none at all gives 0
                value = int(values.max()) if len(values) else _LOWEST
                value = 0 if value == _LOWEST else value
            else:
                value = int(values.sum())
                value = _mod(value, k) if how == "sum_mod" else value
            out[name] = pa.array([value], pa.int64())
        return pa.table(out)
    except (_Declined, pa.ArrowException):
        return None


def _mod(value: int, k: int) -> int:
    """SQL's ``%``: the remainder takes the sign of the dividend."""
    return int(np.fmod(value, k))


def _cells(query: Query, src: _From, k: int, limit: int | None) -> pa.Table:
    rows = _where(query, src)
    attributes = {a.ref: src.coded(a) for a in query.cell_attributes}
    codes = [c.codes[rows] for c in attributes.values()]
    split: np.ndarray | None = None
    if query.split:
        split = _all([_cut(src, rows, c) for c in query.split]).value  # unknown is false
        codes.append(split.astype(np.int32))
    grouped = _groups(codes, [len(c.values) for c in attributes.values()] + [2], len(rows))
    out: dict[str, Any]
    if grouped is None and len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        # one run of rows, each its own cell (a rollup read at its own grain): views
        out = {ref: c.column.slice(int(rows[0]), len(rows)) for ref, c in attributes.items()}
    else:
        chosen = pa.array(rows if grouped is None else rows[grouped[0]])
        out = {ref: c.column.take(chosen) for ref, c in attributes.items()}
    if split is not None:
        out[compiler.SPLIT] = pa.array(split if grouped is None else split[grouped[0]])
    for name, how, column in raw_sources(query.cube):
        values = src.numbers(column, how)[rows]
        if how == "max":
            if grouped is not None:
                values = np.maximum.reduceat(values[grouped[1]], grouped[2])
            values = np.where(values == _LOWEST, 0, values)
        else:  # coalesce(sum(x), 0): the nulls count as 0
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


def _groups(keys: Sequence[np.ndarray], sizes: Sequence[int], n: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """GROUP BY ``keys`` (codes of ``n`` rows, -1 for null, each below its ``sizes``: null is
    a value of its own, as in SQL): (the first row of each group, the rows ordered group by
    group, where each group starts in that order), or None when every row is a group of its
    own (a rollup read at its own grain). Groups come in no particular order: the caller
    sorts them."""
    if n <= 1:
        return None
    combined = np.zeros(n, np.int64)
    radix = 1
    for key, size in zip(keys, sizes, strict=False):
        if radix * (size + 1) >= 2**62:
            raise _Declined
        combined += (key.astype(np.int64) + 1) * radix
        radix *= size + 1
    unique, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    if len(unique) == n:
        return None
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(np.bincount(inverse))[:-1]))
    return first, order, starts


# --- Columns and conditions -------------------------------------------------------------------

@dataclass(frozen=True)
class _Coded:
    """A column over every row of a held table, coded once: ``codes[i]`` is -1 where row i is
    null, else the rank of its value among the column's distinct ``values`` (ascending, in
    byte order for text — as DuckDB and Arrow compare — and numeric order for integers). So
    equality and order on the column are equality and order on the codes, and a request
    compares small integers in numpy instead of calling Arrow compute on every column: a
    region question is a few dozen rows, where each Arrow call's fixed cost is the cost.
    Columns of other types are coded for grouping only (``ordered`` false: a condition on
    them declines, as before)."""

    column: pa.ChunkedArray
    codes: np.ndarray
    values: list[Any]
    ordered: bool


def _code(column: pa.ChunkedArray) -> _Coded:
    kind = column.type
    ordered = pa.types.is_integer(kind) or pa.types.is_string(kind)
    plain = column.combine_chunks()
    if pa.types.is_dictionary(plain.type):
        plain = plain.dictionary_decode()
    encoded = pc.dictionary_encode(plain)
    dictionary = encoded.dictionary
    rank = np.arange(len(dictionary), dtype=np.int64)
    if ordered:
        by_value = pc.sort_indices(dictionary).to_numpy()
        rank[by_value] = np.arange(len(dictionary), dtype=np.int64)
        values = dictionary.take(pa.array(by_value)).to_pylist()
    else:
        values = dictionary.to_pylist()
    index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = np.full(len(index), -1, np.int32)
    present = index >= 0
    codes[present] = rank[index[present]]
    return _Coded(column, codes, values, ordered)


class _From:
    """Where the attributes of a query on a rollup are read from, over the held table."""

    def __init__(self, cube: Cube, rollup: Rollup, held: Held, dimension: Dimensions,
                 source: Sources | None) -> None:
        self.cube = cube
        self.rollup = rollup
        self.held = held
        self.dimension = dimension
        self.source: Sources = source if source is not None else (
            lambda a: compiler.attribute_source(cube, rollup, a))

    def coded(self, attribute: Attribute) -> _Coded:
        """The attribute over every row of the held table, read where the SQL reads it: the
        rollup's own column, or its dimension table's, joined on the key the rollup holds (an
        inner join: a key the copy lacks declines, as a row the join drops). Coded on first
        use and kept with the held table (which never changes)."""
        table, column = self.source(attribute)
        if table == self.rollup.table:
            return self.own(column)
        copy = self.dimension(table)
        if copy is None:
            raise _Declined  # (this caller has no copy of the table: the SQL joins it)
        found = self.held.coded.get((table, column))
        if found is None:
            join = compiler.source_join(self.cube, table)
            if join is None:
                raise _Declined
            fk, pk = join
            keys = copy.column(pk)
            if keys.null_count or pc.count_distinct(keys).as_py() != len(keys):
                raise _Declined  # the join could repeat or drop rows
            at = pc.index_in(self.held.table.column(fk), value_set=keys)
            if at.null_count:
                raise _Declined
            found = self.held.coded[(table, column)] = _code(copy.column(column).take(at))
        return found

    def own(self, column: str) -> _Coded:
        """A column of the rollup itself, coded (kept with the held table)."""
        key = (self.rollup.table, column)
        found = self.held.coded.get(key)
        if found is None:
            found = self.held.coded[key] = _code(self.held.table.column(column))
        return found

    def numbers(self, column: str, how: str) -> np.ndarray:
        """A raw column of the held table as int64, nulls as what they add: 0 to a sum, the
        lowest integer to a maximum (kept with the held table)."""
        null = _LOWEST if how == "max" else 0
        cache = self.held.numbers
        found = cache.get((column, null))
        if found is None:
            found = cache[(column, null)] = _numpy(self.held.table.column(column), null)
        return found


@dataclass(frozen=True)
class _Truth:
    """SQL's three-valued truth of a condition over some rows: ``value`` true where it is
    true (so false where unknown), ``known`` false where it is unknown (NULL)."""

    value: np.ndarray
    known: np.ndarray


def _all(conds: Sequence[_Truth]) -> _Truth:
    """Kleene AND: false if any is false, else unknown if any is unknown."""
    out = conds[0]
    for c in conds[1:]:
        out = _Truth(out.value & c.value, (out.known & c.known) | (out.known & ~out.value)
                     | (c.known & ~c.value))
    return out


def _any(conds: Sequence[_Truth]) -> _Truth:
    """Kleene OR: true if any is true, else unknown if any is unknown."""
    out = conds[0]
    for c in conds[1:]:
        out = _Truth(out.value | c.value, (out.known & c.known) | out.value | c.value)
    return out


def _not(cond: _Truth) -> _Truth:
    return _Truth(~cond.value & cond.known, cond.known)


def _where(query: Query, src: _From) -> np.ndarray:
    """The rows (positions in the held table, ascending) that meet the WHERE of
    ``compiler.aggregation``: every cut, ``within``, the period limit (which the slice
    applies: it is one period range).

    First the slice of periods the query can read at all (the period limit, and the range
    each plain time cut spans), found by binary search; then every other condition over
    that slice. A condition that is one period range is met by every row of the slice (the
    slice lies within each such range), so it is not evaluated again; a time cut over
    several ranges is (a row between them is in the slice but fails it)."""
    (start, end), exact = _period_slice(query, src.held)
    rows = np.arange(start, end)
    conds = [_cut(src, rows, c) for i, c in enumerate(query.cuts) if i not in exact]
    for attribute, keys in query.within:
        col = src.coded(attribute)
        for v in keys:
            _check_key(v, col.column.type)
        wanted = [_rank(col, v) for v in keys]
        codes = col.codes[rows]
        # IN: a null matches nothing (false, not unknown), as DuckDB's IN list here.
        conds.append(_Truth(np.isin(codes, [r for r in wanted if r is not None]),
                            np.ones(len(rows), bool)))
    return rows[_all(conds).value] if conds else rows


def _period_slice(query: Query, held: Held) -> tuple[tuple[int, int], set[int]]:
    """(first, end) of the rows of ``held`` (sorted by period) in the narrowest period range
    that every plain (not inverted) time cut and the period limit confine the query to, and
    which cuts (by position) are exactly one such range — met by every row of the slice."""
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
    period = held.periods
    start = 0 if lo is None else int(np.searchsorted(period, lo, side="left"))
    end = len(period) if hi is None else int(np.searchsorted(period, hi, side="right"))
    return (start, max(end, start)), exact


def _check_key(value: Any, kind: pa.DataType) -> None:
    """Decline a key that is not of its column's type ``kind`` — an integer for an integer
    column, a string for a text column (the SQL engine would cast, and decide what the
    comparison means) — or that the type cannot hold (an integer out of its range)."""
    if isinstance(value, str) and pa.types.is_string(kind):
        return
    if isinstance(value, int) and not isinstance(value, bool) and pa.types.is_integer(kind):
        bits = kind.bit_width
        low, high = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
                     if pa.types.is_signed_integer(kind) else (0, (1 << bits) - 1))
        if low <= value <= high:
            return
    raise _Declined


def _rank(col: _Coded, value: Any) -> int | None:
    """The code of ``value`` in ``col``, None if no row holds it."""
    at = bisect.bisect_left(col.values, value)
    return at if at < len(col.values) and col.values[at] == value else None


def _compare_one(col: _Coded, rows: np.ndarray, op: str, value: Any) -> _Truth:
    """``column op value`` over ``rows``, on the codes (see :class:`_Coded`)."""
    if not col.ordered:
        raise _Declined
    _check_key(value, col.column.type)
    codes = col.codes[rows]
    known = codes >= 0
    below = bisect.bisect_left(col.values, value)  # codes of values < value
    upto = bisect.bisect_right(col.values, value)  # codes of values <= value
    if op == "=":
        value_ = codes == below if upto > below else np.zeros(len(rows), bool)
    elif op == ">=":
        value_ = codes >= below
    elif op == ">":
        value_ = codes >= upto
    elif op == "<=":
        value_ = known & (codes < upto)
    else:  # "<"
        value_ = known & (codes < below)
    return _Truth(value_, known)


def _cut(src: _From, rows: np.ndarray, cut: CutPart) -> _Truth:
    """``compiler.cut_condition``: a time cut on the period column when every path is a
    well-formed period prefix, else conditions on the level keys; negated if inverted."""
    cond = _period(src, rows, cut)
    if cond is None:
        cond = _generic(src, rows, cut)
    return _not(cond) if cut.invert else cond


def _period(src: _From, rows: np.ndarray, cut: CutPart) -> _Truth | None:
    """``compiler._period_condition``."""
    if not cut.dimension.is_time:
        return None
    cube = src.cube
    col = src.own(compiler.fact_period_column(cube))

    def cmp(op: str, v: int) -> _Truth:
        return _compare_one(col, rows, op, v)

    if cut.kind in ("point", "set"):
        spans = [period_range(cube, cut.hierarchy, p) for p in cut.paths]
        if not spans or any(s is None for s in spans):
            return None
        return _any([cmp("=", lo) if lo == hi else _all([cmp(">=", lo), cmp("<=", hi)])
                     for lo, hi in (s for s in spans if s is not None)])
    parts = []
    if cut.from_path is not None:
        low = period_range(cube, cut.hierarchy, cut.from_path)
        if low is None:
            return None
        parts.append(cmp(">=", low[0]))
    if cut.to_path is not None:
        high = period_range(cube, cut.hierarchy, cut.to_path)
        if high is None:
            return None
        parts.append(cmp("<=", high[1]))
    if not parts:
        raise _Declined
    return _all(parts)


def _generic(src: _From, rows: np.ndarray, cut: CutPart) -> _Truth:
    """``compiler._generic_condition``: conditions on the level keys."""
    levels = cut.hierarchy.levels

    def key(i: int) -> _Coded:
        return src.coded(levels[i].key)

    def path_condition(path: Sequence[Any]) -> _Truth:
        if not path:
            raise _Declined
        return _all([_compare_one(key(i), rows, "=", v) for i, v in enumerate(path)])

    if cut.kind == "point":
        return path_condition(cut.paths[0])
    if cut.kind == "set":
        if not cut.paths:
            raise _Declined
        return _any([path_condition(p) for p in cut.paths])
    parts = []
    if cut.from_path is not None:
        parts.append(_compare(cut.from_path, key, rows, ">="))
    if cut.to_path is not None:
        parts.append(_compare(cut.to_path, key, rows, "<="))
    if not parts:
        raise _Declined
    return _all(parts)


def _compare(path: Sequence[Any], key: Callable[[int], _Coded], rows: np.ndarray,
             op: str) -> _Truth:
    """``compiler._compare``: the row's path ``op`` ``path``, lexicographically over the
    levels of ``path``, written out as the SQL is (so nulls propagate the same way)."""
    if not path:
        raise _Declined
    cols = [key(i) for i in range(len(path))]
    strict = ">" if op == ">=" else "<"
    cond = _compare_one(cols[-1], rows, op, path[-1])
    for i in range(len(cols) - 2, -1, -1):
        cond = _any([_compare_one(cols[i], rows, strict, path[i]),
                     _all([_compare_one(cols[i], rows, "=", path[i]), cond])])
    if len(cols) > 1:
        cond = _all([_compare_one(cols[0], rows, op, path[0]), cond])
    return cond
