"""Query → SQLAlchemy Core ``Select``: pure compilation, no engine, no I/O.

Every identifier comes from the model's physical mapping (cube/model.py ``Physical``); every
value from a request is a bound parameter (constants of the method — K, 0 — are written in).
Compilation is built in named stages:

1. ``_from``: the fact table — or the smallest rollup holding every attribute the query
   reads (``choose_rollup``; cube/rollups.py), which gives the same raw cells — joined to
   only the dimension tables the query reads. A
   dimension key the fact holds itself (OA, tenure, office…) is read from the fact, and a
   time cut becomes a condition on the fact's period column (``cut_condition``), so neither
   needs a join;
2. ``cut_condition``: cuts as conditions over level key columns (ranges compare
   lexicographically over the hierarchy path, as Cubes does);
3. ``aggregation``: group by every attribute of every drilled level, computing the *raw*
   internal columns (``__n`` count, ``__rk``/``__rk2`` key sums mod K, ``__<m>_sum`` and
   ``__<m>_max``) that only the disclosure gate may read — optionally with the summary as
   window totals over all cells (``__all…``);
4. ``finish``: on top of the aggregation, the per-aggregate values (raw here, or protected
   by cube/disclosure/sql_path.py), measure filters, top-N, deterministic order, the total
   cell count as a window in the same statement, and LIMIT/OFFSET.

No dialect switches: everything here is portable SQL that SQLAlchemy renders for DuckDB and
PostgreSQL alike (tests/golden/ holds both renderings of representative queries).

This module must not import the engine, the workspace, Flask or the disclosure package
(tests/test_sql.py checks its imports).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, FromClause, Select

from cube.model import Attribute, Cube, Dimension, Hierarchy, Level
from cube.query import CutPart, Query, period_range
from cube.rollups import Rollup, can_answer, geography_columns

#: Internal column names: never part of a public result.
N = "__n"
RK = "__rk"
RK2 = "__rk2"
TOTAL = "__total_cells"
#: Prefix of the window totals (the summary) that a paged raw query carries on every row.
ALL = "__all"
SPLIT = "__within_split__"


def sum_col(measure: str) -> str:
    return f"__{measure}_sum"


def max_col(measure: str) -> str:
    return f"__{measure}_max"


RAW_PREFIX = "__"


# --- Physical tables ------------------------------------------------------------------------

class _Tables:
    """Lightweight table clauses for one cube; columns are created on first use.

    With a ``rollup``, the fact is the rollup table: measures, the period column and kept
    dimension keys are read from it under the fact's column names, geography attributes
    from its own copies of them (no join to the geography)."""

    def __init__(self, cube: Cube, *, fact_keys: bool = True,
                 rollup: Rollup | None = None) -> None:
        self.cube = cube
        self.fact_keys = fact_keys
        self.rollup = rollup
        self.fact_table = rollup.table if rollup is not None else cube.physical.fact
        self._geo: dict[str, str] = dict(geography_columns(cube, rollup.geography)) \
            if rollup is not None and rollup.geography is not None else {}
        self._tables: dict[str, sa.TableClause] = {}

    def table(self, name: str) -> sa.TableClause:
        if name not in self._tables:
            self._tables[name] = sa.table(name)
        return self._tables[name]

    def col(self, table: str, column: str) -> ColumnElement[Any]:
        t = self.table(table)
        if column not in t.c:
            t.append_column(sa.column(column))
        return t.c[column]

    def attr(self, attribute: Attribute) -> ColumnElement[Any]:
        """The column of an attribute (see :func:`_source`)."""
        return self.col(*_source(self.cube, self.fact_table, self._geo, self.fact_keys,
                                 attribute))

    def table_of(self, attribute: Attribute) -> str:
        """The table :meth:`attr` reads the attribute from."""
        return str(self.attr(attribute).table.name)

    def fact(self, column: str) -> ColumnElement[Any]:
        return self.col(self.fact_table, column)

    def master(self, table: str) -> str:
        """Where a join's master side lives: the rollup, when it replaces the fact."""
        return self.fact_table if table == self.cube.physical.fact else table


def attribute_source(cube: Cube, rollup: Rollup | None, attribute: Attribute
                     ) -> tuple[str, str]:
    """(table, column) the statements read ``attribute`` from when ``rollup`` (None: the
    fact) is the source: the source's own column (a kept geography attribute, a dimension
    key the fact references), else the dimension table's (for cube/resident.py, which
    answers from an in-memory copy of a rollup and must read exactly what the SQL reads)."""
    geo = dict(geography_columns(cube, rollup.geography)) \
        if rollup is not None and rollup.geography is not None else {}
    return _source(cube, rollup.table if rollup is not None else cube.physical.fact, geo,
                   True, attribute)


def _source(cube: Cube, fact_table: str, geo: Mapping[str, str], fact_keys: bool,
            attribute: Attribute) -> tuple[str, str]:
    """(table, column) of an attribute, when ``fact_table`` (the fact or a rollup, whose own
    copies of geography attributes ``geo`` maps to their columns) is the source. A dimension
    key that the fact table references (the detail side of a join, e.g.
    ``dim_tenure.tenure_code``) is read from the fact's own foreign key column instead, so
    cutting on it needs no join. (The build guarantees every foreign key has its dimension
    row, so both give the same rows.) Plain names, no SQL objects: choosing a rollup for a
    query never seen before asks this of every attribute it reads."""
    if attribute.ref in geo:
        return fact_table, geo[attribute.ref]
    phys = cube.physical
    c = phys.column(attribute.ref)
    join = phys.join_for(c.table)
    if fact_keys and join is not None and join.detail.column == c.column \
            and join.master.table == phys.fact:
        return fact_table, join.master.column
    return c.table, c.column


def source_join(cube: Cube, table: str) -> tuple[str, str] | None:
    """(fact column, ``table``'s column) of the join from the fact (or a rollup, which
    keeps the fact's column names) straight to dimension table ``table``; None when
    ``table`` is joined through another table or not at all."""
    join = cube.physical.join_for(table)
    if join is None or join.master.table != cube.physical.fact:
        return None
    return join.master.column, join.detail.column


# --- Stage 1: FROM ------------------------------------------------------------------------------

def _from(t: _Tables, attributes: Sequence[Attribute]) -> FromClause:
    phys = t.cube.physical
    needed: list[str] = []
    for a in attributes:
        table = t.table_of(a)
        if table != t.fact_table and table not in needed:
            needed.append(table)
    frm: FromClause = t.table(t.fact_table)
    for table in needed:
        join = phys.join_for(table)
        if join is None:  # validated at model load; kept as a guard
            raise ValueError(f"no join to table {table!r}")
        frm = frm.join(t.table(table), t.col(t.master(join.master.table), join.master.column)
                       == t.col(join.detail.table, join.detail.column))
    return frm


def source_table(query: Query, *, summary: bool = False) -> str:
    """The table the query's cells (or summary) are aggregated from: a rollup or the fact
    (for ``statcube sql`` and tests)."""
    rollup = choose_rollup(query, summary=summary)
    return rollup.table if rollup is not None else query.cube.physical.fact


def choose_rollup(query: Query, *, summary: bool = False) -> Rollup | None:
    """The smallest rollup of ``query.rollups`` (they come smallest first) that holds every
    attribute the query reads — drilled, cut (except time cuts, which read the period
    column every rollup keeps), split and internal restrictions — or None: the fact."""
    if not query.rollups:
        return None
    t = _Tables(query.cube)
    attrs = ([] if summary else list(query.cell_attributes)) + _cut_attributes(t, query.cuts)
    if query.split and not summary:
        attrs += _cut_attributes(t, query.split)
    attrs += [a for a, _ in query.within]
    refs = [a.ref for a in attrs]
    return next((r for r in query.rollups if can_answer(query.cube, r, refs)), None)


# --- Stage 2: WHERE ------------------------------------------------------------------------------

def _path_condition(t: _Tables, levels: Sequence[Level], path: Sequence[Any]
                    ) -> ColumnElement[bool]:
    return sa.and_(*(t.attr(lvl.key) == sa.bindparam(None, v, unique=True)
                     for lvl, v in zip(levels, path, strict=False)))


def _compare(t: _Tables, levels: Sequence[Level], path: Sequence[Any], op: str
             ) -> ColumnElement[bool]:
    """``path-of-the-row op path`` compared lexicographically over the level keys, as Cubes
    does: ``>=`` for a range's lower bound, ``<=`` for its upper one. A shorter path compares
    on its levels only, so ``-2026`` includes every month of 2026.

    Written out as ``k1 > v1 OR (k1 = v1 AND (k2 > v2 OR (… kn >= vn)))`` — not as a row
    comparison, which DuckDB rewrites into an invalid BETWEEN over structs — and led by
    ``k1 >= v1`` so the coarsest key can be pushed down to a scan or an index."""
    keys = [t.attr(lvl.key) for lvl in levels[: len(path)]]

    def value(v: Any) -> Any:
        return sa.bindparam(None, v, unique=True)

    strict = operator.gt if op == ">=" else operator.lt
    weak = operator.ge if op == ">=" else operator.le
    cond: ColumnElement[bool] = weak(keys[-1], value(path[len(keys) - 1]))
    for i in range(len(keys) - 2, -1, -1):
        cond = sa.or_(strict(keys[i], value(path[i])),
                      sa.and_(keys[i] == value(path[i]), cond))
    if len(keys) > 1:
        cond = sa.and_(weak(keys[0], value(path[0])), cond)
    return cond


def _generic_condition(t: _Tables, cut: CutPart) -> ColumnElement[bool]:
    levels = cut.hierarchy.levels
    if cut.kind == "point":
        return _path_condition(t, levels, cut.paths[0])
    if cut.kind == "set":
        return sa.or_(*(_path_condition(t, levels, p) for p in cut.paths))
    parts = []
    if cut.from_path is not None:
        parts.append(_compare(t, levels, cut.from_path, ">="))
    if cut.to_path is not None:
        parts.append(_compare(t, levels, cut.to_path, "<="))
    return sa.and_(*parts)


def reads_period_only(cube: Cube, cut: CutPart) -> bool:
    """True if a cut is a time cut whose every path is a well-formed period prefix: then it
    becomes a condition on the fact's own period column (:func:`_period_condition`; and
    cube/resident.py's ``_period``), reading no attribute. Plain arithmetic, no SQL objects:
    choosing a rollup asks this of every cut."""
    if not cut.dimension.is_time:
        return False
    paths = list(cut.paths) if cut.kind in ("point", "set") \
        else [p for p in (cut.from_path, cut.to_path) if p is not None]
    return all(period_range(cube, cut.hierarchy, p) is not None for p in paths)


def _period_condition(t: _Tables, cut: CutPart) -> ColumnElement[bool] | None:
    """A time cut as a condition on the fact's own period column (no join to the time
    dimension, and a filter the engine can push into the scan of a period-sorted fact), or
    None if some path is not a well-formed period prefix."""
    if not (t.fact_keys and reads_period_only(t.cube, cut)):
        return None
    col = t.fact(fact_period_column(t.cube))

    def span(path: Sequence[Any]) -> tuple[int, int]:
        found = period_range(t.cube, cut.hierarchy, path)
        assert found is not None  # reads_period_only checked every path
        return found

    def value(v: int) -> Any:
        return sa.bindparam(None, v, unique=True)

    if cut.kind in ("point", "set"):
        return sa.or_(*(col == value(lo) if lo == hi else col.between(value(lo), value(hi))
                        for lo, hi in map(span, cut.paths)))
    parts = []
    if cut.from_path is not None:
        parts.append(col >= value(span(cut.from_path)[0]))
    if cut.to_path is not None:
        parts.append(col <= value(span(cut.to_path)[1]))
    return sa.and_(*parts)


def cut_condition(t: _Tables, cut: CutPart) -> ColumnElement[bool]:
    cond = _period_condition(t, cut)
    if cond is None:
        cond = _generic_condition(t, cut)
    return sa.not_(cond) if cut.invert else cond


def _cut_attributes(t: _Tables, cuts: Sequence[CutPart]) -> list[Attribute]:
    """The attributes the cuts' conditions read (none for a time cut on the period column)."""
    return [lvl.key for c in cuts if not (t.fact_keys and reads_period_only(t.cube, c))
            for lvl in c.levels()]


# --- Stage 3: aggregation -----------------------------------------------------------------------

def raw_rollup(cube: Cube) -> list[tuple[str, str]]:
    """The raw columns in order, each with how cells roll up into their total: ``sum``,
    ``sum_mod`` (key sums, mod K) or ``max``. Exact at any level — what lets a summary be
    computed from a complete set of cells instead of a second scan."""
    out = [(N, "sum"), (RK, "sum_mod"), (RK2, "sum_mod")]
    for m in cube.measures:
        if m.kind == "amount":
            out += [(sum_col(m.name), "sum"), (max_col(m.name), "max")]
    return out


def raw_columns(t: _Tables, k: int) -> list[ColumnElement[Any]]:
    phys = t.cube.physical
    count = phys.column(t.cube.count_measure.name).column
    # Constants of the method, not request values: written into the SQL, not bound.
    zero: ColumnElement[Any] = sa.literal_column("0")
    modulus: ColumnElement[Any] = sa.literal_column(str(int(k)))

    def total(fn: Any, column: str) -> ColumnElement[Any]:
        # An empty cell (a summary over no rows) is 0, not NULL.
        return sa.func.coalesce(fn(t.fact(column)), zero)

    cols: list[ColumnElement[Any]] = [
        sa.cast(total(sa.func.sum, count), sa.BigInteger).label(N),
        sa.cast(total(sa.func.sum, phys.record_key) % modulus, sa.Integer).label(RK),
        sa.cast(total(sa.func.sum, phys.magnitude_key) % modulus, sa.Integer).label(RK2),
    ]
    for m in t.cube.measures:
        if m.kind == "amount":
            cols.append(sa.cast(total(sa.func.sum, phys.column(m.name).column),
                                sa.BigInteger).label(sum_col(m.name)))
            cols.append(sa.cast(total(sa.func.max, phys.max_columns[m.name]),
                                sa.BigInteger).label(max_col(m.name)))
    return cols


def aggregation(query: Query, k: int, *, summary: bool = False,
                totals: bool = False, preaggregate: bool = False,
                omit: Collection[str] = ()) -> Select[Any]:
    """Stage 1-3: the raw aggregated cells (or the one summary row).

    ``totals`` adds the summary to every cell as window columns ``__all<raw column>`` over
    all the groups — evaluated after GROUP BY, so before any measure filter, top-N or
    LIMIT of stage 4 — and one statement answers cells, summary and total cell count.

    ``preaggregate`` (exports): see :func:`_preaggregated`; the same cells, sooner.
    ``omit``: drilled attributes (by reference) left out, along with any join only they
    need (see :func:`cells`)."""
    t = _Tables(query.cube, rollup=choose_rollup(query, summary=summary))
    if preaggregate and not summary and not totals:
        pre = _preaggregated(query, k, t)
        if pre is not None:
            return pre
    drill_attrs = [] if summary else [a for a in query.cell_attributes if a.ref not in omit]
    split_cond = None
    if query.split and not summary:
        split_cond = sa.and_(*(cut_condition(t, c) for c in query.split))
    touched = drill_attrs + _cut_attributes(t, query.cuts) + (
        _cut_attributes(t, query.split) if split_cond is not None else []) + [
        a for a, _ in query.within]
    frm = _from(t, touched)
    group = [t.attr(a) for a in drill_attrs]
    cols: list[ColumnElement[Any]] = [g.label(a.ref) for g, a in
                                      zip(group, drill_attrs, strict=True)]
    if split_cond is not None:
        split_col = sa.case((split_cond, sa.true()), else_=sa.false())
        cols.append(split_col.label(SPLIT))
        group.append(split_col)
    raw = raw_columns(t, k)
    if totals and not summary:
        modulus: ColumnElement[Any] = sa.literal_column(str(int(k)))
        for column, (name, how) in zip(list(raw), raw_rollup(query.cube), strict=True):
            fn = sa.func.max if how == "max" else sa.func.sum
            total: ColumnElement[Any] = fn(column.element).over()
            if how == "sum_mod":
                total = total % modulus
            raw.append(sa.cast(total, sa.BigInteger).label(ALL + name))
    stmt = sa.select(*cols, *raw).select_from(frm)
    conds = [cut_condition(t, c) for c in query.cuts]
    conds += [t.attr(a).in_(list(keys)) for a, keys in query.within]
    if query.period_limit is not None:
        conds.append(t.fact(fact_period_column(query.cube)) <= query.period_limit)
    if conds:
        stmt = stmt.where(*conds)
    if group:
        stmt = stmt.group_by(*group)
    return stmt


def _preaggregated(query: Query, k: int, t: _Tables) -> Select[Any] | None:
    """The cells aggregated in two steps: first on the fact table alone, by the fact's own
    columns (foreign keys and attributes it holds), then — over those few rows instead of
    every fact row — joined to the dimension tables and aggregated by the drilled
    attributes. Every raw column rolls up exactly (sums, key sums mod K, maxima), so the
    cells are the same; for a bulk export by output area the join and the grouping by a
    dozen text columns were most of the time. None when the query needs more than the plain
    form handles (a rollup, split, ``within``, a cut on a dimension table, or a dimension
    joined through another): the caller then uses the one-step aggregation."""
    phys = query.cube.physical
    if t.rollup is not None or query.split or query.within or not query.drilldown:
        return None
    if any(t.table_of(a) != t.fact_table for a in _cut_attributes(t, query.cuts)):
        return None
    fact = t.table(t.fact_table)
    keys: dict[str, ColumnElement[Any]] = {}  # fact column name -> fact column
    joins: dict[str, tuple[str, str]] = {}  # dimension table -> (fact column, its column)
    attrs: list[tuple[Attribute, str, str]] = []  # attribute, its table and column
    for a in query.cell_attributes:
        col = t.attr(a)
        table = str(col.table.name)
        if table == t.fact_table:
            keys[col.name] = col
            attrs.append((a, table, col.name))
            continue
        join = phys.join_for(table)
        if join is None or join.master.table != phys.fact:
            return None
        keys[join.master.column] = t.fact(join.master.column)
        joins[table] = (join.master.column, join.detail.column)
        attrs.append((a, table, col.name))
    count = phys.column(query.cube.count_measure.name).column
    inner: list[tuple[str, str, str]] = [(N, "sum", count), (RK, "sum", phys.record_key),
                                         (RK2, "sum", phys.magnitude_key)]
    for m in query.cube.measures:
        if m.kind == "amount":
            inner += [(sum_col(m.name), "sum", phys.column(m.name).column),
                      (max_col(m.name), "max", phys.max_columns[m.name])]
    stmt = sa.select(*(c.label(name) for name, c in keys.items()), *(
        (sa.func.max if how == "max" else sa.func.sum)(t.fact(column)).label(name)
        for name, how, column in inner)).select_from(fact)
    conds = [cut_condition(t, c) for c in query.cuts]
    if query.period_limit is not None:
        conds.append(t.fact(fact_period_column(query.cube)) <= query.period_limit)
    if conds:
        stmt = stmt.where(*conds)
    pre = stmt.group_by(*keys.values()).subquery("pre")
    dims = {name: sa.table(name, *(sa.column(c) for c in sorted(
        {col for a, tb, col in attrs if tb == name} | {joins[name][1]}))) for name in joins}
    frm: FromClause = pre
    for name, (fk, pk) in joins.items():
        frm = frm.join(dims[name], pre.c[fk] == dims[name].c[pk])

    def column(table: str, col: str) -> ColumnElement[Any]:
        return pre.c[col] if table == t.fact_table else dims[table].c[col]

    group = [column(tb, col) for _, tb, col in attrs]
    zero: ColumnElement[Any] = sa.literal_column("0")
    modulus: ColumnElement[Any] = sa.literal_column(str(int(k)))
    raw: list[ColumnElement[Any]] = []
    for name, how, _ in inner:
        total = sa.func.coalesce((sa.func.max if how == "max" else sa.func.sum)(pre.c[name]),
                                 zero)
        if name in (RK, RK2):
            raw.append(sa.cast(total % modulus, sa.Integer).label(name))
        else:
            raw.append(sa.cast(total, sa.BigInteger).label(name))
    return sa.select(*(g.label(a.ref) for g, (a, _, _) in zip(group, attrs, strict=True)),
                     *raw).select_from(frm).group_by(*group)


# --- Stage 4: values, filters, order, paging ------------------------------------------------------

#: Given the aggregation as a subquery, return (FROM to select from, {aggregate: value
#: expression}, extra public columns). The raw implementation is below; the protected one
#: lives in cube/disclosure/sql_path.py.
class StageOutput(NamedTuple):
    """What a value stage adds over the aggregation: the FROM to select from, a value
    expression per aggregate, extra public columns, and an optional condition a cell must
    meet to be a cell at all (the protected stage drops cells published as zero, which must
    look exactly like empty cells). ``keep`` applies before filters, windows and paging."""

    frm: FromClause
    values: Mapping[str, ColumnElement[Any]]
    extra: Sequence[Any] = ()
    keep: ColumnElement[bool] | None = None
    #: The subquery holding the aggregation's columns when the stage wraps it in layers
    #: (None: the aggregation subquery itself).
    source: sa.Subquery | None = None


ValueStage = Callable[[Query, sa.Subquery], StageOutput]


def raw_values(query: Query, sub: sa.Subquery) -> StageOutput:
    values: dict[str, ColumnElement[Any]] = {}
    for a in query.aggregates:
        if a.measure.kind == "count":
            values[a.name] = sub.c[N]
        elif a.function == "sum":
            values[a.name] = sub.c[sum_col(a.measure.name)]
        else:
            values[a.name] = sa.cast(sub.c[sum_col(a.measure.name)], sa.Double) / sa.func.nullif(
                sub.c[N], 0)
    return StageOutput(sub, values)


_OPS: Mapping[str, Callable[[Any, Any], Any]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def default_order(query: Query) -> list[Attribute]:
    """Natural order of the drilled levels, then keys: always total and deterministic."""
    out: list[Attribute] = []
    for d in query.drilldown:
        for lvl in d.levels:
            for a in (lvl.order_attribute, lvl.key):
                if a not in out:
                    out.append(a)
    return out


def finish(query: Query, k: int, values: ValueStage = raw_values, *,
           keep_raw: bool = True, totals: bool = False,
           preaggregate: bool = False) -> Select[Any]:
    """Stage 4 over the aggregation. ``keep_raw`` keeps the internal columns (raw path);
    ``totals`` (raw path only) carries the summary on every row; ``preaggregate`` aggregates
    on the fact table first (see :func:`aggregation`)."""
    if totals and not keep_raw:
        raise ValueError("window totals are raw columns")
    sub = aggregation(query, k, totals=totals, preaggregate=preaggregate).subquery("cells")
    stage = values(query, sub)
    frm, vals, extra = stage.frm, stage.values, stage.extra
    # A stage may compute its values in layers of subqueries over ``sub``; its outermost
    # layer then carries the attribute and raw columns too.
    raw_names = {c.name for c in sub.c if c.name.startswith(RAW_PREFIX) and c.name != SPLIT}
    sub = stage.source if stage.source is not None else sub
    attr_cols = [sub.c[a.ref] for a in query.cell_attributes]
    if query.split:
        attr_cols.append(sub.c[SPLIT])
    value_cols = [v.label(name) for name, v in vals.items()]
    raw = [c for c in sub.c if c.name in raw_names] if keep_raw else []

    # Order: explicit items, then the natural order of the drilled levels (total, so paging
    # is deterministic). Each item is (expression, name of the selected column, descending).
    order: list[tuple[ColumnElement[Any], str, bool]] = []
    for o in query.order:
        if o.aggregate is not None:
            order.append((vals[o.aggregate.name], o.aggregate.name, o.descending))
        else:
            assert o.attribute is not None
            order.append((sub.c[o.attribute.ref], o.attribute.ref, o.descending))
    order += [(sub.c[a.ref], a.ref, False) for a in default_order(query)]
    if query.split:
        order.append((sub.c[SPLIT], SPLIT, False))

    def by(items: Sequence[tuple[ColumnElement[Any], str, bool]]) -> list[Any]:
        return [e.desc() if desc else e.asc() for e, _, desc in items]

    stmt = sa.select(*attr_cols, *value_cols, *extra, *raw).select_from(frm)
    if not query.drilldown and not query.split:
        # As in Cubes: without a drilldown there are no cells, only the summary.
        stmt = stmt.where(sa.false())
    if stage.keep is not None:
        stmt = stmt.where(stage.keep)
    if query.filters:
        stmt = stmt.where(*(_OPS[f.op](vals[f.aggregate.name], f.value) for f in query.filters))
    if query.top is not None:
        # Top-N: rank within the parent level of the ``per`` drilldown (or overall), largest
        # first, ties broken by the same total order; keep ranks 1..N.
        partition = []
        if query.top.per is not None:
            partition = [sub.c[lvl.key.ref] for lvl in query.top.per.levels[:-1]]
        rank = sa.func.row_number().over(
            partition_by=partition or None,
            order_by=[vals[query.top.aggregate.name].desc().nulls_last(), *by(order)],
        ).label("__rank")
        ranked = stmt.add_columns(rank).subquery("ranked")
        stmt = sa.select(*(c for c in ranked.c if c.name != "__rank")).where(
            ranked.c["__rank"] <= query.top.n)
        order = [(ranked.c[name], name, desc) for _, name, desc in order]
    if query.pagesize is not None:
        stmt = stmt.add_columns(sa.func.count().over().label(TOTAL))
    stmt = stmt.order_by(*by(order))
    if query.pagesize is not None:
        stmt = stmt.limit(query.pagesize).offset((query.page or 0) * query.pagesize)
    return stmt


class Lookup(NamedTuple):
    """Drilled attributes of a dimension table that can be read from a copy of that table,
    by the key the fact (or rollup) holds, instead of joining it."""

    table: str
    #: The drilled attribute read from the fact's own key column, and the table's column
    #: it matches.
    key: Attribute
    key_column: str
    #: The other drilled attributes of the table, each with its column.
    attributes: tuple[tuple[Attribute, str], ...]


def lookups(query: Query) -> dict[str, Lookup]:
    """Per dimension table, what :func:`cells` may leave to a lookup: tables joined straight
    from the fact on their key, whose key attribute is drilled (so read from the fact's own
    key column) and which hold other drilled attributes (labels, order columns)."""
    t = _Tables(query.cube, rollup=choose_rollup(query))
    phys = query.cube.physical
    drilled = query.cell_attributes
    out: dict[str, Lookup] = {}
    for a in drilled:
        table = t.table_of(a)
        if table == t.fact_table or table in out:
            continue
        join = phys.join_for(table)
        if join is None or join.master.table != phys.fact:
            continue
        key = next((b for b in drilled if phys.column(b.ref).table == table
                    and phys.column(b.ref).column == join.detail.column
                    and t.table_of(b) == t.fact_table), None)
        if key is None:
            continue
        others = tuple((b, phys.column(b.ref).column) for b in drilled
                       if b != key and t.table_of(b) == table)
        if others:
            out[table] = Lookup(table, key, join.detail.column, others)
    return out


def cell_order(query: Query) -> list[tuple[str, bool]]:
    """The total order of :func:`finish` for a query that orders on attributes only, as
    (output column, descending), each column once: explicit items, the drilled levels'
    natural order, the split flag."""
    items: list[tuple[str, bool]] = [(o.ref if o.attribute is None else o.attribute.ref,
                                      o.descending) for o in query.order]
    items += [(a.ref, False) for a in default_order(query)]
    if query.split:
        items.append((SPLIT, False))
    seen: set[str] = set()
    out: list[tuple[str, bool]] = []
    for name, desc in items:
        if name not in seen:  # a later repeat of a key never changes the order
            seen.add(name)
            out.append((name, desc))
    return out


def cells(query: Query, k: int, limit: int | None = None,
          lookup: Collection[str] = ()) -> Select[Any]:
    """The raw cells alone — drilled attributes and internal raw columns, in the total order
    of :func:`finish` — as one flat ``GROUP BY … ORDER BY`` (``LIMIT limit``): what the
    numpy path of the disclosure gate reads, and nothing more.

    ``lookup`` names dimension tables (of :func:`lookups`) whose non-key attributes are left
    out, with their join: the caller reads them from a copy of the table and puts the cells
    in :func:`cell_order` itself, since the SQL cannot order on columns it does not read
    (then there is no ORDER BY; with ``limit``, the rows are any ``limit`` of them).

    Why not :func:`finish`: its outer layer (per-aggregate raw values over a subquery) is
    dropped by the gate anyway, and DuckDB spends most of a small query planning and binding
    — the flat statement ran a local-authority × category rollup query in 1.2 ms instead of
    2.0 ms, and 0.6 ms less again without the join to the category's table. Same rows (no
    measure filters, top-N or paging here)."""
    if query.filters or query.top is not None or query.pagesize is not None or any(
            o.aggregate is not None for o in query.order):
        raise ValueError("cells() is for queries that order and filter on attributes only")
    plan = lookups(query)
    omit = {a.ref for table in lookup if table in plan for a, _ in plan[table].attributes}
    stmt = aggregation(query, k, omit=omit)
    if not query.drilldown and not query.split:
        stmt = stmt.where(sa.false())
    if not omit:
        selected = {c.name: c for c in stmt.selected_columns}
        order = [sa.literal_column(_quoted(name), selected[name].type) for name, _ in
                 cell_order(query)]
        stmt = stmt.order_by(*(col.desc() if desc else col.asc() for col, (_, desc) in
                               zip(order, cell_order(query), strict=True)))
    return stmt if limit is None else stmt.limit(limit)


def _quoted(name: str) -> str:
    """An output column's label as a quoted identifier (ORDER BY may name output columns
    on every engine statcube serves)."""
    return '"' + name.replace('"', '""') + '"'


def summary(query: Query, k: int) -> Select[Any]:
    return aggregation(query, k, summary=True)


def fact_period_column(cube: Cube) -> str:
    """The fact column that joins to the time dimension (month_id or quarter_id)."""
    tdim = cube.time_dimension
    if tdim is None:
        raise ValueError(f"cube {cube.name!r} has no time dimension")
    table = cube.physical.column(tdim.levels[0].key.ref).table
    join = cube.physical.join_for(table)
    if join is None:
        raise ValueError(f"no join to {table!r}")
    return join.detail.column


# --- Members and cell details -----------------------------------------------------------------

@dataclass(frozen=True)
class MembersQuery:
    cube: Cube
    dimension: Dimension
    hierarchy: Hierarchy
    depth: int
    cuts: tuple[CutPart, ...] = ()
    page: int | None = None
    pagesize: int | None = None
    period_limit: int | None = None
    #: Attribute refs to sort by first (descending flag), before the hierarchy's own order.
    order: tuple[tuple[str, bool], ...] = ()

    @property
    def levels(self) -> tuple[Level, ...]:
        return self.hierarchy.levels[: self.depth]


def members(mq: MembersQuery) -> Select[Any]:
    """Distinct members of a level (with their ancestors), from the dimension table only."""
    t = _Tables(mq.cube, fact_keys=False)
    attrs = [a for lvl in mq.levels for a in lvl.attributes]
    tables = {mq.cube.physical.column(a.ref).table for a in attrs}
    if len(tables) != 1:
        raise ValueError("a dimension's attributes must live in one table")
    cols = [t.attr(a).label(a.ref) for a in attrs]
    stmt = sa.select(*cols).distinct()
    conds = [cut_condition(t, c) for c in mq.cuts if c.dimension.name == mq.dimension.name]
    if mq.period_limit is not None and mq.dimension.is_time:
        table = mq.cube.physical.column(mq.dimension.levels[0].key.ref).table
        conds.append(t.col(table, fact_period_column(mq.cube)) <= mq.period_limit)
    if conds:
        stmt = stmt.where(*conds)
    inner = stmt.subquery("members")
    keys: list[Any] = [inner.c[r].desc() if desc else inner.c[r] for r, desc in mq.order]
    seen = {r for r, _ in mq.order}
    for lvl in mq.levels:  # then the hierarchy's order, so paging is stable
        for a in (lvl.order_attribute, lvl.key):
            if a.ref not in seen:
                seen.add(a.ref)
                keys.append(inner.c[a.ref])
    out = sa.select(*inner.c).order_by(*keys)
    if mq.pagesize is not None:
        out = out.add_columns(sa.func.count().over().label(TOTAL))
        out = out.limit(mq.pagesize).offset((mq.page or 0) * mq.pagesize)
    return out


def tiles(cube: Cube, dimension: Dimension, hierarchy: Hierarchy, outer: Sequence[Level],
          cuts: Sequence[CutPart], period_limit: int | None = None) -> Select[Any]:
    """The tiling of a custom group on one dimension: the coarsest members of ``hierarchy``
    that lie wholly inside the selection ``cuts`` (all on ``dimension``, in any of its
    hierarchies), from the dimension table alone.

    ``outer`` are the drilled levels of the query (coarse to fine, possibly of another
    hierarchy): each tile must then lie wholly inside one drilled member, whose key path is
    returned as ``__o0`` …; a drilled member wholly inside the selection is its own tile
    (``__tile_depth`` -1). Otherwise ``__tile_depth`` d and ``__k0`` … give the tile's path
    in ``hierarchy`` (None below d; depth 0 is the whole dimension). "Wholly inside" is
    decided row by row, so ``hierarchy`` must reach the table's grain (the caller's job).
    Time members after ``period_limit`` do not exist (embargo).
    """
    t = _Tables(cube, fact_keys=False)
    levels = hierarchy.levels
    keys = [t.attr(lvl.key) for lvl in levels]
    okeys = [t.attr(lvl.key) for lvl in outer]
    inside: ColumnElement[Any] = sa.case(
        (sa.and_(*(cut_condition(t, c) for c in cuts)), 1), else_=0) if cuts else \
        sa.literal_column("1")
    cols: list[Any] = [k.label(f"__k{i}") for i, k in enumerate(keys)]
    cols += [k.label(f"__o{i}") for i, k in enumerate(okeys)]
    cols.append(inside.label("__inside"))
    start = 1 if okeys else 0
    if okeys:
        cols.append(sa.func.min(inside).over(partition_by=okeys).label("__whole_outer"))
    for depth in range(start, len(levels)):
        part = keys[:depth] or None
        whole: ColumnElement[Any] = sa.func.min(inside).over(partition_by=part)
        # ... and inside one drilled member: every outer key constant over the member.
        one = [sa.func.min(o).over(partition_by=part) == sa.func.max(o).over(partition_by=part)
               for o in okeys]
        if one:
            whole = sa.case((sa.and_(*one), whole), else_=0)
        cols.append(whole.label(f"__whole{depth}"))
    stmt = sa.select(*cols)
    if period_limit is not None and dimension.is_time:
        table = cube.physical.column(dimension.levels[0].key.ref).table
        stmt = stmt.where(t.col(table, fact_period_column(cube)) <= period_limit)
    rows = stmt.subquery("rows")
    whens = [(rows.c[f"__whole{d}"] == 1, d) for d in range(start, len(levels))]
    if okeys:
        whens.insert(0, (rows.c["__whole_outer"] == 1, -1))
    depth_expr: ColumnElement[Any] = sa.case(*whens, else_=len(levels)) if whens else \
        sa.literal(len(levels))
    picked = sa.select(depth_expr.label("__tile_depth"),
                       *(rows.c[f"__k{i}"] for i in range(len(levels))),
                       *(rows.c[f"__o{i}"] for i in range(len(okeys))),
                       ).where(rows.c["__inside"] == 1).subquery("picked")
    return sa.select(picked.c["__tile_depth"], *(
        sa.case((picked.c["__tile_depth"] > i, picked.c[f"__k{i}"]), else_=sa.null())
        .label(f"__k{i}") for i in range(len(levels))),
        *(picked.c[f"__o{i}"] for i in range(len(okeys)))).distinct()


def path_details(cube: Cube, cut: CutPart, path: Sequence[Any],
                 period_limit: int | None = None) -> Select[Any]:
    """The attributes of each level of a cut path (for /cell), from the dimension table."""
    t = _Tables(cube, fact_keys=False)
    levels = cut.hierarchy.levels[: len(path)]
    cols = [t.attr(a).label(a.ref) for lvl in levels for a in lvl.attributes]
    stmt = sa.select(*cols).where(_path_condition(t, levels, path))
    if period_limit is not None and cut.dimension.is_time:
        table = cube.physical.column(cut.dimension.levels[0].key.ref).table
        stmt = stmt.where(t.col(table, fact_period_column(cube)) <= period_limit)
    return stmt.limit(1)


def period_bounds(cube: Cube, period_limit: int | None = None) -> Select[Any]:
    """The newest (visible) period with data: for defaulting stocks to one period."""
    t = _Tables(cube)
    col = t.fact(fact_period_column(cube))
    stmt = sa.select(sa.func.max(col).label("latest"))
    return stmt if period_limit is None else stmt.where(col <= period_limit)


def to_sql(stmt: Select[Any], dialect: sa.engine.Dialect) -> str:
    """SQL text with values inlined: for the admin-only `statcube sql` and golden tests.

    Never executed: the engine always runs statements with bound parameters."""
    text = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    if dialect.paramstyle in ("format", "pyformat"):
        text = text.replace("%%", "%")  # the driver's escaping, meaningless once inlined
    return text


def member_lookup(cube: Cube, dimension: Dimension, hierarchy: Hierarchy, level: Level,
                  keys: Sequence[Any]) -> Select[Any]:
    """The members of ``level`` whose keys are ``keys``, with every attribute of their
    ancestors in ``hierarchy``, from the dimension table alone (no values). For APIs that
    name a member by its own key (Stat-Xplore value ids: an LA by its code), when a cut
    needs its whole path. Not for time: a month key alone names no single period."""
    t = _Tables(cube, fact_keys=False)
    levels = hierarchy.levels[: hierarchy.level_index(level.name) + 1]
    attrs = [a for lvl in levels for a in lvl.attributes]
    bound: sa.BindParameter[Any] = sa.bindparam("keys", list(keys), expanding=True)
    return sa.select(*(t.attr(a).label(a.ref) for a in attrs)).distinct().where(
        t.attr(level.key).in_(bound))
