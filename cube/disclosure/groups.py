"""Custom groups: every cell that is not predefined is a sum of protected predefined cells.

Why. The cell key method gives each *record set* its own consistent noise. A cell the
grammar can express but that is not predefined — a set, range or negated cut, a split, two
cuts through different hierarchies of one dimension (an LA ∩ a constituency), a drilldown in
one hierarchy under a point cut in another — is a new record set, so its noise would be
fresh, and averaging many such groups that share a small cell recovers that cell exactly
(measured before this module: 102 of 102 LA × month × reason cells from 1,500 set-cut
queries). So no custom group is computed from records at all.

What. A **predefined cell** fixes each dimension to one member of one level of one hierarchy
(or leaves it at "all"); it is computed from records and protected by its own cell key.
A custom group's published count is the sum of the published counts of the predefined cells
that *tile* it — on each dimension, the coarsest members of one hierarchy lying wholly
inside the group (a range of six months of a flow is two quarters; a set of OAs covering a
whole LSOA uses the LSOA); across dimensions, every combination of tiles. Its amount sum is
the sum of the tiles' published sums, withheld if any tile's is; its mean is that sum over
that count, with the same threshold. Whatever custom groups a user asks for, every number
is a sum of values that are published anyway, so no number of them reveals more.

How. :func:`is_predefined` decides from the Query alone (no I/O) whether every cell of a
query is a predefined cell; the gate then answers as before. Otherwise :func:`aggregate`
splits the query into boxes (a split adds its "outside" as disjoint boxes), tiles each
dimension that needs it from its dimension table (``cube.sql.tiles``), runs one raw query
per combination of tile levels (each a query of predefined cells that must pass the same
grammar limits as if asked directly), protects every tile with ``protect_table`` — the
gate's one protection function — and only then adds them up, orders, filters and pages in
Python. Nothing here reads a raw value after protection.
"""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cube import sql as compiler
from cube.disclosure.protect import (
    protect_table,
    published_means,
    withheld_column,
)
from cube.disclosure.rules import Protection, check_query
from cube.errors import TooLargeError
from cube.model import Aggregate, Cube, Dimension, Hierarchy
from cube.query import CutPart, Drill, Key, Query

if TYPE_CHECKING:
    from cube.raw import RawCube

#: Most predefined cells (tiles × tiles across dimensions) one custom-group query may add
#: up. A cost limit, not a disclosure one: sums of protected cells are always safe.
MAX_TILE_CELLS = 2_000_000
#: Tiles at one level beyond which the tile query reads the whole selection instead of an
#: ``IN`` list of the tiles' keys (bounded statement size).
MAX_IN_LIST = 5_000


# --- Which queries are custom -----------------------------------------------------------------

def _finest(dim: Dimension) -> str:
    """The dimension table's grain: the last level of the default hierarchy (OA, month,
    office, a category)."""
    return dim.hierarchy().levels[-1].name


def _resolved(cut: CutPart, drill: Drill | None) -> bool:
    """True if every drilled member lies wholly inside or wholly outside ``cut``: the cut
    reads only levels the drilled member fixes (or the drill is at the dimension's grain,
    which fixes every level)."""
    if drill is None:
        return False
    if drill.level.name == _finest(cut.dimension):
        return True
    drilled = {lv.name for lv in drill.levels}
    return all(lv.name in drilled for lv in cut.levels())


def _dimension_predefined(drill: Drill | None, cuts: Sequence[CutPart]) -> bool:
    """True if, on one dimension, every cell of the query is one member (or "all")."""
    unresolved = [c for c in cuts if not _resolved(c, drill)]
    if not unresolved:
        return True
    if len(unresolved) > 1:
        return False
    c = unresolved[0]
    if c.kind != "point" or c.invert:
        return False
    if drill is None:
        return True
    # A point cut below the drilled level: the cell is the cut's member, if the cut's path
    # fixes the drilled member (its levels include every drilled one).
    fixed = {lv.name for lv in c.levels()}
    return all(lv.name in fixed for lv in drill.levels)


def is_predefined(query: Query) -> bool:
    """True if every cell of ``query`` (and its summary) is a predefined cell."""
    for dim in query.cube.dimensions:
        drill = query.drill_for(dim.name)
        cuts = [c for c in query.cuts if c.dimension.name == dim.name]
        if not _dimension_predefined(drill, cuts):
            return False
        if any(not _resolved(s, drill) for s in query.split if s.dimension.name == dim.name):
            return False
    return True


def summary_query(query: Query) -> Query:
    """The query whose one cell is ``query``'s summary (all its cells together)."""
    return replace(query, drilldown=(), split=(), order=(), page=None, pagesize=None,
                   filters=(), top=None)


# --- Tiling -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Box:
    """A rectangle of the query's region: cuts on each dimension (ANDed) and, for a split,
    which side of it the box lies on."""

    cuts: tuple[CutPart, ...]
    within_split: bool | None


def _boxes(query: Query) -> list[_Box]:
    """Disjoint boxes covering the query's region. A split's outside, NOT(s1 AND … sk), is
    the union of the disjoint boxes s1 … s(j-1) AND NOT sj."""
    if not query.split:
        return [_Box(query.cuts, None)]
    out = [_Box(query.cuts + query.split, True)]
    for j, s in enumerate(query.split):
        out.append(_Box(query.cuts + query.split[:j] + (replace(s, invert=not s.invert),),
                        False))
    return out


def _candidates(dim: Dimension) -> list[Hierarchy]:
    """Hierarchies a group can be tiled in: those reaching the dimension table's grain (so
    "wholly inside" can be decided row by row), the default first."""
    finest = _finest(dim)
    default = dim.hierarchy()
    return [default, *(h for h in dim.hierarchies
                       if h is not default and h.levels[-1].name == finest)]


#: A kind of tile: (hierarchy name, depth); ("", -1) is a drilled member wholly inside.
_Kind = tuple[str, int]
_SELF: _Kind = ("", -1)


@dataclass(frozen=True)
class _Tiles:
    """One dimension's tiles in one box, by kind: the key paths of the tiles (for a
    drilled member itself, its path in the drilled hierarchy)."""

    dimension: Dimension
    by_kind: Mapping[_Kind, frozenset[tuple[Key, ...]]]

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_kind.values())


def _tile(raw: RawCube, query: Query, dim: Dimension, cuts: Sequence[CutPart]) -> _Tiles:
    """Tile the box's selection on ``dim`` within each drilled member (or as a whole).

    The same record set must give the same value however it is asked for, so the tiling
    is canonical: a drilled member wholly inside is itself; otherwise, per drilled member,
    the hierarchy whose coarsest-members tiling needs the fewest tiles (ties: the default
    hierarchy, then model order)."""
    drill = query.drill_for(dim.name)
    outer = drill.levels if drill is not None else ()
    options: dict[tuple[Key, ...], dict[str, list[tuple[int, tuple[Key, ...]]]]] = \
        defaultdict(lambda: defaultdict(list))
    whole: set[tuple[Key, ...]] = set()
    for h in _candidates(dim):
        table = raw.execute(compiler.tiles(query.cube, dim, h, outer, cuts, query.period_limit))
        depths = table.column("__tile_depth").to_pylist()
        keys = [table.column(f"__k{i}").to_pylist() for i in range(len(h.levels))]
        okeys = [table.column(f"__o{i}").to_pylist() for i in range(len(outer))]
        for row, depth in enumerate(depths):
            member = tuple(o[row] for o in okeys)
            if depth == -1:
                whole.add(member)
            else:
                options[member][h.name].append(
                    (int(depth), tuple(keys[i][row] for i in range(int(depth)))))
    by_kind: dict[_Kind, set[tuple[Key, ...]]] = defaultdict(set)
    by_kind[_SELF] |= whole
    order = [h.name for h in _candidates(dim)]
    for member, per_hierarchy in options.items():
        if member in whole:
            continue
        best = min(per_hierarchy, key=lambda name: (len(per_hierarchy[name]),
                                                    order.index(name)))
        for depth, path in per_hierarchy[best]:
            by_kind[(best, depth)].add(path)
    return _Tiles(dim, {k: frozenset(v) for k, v in by_kind.items() if v})


# --- Adding up protected tiles ----------------------------------------------------------------

_COUNT = "__n_hat"


def _sum_name(measure: str) -> str:
    return f"__{measure}_s_hat"


def _tile_aggregates(cube: Cube) -> tuple[Aggregate, ...]:
    """A count and, per amount measure, a sum: what every group value is made from."""
    count = cube.count_measure
    out = [Aggregate(_COUNT, count.label, count, "sum")]
    out += [Aggregate(_sum_name(m.name), m.label, m, "sum")
            for m in cube.measures if m.kind == "amount"]
    return tuple(out)


@dataclass(frozen=True)
class GroupResult:
    """Published cells of a custom-group query, before paging, plus how they were made."""

    cells: pa.Table
    summed_values: int
    #: Published predefined cells added up (tiles with a published count of zero are
    #: absent, like empty cells, and not counted).
    tiles: int


def _tile_cells(raw: RawCube, query: Query, box: _Box, p: Protection,
                keep: Sequence[str]) -> tuple[list[pa.Table], int]:
    """Protected tile cells of one box (count and sums in pence, withheld flags), keyed by
    the query's public attribute columns ``keep``."""
    tiled: list[_Tiles] = []
    for dim in query.cube.dimensions:
        drill = query.drill_for(dim.name)
        cuts = [c for c in box.cuts if c.dimension.name == dim.name]
        if not _dimension_predefined(drill, cuts):
            tiled.append(_tile(raw, query, dim, cuts))
    if any(t.count == 0 for t in tiled):
        return [], 0
    n_tiles = int(np.prod([t.count for t in tiled])) if tiled else 1
    if n_tiles > MAX_TILE_CELLS:
        raise TooLargeError(
            f"this custom group is the sum of {n_tiles:,} published cells, more than the "
            f"{MAX_TILE_CELLS:,} one query may add up; cut or group less finely",
            parameter="cut", value=None)
    aggs = _tile_aggregates(query.cube)
    out: list[pa.Table] = []
    for kinds in itertools.product(*(sorted(t.by_kind) for t in tiled)):
        drills: dict[str, list[Drill]] = {d.dimension.name: [d] for d in query.drilldown}
        within = []
        match: list[tuple[list[str], frozenset[tuple[Key, ...]]]] = []
        for t, (hname, depth) in zip(tiled, kinds, strict=True):
            name = t.dimension.name
            paths = t.by_kind[(hname, depth)]
            if (hname, depth) == _SELF:
                drill = drills[name][0]
                levels = drill.levels
            elif depth == 0:
                continue
            else:
                hier = t.dimension.hierarchy(hname)
                levels = hier.levels[:depth]
                drills[name] = [Drill(t.dimension, hier, levels[-1]), *drills.get(name, [])]
            match.append(([lv.key.ref for lv in levels], paths))
            if len(paths) <= MAX_IN_LIST:
                within.append((levels[-1].key,
                               tuple(sorted({p[-1] for p in paths}, key=str))))
        tile_query = Query(
            cube=query.cube, cuts=box.cuts,
            drilldown=tuple(d for dim in query.cube.dimensions for d in drills.get(dim.name, [])),
            aggregates=aggs, order=(), period_limit=query.period_limit,
            default_period=query.default_period, within=tuple(within),
            rollups=query.rollups)
        check_query(tile_query)  # a tile must be a cell the user could ask for directly
        result = raw.aggregate(tile_query)
        # Every tiled dimension whole (depth 0) and nothing drilled: the one tile is the
        # query's summary row (its cells are empty, which summed to zero before).
        cells = _only_tiles(result.cells if tile_query.drilldown else result.summary, match)
        protected = protect_table(cells, aggs, p, [k for k in keep if k != compiler.SPLIT])
        out.append(_pence(protected, query.cube, box.within_split, keep))
    return out, sum(t.num_rows for t in out)


def _only_tiles(cells: pa.Table, match: Sequence[tuple[list[str], frozenset[tuple[Key, ...]]]]
                ) -> pa.Table:
    """Rows that are tiles: a group whose key path (on each tiled dimension) is a tile (the
    ``IN`` list is on one level's keys, and a partly selected member is grouped too)."""
    mask = np.ones(cells.num_rows, dtype=bool)
    for refs, wanted in match:
        cols = [cells.column(r).to_pylist() for r in refs]
        mask &= np.fromiter((tuple(c[i] for c in cols) in wanted
                             for i in range(cells.num_rows)), dtype=bool, count=cells.num_rows)
    return cells.filter(pa.array(mask)) if not mask.all() else cells


def _pence(protected: pa.Table, cube: Cube, within_split: bool | None,
           keep: Sequence[str]) -> pa.Table:
    """Published tile values as integer pence with explicit withheld flags, so adding them
    up is exact."""
    cols: dict[str, pa.Array] = {k: protected.column(k) for k in keep
                                 if k != compiler.SPLIT}
    if within_split is not None:
        cols[compiler.SPLIT] = pa.array([within_split] * protected.num_rows, pa.bool_())
    cols[_COUNT] = protected.column(_COUNT)
    for m in cube.measures:
        if m.kind != "amount":
            continue
        pounds = protected.column(_sum_name(m.name))
        withheld = pc.is_null(pounds)
        flag = withheld_column(_sum_name(m.name))
        if flag in protected.column_names:
            withheld = pc.or_(withheld, protected.column(flag))
        pence = np.rint(np.asarray(pounds.fill_null(0).to_numpy(zero_copy_only=False))
                        * 100).astype(np.int64)
        cols[_sum_name(m.name)] = pa.array(pence, pa.int64())
        cols[withheld_column(_sum_name(m.name))] = withheld
    return pa.table(cols)


def _add_up(parts: Sequence[pa.Table], keys: Sequence[str], cube: Cube) -> pa.Table:
    """Sum tile values per output cell (a withheld tile sum withholds the cell's)."""
    table = pa.concat_tables(parts)
    sums = [_COUNT] + [_sum_name(m.name) for m in cube.measures if m.kind == "amount"]
    flags = [withheld_column(_sum_name(m.name)) for m in cube.measures if m.kind == "amount"]
    if not keys:
        cols: dict[str, pa.Array] = {s: pa.array([pc.sum(table.column(s)).as_py() or 0],
                                                 pa.int64()) for s in sums}
        cols.update({f: pa.array([bool(pc.any(table.column(f)).as_py())]) for f in flags})
        return pa.table(cols)
    grouped = table.group_by(list(keys), use_threads=False).aggregate(
        [(s, "sum") for s in sums] + [(f, "any") for f in flags])
    return grouped.rename_columns([
        c.removesuffix("_sum") if c.removesuffix("_sum") in sums else
        c.removesuffix("_any") if c.removesuffix("_any") in flags else c
        for c in grouped.column_names])


def _published(added: pa.Table, query: Query, p: Protection, keep: Sequence[str]
               ) -> pa.Table:
    """Group values in the public shape of the query's aggregates."""
    n_hat = np.asarray(added.column(_COUNT).to_numpy(zero_copy_only=False), dtype=np.int64)
    cols: dict[str, pa.Array] = {k: added.column(k) for k in keep}
    for a in query.aggregates:
        if a.measure.kind == "count":
            cols[a.name] = pa.array(n_hat, pa.int64())
            continue
        s_hat = np.asarray(added.column(_sum_name(a.measure.name))
                           .to_numpy(zero_copy_only=False), dtype=np.int64)
        held = np.asarray(added.column(withheld_column(_sum_name(a.measure.name)))
                          .to_numpy(zero_copy_only=False), dtype=bool)
        if a.function == "sum":
            # A group below the threshold has only tiles below it, all withheld: ``held``.
            cols[a.name] = pa.array(s_hat / 100.0, pa.float64(), mask=held)
            cols[withheld_column(a.name)] = pa.array(held, pa.bool_())
        else:
            mean, below = published_means(s_hat, n_hat, p)
            withheld = below | held
            cols[a.name] = pa.array(mean / 100.0, pa.float64(), mask=withheld)
            cols[withheld_column(a.name)] = pa.array(withheld, pa.bool_())
    return pa.table(cols)


def aggregate(raw: RawCube, query: Query, p: Protection, keep: Sequence[str]) -> GroupResult:
    """All published cells of a custom-group query (``keep``: its public attribute
    columns, and the split flag), ordered, filtered and ranked — not yet paged."""
    parts: list[pa.Table] = []
    tiles = 0
    for box in _boxes(query):
        tables, n = _tile_cells(raw, query, box, p, keep)
        parts += tables
        tiles += n
    if not parts:  # no tile anywhere: no cells, or a summary of zeros
        nothing = _empty(query, keep) if keep else _zero(query.cube)
        return GroupResult(_published(nothing, query, p, keep), 0, 0)
    added = _add_up(parts, keep, query.cube)
    if keep:
        added = added.filter(pc.greater(added.column(_COUNT), 0))
    cells = _published(added, query, p, keep)
    if keep:
        cells = _arrange(cells, query)
    return GroupResult(cells, cells.num_rows, tiles)


def _empty(query: Query, keep: Sequence[str]) -> pa.Table:
    types = {a.ref: pa.int64() if a.type == "integer" else pa.string()
             for a in query.cell_attributes}
    cols: dict[str, pa.Array] = {k: pa.array([], types.get(k, pa.bool_())) for k in keep}
    cols[_COUNT] = pa.array([], pa.int64())
    for m in query.cube.measures:
        if m.kind == "amount":
            cols[_sum_name(m.name)] = pa.array([], pa.int64())
            cols[withheld_column(_sum_name(m.name))] = pa.array([], pa.bool_())
    return pa.table(cols)


def _zero(cube: Cube) -> pa.Table:
    cols: dict[str, pa.Array] = {_COUNT: pa.array([0], pa.int64())}
    for m in cube.measures:
        if m.kind == "amount":
            cols[_sum_name(m.name)] = pa.array([0], pa.int64())
            cols[withheld_column(_sum_name(m.name))] = pa.array([False])
    return pa.table(cols)


_OPS: Mapping[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "=": operator.eq, "!=": operator.ne}


def _sort_keys(query: Query) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for o in query.order:
        name = o.aggregate.name if o.aggregate is not None else (
            o.attribute.ref if o.attribute is not None else o.ref)
        keys.append((name, "descending" if o.descending else "ascending"))
    for a in compiler.default_order(query):
        if all(a.ref != k for k, _ in keys):
            keys.append((a.ref, "ascending"))
    if query.split:
        keys.append((compiler.SPLIT, "ascending"))
    return keys


def _arrange(cells: pa.Table, query: Query) -> pa.Table:
    """Measure filters, top-N and a total order, as the SQL path does them."""
    for f in query.filters:
        values = cells.column(f.aggregate.name).to_pylist()
        mask = [v is not None and bool(_OPS[f.op](v, f.value)) for v in values]
        cells = cells.filter(pa.array(mask, pa.bool_()))
    order = _sort_keys(query)
    if query.top is not None:
        top = query.top
        ranked = cells.sort_by([(top.aggregate.name, "descending"), *order])  # nulls last
        parents = [] if top.per is None else [lv.key.ref for lv in top.per.levels[:-1]]
        seen: dict[tuple[Any, ...], int] = defaultdict(int)
        cols = [ranked.column(k).to_pylist() for k in parents]
        mask = []
        for i in range(ranked.num_rows):
            group = tuple(c[i] for c in cols)
            seen[group] += 1
            mask.append(seen[group] <= top.n)
        cells = ranked.filter(pa.array(mask, pa.bool_()))
    return cells.sort_by(order)  # nulls last, as pyarrow's default
