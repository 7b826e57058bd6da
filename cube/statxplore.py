"""The model seen as DWP's Stat-Xplore sees a database: ids, schema nodes and table queries.

Why: analysts already script against Stat-Xplore's Open Data API (the House of Commons
Library's ``statxplorer``, ``dwpstat``, Python harvesters). This module maps statcube's model
onto that API's vocabulary, so the HTTP layer (server/statxplore.py) only parses, calls in
here and formats — and every number still comes from the one disclosure gate through the
same :class:`~cube.query.Query` the Slicer API builds.

The mapping (every id is derived from model.json, so it is stable across releases):

- folder ``str:folder:<cube>``: one per cube (a benefit), holding its database;
- database ``str:database:<cube>``: the cube;
- count ``str:count:<cube>:<fact>``: the cube's count aggregate;
- measure ``str:measure:<cube>:<fact>:<measure>``: an amount measure, whose statfns
  ``str:statfn:<cube>:<fact>:<measure>:SUM|MEAN`` are its sum and mean aggregates;
- field ``str:field:<cube>:<fact>:<field>``: a hierarchy of a dimension (``<dim>`` for the
  default hierarchy, ``<dim>.<hierarchy>`` for the others);
- valueset ``str:valueset:<cube>:<fact>:<field>:<level>``: a level of that hierarchy;
- value ``str:value:<cube>:<fact>:<field>:<level>:<code>``: a member of that level, by its
  key (ONS code, category code); time periods as ``2026`` (year), ``2026Q3`` (quarter),
  ``202608`` (month), since a month key alone names no single period.

``<fact>`` is the cube's fact table name. A table query becomes Queries: each field's
predefined items are a drilldown to their level (with a set cut naming them), each grouped
item (a map entry of several values) and each Total a cut of its own. A grouped item is a
custom group, so the gate publishes it as the sum of the protected predefined cells that
tile it (cube/disclosure/groups.py); a Total is the cut of every value the recode maps,
which the same tiling turns into the predefined total when it covers the whole dimension.
One Query runs per combination of those parts; values are assembled into Stat-Xplore's
nested ``cubes`` arrays (fields in request order, the last varying fastest).

This module imports no HTTP code; it reads the warehouse only through a
:class:`~cube.workspace.CubeBrowser` (members, and aggregates through the caller's
function, which applies the caller's size limits around the gate).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cube import labels
from cube import sql as compiler
from cube.disclosure.gate import ProtectedResult
from cube.errors import TooLargeError, UserError, suggest
from cube.grammar import Cut, DrilldownSpec, PointCut, SetCut, format_cuts, format_drilldown
from cube.model import Aggregate, Cube, Dimension, Hierarchy, Level, Model
from cube.query import Key, Query, Request
from cube.workspace import CubeBrowser

ROOT = "str:folder:root"
#: Languages offered; ``cy`` gives Welsh labels where the geography lookups carry them.
LANGUAGES = labels.LANGUAGES
TOTAL_LABEL = {"en": "Total", "cy": "Cyfanswm"}
#: Most Queries one table may run (a grouped item or Total on each of several fields
#: multiplies them): a cost limit.
MAX_QUERIES = 200
#: Most values whose labels a grouped item's label lists before "and N more".
GROUP_LABEL_VALUES = 5

NodeType = Literal["FOLDER", "DATABASE", "COUNT", "MEASURE", "STATFN", "FIELD", "VALUESET",
                   "VALUE"]
STATFNS: Mapping[str, str] = {"sum": "SUM", "avg": "MEAN"}


class StatXploreError(UserError):
    """A Stat-Xplore request that cannot be answered (unknown id, malformed table query):
    HTTP 422, as Stat-Xplore answers. Message safe for clients."""

    status = 422
    type = "unprocessable"


# --- ids ----------------------------------------------------------------------------------

_PARTS = {"folder": 1, "database": 1, "count": 2, "measure": 3, "statfn": 4, "field": 3,
          "valueset": 4, "value": 5}


@dataclass(frozen=True)
class Ref:
    """A parsed Stat-Xplore id: its kind and the parts after it."""

    kind: str
    parts: tuple[str, ...]
    text: str


def parse_id(text: object, parameter: str = "id") -> Ref:
    """``str:<kind>:…`` split into its parts; a value's code may itself contain ``:``."""
    if not isinstance(text, str) or not text.startswith("str:"):
        raise StatXploreError(f"not a Stat-Xplore id: {text!r}", parameter=parameter,
                              value=str(text), hint="ids look like str:database:pip")
    head, _, rest = text[4:].partition(":")
    n = _PARTS.get(head)
    if n is None or not rest:
        raise StatXploreError(f"unknown id {text!r}", parameter=parameter, value=text,
                              hint="kinds: " + ", ".join(_PARTS))
    parts = tuple(rest.split(":", n - 1))
    if len(parts) != n or any(p == "" for p in parts):
        raise StatXploreError(f"unknown id {text!r}: a {head} id has {n} part(s) after "
                              f"str:{head}:", parameter=parameter, value=text)
    return Ref(head, parts, text)


def _unknown(text: str, parameter: str, what: str = "id", choices: Sequence[str] = ()
             ) -> StatXploreError:
    return StatXploreError(f"unknown {what} {text!r}", parameter=parameter, value=text,
                           hint=suggest(text, choices) if choices else None)


# --- the mapping (pure) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One hierarchy of one dimension of one cube."""

    cube: Cube
    dimension: Dimension
    hierarchy: Hierarchy

    @property
    def code(self) -> str:
        if self.hierarchy.name == self.dimension.default_hierarchy_name:
            return self.dimension.name
        return f"{self.dimension.name}.{self.hierarchy.name}"

    @property
    def id(self) -> str:
        return f"str:field:{self.cube.name}:{self.cube.physical.fact}:{self.code}"

    @property
    def label(self) -> str:
        if len(self.hierarchy.levels) == 1:
            return self.dimension.label
        return " - ".join(lv.label for lv in self.hierarchy.levels)

    @property
    def default_level(self) -> Level:
        """The value set used when a table names the field without a recode: a single
        period for time (stocks are never added over time), else the first level."""
        if self.dimension.is_time:
            names = [lv.name for lv in self.hierarchy.levels]
            grain = self.cube.grain if self.cube.grain in names else names[-1]
            return self.hierarchy.level(grain)
        return self.hierarchy.levels[0]

    def valueset_id(self, level: Level) -> str:
        return f"str:valueset:{self.cube.name}:{self.cube.physical.fact}:{self.code}:{level.name}"

    def value_id(self, level: Level, code: str) -> str:
        return (f"str:value:{self.cube.name}:{self.cube.physical.fact}:{self.code}:"
                f"{level.name}:{code}")

    def level(self, name: str, text: str, parameter: str) -> Level:
        for lv in self.hierarchy.levels:
            if lv.name == name:
                return lv
        raise _unknown(text, parameter, "value set",
                       [self.valueset_id(lv) for lv in self.hierarchy.levels])


@dataclass(frozen=True)
class MeasureRef:
    id: str
    label: str
    aggregate: Aggregate
    type: NodeType

    @property
    def precision(self) -> int:
        return 0 if self.aggregate.measure.kind == "count" else 2


def count_id(cube: Cube) -> str:
    return f"str:count:{cube.name}:{cube.physical.fact}"


def measure_id(cube: Cube, measure: str) -> str:
    return f"str:measure:{cube.name}:{cube.physical.fact}:{measure}"


def fields(cube: Cube) -> list[Field]:
    return [Field(cube, d, h) for d in cube.dimensions for h in d.hierarchies]


def measures(cube: Cube) -> list[MeasureRef]:
    """The count first, then each amount measure's statfns, in the model's order."""
    out = []
    for a in cube.aggregates:
        if a.measure.kind == "count" and a.function == "sum":
            out.append(MeasureRef(count_id(cube), a.label, a, "COUNT"))
            break
    for a in cube.aggregates:
        if a.measure.kind == "amount" and a.function in STATFNS:
            out.append(MeasureRef(f"str:statfn:{cube.name}:{cube.physical.fact}:"
                                  f"{a.measure.name}:{STATFNS[a.function]}", a.label, a,
                                  "STATFN"))
    return out


def _cube(model: Model, cubes: Sequence[str], name: str, text: str, parameter: str) -> Cube:
    if name not in cubes:
        raise _unknown(text, parameter, choices=[f"str:database:{c}" for c in cubes])
    return model.cube(name)


def _check_fact(cube: Cube, fact: str, text: str, parameter: str) -> None:
    if fact != cube.physical.fact:
        raise StatXploreError(f"unknown id {text!r}: database {cube.name!r} has fact "
                              f"{cube.physical.fact!r}", parameter=parameter, value=text)


def field_of(model: Model, cubes: Sequence[str], ref: Ref, parameter: str) -> Field:
    """The field a field, valueset or value id names."""
    cube = _cube(model, cubes, ref.parts[0], ref.text, parameter)
    _check_fact(cube, ref.parts[1], ref.text, parameter)
    for f in fields(cube):
        if f.code == ref.parts[2]:
            return f
    raise _unknown(ref.text, parameter, "field", [f.id for f in fields(cube)])


def measure_of(model: Model, cubes: Sequence[str], text: object, database: Cube,
               parameter: str) -> MeasureRef:
    ref = parse_id(text, parameter)
    if ref.kind not in ("count", "statfn"):
        raise StatXploreError(f"{ref.text!r} is not a measure: give a str:count or "
                              "str:statfn id", parameter=parameter, value=ref.text)
    cube = _cube(model, cubes, ref.parts[0], ref.text, parameter)
    if cube.name != database.name:
        raise StatXploreError(f"measure {ref.text!r} is not of database "
                              f"str:database:{database.name}", parameter=parameter,
                              value=ref.text)
    _check_fact(cube, ref.parts[1], ref.text, parameter)
    known = measures(cube)
    for m in known:
        if m.id == ref.text:
            return m
    if ref.kind == "statfn" and ref.parts[3] not in STATFNS.values():
        raise StatXploreError(f"statistical function {ref.parts[3]!r} is not offered",
                              parameter=parameter, value=ref.text,
                              hint="offered: " + ", ".join(STATFNS.values()))
    raise _unknown(ref.text, parameter, "measure", [m.id for m in known])


# --- codes of members ---------------------------------------------------------------------

def _time_code(level: Level, row: Mapping[str, Any], dim: str) -> str:
    y = row[f"{dim}.year"]
    if level.name == "year":
        return f"{y}"
    if level.name == "quarter":
        return f"{y}Q{row[level.key.ref]}"
    return f"{y}{int(row[level.key.ref]):02d}"


def member_code(f: Field, level: Level, row: Mapping[str, Any]) -> str:
    """A member's value code: its key, or for time the period (``2026``, ``2026Q3``,
    ``202608``), since a month key alone (8) names no single period."""
    if f.dimension.is_time:
        return _time_code(level, row, f.dimension.name)
    return str(row[level.key.ref])


def member_path(f: Field, level: Level, row: Mapping[str, Any]) -> tuple[Key, ...]:
    levels = f.hierarchy.levels[: f.hierarchy.level_index(level.name) + 1]
    return tuple(row[lv.key.ref] for lv in levels)


@dataclass(frozen=True)
class Member:
    code: str
    label: str
    path: tuple[Key, ...]


def localise(browser: CubeBrowser, f: Field, level: Level, members: list[Member], lang: str
             ) -> list[Member]:
    """``members`` with their labels in ``lang``: the one place a language changes this
    API's labels. Each member whose level has a translation in the warehouse
    (:func:`cube.labels.translations`: for ``cy``, the lookups' Welsh names of Welsh areas)
    takes it; every other keeps its English label, so a Welsh table names English LAs in
    English, and a warehouse built without Welsh names answers in English throughout."""
    names = labels.translations(browser, level, lang)
    if not names:
        return members
    return [replace(m, label=names.get(m.path[-1], m.label)) for m in members]


def members_page(browser: CubeBrowser, f: Field, level: Level, offset: int, limit: int,
                 lang: str = "en") -> tuple[list[Member], int]:
    """One page of a value set's members (labels only, no values) and how many there are."""
    page, rem = divmod(offset, limit)
    if rem:
        raise StatXploreError("offset must be a multiple of limit", parameter="offset",
                              value=str(offset))
    m = browser.members(f.dimension.name, hierarchy=f.hierarchy.name, level=level.name,
                        page=page, pagesize=limit)
    out = [Member(member_code(f, level, r), str(r[level.label_attribute.ref]),
                  member_path(f, level, r)) for r in m.members.to_pylist()]
    return localise(browser, f, level, out, lang), int(m.total_member_count or 0)


def resolve_codes(browser: CubeBrowser, f: Field, level: Level, codes: Sequence[str]
                  ) -> dict[str, Member]:
    """The members named by value codes of one level (unknown codes are absent). Periods
    after the release's last are unknown, exactly like periods never loaded."""
    if not codes:
        return {}
    if f.dimension.is_time or len(f.hierarchy.levels) == 1:
        # Few members (periods, categories): list the level and match codes.
        wanted = set(codes)
        m = browser.members(f.dimension.name, hierarchy=f.hierarchy.name, level=level.name)
        found = {}
        for r in m.members.to_pylist():
            code = member_code(f, level, r)
            if code in wanted:
                found[code] = Member(code, str(r[level.label_attribute.ref]),
                                     member_path(f, level, r))
        return found
    found = {}
    keys = sorted(set(codes))
    for i in range(0, len(keys), 5000):
        chunk = keys[i:i + 5000]
        table = browser.ws.engine.execute(compiler.member_lookup(
            browser.cube, f.dimension, f.hierarchy, level, chunk))
        for r in table.to_pylist():
            code = str(r[level.key.ref])
            found[code] = Member(code, str(r[level.label_attribute.ref]),
                                 member_path(f, level, r))
    return found


# --- schema nodes -------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    id: str
    label: str
    type: NodeType
    children: tuple[Node, ...] = ()
    #: How many children there are in all when ``children`` is one page of them.
    total: int | None = None

    def brief(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "type": self.type}


def root(model: Model, cubes: Sequence[str]) -> Node:
    return Node(ROOT, "Root", "FOLDER", tuple(
        Node(f"str:folder:{c}", model.cube(c).label, "FOLDER") for c in cubes))


def database_node(cube: Cube) -> Node:
    children: list[Node] = []
    seen_measures: list[str] = []
    for m in measures(cube):
        if m.type == "COUNT":
            children.append(Node(m.id, m.label, "COUNT"))
        elif m.aggregate.measure.name not in seen_measures:
            seen_measures.append(m.aggregate.measure.name)
            children.append(Node(measure_id(cube, m.aggregate.measure.name),
                                 m.aggregate.measure.label, "MEASURE"))
    children += [Node(f.id, f.label, "FIELD") for f in fields(cube)]
    return Node(f"str:database:{cube.name}", cube.label, "DATABASE", tuple(children))


def node(model: Model, cubes: Sequence[str], text: str,
         browser: Callable[[str], CubeBrowser], offset: int = 0, limit: int = 1000,
         lang: str = "en") -> Node:
    """The schema node ``text`` with (one page of) its children."""
    if text == ROOT:
        return root(model, cubes)
    ref = parse_id(text)
    cube = _cube(model, cubes, ref.parts[0], text, "id")
    if ref.kind == "folder":
        db = database_node(cube)
        return Node(text, cube.label, "FOLDER", (Node(db.id, db.label, "DATABASE"),))
    if ref.kind == "database":
        return database_node(cube)
    _check_fact(cube, ref.parts[1], text, "id")
    if ref.kind in ("count", "statfn"):
        m = measure_of(model, cubes, text, cube, "id")
        return Node(m.id, m.label, m.type)
    if ref.kind == "measure":
        statfns = [m for m in measures(cube) if m.type == "STATFN"
                   and m.aggregate.measure.name == ref.parts[2]]
        if not statfns:
            raise _unknown(text, "id", "measure")
        return Node(text, statfns[0].aggregate.measure.label, "MEASURE",
                    tuple(Node(m.id, m.label, "STATFN") for m in statfns))
    f = field_of(model, cubes, ref, "id")
    if ref.kind == "field":
        return Node(f.id, f.label, "FIELD", tuple(
            Node(f.valueset_id(lv), lv.label, "VALUESET") for lv in f.hierarchy.levels))
    level = f.level(ref.parts[3], text, "id")
    if ref.kind == "valueset":
        page, total = members_page(browser(cube.name), f, level, offset, limit, lang)
        return Node(f.valueset_id(level), level.label, "VALUESET", tuple(
            Node(f.value_id(level, m.code), m.label, "VALUE") for m in page), total)
    b = browser(cube.name)
    found = resolve_codes(b, f, level, [ref.parts[4]])
    if ref.parts[4] not in found:
        raise _unknown(text, "id", "value")
    member = localise(b, f, level, [found[ref.parts[4]]], lang)[0]
    return Node(text, member.label, "VALUE")


# --- table queries --------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One item of a field in a table: predefined (one member), grouped (several) or the
    Total of the field's mapped values."""

    kind: Literal["value", "group", "total"]
    members: tuple[tuple[Level, Member], ...]
    uris: tuple[str, ...]

    def label(self, lang: str) -> str:
        if self.kind == "total":
            return TOTAL_LABEL.get(lang, TOTAL_LABEL["en"])
        names = [m.label for _, m in self.members]
        if len(names) <= GROUP_LABEL_VALUES:
            return " + ".join(names)
        more = len(names) - GROUP_LABEL_VALUES
        return " + ".join(names[:GROUP_LABEL_VALUES]) + f" and {more} more"


@dataclass(frozen=True)
class FieldPlan:
    field: Field
    items: tuple[Item, ...]
    recoded: bool


@dataclass(frozen=True)
class TablePlan:
    cube: Cube
    measures: tuple[MeasureRef, ...]
    fields: tuple[FieldPlan, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(f.items) for f in self.fields)

    @property
    def cell_count(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _list(value: object, parameter: str) -> list[Any]:
    if not isinstance(value, list):
        raise StatXploreError(f"{parameter} must be a JSON array", parameter=parameter,
                              value=_short(value))
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


TABLE_KEYS = ("database", "measures", "recodes", "dimensions")


def plan_table(model: Model, cubes: Sequence[str], body: object,
               browser: Callable[[str], CubeBrowser], lang: str = "en"
               ) -> tuple[TablePlan, CubeBrowser]:
    """Resolve a table query's ids against the model and the release's members, or raise
    :class:`StatXploreError` naming the offending part."""
    if not isinstance(body, dict):
        raise StatXploreError("a table query is a JSON object with database, measures, "
                              "dimensions and (optionally) recodes", parameter="body")
    extra = sorted(set(body) - set(TABLE_KEYS))
    if extra:
        raise StatXploreError(f"unknown table query key {extra[0]!r}", parameter=extra[0],
                              hint="keys: " + ", ".join(TABLE_KEYS))
    if "database" not in body:
        raise StatXploreError("a table query needs a database", parameter="database")
    ref = parse_id(body["database"], "database")
    if ref.kind != "database":
        raise StatXploreError(f"{ref.text!r} is not a database id", parameter="database",
                              value=ref.text)
    cube = _cube(model, cubes, ref.parts[0], ref.text, "database")
    b = browser(cube.name)
    wanted = _list(body.get("measures"), "measures")
    if not wanted:
        raise StatXploreError("a table query needs at least one measure",
                              parameter="measures", value="[]")
    ms = tuple(measure_of(model, cubes, m, cube, f"measures[{i}]")
               for i, m in enumerate(wanted))
    if len({m.id for m in ms}) != len(ms):
        raise StatXploreError("a measure is listed twice", parameter="measures")
    dims = _list(body.get("dimensions", []), "dimensions")
    field_ids: list[tuple[str, str]] = []
    for i, d in enumerate(dims):
        for j, fid in enumerate(d if isinstance(d, list) else [d]):
            field_ids.append((f"dimensions[{i}][{j}]", fid))
    if not field_ids:
        raise StatXploreError("a table query needs at least one field in dimensions",
                              parameter="dimensions", value=_short(dims))
    recodes = body.get("recodes") or {}
    if not isinstance(recodes, dict):
        raise StatXploreError("recodes must be a JSON object (or null)", parameter="recodes",
                              value=_short(recodes))
    plans: list[FieldPlan] = []
    seen_dims: dict[str, str] = {}
    for parameter, fid in field_ids:
        fref = parse_id(fid, parameter)
        if fref.kind != "field":
            raise StatXploreError(f"{fref.text!r} is not a field id", parameter=parameter,
                                  value=fref.text)
        f = field_of(model, cubes, fref, parameter)
        if f.cube.name != cube.name:
            raise StatXploreError(f"field {fid!r} is not of database {ref.text}",
                                  parameter=parameter, value=fid)
        if f.dimension.name in seen_dims:
            raise StatXploreError(
                f"field {fid!r} shares its dimension with {seen_dims[f.dimension.name]!r}: "
                "a table may hold one field of each dimension", parameter=parameter,
                value=fid)
        seen_dims[f.dimension.name] = fid
        plans.append(_plan_field(b, f, recodes.get(fid), f"recodes.{fid}", lang))
    stray = [k for k in recodes if k not in seen_dims.values()]
    if stray:
        raise StatXploreError(f"recoded field {stray[0]!r} is not in dimensions",
                              parameter=f"recodes.{stray[0]}", value=stray[0],
                              hint="a recoded field must also appear in dimensions")
    return TablePlan(cube, ms, tuple(plans)), b


def _plan_field(b: CubeBrowser, f: Field, recode: object, parameter: str, lang: str
                ) -> FieldPlan:
    if recode is None:
        level = f.default_level
        m = b.members(f.dimension.name, hierarchy=f.hierarchy.name, level=level.name)
        every = [Member(member_code(f, level, r), str(r[level.label_attribute.ref]),
                        member_path(f, level, r)) for r in m.members.to_pylist()]
        every = localise(b, f, level, every, lang)
        return FieldPlan(f, tuple(Item("value", ((level, x),), (f.value_id(level, x.code),))
                                  for x in every), False)
    if not isinstance(recode, dict) or set(recode) - {"map", "total"}:
        raise StatXploreError("a recode is {\"map\": [[value ids], …], \"total\": bool}",
                              parameter=parameter, value=_short(recode))
    total = recode.get("total", False)
    if not isinstance(total, bool):
        raise StatXploreError("total must be true or false", parameter=f"{parameter}.total",
                              value=_short(total))
    entries = _list(recode.get("map"), f"{parameter}.map")
    if not entries:
        raise StatXploreError("a recode map needs at least one item",
                              parameter=f"{parameter}.map", value="[]")
    # Parse every id first, then resolve each level's codes in one lookup.
    parsed: list[list[tuple[Level, str, str]]] = []
    for i, entry in enumerate(entries):
        where = f"{parameter}.map[{i}]"
        ids = _list(entry, where)
        if not ids:
            raise StatXploreError("a recode item needs at least one value id",
                                  parameter=where, value="[]")
        row = []
        for vid in ids:
            vref = parse_id(vid, where)
            if vref.kind != "value" or vref.parts[:3] != (f.cube.name, f.cube.physical.fact,
                                                          f.code):
                raise StatXploreError(f"{vid!r} is not a value of field {f.id!r}",
                                      parameter=where, value=str(vid))
            row.append((f.level(vref.parts[3], vid, where), vref.parts[4], vid))
        parsed.append(row)
    by_level: dict[str, list[str]] = {}
    levels: dict[str, Level] = {}
    for row in parsed:
        for level, code, _ in row:
            by_level.setdefault(level.name, []).append(code)
            levels[level.name] = level
    found: dict[tuple[str, str], Member] = {}
    for name, codes in by_level.items():
        level = levels[name]
        members = localise(b, f, level, list(resolve_codes(b, f, level, codes).values()), lang)
        found.update({(name, x.code): x for x in members})
    items = []
    for i, row in enumerate(parsed):
        members_: list[tuple[Level, Member]] = []
        for level, code, vid in row:
            hit = found.get((level.name, code))
            if hit is None:
                raise _unknown(vid, f"{parameter}.map[{i}]", "value")
            members_.append((level, hit))
        items.append(Item("value" if len(members_) == 1 else "group", tuple(members_),
                          tuple(vid for _, _, vid in row)))
    if total:
        union = list(dict.fromkeys(x for it in items for x in it.members))
        items.append(Item("total", tuple(union), ()))
    return FieldPlan(f, tuple(items), True)


@dataclass(frozen=True)
class _Part:
    """One way a Query treats one field: drilled to a level (predefined items, their
    positions) or cut to one item (a group or a Total)."""

    plan: FieldPlan
    drill: Level | None
    positions: tuple[int, ...]
    cut: Cut | None = None
    #: Predefined items by member path (a path may recur in several items).
    index: Mapping[tuple[Key, ...], tuple[int, ...]] = field(default_factory=dict)


def _cut(f: Field, members: Sequence[tuple[Level, Member]]) -> Cut:
    paths = tuple(dict.fromkeys(tuple(str(k) for k in m.path) for _, m in members))
    hier = None if f.hierarchy.name == f.dimension.default_hierarchy_name else f.hierarchy.name
    if len(paths) == 1:
        return PointCut(f.dimension.name, paths[0], hier)
    return SetCut(f.dimension.name, paths, hier)


def _parts(plan: FieldPlan) -> list[_Part]:
    out: list[_Part] = []
    by_level: dict[str, list[int]] = {}
    for i, item in enumerate(plan.items):
        if item.kind == "value":
            by_level.setdefault(item.members[0][0].name, []).append(i)
        else:
            out.append(_Part(plan, None, (i,), _cut(plan.field, item.members)))
    for name, positions in by_level.items():
        level = plan.field.hierarchy.level(name)
        index: dict[tuple[Key, ...], tuple[int, ...]] = {}
        for i in positions:
            path = plan.items[i].members[0][1].path
            index[path] = (*index.get(path, ()), i)
        # Recoded: cut to the named members (what makes a drill of OAs allowed, and reads
        # only their rows); not recoded: every member of the level, no cut needed.
        cut = _cut(plan.field, [plan.items[i].members[0] for i in positions]) \
            if plan.recoded else None
        out.append(_Part(plan, level, tuple(positions), cut, index))
    return out


Aggregator = Callable[[Query], ProtectedResult]


@dataclass(frozen=True)
class Table:
    plan: TablePlan
    #: Per measure id, values in row-major order over ``plan.shape`` (None: withheld).
    values: Mapping[str, list[float | int | None]]
    default_period: str | None
    notes: tuple[str, ...]


def run_table(plan: TablePlan, browser: CubeBrowser, aggregate: Aggregator, max_cells: int
              ) -> Table:
    """Every cell of the table from the gate: one Query per combination of parts."""
    if plan.cell_count > max_cells:
        raise TooLargeError(
            f"this table has {plan.cell_count:,} cells, more than the limit of "
            f"{max_cells:,} cells per response", parameter="dimensions",
            value=str(plan.cell_count), hint="recode fields to fewer items")
    parts = [_parts(p) for p in plan.fields]
    combos = list(itertools.product(*parts))
    if len(combos) > MAX_QUERIES:
        raise StatXploreError(
            f"this table needs {len(combos):,} queries (grouped items and totals on several "
            f"fields multiply), more than {MAX_QUERIES}", parameter="recodes",
            hint="use fewer grouped items or totals, or ask for several tables")
    shape = plan.shape
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    names = [m.aggregate.name for m in plan.measures]
    values: dict[str, list[float | int | None]] = {
        m.id: [None if m.aggregate.function == "avg" else 0] * plan.cell_count
        for m in plan.measures}
    default_period = None
    notes: list[str] = []
    for combo in combos:
        cuts = [p.cut for p in combo if p.cut is not None]
        drills = [DrilldownSpec(p.plan.field.dimension.name, _hier(p.plan.field), p.drill.name)
                  for p in combo if p.drill is not None]
        query = browser.query(Request.make(
            plan.cube.name, cut=format_cuts(cuts), drilldown=format_drilldown(drills) or None,
            aggregates=names))
        result = aggregate(query)
        default_period = default_period or query.default_period
        for note in result.report.notes:
            if note not in notes:
                notes.append(note)
        fixed = [p.positions[0] if p.drill is None else None for p in combo]
        if not drills:
            _put(values, plan, strides, [fixed], result.summary)
            continue
        key_refs = [[lv.key.ref for lv in p.plan.field.hierarchy.levels[
            : p.plan.field.hierarchy.level_index(p.drill.name) + 1]] if p.drill else []
            for p in combo]
        for row in result.cells.to_pylist():
            choices: list[list[int]] = []
            for p, refs, fx in zip(combo, key_refs, fixed, strict=True):
                if fx is not None:
                    choices.append([fx])
                else:
                    choices.append(list(p.index.get(tuple(row[r] for r in refs), ())))
            _put(values, plan, strides, [list(c) for c in itertools.product(*choices)], row)
    return Table(plan, values, default_period, tuple(notes))


def _hier(f: Field) -> str | None:
    return None if f.hierarchy.name == f.dimension.default_hierarchy_name else f.hierarchy.name


def _put(values: dict[str, list[float | int | None]], plan: TablePlan, strides: list[int],
         positions: Sequence[Sequence[int | None]], source: Mapping[str, Any]) -> None:
    for pos in positions:
        flat = sum((p or 0) * s for p, s in zip(pos, strides, strict=True))
        for m in plan.measures:
            values[m.id][flat] = source.get(m.aggregate.name)


def nest(flat: Sequence[Any], shape: Sequence[int]) -> Any:
    """Row-major ``flat`` as nested lists of ``shape`` (the last dimension varies fastest)."""
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
