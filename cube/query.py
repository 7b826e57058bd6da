"""Request (strings as sent) and Query (every name resolved, every rule checked).

Parsing URL parameters, JSON bodies or CLI flags yields a :class:`Request`;
:meth:`Query.from_request` resolves it against the model or raises a 4xx error from
cube/errors.py that names the parameter, the value and, where it can, a close match.
Everything downstream (SQL compilation, protection, formatting) takes a Query and never
re-validates.

Rules enforced here, beyond names:
- Cubes 1.0 hierarchy behaviour: implicit drilldown to the level after the deepest *point*
  cut on that dimension (range and set cuts keep the drill depth; an inverted point cut
  stays at its level); an error for drilling past the last level, for a cut path longer
  than its hierarchy, and for an implicit drilldown whose hierarchy differs from the cut's.
- Stocks (measures non-additive over time) are never added across periods: with no time cut
  or drilldown the latest period is used (and the query says so); a cut or drilldown whose
  cells would span several periods is refused.
- High-cardinality levels (OA, LSOA) may only be drilled with paging or a point/set cut on
  that level.

This module does no I/O and imports no SQL or HTTP code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from cube.errors import (
    ArgumentError,
    GrammarError,
    HierarchyError,
    NonAdditiveError,
    NoSuchAttributeError,
    NoSuchLevelError,
    StatcubeError,
    unknown,
)
from cube.grammar import (
    Cut,
    PointCut,
    RangeCut,
    SetCut,
    format_cut,
    format_drilldown,
    parse_cuts,
    parse_drilldown,
    parse_names,
    parse_order,
)
from cube.model import Aggregate, Attribute, Cube, Dimension, Hierarchy, Level
from cube.rollups import Rollup

MAX_PAGESIZE = 1_000_000
Key = str | int
Path = tuple[Key, ...]


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value != "" else ()
    return tuple(v for v in value if v != "")


@dataclass(frozen=True)
class Request:
    """What a client asked for, as strings. Built by the HTTP layer, the CLI or tests."""

    cube: str
    cut: str = ""
    drilldown: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    page: str | None = None
    pagesize: str | None = None
    split: str = ""
    having: str = ""
    top: str = ""

    @classmethod
    def make(cls, cube: str, *, cut: str | None = None,
             drilldown: str | Sequence[str] | None = None,
             aggregates: str | Sequence[str] | None = None,
             order: str | Sequence[str] | None = None,
             page: int | str | None = None, pagesize: int | str | None = None,
             split: str | None = None, having: str | None = None,
             top: str | None = None) -> Request:
        return cls(
            cube=cube,
            cut=cut or "",
            drilldown=_as_tuple(drilldown),
            aggregates=_as_tuple(aggregates),
            order=_as_tuple(order),
            page=None if page is None else str(page),
            pagesize=None if pagesize is None else str(pagesize),
            split=split or "",
            having=having or "",
            top=top or "",
        )


# --- Resolved parts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CutPart:
    """A cut resolved against a hierarchy; keys typed as the level keys are."""

    dimension: Dimension
    hierarchy: Hierarchy
    kind: Literal["point", "set", "range"]
    paths: tuple[Path, ...] = ()
    from_path: Path | None = None
    to_path: Path | None = None
    invert: bool = False
    source: Cut | None = field(default=None, compare=False)

    @property
    def depth(self) -> int:
        if self.kind == "range":
            return max(len(self.from_path or ()), len(self.to_path or ()))
        return max(len(p) for p in self.paths)

    def levels(self, depth: int | None = None) -> tuple[Level, ...]:
        return self.hierarchy.levels[: self.depth if depth is None else depth]

    @property
    def is_group(self) -> bool:
        """True when the cut forms an ad-hoc group (a custom total), not one member."""
        return self.kind != "point" or self.invert

    def to_string(self) -> str:
        return format_cut(self.source) if self.source is not None else ""


@dataclass(frozen=True)
class Drill:
    dimension: Dimension
    hierarchy: Hierarchy
    level: Level

    @property
    def depth(self) -> int:
        return self.hierarchy.level_index(self.level.name) + 1

    @property
    def levels(self) -> tuple[Level, ...]:
        return self.hierarchy.levels[: self.depth]

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return tuple(a for lvl in self.levels for a in lvl.attributes)


@dataclass(frozen=True)
class OrderItem:
    ref: str
    descending: bool
    attribute: Attribute | None = None
    aggregate: Aggregate | None = None


Comparison = Literal[">", ">=", "<", "<=", "=", "!="]


@dataclass(frozen=True)
class MeasureFilter:
    """Keep cells whose (published) aggregate compares true, like SQL HAVING."""

    aggregate: Aggregate
    op: Comparison
    value: float


@dataclass(frozen=True)
class TopN:
    """Keep the n cells with the largest aggregate, overall or within each member of ``per``."""

    n: int
    aggregate: Aggregate
    per: Drill | None = None


@dataclass(frozen=True)
class Query:
    cube: Cube
    cuts: tuple[CutPart, ...]
    drilldown: tuple[Drill, ...]
    aggregates: tuple[Aggregate, ...]
    order: tuple[OrderItem, ...]
    page: int | None = None
    pagesize: int | None = None
    split: tuple[CutPart, ...] = ()
    filters: tuple[MeasureFilter, ...] = ()
    top: TopN | None = None
    #: The single period a stock was restricted to by default, e.g. "2026-11"; else None.
    default_period: str | None = None
    #: Newest period the caller may see (YYYYMM or YYYYQ in the fact's period column), set by
    #: the workspace from the release calendar, never from the request.
    period_limit: int | None = None
    #: Internal restrictions ``attribute IN (keys)`` that the disclosure gate adds to the
    #: queries of a custom group's tiles (cube/disclosure/groups.py) so that only the tiles'
    #: rows are read; never from a request.
    within: tuple[tuple[Attribute, tuple[Key, ...]], ...] = ()
    #: The rollup tables the warehouse holds for this cube, smallest first (cube/rollups.py),
    #: set by the workspace from the warehouse metadata, never from the request: the
    #: compiler reads the smallest that holds every attribute the query reads.
    rollups: tuple[Rollup, ...] = ()

    @property
    def cell_attributes(self) -> tuple[Attribute, ...]:
        """Every attribute of every drilled level, each once (a custom group's tile query
        drills one dimension in two hierarchies that share their top levels)."""
        return tuple(dict.fromkeys(a for d in self.drilldown for a in d.attributes))

    @property
    def needs_measure_values_in_sql(self) -> bool:
        """Order, filters or top-N over aggregates must see the values before paging."""
        return bool(self.filters or self.top or any(o.aggregate for o in self.order))

    def drill_for(self, dimension: str) -> Drill | None:
        return next((d for d in self.drilldown if d.dimension.name == dimension), None)

    @cached_property
    def key(self) -> tuple[Any, ...]:
        """Everything that determines this query's SQL, as plain values: equal keys compile
        to the same statement with the same bound values (for caching compiled SQL)."""
        def typed(path: Path | None) -> Any:  # 1 and "1" must not share a key
            return None if path is None else tuple((type(k).__name__, k) for k in path)

        def cut_key(c: CutPart) -> tuple[Any, ...]:
            return (c.dimension.name, c.hierarchy.name, c.kind,
                    tuple(typed(p) for p in c.paths), typed(c.from_path), typed(c.to_path),
                    c.invert)

        top = None if self.top is None else (
            self.top.n, self.top.aggregate.name,
            None if self.top.per is None else self.top.per.dimension.name)
        return (self.cube.name, tuple(cut_key(c) for c in self.cuts),
                tuple((d.dimension.name, d.hierarchy.name, d.level.name)
                      for d in self.drilldown),
                tuple(a.name for a in self.aggregates),
                tuple((o.ref, o.descending, o.aggregate is not None) for o in self.order),
                self.page, self.pagesize, tuple(cut_key(c) for c in self.split),
                tuple((f.aggregate.name, f.op, f.value) for f in self.filters), top,
                self.default_period, self.period_limit,
                tuple((a.ref, tuple((type(k).__name__, k) for k in keys))
                      for a, keys in self.within),
                tuple(r.table for r in self.rollups))

    @classmethod
    def from_request(cls, cube: Cube, request: Request,
                     latest_period: tuple[int, int] | None = None,
                     period_limit: int | None = None) -> Query:
        """Resolve and validate. ``latest_period`` is (year, month) of the newest visible data;
        ``period_limit`` hides everything after it (embargo)."""
        cuts = resolve_cuts(cube, request.cut)
        split = resolve_cuts(cube, request.split, "split")
        drilldown = _resolve_drilldown(cube, request.drilldown, cuts)
        names = parse_names(request.aggregates, parameter="aggregates") if request.aggregates \
            else ()
        aggregates = tuple(_aggregate(cube, n, "aggregates") for n in names) or cube.aggregates
        if len(set(aggregates)) != len(aggregates):
            raise ArgumentError("an aggregate is listed twice", parameter="aggregates")
        page, pagesize = parse_paging(request.page, request.pagesize)
        cuts, default_period = _time_rules(cube, cuts, drilldown, aggregates, latest_period)
        _cardinality_rules(cuts, drilldown, pagesize)
        order = _resolve_order(cube, request.order, drilldown, aggregates)
        filters = _parse_having(cube, request.having, aggregates)
        top = _parse_top(cube, request.top, aggregates, drilldown)
        return cls(cube=cube, cuts=cuts, drilldown=drilldown, aggregates=aggregates,
                   order=order, page=page, pagesize=pagesize, split=split, filters=filters,
                   top=top, default_period=default_period, period_limit=period_limit)


# --- Resolution helpers -----------------------------------------------------------------------

def _typed_key(level: Level, key: str, parameter: str) -> Key:
    if "\x00" in key:  # no engine stores NUL in text (PostgreSQL refuses it outright)
        raise ArgumentError(f"a key of level {level.ref} contains a NUL character",
                            parameter=parameter, value=key.replace("\x00", "\\0"))
    if level.key.type == "integer":
        try:
            return int(key)
        except ValueError:
            raise ArgumentError(
                f"key {key!r} of level {level.ref} must be a whole number",
                parameter=parameter, value=key,
            ) from None
    return key


def _typed_path(hierarchy: Hierarchy, path: Sequence[str], parameter: str, dim: str) -> Path:
    if len(path) > len(hierarchy.levels):
        raise HierarchyError(
            f"cut path {','.join(path)!r} has {len(path)} elements but hierarchy "
            f"{dim}@{hierarchy.name} has only {len(hierarchy.levels)} levels "
            f"({', '.join(lv.name for lv in hierarchy.levels)})",
            parameter=parameter, value=",".join(path),
        )
    return tuple(_typed_key(hierarchy.levels[i], k, parameter) for i, k in enumerate(path))


def _resolve_cut(cube: Cube, cut: Cut, parameter: str) -> CutPart:
    dim = resolve_dimension(cube, cut.dimension, parameter)
    hier = resolve_hierarchy(dim, cut.hierarchy, parameter)
    if isinstance(cut, PointCut):
        return CutPart(dim, hier, "point", (_typed_path(hier, cut.path, parameter, dim.name),),
                       invert=cut.invert, source=cut)
    if isinstance(cut, SetCut):
        return CutPart(dim, hier, "set",
                       tuple(_typed_path(hier, p, parameter, dim.name) for p in cut.paths),
                       invert=cut.invert, source=cut)
    assert isinstance(cut, RangeCut)
    return CutPart(
        dim, hier, "range",
        from_path=None if cut.from_path is None else _typed_path(hier, cut.from_path,
                                                                 parameter, dim.name),
        to_path=None if cut.to_path is None else _typed_path(hier, cut.to_path, parameter,
                                                             dim.name),
        invert=cut.invert, source=cut,
    )


def _named(exc: StatcubeError, parameter: str) -> StatcubeError:
    """The model raises 'no such X' without knowing which request parameter named X."""
    exc.parameter = parameter
    return exc


def resolve_cuts(cube: Cube, text: str, parameter: str = "cut") -> tuple[CutPart, ...]:
    """Parse and resolve a cut string against a cube (for members and cell details)."""
    return tuple(_resolve_cut(cube, c, parameter) for c in parse_cuts(text, parameter=parameter))


def names_members(cut: CutPart, level: Level) -> bool:
    """True if the cut names specific members of ``level`` (a point or set cut, not inverted,
    every path of which reaches that level)."""
    names = [lv.name for lv in cut.hierarchy.levels]
    if cut.kind == "range" or cut.invert or level.name not in names:
        return False
    return all(len(path) > names.index(level.name) for path in cut.paths)


def resolve_dimension(cube: Cube, name: str, parameter: str) -> Dimension:
    try:
        return cube.dimension(name)
    except StatcubeError as exc:
        raise _named(exc, parameter) from None


def resolve_hierarchy(dim: Dimension, name: str | None, parameter: str) -> Hierarchy:
    try:
        return dim.hierarchy(name)
    except StatcubeError as exc:
        raise _named(exc, parameter) from None


def _aggregate(cube: Cube, name: str, parameter: str) -> Aggregate:
    try:
        return cube.aggregate(name)
    except StatcubeError as exc:
        raise _named(exc, parameter) from None


def resolve_level(dim: Dimension, hier: Hierarchy, name: str, parameter: str) -> Level:
    """The level ``name`` of ``hier``, or a precise error: unknown level (with close matches)
    or a level of the dimension that belongs to another hierarchy (naming that one)."""
    if name in {lv.name for lv in hier.levels}:
        return hier.level(name)
    others = [h.name for h in dim.hierarchies if name in {lv.name for lv in h.levels}]
    if others:
        raise HierarchyError(
            f"level {name!r} is not in hierarchy {dim.name}@{hier.name} "
            f"({', '.join(lv.name for lv in hier.levels)}); it is in "
            + " and ".join(f"{dim.name}@{h}" for h in others),
            parameter=parameter, value=name,
            hint=f"write {dim.name}@{others[0]}:{name}",
        )
    raise unknown(NoSuchLevelError, "level", name, [lv.name for lv in hier.levels],
                  parameter=parameter, where=f"hierarchy {dim.name}@{hier.name}")


def _implicit_depth(dim: Dimension, hier: Hierarchy | None, cuts: Sequence[CutPart],
                    spec_text: str) -> tuple[Hierarchy, int]:
    """Cubes 1.0: the implicit drilldown level is the one after the deepest *point* cut on the
    dimension (an inverted point cut stays at its own level: "all but this member" is drilled
    at the member's level). Range and set cuts do not move the drill depth.

    Without an explicit hierarchy the drilldown follows the point cut's hierarchy (Cubes would
    use the default one and refuse); an explicit hierarchy that differs from the cut's is an
    error, because the next level cannot be determined."""
    points = [c for c in cuts if c.kind == "point"]
    if hier is None:
        hiers = {c.hierarchy.name: c.hierarchy for c in points}
        if len(hiers) > 1:
            raise HierarchyError(
                f"point cuts on {dim.name} use hierarchies {', '.join(sorted(hiers))}: cannot "
                f"determine the next level; name it (e.g. {dim.name}@{sorted(hiers)[0]}:level)",
                parameter="drilldown", value=spec_text)
        hier = next(iter(hiers.values())) if hiers else dim.hierarchy()
    for c in points:
        if c.hierarchy.name != hier.name:
            raise HierarchyError(
                f"the cut on {dim.name} uses hierarchy {c.hierarchy.name!r} but the drilldown "
                f"uses {hier.name!r}: cannot determine the next level; name the level "
                f"explicitly (e.g. {dim.name}@{hier.name}:{hier.levels[0].name})",
                parameter="drilldown", value=spec_text,
            )
    depth = max((c.depth - (1 if c.invert else 0) for c in points), default=0)
    if depth >= len(hier.levels):
        raise HierarchyError(
            f"cannot drill {dim.name}@{hier.name} below its last level "
            f"{hier.levels[-1].name!r}: the cut is already at that level",
            parameter="drilldown", value=spec_text,
        )
    return hier, depth


def _resolve_drilldown(cube: Cube, values: Sequence[str],
                       cuts: Sequence[CutPart]) -> tuple[Drill, ...]:
    drills: list[Drill] = []
    for spec in parse_drilldown(values) if values else ():
        dim = resolve_dimension(cube, spec.dimension, "drilldown")
        if spec.level is not None:
            hier = resolve_hierarchy(dim, spec.hierarchy, "drilldown")
            level = resolve_level(dim, hier, spec.level, "drilldown")
        else:
            named = None if spec.hierarchy is None else resolve_hierarchy(dim, spec.hierarchy,
                                                                    "drilldown")
            text = format_drilldown((spec,))
            hier, depth = _implicit_depth(
                dim, named, [c for c in cuts if c.dimension.name == dim.name], text)
            level = hier.levels[depth]
        if any(d.dimension.name == dim.name for d in drills):
            raise ArgumentError(f"dimension {dim.name!r} is drilled down twice",
                                parameter="drilldown", value=dim.name)
        drills.append(Drill(dim, hier, level))
    return tuple(drills)


def parse_paging(page: str | None, pagesize: str | None) -> tuple[int | None, int | None]:
    def as_int(v: str, name: str, lo: int, hi: int) -> int:
        try:
            n = int(v)
        except ValueError:
            raise ArgumentError(f"{name} must be a whole number", parameter=name,
                                value=v) from None
        if not lo <= n <= hi:
            raise ArgumentError(f"{name} must be between {lo} and {hi}", parameter=name,
                                value=v)
        return n

    p = None if page in (None, "") else as_int(page, "page", 0, 10**9)
    s = None if pagesize in (None, "") else as_int(pagesize, "pagesize", 1, MAX_PAGESIZE)
    if p is not None and s is None:
        raise ArgumentError("page needs pagesize", parameter="page", value=page,
                            hint="add e.g. pagesize=100")
    if s is not None and p is None:
        p = 0
    return p, s


def _time_rules(cube: Cube, cuts: tuple[CutPart, ...], drilldown: tuple[Drill, ...],
                aggregates: tuple[Aggregate, ...],
                latest: tuple[int, int] | None) -> tuple[tuple[CutPart, ...], str | None]:
    """Never add a stock over time: pin to one period or refuse."""
    tdim = cube.time_dimension
    if tdim is None or not any(a.nonadditive for a in aggregates):
        return cuts, None
    finest = tdim.levels[-1] if cube.grain == "month" else tdim.level("quarter")
    drill = next((d for d in drilldown if d.dimension.name == tdim.name), None)
    tcuts = [c for c in cuts if c.dimension.name == tdim.name]
    drilled_to_period = drill is not None and drill.level.name == finest.name

    def single_period(c: CutPart) -> bool:
        return (c.kind == "point" and not c.invert
                and c.depth == len(c.hierarchy.levels)
                and c.hierarchy.levels[-1].name == finest.name)

    if drilled_to_period:
        return cuts, None
    if drill is not None:
        raise NonAdditiveError(
            f"{_stock_names(aggregates)}: not to be added across the months of a "
            f"{drill.level.name}: drill time down to {finest.name} instead, or cut to a single "
            f"{finest.name}",
            parameter="drilldown", value=f"{tdim.name}:{drill.level.name}",
        )
    if any(single_period(c) for c in tcuts):
        return cuts, None
    if tcuts:
        c = tcuts[0]
        raise NonAdditiveError(
            f"{_stock_names(aggregates)}: not to be added across periods, but the time cut "
            f"{c.to_string()!r} covers more than one {finest.name}; cut to one {finest.name} "
            f"(e.g. {_example_cut(tdim, c.hierarchy, latest)}) or drill down to {finest.name}",
            parameter="cut", value=c.to_string(),
        )
    if latest is None:
        raise NonAdditiveError("no period to default to: cut time to a single period",
                               parameter="cut")
    hier = tdim.hierarchy()
    y, m = latest
    path = _period_path(hier, y, m)
    pinned = CutPart(tdim, hier, "point", (path,))
    label = f"{y:04d}-{m:02d}" if cube.grain == "month" else f"{y:04d}-Q{(m - 1) // 3 + 1}"
    return (*cuts, pinned), label


def _period_path(hier: Hierarchy, y: int, m: int) -> Path:
    values = {"year": y, "quarter": (m - 1) // 3 + 1, "month": m}
    return tuple(values[lv.name] for lv in hier.levels)


def _example_cut(tdim: Dimension, hier: Hierarchy, latest: tuple[int, int] | None) -> str:
    y, m = latest or (2025, 1)
    name = tdim.name if hier.name == tdim.default_hierarchy_name else f"{tdim.name}@{hier.name}"
    return f"{name}:" + ",".join(str(v) for v in _period_path(hier, y, m))


def _stock_names(aggregates: Sequence[Aggregate]) -> str:
    names = [repr(a.name) for a in aggregates if a.nonadditive]
    if len(names) == 1:
        return f"{names[0]} is a stock"
    return f"{', '.join(names[:-1])} and {names[-1]} are stocks"


def _cardinality_rules(cuts: Sequence[CutPart], drilldown: Sequence[Drill],
                       pagesize: int | None) -> None:
    for d in drilldown:
        if d.level.cardinality != "high" or pagesize is not None:
            continue
        pinned = any(names_members(c, d.level) for c in cuts
                     if c.dimension.name == d.dimension.name)
        if not pinned:
            raise ArgumentError(
                f"level {d.level.ref} has high cardinality: give pagesize (and page), or cut "
                f"{d.dimension.name} to specific {d.level.name} members",
                parameter="drilldown", value=f"{d.dimension.name}:{d.level.name}",
                hint="e.g. &pagesize=1000&page=0",
            )


def _resolve_order(cube: Cube, values: Sequence[str], drilldown: Sequence[Drill],
                   aggregates: Sequence[Aggregate]) -> tuple[OrderItem, ...]:
    if not values:
        return ()
    by_ref = {a.ref: a for d in drilldown for a in d.attributes}
    by_dim = {d.dimension.name: d.level.order_attribute for d in drilldown}
    aggs = {a.name: a for a in aggregates}
    items = []
    for spec in parse_order(values):
        ref = spec.attribute
        if ref in aggs:
            items.append(OrderItem(ref, spec.descending, aggregate=aggs[ref]))
        elif ref in by_ref:
            items.append(OrderItem(ref, spec.descending, attribute=by_ref[ref]))
        elif ref in by_dim:
            items.append(OrderItem(ref, spec.descending, attribute=by_dim[ref]))
        else:
            choices = [*aggs, *by_ref, *by_dim]
            raise unknown(NoSuchAttributeError, "order attribute", ref, choices,
                          parameter="order",
                          where="the drilled levels and requested aggregates")
    return tuple(items)


_HAVING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


def _parse_having(cube: Cube, text: str, aggregates: Sequence[Aggregate]
                  ) -> tuple[MeasureFilter, ...]:
    if not text:
        return ()
    out = []
    pos = 0
    for part in text.split("|"):
        m = _HAVING.match(part)
        if not m:
            raise GrammarError(
                f"expected 'aggregate>number' (operators > >= < <= = !=), got {part!r}",
                parameter="having", value=text, position=pos,
            )
        agg = _aggregate(cube, m.group(1), "having")
        if agg not in aggregates:
            raise ArgumentError(f"having uses {agg.name!r}, which is not requested",
                                parameter="having", value=part)
        out.append(MeasureFilter(agg, m.group(2), float(m.group(3))))  # type: ignore[arg-type]
        pos += len(part) + 1
    return tuple(out)


_TOP = re.compile(r"^(\d+):([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_][A-Za-z0-9_]*))?$")


def _parse_top(cube: Cube, text: str, aggregates: Sequence[Aggregate],
               drilldown: Sequence[Drill]) -> TopN | None:
    """``top=N:aggregate`` or ``top=N:aggregate:dimension`` (top N within each member of the
    level above the drilled level of that dimension)."""
    if not text:
        return None
    m = _TOP.match(text.strip())
    if not m:
        raise GrammarError("expected 'N:aggregate' or 'N:aggregate:dimension'",
                           parameter="top", value=text, position=0)
    n = int(m.group(1))
    if not 1 <= n <= 10_000:
        raise ArgumentError("top N must be between 1 and 10000", parameter="top", value=text)
    agg = _aggregate(cube, m.group(2), "top")
    if agg not in aggregates:
        raise ArgumentError(f"top uses {agg.name!r}, which is not requested",
                            parameter="top", value=text)
    per = None
    if m.group(3):
        per = next((d for d in drilldown if d.dimension.name == m.group(3)), None)
        if per is None or per.depth < 2:
            raise ArgumentError(
                f"top per {m.group(3)!r} needs that dimension drilled below its first level",
                parameter="top", value=text)
    return TopN(n, agg, per)


# The build encodes a fact's period as month_id = YYYYMM (monthly cubes) or quarter_id = YYYYQ
# (quarterly cubes); dim_month/dim_quarter hold the same ids. The two functions below are the
# only other places that rely on it.


def period_range(cube: Cube, hierarchy: Hierarchy, path: Sequence[Key]
                 ) -> tuple[int, int] | None:
    """The first and last fact period ids (inclusive) under a time path — ``(2026,)`` is
    202601..202612, ``(2026, 3)`` on year/quarter/month is 202607..202609 — so the compiler
    can cut the fact's period column instead of joining the time dimension. None when the
    path is not a well-formed prefix (a month outside its quarter, a quarter 5): the
    compiler then keeps the join, which selects what the keys literally say."""
    values = dict(zip((lv.name for lv in hierarchy.levels), path, strict=False))
    y, q, m = values.get("year"), values.get("quarter"), values.get("month")
    if not isinstance(y, int) or not 0 < y < 10_000 or set(values) - {"year", "quarter",
                                                                     "month"}:
        return None
    if q is not None and not (isinstance(q, int) and 1 <= q <= 4):
        return None
    if cube.grain == "quarter":
        if m is not None:
            return None
        return (y * 10 + q, y * 10 + q) if q is not None else (y * 10 + 1, y * 10 + 4)
    if m is not None:
        if not (isinstance(m, int) and 1 <= m <= 12) or (q is not None and q != (m - 1) // 3 + 1):
            return None
        return y * 100 + m, y * 100 + m
    if q is not None:
        return y * 100 + (q - 1) * 3 + 1, y * 100 + q * 3
    return y * 100 + 1, y * 100 + 12


def period_limit_for(cube: Cube, until: tuple[int, int] | None) -> int | None:
    """The fact period value of the newest period fully visible up to (year, month)."""
    if until is None:
        return None
    y, m = until
    if cube.grain == "quarter":
        q = m // 3  # a quarter is visible only once its last month is
        return y * 10 + q if q else (y - 1) * 10 + 4
    return y * 100 + m


def describe_cuts(cuts: Sequence[CutPart]) -> list[dict[str, Any]]:
    """The ``cell`` part of a response: cut dicts in the Cubes shape."""
    out: list[dict[str, Any]] = []
    for c in cuts:
        d: dict[str, Any] = {"type": c.kind, "dimension": c.dimension.name,
                             "hierarchy": c.hierarchy.name, "invert": c.invert,
                             "hidden": False, "level_depth": c.depth}
        if c.kind == "point":
            d["path"] = [str(k) for k in c.paths[0]]
        elif c.kind == "set":
            d["paths"] = [[str(k) for k in p] for p in c.paths]
        else:
            d["from"] = None if c.from_path is None else [str(k) for k in c.from_path]
            d["to"] = None if c.to_path is None else [str(k) for k in c.to_path]
        out.append(d)
    return out


def drilldown_levels(query: Query) -> Mapping[str, list[str]]:
    """The ``levels`` of a response as Cubes 1.1 gives them: keyed ``dim`` for the default
    hierarchy, ``dim@hier`` for another, and ``__within_split__`` when the query splits."""
    out = {(d.dimension.name if d.hierarchy.name == d.dimension.default_hierarchy_name
            else f"{d.dimension.name}@{d.hierarchy.name}"): [lv.name for lv in d.levels]
           for d in query.drilldown}
    if query.split:
        out[SPLIT_LEVEL] = [SPLIT_LEVEL]
    return out


#: Cubes' name for the split pseudo-dimension (and its one level) in ``levels``.
SPLIT_LEVEL = "__within_split__"
