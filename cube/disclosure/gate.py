"""The one disclosure gate. Every public output — API responses, exports, maps, CLI — calls
:class:`Gate`; nothing else turns raw cells into something that may leave the process.

The gate: checks the grammar limits (rules.py); runs the query raw and perturbs the cells
with numpy (protect.py) — a paged query, or one that orders or filters on published values,
from its complete raw cells, fetched bounded, then filtered, sorted and paged after cells
published as zero are dropped — or, for top-N and for such queries over too many cells to
fetch, runs the protected SQL (sql_path.py), one statement that also brings back the raw
summary columns for the gate to protect; and wraps the outcome in a
:class:`ProtectedResult`, a type that refuses to hold any internal column. Exports stream
the same SQL (:meth:`Gate.stream`), so a cell has the same value everywhere.

A gate is made for one warehouse and refuses it unless its p-table — digest and rows — is
the one model.json describes (:meth:`Gate.for_warehouse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from cube import sql as compiler
from cube.disclosure import groups
from cube.disclosure.protect import has_withheld_flag, protect_table, withheld_column
from cube.disclosure.ptable import PTable
from cube.disclosure.rules import Protection, check_query
from cube.disclosure.sql_path import PTABLE, protected_stage
from cube.errors import ArgumentError, ConfigError
from cube.model import Attribute, Model
from cube.query import Query, describe_cuts, drilldown_levels
from cube.raw import summary_of

if TYPE_CHECKING:
    from cube.engine import Engine
    from cube.raw import RawCube, RawResult

METHOD = "cell key method (ABS / ONS Census 2021)"


@dataclass(frozen=True)
class DisclosureReport:
    """What was done to the numbers, in words a user can read."""

    method: str
    ptable: str
    parameters: Mapping[str, Any]
    withheld: int
    notes: tuple[str, ...]
    #: For a custom-group query: how many published values are sums of protected
    #: predefined cells, and how many such cells were added up.
    summed_values: int = 0
    summed_cells: int = 0

    def to_json(self) -> dict[str, Any]:
        out = {"method": self.method, "ptable": self.ptable,
               "parameters": dict(self.parameters), "withheld_values": self.withheld,
               "notes": list(self.notes)}
        if self.summed_values:
            out["sums_of_published_cells"] = {"values": self.summed_values,
                                              "cells_added": self.summed_cells}
        return out


@dataclass(frozen=True)
class ProtectedResult:
    query: Query
    cells: pa.Table
    summary: Mapping[str, Any]
    total_cell_count: int
    report: DisclosureReport
    allowed: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        names = set(self.cells.column_names) | set(self.summary)
        internal = {n for n in names if n.startswith("__") and n != compiler.SPLIT}
        if internal or (self.allowed and not names <= self.allowed):
            bad = sorted(internal or names - self.allowed)
            raise AssertionError(f"protected result cannot carry columns {bad}")

    @property
    def aggregate_names(self) -> list[str]:
        return [a.name for a in self.query.aggregates]

    @property
    def attributes(self) -> list[str]:
        return [a.ref for a in self.query.cell_attributes]

    def to_json(self) -> dict[str, Any]:
        """The Cubes 1.1 /aggregate shape, plus statcube's ``period`` and ``disclosure``."""
        q = self.query
        out: dict[str, Any] = {
            "summary": dict(self.summary),
            "cells": self.cells.to_pylist(),
            "total_cell_count": self.total_cell_count,
            "aggregates": self.aggregate_names,
            "cell": describe_cuts([c for c in q.cuts if c.source is not None]),
            "levels": dict(drilldown_levels(q)),
            "attributes": self.attributes,
            "has_split": bool(q.split),
            "remainder": {},
        }
        if q.pagesize is not None:
            out["page"] = q.page
            out["page_size"] = q.pagesize
        if q.default_period:
            out["period"] = q.default_period
        out["disclosure"] = self.report.to_json()
        return out


class Gate:
    #: Paged queries with at most this many raw cells are protected and paged in numpy
    #: (fetching them all costs less than planning the protected SQL); larger ones are
    #: paged by the protected SQL in the database.
    NUMPY_PAGE_CELLS = 20_000
    #: How many queries known to exceed NUMPY_PAGE_CELLS are remembered.
    COMPILED_LARGE = 1024

    def __init__(self, model: Model, protection: Protection) -> None:
        self.model = model
        self.protection = protection
        self._large: set[tuple[Any, ...]] = set()

    @classmethod
    def for_warehouse(cls, model: Model, engine: Engine, meta: Mapping[str, Any]) -> Gate:
        """The gate for a warehouse, refusing one whose p-table is not the model's.

        Two checks, because the two paths read the p-table from two places: the digest the
        build recorded must equal the model's (numpy path: the table built from model.json),
        and the warehouse's own ``sdc_ptable`` rows must hold exactly the model's values
        (SQL path: the join). Either mismatch would publish different values for one cell.
        """
        protection = Protection.from_model(model)
        want = protection.ptable.digest
        built = meta.get("ptable_digest")
        if built != want:
            found = "no p-table digest" if built is None else f"p-table {str(built)[:12]}…"
            raise ConfigError(
                f"the warehouse records {found}, but model.json describes p-table "
                f"{want[:12]}…; rebuild the warehouse so the API and exports publish the same "
                "values")
        if not _stored_ptable_matches(engine, protection.ptable):
            raise ConfigError(
                f"the warehouse's {PTABLE} table does not hold the values of p-table "
                f"{want[:12]}… that its metadata names; rebuild the warehouse")
        return cls(model, protection)

    @property
    def k(self) -> int:
        return self.protection.k

    def _report(self, withheld: int, extra: tuple[str, ...] = (), summed: tuple[int, int] = (0, 0)
                ) -> DisclosureReport:
        p = self.protection
        params = p.ptable.params
        return DisclosureReport(
            method=METHOD,
            ptable=p.ptable.digest[:16],
            parameters=p.report_parameters(),
            withheld=withheld,
            notes=(
                f"Counts are adjusted by up to ±{params.D} to protect confidentiality; "
                f"no count of 1 to {params.js} is published.",
                "Each figure is adjusted on its own, so totals may not equal the sum of "
                "their parts.",
                f"Amount totals and means are withheld (null) where fewer than "
                f"{p.mean_threshold} are counted.",
                "Amount totals carry noise scaled to the largest single amount in the cell: "
                "a large share of it in small cells, a small one in large cells; a total "
                "dominated by one or two amounts is never published exactly.",
                "Cells adjusted to zero are left out, like empty cells.",
                *extra,
            ),
            summed_values=summed[0], summed_cells=summed[1],
        )

    def aggregate(self, raw: RawCube, query: Query) -> ProtectedResult:
        """The protected answer to ``query``: grammar limits, then the numpy path, or the
        SQL path when values must be known in SQL (order, filters or top-N on values)."""
        check_query(query)
        if not groups.is_predefined(query):
            return self._custom(raw, query)
        if not (query.drilldown or query.split):
            # Without a drilldown there are no cells to order, filter or page: the summary.
            return self.publish(raw.aggregate(query))
        # Paging must happen after protection too: cells published as zero are dropped, so
        # a raw page (and a raw total) would reveal how many were.
        if not query.needs_measure_values_in_sql and query.pagesize is None:
            return self.publish(raw.lean(query))
        if query.top is None:
            done = self._in_numpy(raw, query)
            if done is not None:
                return done
        p = self.protection
        # One statement: protected values plus window totals of the raw columns over every
        # cell, computed before the zero-dropping condition, filters, top-N and paging (so
        # the summary is the total of all records, not of the cells shown). Raw columns come
        # back to this function only, which protects the summary and drops every internal
        # column. Compiled SQL is cached by RawCube.
        table = raw.run("protected+totals", query, lambda q: compiler.finish(
            q, p.k, protected_stage(p), keep_raw=True, totals=True))
        if table.num_rows:
            first = table.slice(0, 1)
            summary_raw = pa.table({name: first.column(compiler.ALL + name)
                                    for name, _ in compiler.raw_rollup(query.cube)})
            total = first.column(compiler.TOTAL)[0].as_py() \
                if query.pagesize is not None else table.num_rows
        else:  # nothing passed the filters, or a page past the end: the windows saw no rows
            summary_raw = raw.run("summary", query, lambda q: compiler.summary(q, p.k))
            total = 0 if query.pagesize is None else self._count_protected_cells(raw, query)
        public = [n for n in table.column_names
                  if not n.startswith(compiler.RAW_PREFIX) or n == compiler.SPLIT]
        return self._result(query, table.select(public), summary_raw, int(total))

    def _in_numpy(self, raw: RawCube, query: Query) -> ProtectedResult | None:
        """A paged query, or one that orders or filters on published values (not top-N),
        answered from its *complete* raw cells, fetched unpaged but bounded: protected in
        numpy, cells published as zero dropped, then filtered on published values, sorted
        (published values, then the attributes' total order, as the SQL orders them) and
        paged, the total counted after the drop and the filters — what the protected SQL
        gives, without planning it (about 5 ms on DuckDB). The summary covers every cell,
        as the SQL's window totals do.

        Withheld (null) values sort where the engine's SQL puts them: last on DuckDB, as
        the largest value on PostgreSQL (first when descending). None (the SQL path
        answers) when the query has more than :attr:`NUMPY_PAGE_CELLS` raw cells
        (remembered, so later pages of the same query go there directly)."""
        by_value = any(o.aggregate for o in query.order)
        # The raw fetch: unfiltered, unpaged, in the attributes' order (sorted here when
        # the order involves published values).
        whole = replace(query, page=None, pagesize=None, filters=(),
                        order=() if by_value else query.order)
        if whole.key in self._large:
            return None
        cap = self.NUMPY_PAGE_CELLS
        cells = raw.cells(whole, cap + 1)
        if cells.num_rows > cap:
            if len(self._large) >= self.COMPILED_LARGE:
                self._large.clear()
            self._large.add(whole.key)
            return None
        published, summary_t = self._protect_with_summary(
            query, cells, summary_of(query.cube, cells, self.k))
        for f in query.filters:
            published = published.filter(_COMPARE[f.op](published.column(f.aggregate.name),
                                                        f.value))
        if by_value:
            nulls_last = raw.engine.name == "duckdb"
            table = published
            keys: list[tuple[str, str]] = []
            for i, o in enumerate(query.order):
                order = "descending" if o.descending else "ascending"
                if o.aggregate is None:
                    keys.append((_ref(o.attribute), order))
                    continue
                column = published.column(o.aggregate.name)
                if column.null_count:
                    low = nulls_last and o.descending  # a sentinel where SQL puts nulls
                    column = pc.fill_null(pc.cast(column, pa.float64()),
                                          -np.inf if low else np.inf)
                table = table.append_column(f"__sort{i}", column)
                keys.append((f"__sort{i}", order))
            keys += [(a.ref, "ascending") for a in compiler.default_order(query)]
            if query.split:
                keys.append((compiler.SPLIT, "ascending"))
            published = published.take(pc.sort_indices(table, sort_keys=keys))
        page = published if query.pagesize is None else published.slice(
            (query.page or 0) * query.pagesize, query.pagesize)
        return self._summarised(query, page, summary_t, published.num_rows)

    def publish(self, raw: RawResult) -> ProtectedResult:
        """The numpy path after the query: raw cells (``RawCube.aggregate`` of a
        query that neither orders nor filters on values) to the protected result."""
        query = raw.query
        if query.pagesize is not None and (query.drilldown or query.split):
            raise AssertionError("paged queries take the SQL path (paging after protection)")
        cells, summary_t = self._protect_with_summary(query, raw.cells, raw.summary)
        return self._summarised(query, cells, summary_t, cells.num_rows)

    def _protect_with_summary(self, query: Query, cells: pa.Table, summary_raw: pa.Table
                              ) -> tuple[pa.Table, pa.Table]:
        """Protected cells (zeros dropped) and protected summary, in one pass of the
        arithmetic: the summary row is appended to the raw cells (attributes null) and
        kept whatever its count — half the fixed cost of two passes on small results."""
        keep = _keep(query)
        internal = [name for name, _ in compiler.raw_rollup(query.cube)]
        schema = cells.schema
        row = {name: pa.nulls(1, schema.field(name).type) for name in keep}
        row.update({name: summary_raw.column(name).cast(schema.field(name).type)
                    for name in internal})
        both = pa.concat_tables([cells.select([*keep, *internal]), pa.table(row)])
        protected = protect_table(both, query.aggregates, self.protection, keep,
                                  keep_last=True)
        last = protected.num_rows - 1
        return protected.slice(0, last), protected.slice(last).drop_columns(keep)

    def _result(self, query: Query, cells: pa.Table, summary_raw: pa.Table, total: int
                ) -> ProtectedResult:
        summary_t = protect_table(summary_raw, query.aggregates, self.protection, [],
                                  drop_zero=False)
        return self._summarised(query, cells, summary_t, total)

    def _summarised(self, query: Query, cells: pa.Table, summary_t: pa.Table, total: int
                    ) -> ProtectedResult:
        summary = {k: v[0] for k, v in summary_t.to_pydict().items()}
        return self._assemble(query, cells, summary, total)

    def _custom(self, raw: RawCube, query: Query) -> ProtectedResult:
        """A query with custom groups: every value a sum of protected predefined cells
        (groups.py); its summary too, unless the summary is itself a predefined cell."""
        p = self.protection
        keep = _keep(query)
        summed, added = 0, 0
        if query.drilldown or query.split:
            res = groups.aggregate(raw, query, p, keep)
            summed, added = res.summed_values, res.tiles
            cells, total = res.cells, res.cells.num_rows
            if query.pagesize is not None:
                cells = cells.slice((query.page or 0) * query.pagesize, query.pagesize)
            sq = groups.summary_query(query)
            if groups.is_predefined(sq):
                summary_t = protect_table(raw.aggregate(sq).summary, query.aggregates, p, [],
                                          drop_zero=False)
            else:
                whole = groups.aggregate(raw, sq, p, [])
                summary_t = whole.cells
                summed, added = summed + 1, added + whole.tiles
        else:
            cells = pa.table({})
            total = 0
            whole = groups.aggregate(raw, query, p, [])
            summary_t, summed, added = whole.cells, 1, whole.tiles
        summary = {k: v[0] for k, v in summary_t.to_pydict().items()}
        note = (f"{summed:,} value(s) here are custom groups: each is the sum of the "
                "published values of the predefined cells that make it up (never computed "
                "from records), so its adjustment is larger than a single cell's.",)
        return self._assemble(query, cells, summary, total, note, (summed, added))

    def _assemble(self, query: Query, cells: pa.Table, summary: dict[str, Any], total: int,
                  notes: tuple[str, ...] = (), summed: tuple[int, int] = (0, 0)
                  ) -> ProtectedResult:
        if _summary_adds_periods(query):
            for a in query.aggregates:
                if a.nonadditive:
                    summary[a.name] = None
                    if has_withheld_flag(a):
                        summary[withheld_column(a.name)] = True
            notes = (*notes, "The summary of a stock over several periods is not published: a "
                     "caseload cannot be added across months.")
        flagged = [a.name for a in query.aggregates if has_withheld_flag(a)]
        withheld = sum(pc.sum(cells.column(withheld_column(m))).as_py() or 0 for m in flagged
                       if withheld_column(m) in cells.column_names)
        allowed = frozenset(_keep(query)) | {a.name for a in query.aggregates} | {
            withheld_column(a.name) for a in query.aggregates}
        return ProtectedResult(query, cells, summary, total,
                               self._report(int(withheld), notes, summed), allowed)

    def _count_protected_cells(self, raw: RawCube, query: Query) -> int:
        """Total cells of a SQL-path query whose page lies past the end. Counted over the
        *protected* statement: with measure filters or top-N, counting raw cells would tell
        how many raw values pass the filter."""
        p = self.protection
        sub = compiler.finish(replace(query, page=None, pagesize=None), p.k,
                              protected_stage(p), keep_raw=False).subquery()
        return int(raw.scalar(sa.select(sa.func.count()).select_from(sub)) or 0)

    def stream(self, raw: RawCube, query: Query, batch_rows: int = 100_000
               ) -> pa.RecordBatchReader:
        """Protected cells as a record-batch stream (exports): the SQL path, same rules.

        The stream carries only attribute, aggregate, withheld-flag (and split) columns. It
        is the whole result, so a paged query is refused rather than silently unpaged.
        """
        check_query(query)
        if not groups.is_predefined(query):
            raise ArgumentError(
                "a protected stream holds predefined cells only (one member of one level per "
                "dimension); custom groups are sums of such cells: aggregate them instead",
                parameter="cut", value=" | ".join(c.to_string() for c in query.cuts))
        if query.pagesize is not None:
            raise ArgumentError("a protected stream is not paged: give no page or pagesize",
                                parameter="pagesize", value=str(query.pagesize))
        p = self.protection
        # Pre-aggregated on the fact table first: the same cells, several times sooner for a
        # whole grain's cells (cube/sql.py, _preaggregated).
        stmt = compiler.finish(query, p.k, protected_stage(p), keep_raw=False,
                               preaggregate=True)
        names = list(stmt.selected_columns.keys())
        internal = [n for n in names if n.startswith("__") and n != compiler.SPLIT]
        if internal:
            raise AssertionError(f"protected stream cannot carry {internal}")
        return raw.engine.stream(stmt, batch_rows)


def _stored_ptable_matches(engine: Engine, ptable: PTable) -> bool:
    """True if the warehouse's ``sdc_ptable`` holds exactly ``ptable``'s values."""
    t = sa.table(PTABLE, sa.column("pcv"), sa.column("ckey"), sa.column("pvalue"))
    try:
        rows = engine.execute(sa.select(t.c.pcv, t.c.ckey, t.c.pvalue))
    except Exception as exc:
        raise ConfigError(f"the warehouse has no readable {PTABLE} table") from exc
    want = ptable.values
    if rows.num_rows != want.size or any(rows.column(c).null_count for c in rows.column_names):
        return False
    pcv = rows.column("pcv").to_numpy(zero_copy_only=False)
    ckey = rows.column("ckey").to_numpy(zero_copy_only=False)
    got = np.full(want.shape, np.iinfo(np.int64).min, dtype=np.int64)
    inside = (pcv >= 0) & (pcv < want.shape[0]) & (ckey >= 0) & (ckey < want.shape[1])
    if not inside.all():
        return False
    got[pcv, ckey] = rows.column("pvalue").to_numpy(zero_copy_only=False)
    return bool(np.array_equal(got, want.astype(np.int64)))


#: A measure filter over a published column (nulls compare to null and are dropped, as
#: SQL's WHERE drops them).
_COMPARE: Mapping[str, Any] = {">": pc.greater, ">=": pc.greater_equal, "<": pc.less,
                               "<=": pc.less_equal, "=": pc.equal, "!=": pc.not_equal}


def _ref(attribute: Attribute | None) -> str:
    assert attribute is not None  # an order item names an aggregate or an attribute
    return attribute.ref


def _keep(query: Query) -> list[str]:
    """The public attribute columns of a query's cells (and the split flag)."""
    return [a.ref for a in query.cell_attributes] + ([compiler.SPLIT] if query.split else [])


def _summary_adds_periods(query: Query) -> bool:
    """True when a stock's summary would add several periods: time is drilled (each cell one
    period) but no cut pins a single period, so the total spans months."""
    tdim = query.cube.time_dimension
    if tdim is None or not any(a.nonadditive for a in query.aggregates):
        return False
    if query.drill_for(tdim.name) is None:
        return False  # the query rules pinned the whole query to one period
    return not any(
        c.dimension.name == tdim.name and c.kind == "point" and not c.invert
        and c.depth == len(c.hierarchy.levels) for c in query.cuts)

