"""Cubes as SQL tables, and one ``SELECT`` over a cube translated into the gate's Query.

A cube's table has one column per level attribute (codes and names at every level of every
hierarchy, the time levels) and one per aggregate. A ``SELECT`` is never run against rows:

- grouped attributes become a drilldown per dimension (the deepest grouped level, in a
  hierarchy that holds every level the statement names);
- ``WHERE`` on attributes (``=``, ``<>``, ``IN``, ``BETWEEN``, ``<``, ``>``, ``LIKE``, ``AND``,
  and ``OR``/``NOT`` inside one dimension) selects members of that dimension: one member is a
  point cut, several a set cut — a custom group, which the gate publishes as a sum of
  protected predefined cells (cube/disclosure/groups.py);
- ``MEASURE(agg)``, ``SUM(agg)`` (sum aggregates), ``AVG(agg)`` (means) or the bare aggregate
  name select aggregates; ``HAVING agg > n``, ``ORDER BY``, ``LIMIT``/``OFFSET`` map to the
  Request's having, order and paging.

The Request is resolved by :meth:`CubeBrowser.query` and answered by
:meth:`CubeBrowser.aggregate_query` — the HTTP API's path — so a value here equals the API's
value for the same cell, and the Query's own rules (stocks never added over months, the
disclosure rules) apply unchanged. Joins, subqueries, aggregates of expressions or of
aggregates, ``COUNT``, window functions and raw rows are refused with a SQLSTATE and a
message naming the supported form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from cube.disclosure.rules import check_query
from cube.errors import (
    DisclosureRuleError,
    NonAdditiveError,
    NotFoundError,
    StatcubeError,
    TooLargeError,
    UnauthorizedError,
    UserError,
    suggest,
)
from cube.grammar import PointCut, SetCut, format_cut
from cube.model import Aggregate, Attribute, Cube, Dimension, Hierarchy, Level
from cube.query import MAX_PAGESIZE, Request
from cube.workspace import CubeBrowser

SUPPORTED = ("SELECT <attributes>, MEASURE(<aggregate>) | SUM(<aggregate>) FROM <cube> "
             "[WHERE <attribute> =|IN|BETWEEN|<|> … AND …] [GROUP BY <attributes>] "
             "[HAVING <aggregate> > n] [ORDER BY …] [LIMIT n [OFFSET m]]")


class SqlError(UserError):
    """A statement the SQL surface refuses or cannot answer. Message safe for clients;
    ``sqlstate`` is the PostgreSQL error code sent with it."""

    type = "sql_error"

    def __init__(self, message: str, sqlstate: str = "0A000", *, hint: str | None = None
                 ) -> None:
        super().__init__(message, hint=hint)
        self.sqlstate = sqlstate


def unsupported(what: str) -> SqlError:
    return SqlError(f"{what} is not supported by statcube's SQL API", "0A000",
                    hint=f"supported: {SUPPORTED}")


def sqlstate_of(exc: StatcubeError) -> str:
    """The SQLSTATE for a core error (the HTTP status's PostgreSQL counterpart)."""
    if isinstance(exc, SqlError):
        return exc.sqlstate
    if isinstance(exc, NonAdditiveError):
        return "0A000"      # feature_not_supported: a stock is not added over months
    if isinstance(exc, DisclosureRuleError):
        return "42501"      # insufficient_privilege
    if isinstance(exc, TooLargeError):
        return "54000"      # program_limit_exceeded
    if isinstance(exc, UnauthorizedError):
        return "28P01"      # invalid_password
    if isinstance(exc, NotFoundError):
        return "42P01"      # undefined_table
    if isinstance(exc, UserError):
        return "22023"      # invalid_parameter_value
    return "XX000"


# --- Tables -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a cube's table: an attribute (of ``level``) or an aggregate."""

    name: str
    type: str  # PostgreSQL type name: text, int8, float8
    description: str
    attribute: Attribute | None = None
    level: Level | None = None
    dimension: Dimension | None = None
    aggregate: Aggregate | None = None


@dataclass(frozen=True)
class CubeTable:
    cube: Cube
    columns: tuple[Column, ...]

    @property
    def name(self) -> str:
        return self.cube.name

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        hint = suggest(name, [c.name for c in self.columns])
        raise SqlError(f'column "{name}" does not exist in cube table {self.name}', "42703",
                       hint=hint or "columns: " + ", ".join(c.name for c in self.columns))


def cube_table(cube: Cube) -> CubeTable:
    """The table of a cube. Attribute columns are named by the attribute (``region_code``),
    or ``dimension_attribute`` where two dimensions share an attribute name."""
    attrs = [(d, lvl, a) for d in cube.dimensions for lvl in d.levels for a in lvl.attributes]
    counts: dict[str, int] = {}
    for _, _, a in attrs:
        counts[a.name] = counts.get(a.name, 0) + 1
    cols: list[Column] = []
    for d, lvl, a in attrs:
        name = a.name if counts[a.name] == 1 else f"{d.name}_{a.name}"
        cols.append(Column(name, "int8" if a.type == "integer" else "text",
                           f"{d.label}: {a.label} ({lvl.label.lower()} level)",
                           attribute=a, level=lvl, dimension=d))
    for g in cube.aggregates:
        typ = "int8" if g.measure.kind == "count" and g.function == "sum" else "float8"
        cols.append(Column(g.name, typ, f"{g.label} (protected: cell key method)",
                           aggregate=g))
    return CubeTable(cube, tuple(cols))


# --- Results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResultSet:
    """Rows to send: column names and PostgreSQL type names, values as Python objects."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    tag: str = "SELECT"

    @property
    def command_tag(self) -> str:
        return f"SELECT {len(self.rows)}" if self.tag == "SELECT" else self.tag


# --- Translation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    name: str
    column: Column


@dataclass
class Plan:
    table: CubeTable
    outputs: list[Output]
    grouped: list[Column]
    #: predicates per dimension name, each a function of a members table to a boolean mask
    filters: dict[str, list[exp.Expr]]
    having: list[str]
    order: list[str]
    limit: int | None
    offset: int
    star_empty: bool = False


_AGG_CALLS = {exp.Sum: "sum", exp.Avg: "avg", exp.Max: "max", exp.Min: "min",
              exp.Count: "count"}


def _aggregate_of(table: CubeTable, node: exp.Expr) -> Column | None:
    """The aggregate column a projection names, or None for a plain column."""
    func: str | None = None
    inner: exp.Expr | None = None
    for cls, name in _AGG_CALLS.items():
        if isinstance(node, cls):
            func, inner = name, node.this
    if isinstance(node, exp.Anonymous) and node.name.lower() == "measure":
        func, inner = "measure", (node.expressions[0] if len(node.expressions) == 1 else None)
    if func is None:
        return None
    if func == "count":
        raise SqlError("COUNT is not supported: statcube never counts raw rows; select the "
                       "cube's count aggregate instead (e.g. MEASURE(" +
                       next((c.name for c in table.columns if c.aggregate), "claimants") + "))",
                       "0A000", hint=f"supported: {SUPPORTED}")
    if isinstance(node, (exp.Sum, exp.Avg, exp.Max, exp.Min)) and node.args.get("distinct"):
        raise unsupported("an aggregate of DISTINCT values")
    if not isinstance(inner, exp.Column):
        if inner is not None and (inner.find(*_AGG_CALLS) or any(
                a.name.lower() == "measure" for a in inner.find_all(exp.Anonymous))):
            raise unsupported("an aggregate of an aggregate")
        raise unsupported(f"{func.upper()} of an expression")
    col = table.column(inner.name)
    if col.aggregate is None:
        raise SqlError(f"{func.upper()}({col.name}): {col.name} is an attribute, not an "
                       "aggregate; aggregates of this cube: " +
                       ", ".join(c.name for c in table.columns if c.aggregate), "42803",
                       hint=f"supported: {SUPPORTED}")
    agg = col.aggregate
    ok = func == "measure" or (func == "sum" and agg.function == "sum") or (
        func == "avg" and agg.function == "avg")
    if not ok:
        right = "SUM" if agg.function == "sum" else "AVG"
        raise SqlError(f"{func.upper()}({agg.name}) is not supported: {agg.name} is a "
                       f"{'sum' if agg.function == 'sum' else 'mean'}; write MEASURE({agg.name}) "
                       f"or {right}({agg.name})", "0A000", hint=f"supported: {SUPPORTED}")
    return col


def _int(node: exp.Expr | None, what: str) -> int | None:
    if node is None:
        return None
    value = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(value, exp.Literal) and not value.is_string:
        try:
            n = int(value.this)
        except ValueError:
            n = -1
        if n >= 0:
            return n
    raise SqlError(f"{what} must be a non-negative whole number", "22023")


def plan(table: CubeTable, select: exp.Select) -> Plan:
    """Check a SELECT over one cube table and collect what the Request needs."""
    for key, what in (("joins", "a join"), ("with", "WITH"), ("windows", "WINDOW"),
                      ("qualify", "QUALIFY"), ("laterals", "LATERAL")):
        if select.args.get(key):
            raise unsupported(what + " (query one cube table at a time)")
    if select.find(exp.Subquery) or any(isinstance(n, exp.Select) and n is not select
                                        for n in select.walk()):
        raise unsupported("a subquery")
    if select.find(exp.Window):
        raise unsupported("a window function")
    outputs: list[Output] = []
    star = False
    for item in select.expressions:
        alias = item.alias if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column)
                                          and isinstance(node.this, exp.Star)):
            star = True
            outputs.extend(Output(c.name, c) for c in table.columns)
            continue
        agg = _aggregate_of(table, node)
        if agg is not None:
            outputs.append(Output(alias or agg.name, agg))
            continue
        if isinstance(node, exp.Column):
            col = table.column(node.name)
            outputs.append(Output(alias or col.name, col))
            continue
        if node.find(*_AGG_CALLS):
            raise unsupported("an expression over an aggregate")
        raise unsupported(f"the select expression {node.sql('postgres')!r}")
    limit = _int(select.args.get("limit"), "LIMIT")
    offset = _int(select.args.get("offset"), "OFFSET") or 0
    if star:
        if limit == 0:  # schema discovery (SELECT * … LIMIT 0): columns, no rows
            return Plan(table, outputs, [], {}, [], [], 0, 0, star_empty=True)
        raise SqlError("SELECT * would return raw rows, which statcube never publishes: "
                       "select attributes with GROUP BY and aggregates", "0A000",
                       hint=f"supported: {SUPPORTED}")
    by_alias = {o.name: o.column for o in outputs}
    grouped: list[Column] = []
    group = select.args.get("group")
    for g in group.expressions if group else ():
        col = _ref(table, g, outputs, by_alias)
        if col.aggregate is not None:
            raise SqlError(f"cannot GROUP BY aggregate {col.name}", "42803")
        if col not in grouped:
            grouped.append(col)
    has_agg = any(o.column.aggregate for o in outputs)
    for o in outputs:
        if o.column.attribute is not None and o.column not in grouped:
            if group or has_agg:
                raise SqlError(f'column "{o.column.name}" must appear in the GROUP BY clause '
                               "or be used in an aggregate function", "42803")
            grouped.append(o.column)  # SELECT DISTINCT-like: one row per member
    filters: dict[str, list[exp.Expr]] = {}
    where = select.args.get("where")
    if where is not None:
        for conj in _conjuncts(where.this):
            dim = _dimension_of(table, conj)
            filters.setdefault(dim, []).append(conj)
    having: list[str] = []
    hv = select.args.get("having")
    if hv is not None:
        for conj in _conjuncts(hv.this):
            having.append(_having(table, conj, outputs))
    order: list[str] = []
    ob = select.args.get("order")
    for o in ob.expressions if ob else ():
        col = _ref(table, o.this, outputs, by_alias)
        if col.aggregate is not None:
            if col not in [x.column for x in outputs]:
                raise SqlError(f"ORDER BY {col.name}: select the aggregate too", "42803")
            ref = col.aggregate.name
        else:
            if col not in grouped:
                raise SqlError(f'ORDER BY "{col.name}": it must appear in the GROUP BY clause',
                               "42803")
            assert col.attribute is not None
            ref = col.attribute.ref
        order.append(f"{ref}:desc" if o.args.get("desc") else ref)
    return Plan(table, outputs, grouped, filters, having, order, limit, offset)


def _ref(table: CubeTable, node: exp.Expr, outputs: Sequence[Output],
         by_alias: Mapping[str, Column]) -> Column:
    """A GROUP BY or ORDER BY item: a column, an output alias, an ordinal or an aggregate."""
    if isinstance(node, exp.Literal) and not node.is_string:
        n = int(node.this)
        if not 1 <= n <= len(outputs):
            raise SqlError(f"position {n} is not in select list", "42P10")
        return outputs[n - 1].column
    agg = _aggregate_of(table, node)
    if agg is not None:
        return agg
    if isinstance(node, exp.Column):
        if not node.table and node.name in by_alias:
            return by_alias[node.name]
        return table.column(node.name)
    raise unsupported(f"grouping or ordering by {node.sql('postgres')!r}")


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def _dimension_of(table: CubeTable, node: exp.Expr) -> str:
    cols = [table.column(c.name) for c in node.find_all(exp.Column)]
    if not cols:
        raise unsupported(f"the condition {node.sql('postgres')!r} (no column)")
    if any(c.aggregate for c in cols):
        raise SqlError("aggregates cannot be filtered in WHERE: use HAVING <aggregate> > n",
                       "42803")
    dims = {c.dimension.name for c in cols if c.dimension is not None}
    if len(dims) > 1:
        raise unsupported("OR across dimensions (" + ", ".join(sorted(dims)) + ")")
    return dims.pop()


_OPS = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.EQ: "=", exp.NEQ: "!="}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "!=": "!="}


def _having(table: CubeTable, node: exp.Expr, outputs: Sequence[Output]) -> str:
    for cls, op in _OPS.items():
        if isinstance(node, cls):
            left, right = node.left, node.right
            if isinstance(left, (exp.Literal, exp.Neg)):
                left, right, op = right, left, _FLIP[op]
            col = _aggregate_of(table, left) or (table.column(left.name)
                                                 if isinstance(left, exp.Column) else None)
            value = _literal(right)
            if col is None or col.aggregate is None or isinstance(value, str) or value is None:
                break
            if col not in [o.column for o in outputs]:
                raise SqlError(f"HAVING {col.name}: select the aggregate too", "42803")
            return f"{col.aggregate.name}{op}{value}"
    raise unsupported(f"the HAVING condition {node.sql('postgres')!r} "
                      "(write HAVING <aggregate> <op> <number>)")


def _literal(node: exp.Expr) -> str | int | float | None:
    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Cast):
        return _literal(node.this)
    if isinstance(node, exp.Neg):
        v = _literal(node.this)
        if isinstance(v, (int, float)):
            return -v
        return None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(node, exp.Null):
        return None
    raise unsupported(f"the value {node.sql('postgres')!r} (literals only)")


# --- Member selection -------------------------------------------------------------------------

def _typed(col: Column, value: str | int | float | None) -> Any:
    assert col.attribute is not None
    if value is None:
        return None
    if col.attribute.type == "integer":
        try:
            return int(value)
        except ValueError:
            raise SqlError(f'invalid input syntax for type bigint: "{value}" (column '
                           f"{col.name})", "22P02") from None
    return str(value)


def _like(pattern: str) -> str:
    out = ""
    for ch in pattern:
        out += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
    return f"^{out}$"


def _mask(table: CubeTable, node: exp.Expr, members: pa.Table) -> pa.ChunkedArray:
    """Which members satisfy ``node`` (a condition over one dimension's attributes)."""
    if isinstance(node, exp.Paren):
        return _mask(table, node.this, members)
    if isinstance(node, exp.And):
        return pc.and_kleene(_mask(table, node.left, members), _mask(table, node.right, members))
    if isinstance(node, exp.Or):
        return pc.or_kleene(_mask(table, node.left, members), _mask(table, node.right, members))
    if isinstance(node, exp.Not):
        return pc.invert(_mask(table, node.this, members))

    def field(n: exp.Expr) -> tuple[Column, Any]:
        if not isinstance(n, exp.Column):
            raise unsupported(f"the condition {node.sql('postgres')!r} (compare an attribute "
                              "with literals)")
        col = table.column(n.name)
        assert col.attribute is not None
        return col, members.column(col.attribute.ref)

    funcs: dict[str, Callable[[Any, Any], Any]] = {
        "=": pc.equal, "!=": pc.not_equal, ">": pc.greater, ">=": pc.greater_equal,
        "<": pc.less, "<=": pc.less_equal}
    for cls, op in _OPS.items():
        if isinstance(node, cls):
            left, right = node.left, node.right
            if not isinstance(left, exp.Column):
                left, right, op = right, left, _FLIP[op]
            col, arr = field(left)
            value = _typed(col, _literal(right))
            if value is None:  # x = NULL is never true
                return pa.chunked_array([pa.array([False] * len(arr), pa.bool_())])
            return funcs[op](arr, value)
    if isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest"):
            raise unsupported("IN (subquery)")
        col, arr = field(node.this)
        values = [_typed(col, _literal(v)) for v in node.expressions]
        return pc.is_in(arr, value_set=pa.array([v for v in values if v is not None],
                                                 arr.type))
    if isinstance(node, exp.Between):
        col, arr = field(node.this)
        lo, hi = _typed(col, _literal(node.args["low"])), _typed(col, _literal(node.args["high"]))
        return pc.and_kleene(pc.greater_equal(arr, lo), pc.less_equal(arr, hi))
    if isinstance(node, (exp.Like, exp.ILike)):
        col, arr = field(node.this)
        pattern = _literal(node.expression)
        if not isinstance(pattern, str):
            raise unsupported("LIKE with a non-text pattern")
        return pc.match_substring_regex(pc.cast(arr, pa.string()), _like(pattern),
                                        ignore_case=isinstance(node, exp.ILike))
    raise unsupported(f"the condition {node.sql('postgres')!r}")


# --- Execution --------------------------------------------------------------------------------

#: Members tables of a dimension level, per (release view, cube, dimension, hierarchy, depth):
#: dimension tables never change under a running server.
_MEMBERS: dict[tuple[int, str, str, str, int], pa.Table] = {}


def _members(browser: CubeBrowser, dim: Dimension, hier: Hierarchy, depth: int) -> pa.Table:
    key = (id(browser), browser.cube.name, dim.name, hier.name, depth)
    found = _MEMBERS.get(key)
    if found is None:
        found = browser.members(dim.name, hierarchy=hier.name, depth=depth,
                                pagesize=MAX_PAGESIZE).members
        if len(_MEMBERS) > 256:
            _MEMBERS.clear()
        _MEMBERS[key] = found
    return found


def _hierarchy(dim: Dimension, levels: Sequence[Level]) -> Hierarchy:
    names = {lv.name for lv in levels}
    for h in (dim.hierarchy(), *dim.hierarchies):
        if names <= {lv.name for lv in h.levels}:
            return h
    raise SqlError(f"levels {', '.join(sorted(names))} of {dim.name} are in no one hierarchy "
                   f"(hierarchies: " + "; ".join(
                       f"{h.name}: {', '.join(lv.name for lv in h.levels)}"
                       for h in dim.hierarchies) + "): query them separately", "0A000")


def _deepest(hier: Hierarchy, levels: Sequence[Level]) -> Level:
    return max(levels, key=lambda lv: hier.level_index(lv.name))


def answer(browser: CubeBrowser, p: Plan, max_cells: int, role: str = "guest") -> ResultSet:
    """Run a plan through the gate: one ResultSet of protected values."""
    names = tuple(o.name for o in p.outputs)
    types = tuple(o.column.type for o in p.outputs)
    if p.star_empty:
        return ResultSet(names, types, [])
    cube = browser.cube
    drill: list[str] = []
    cuts: list[str] = []
    dims = {c.dimension.name for c in p.grouped if c.dimension} | set(p.filters)
    for dname in [d.name for d in cube.dimensions if d.name in dims]:
        dim = cube.dimension(dname)
        g_levels = [c.level for c in p.grouped if c.dimension == dim and c.level]
        f_cols = [table_col for cond in p.filters.get(dname, [])
                  for table_col in (p.table.column(c.name) for c in cond.find_all(exp.Column))]
        f_levels = [c.level for c in f_cols if c.level]
        hier = _hierarchy(dim, [*g_levels, *f_levels])
        prefix = dim.name if hier.name == dim.default_hierarchy_name else \
            f"{dim.name}@{hier.name}"
        if g_levels:
            drill.append(f"{prefix}:{_deepest(hier, g_levels).name}")
        if f_levels:
            level = _deepest(hier, f_levels)
            depth = hier.level_index(level.name) + 1
            members = _members(browser, dim, hier, depth)
            mask = None
            for cond in p.filters[dname]:
                m = _mask(p.table, cond, members)
                mask = m if mask is None else pc.and_kleene(mask, m)
            assert mask is not None
            chosen = members.filter(pc.fill_null(mask, False))
            keys = [lv.key.ref for lv in hier.levels[:depth]]
            paths = sorted({tuple(str(r[k]) for k in keys) for r in chosen.select(keys)
                            .to_pylist()})
            if not paths:
                return _empty(p, names, types)
            hname = None if hier.name == dim.default_hierarchy_name else hier.name
            cut = PointCut(dim.name, paths[0], hname) if len(paths) == 1 else \
                SetCut(dim.name, tuple(paths), hname)
            cuts.append(format_cut(cut))
    aggs = list(dict.fromkeys(o.column.aggregate.name for o in p.outputs
                              if o.column.aggregate is not None))
    if not aggs:  # attributes only: the members that have data, through the gate all the same
        aggs = [cube.aggregates[0].name]
    limit = p.limit
    if limit is not None and limit > max_cells:
        raise TooLargeError(f"LIMIT {limit} is more than the limit of {max_cells:,} rows per "
                            f"query for the {role} role", hint="page with LIMIT and OFFSET")
    if limit is None:
        page, pagesize, skip = 0, max_cells, p.offset
    elif limit == 0:
        return ResultSet(names, types, [])
    elif p.offset % limit == 0:
        page, pagesize, skip = p.offset // limit, limit, 0
    else:
        page, pagesize, skip = 0, p.offset + limit, p.offset
    request = Request.make(cube.name, cut="|".join(cuts), drilldown=drill, aggregates=aggs,
                           order=p.order, page=page if drill else None,
                           pagesize=pagesize if drill else None, having="|".join(p.having))
    query = browser.query(request)
    check_query(query)
    result = browser.aggregate_query(query)
    if drill and limit is None and result.total_cell_count > max_cells:
        raise TooLargeError(f"this table has {result.total_cell_count:,} rows, more than the "
                            f"limit of {max_cells:,} rows per query for the {role} role",
                            hint="page with LIMIT and OFFSET, or filter or group less")
    rows_in: list[dict[str, Any]] = result.cells.to_pylist() if drill else \
        [dict(result.summary)]
    if not drill and (p.offset or (p.having and not _passes(result.summary, p))):
        rows_in = []
    rows_in = rows_in[skip:]
    out: list[tuple[Any, ...]] = []
    for r in rows_in:
        row = []
        for o in p.outputs:
            c = o.column
            if c.aggregate is not None:
                withheld = r.get(f"{c.aggregate.name}_withheld")
                row.append(None if withheld else r.get(c.aggregate.name))
            else:
                assert c.attribute is not None
                row.append(r.get(c.attribute.ref))
        out.append(tuple(row))
    _check_groups(p, rows_in)
    return ResultSet(names, types, out)


def _passes(summary: Mapping[str, Any], p: Plan) -> bool:
    """HAVING on a one-row (ungrouped) result, which the Request's having does not filter."""
    ops: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "!=": lambda a, b: a != b,
        ">": lambda a, b: a > b, "<": lambda a, b: a < b, "=": lambda a, b: a == b}
    for h in p.having:
        m = re.match(r"^(\w+)(>=|<=|!=|=|>|<)(.+)$", h)
        assert m is not None
        v = summary.get(m.group(1))
        if v is None or not ops[m.group(2)](float(v), float(m.group(3))):
            return False
    return True


def _empty(p: Plan, names: tuple[str, ...], types: tuple[str, ...]) -> ResultSet:
    """No member matched WHERE: no groups; an ungrouped aggregate is one row of NULLs, as in
    PostgreSQL (never a zero that was not published)."""
    if p.grouped:
        return ResultSet(names, types, [])
    return ResultSet(names, types, [tuple(None for _ in names)])


def _check_groups(p: Plan, rows: Sequence[Mapping[str, Any]]) -> None:
    """One row per group, as SQL means: grouping by ``month`` alone would otherwise give one
    row per (year, month) with equal ``month`` values — adding them up would be a custom
    group across levels the statement did not name; ask for the levels above instead."""
    refs = [c.attribute.ref for c in p.grouped if c.attribute is not None]
    if not refs:
        return
    seen = {tuple(r.get(ref) for ref in refs) for r in rows}
    if len(seen) < len(rows):
        names = ", ".join(c.name for c in p.grouped)
        raise SqlError(f"GROUP BY {names} does not identify one member per row (for example "
                       "a month of several years): group by the levels above it as well "
                       "(e.g. year)", "0A000", hint=f"supported: {SUPPORTED}")

