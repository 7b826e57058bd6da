"""The logical cube model, parsed once from model.json into frozen objects.

model.json is in the Cubes 1.1 model format so the same file stays valid for Cubes; statcube's
own settings live in ``info`` objects (cube ``info.disclosure``, ``info.keys``, ``info.kind``,
measure ``info.kind``/``info.max_column``, dimension ``info.members``). Parsing happens in two
steps: a JSON-schema pass for shape (errors name the JSON path, e.g.
``$.cubes[2].aggregates[0].function``) and a semantic pass for references (unknown dimensions,
levels in hierarchies, unmapped attributes).

The logical model (cubes, dimensions, levels, measures, aggregates) is kept apart from the
physical mapping (:class:`Physical`: tables, joins, columns) so that compilation is the only
place the two meet. Nothing here touches a database, the filesystem (beyond reading the model)
or HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jsonschema

from cube.errors import (
    ModelError,
    NoSuchAggregateError,
    NoSuchCubeError,
    NoSuchDimensionError,
    NoSuchHierarchyError,
    NoSuchLevelError,
    suggest,
    unknown,
)

Cardinality = Literal["tiny", "low", "medium", "high"]
NonAdditive = Literal["time", "all"] | None
AggregateFunction = Literal["sum", "avg"]
MeasureKind = Literal["count", "amount"]

#: Level names shipped by the time dimension, coarse to fine.
TIME_ROLE = "time"


def _frozen_map(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


# ---------------------------------------------------------------------------------------------
# Logical model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    dimension: str
    name: str
    label: str
    #: "string" or "integer" (from the attribute's ``info.type``): how cut values are bound.
    type: Literal["string", "integer"] = "string"

    @property
    def ref(self) -> str:
        """The public name used in cells, order and mappings: ``dimension.attribute``."""
        return f"{self.dimension}.{self.name}"


@dataclass(frozen=True)
class Level:
    dimension: str
    name: str
    label: str
    description: str
    attributes: tuple[Attribute, ...]
    key: Attribute
    label_attribute: Attribute
    order_attribute: Attribute
    cardinality: Cardinality
    role: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.dimension}:{self.name}"


@dataclass(frozen=True)
class Hierarchy:
    dimension: str
    name: str
    label: str
    levels: tuple[Level, ...]

    def level_index(self, name: str) -> int:
        for i, lvl in enumerate(self.levels):
            if lvl.name == name:
                return i
        raise unknown(
            NoSuchLevelError,
            "level",
            name,
            [lv.name for lv in self.levels],
            where=f"hierarchy {self.dimension}@{self.name}",
        )

    def level(self, name: str) -> Level:
        return self.levels[self.level_index(name)]


@dataclass(frozen=True)
class Member:
    """A member of a small category codelist declared in the model."""

    code: str
    label: str


@dataclass(frozen=True)
class Dimension:
    name: str
    label: str
    description: str
    role: str | None
    levels: tuple[Level, ...]
    hierarchies: tuple[Hierarchy, ...]
    default_hierarchy_name: str
    members: tuple[Member, ...] = ()
    geographic: bool = False

    @property
    def is_time(self) -> bool:
        return self.role == TIME_ROLE

    @property
    def is_flat(self) -> bool:
        return len(self.levels) == 1

    def hierarchy(self, name: str | None = None) -> Hierarchy:
        wanted = name or self.default_hierarchy_name
        for h in self.hierarchies:
            if h.name == wanted:
                return h
        raise unknown(
            NoSuchHierarchyError,
            "hierarchy",
            wanted,
            [h.name for h in self.hierarchies],
            where=f"dimension {self.name!r}",
        )

    def level(self, name: str) -> Level:
        for lvl in self.levels:
            if lvl.name == name:
                return lvl
        raise unknown(
            NoSuchLevelError,
            "level",
            name,
            [lv.name for lv in self.levels],
            where=f"dimension {self.name!r}",
        )

    def attributes(self) -> Iterator[Attribute]:
        for lvl in self.levels:
            yield from lvl.attributes


@dataclass(frozen=True)
class Measure:
    name: str
    label: str
    kind: MeasureKind
    nonadditive: NonAdditive
    unit: str | None


@dataclass(frozen=True)
class Aggregate:
    name: str
    label: str
    measure: Measure
    function: AggregateFunction
    #: For a mean, Cubes' way of saying it: ``"<sum aggregate> / <count aggregate>"``.
    expression: str | None = None

    @property
    def nonadditive(self) -> NonAdditive:
        return self.measure.nonadditive


@dataclass(frozen=True)
class Column:
    table: str
    column: str

    @classmethod
    def parse(cls, text: str, *, path: str, default_table: str | None = None) -> Column:
        parts = text.split(".")
        if len(parts) == 1 and default_table:
            return cls(default_table, parts[0])
        if len(parts) != 2 or not all(p.isidentifier() for p in parts):
            raise ModelError(f"expected 'table.column', got {text!r}", path=path)
        return cls(parts[0], parts[1])


@dataclass(frozen=True)
class Join:
    master: Column
    detail: Column


@dataclass(frozen=True, eq=False)
class Physical:
    """How a cube's logical attributes and measures sit in tables: the star schema."""

    fact: str
    mappings: Mapping[str, Column]
    joins: tuple[Join, ...]
    record_key: str
    magnitude_key: str
    max_columns: Mapping[str, str]

    def column(self, ref: str) -> Column:
        try:
            return self.mappings[ref]
        except KeyError:
            raise ModelError(f"no mapping for {ref!r}", path="mappings") from None

    def join_for(self, table: str) -> Join | None:
        for j in self.joins:
            if j.detail.table == table:
                return j
        return None


@dataclass(frozen=True, eq=False)
class DisclosureRules:
    """Grammar limits of one cube (the p-table parameters are model-wide)."""

    group_cut_min_level: Mapping[str, str]
    max_category_dims_at_oa: int


@dataclass(frozen=True, eq=False)
class Cube:
    name: str
    label: str
    description: str
    kind: Literal["stock", "flow"]
    unit: str
    grain: Literal["month", "quarter"]
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    aggregates: tuple[Aggregate, ...]
    physical: Physical
    disclosure: DisclosureRules
    info: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise unknown(
            NoSuchDimensionError,
            "dimension",
            name,
            [d.name for d in self.dimensions],
            where=f"cube {self.name!r}",
        )

    def aggregate(self, name: str) -> Aggregate:
        for a in self.aggregates:
            if a.name == name:
                return a
        raise unknown(
            NoSuchAggregateError,
            "aggregate",
            name,
            [a.name for a in self.aggregates],
            where=f"cube {self.name!r}",
        )

    @property
    def time_dimension(self) -> Dimension | None:
        for d in self.dimensions:
            if d.is_time:
                return d
        return None

    @property
    def count_measure(self) -> Measure:
        for m in self.measures:
            if m.kind == "count":
                return m
        raise ModelError("cube has no count measure", path=f"cubes[{self.name}]")

    @property
    def has_stock(self) -> bool:
        return any(m.nonadditive is not None for m in self.measures)


@dataclass(frozen=True, eq=False)
class Model:
    name: str
    label: str
    description: str
    dimensions: Mapping[str, Dimension]
    cubes: Mapping[str, Cube]
    info: Mapping[str, Any]

    def cube(self, name: str) -> Cube:
        try:
            return self.cubes[name]
        except KeyError:
            raise unknown(NoSuchCubeError, "cube", name, self.cubes, parameter="cube") from None

    @property
    def disclosure(self) -> Mapping[str, Any]:
        d = self.info.get("disclosure", {})
        return d if isinstance(d, Mapping) else {}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
_TEXT = {"type": "string"}
_ATTRIBUTE = {
    "oneOf": [
        _NAME,
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": _NAME,
                "label": _TEXT,
                "description": _TEXT,
                "info": {"type": "object"},
                "format": _TEXT,
                "order": {"enum": ["asc", "desc"]},
                "missing_value": {},
                "locales": {"type": "array"},
            },
        },
    ]
}
_LEVEL = {
    "type": "object",
    "required": ["name", "label", "attributes"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "label": _TEXT,
        "description": _TEXT,
        "info": {"type": "object"},
        "role": _TEXT,
        "cardinality": {"enum": ["tiny", "low", "medium", "high"]},
        "key": _NAME,
        "label_attribute": _NAME,
        "order_attribute": _NAME,
        "attributes": {"type": "array", "minItems": 1, "items": _ATTRIBUTE},
        "order": {"enum": ["asc", "desc"]},
    },
}
_MEMBER = {
    "type": "object",
    "required": ["code", "label"],
    "properties": {"code": {"type": ["string", "integer"], "minLength": 1}, "label": _TEXT},
}
_DIMENSION = {
    "type": "object",
    "required": ["name", "label", "levels"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "label": _TEXT,
        "description": _TEXT,
        "info": {"type": "object", "properties": {"members": {"type": "array",
                                                              "items": _MEMBER}}},
        "role": _TEXT,
        "cardinality": {"enum": ["tiny", "low", "medium", "high"]},
        "levels": {"type": "array", "minItems": 1, "items": _LEVEL},
        "hierarchies": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "levels"],
                "additionalProperties": False,
                "properties": {
                    "name": _NAME,
                    "label": _TEXT,
                    "description": _TEXT,
                    "info": {"type": "object"},
                    "levels": {"type": "array", "minItems": 1, "items": _NAME},
                },
            },
        },
        "default_hierarchy_name": _NAME,
        "key": _NAME,
        "label_attribute": _NAME,
        "order_attribute": _NAME,
        "attributes": {"type": "array"},
    },
}
_MEASURE = {
    "type": "object",
    "required": ["name", "label", "info"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "label": _TEXT,
        "description": _TEXT,
        "format": _TEXT,
        "nonadditive": {"enum": ["time", "all", "none", None]},
        "info": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": ["count", "amount"]}, "max_column": _NAME},
        },
    },
}
_AGGREGATE = {
    "type": "object",
    "required": ["name", "label"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "label": _TEXT,
        "description": _TEXT,
        "format": _TEXT,
        "info": {"type": "object"},
        "measure": _NAME,
        "function": {"enum": ["sum", "avg"]},
        "expression": _TEXT,
    },
    # A sum of a measure, or a mean written as Cubes computes it: one sum over another.
    "oneOf": [{"required": ["measure", "function"], "not": {"required": ["expression"]}},
              {"required": ["expression"], "not": {"anyOf": [{"required": ["measure"]},
                                                             {"required": ["function"]}]}}],
}
_CUBE = {
    "type": "object",
    "required": ["name", "label", "fact", "dimensions", "measures", "aggregates", "mappings",
                 "joins", "info"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "label": _TEXT,
        "description": _TEXT,
        "category": _TEXT,
        "fact": _NAME,
        "key": _TEXT,
        "datastore": _TEXT,
        "browser_options": {"type": "object"},
        "dimensions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    _NAME,
                    {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _NAME,
                            "hierarchies": {"type": "array", "minItems": 1, "items": _NAME},
                            "default_hierarchy_name": _NAME,
                        },
                    },
                ]
            },
        },
        "measures": {"type": "array", "minItems": 1, "items": _MEASURE},
        "aggregates": {"type": "array", "minItems": 1, "items": _AGGREGATE},
        "mappings": {"type": "object", "additionalProperties": {"type": "string"}},
        "joins": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["master", "detail"],
                "properties": {"master": _TEXT, "detail": _TEXT, "alias": _NAME},
            },
        },
        "info": {
            "type": "object",
            "required": ["kind", "keys"],
            "properties": {
                "kind": {"enum": ["stock", "flow"]},
                "unit": _TEXT,
                "dimension_links": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "hierarchies": {"type": "array", "minItems": 1, "items": _NAME},
                            "default_hierarchy_name": _NAME,
                        },
                    },
                },
                "grain": {"enum": ["month", "quarter"]},
                "rollups": {  # cube/rollups.py
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "geography": {"anyOf": [_NAME, {"type": "null"}]},
                            "dimensions": {"type": "array", "items": _NAME},
                        },
                    },
                },
                "keys": {
                    "type": "object",
                    "required": ["record_key", "magnitude_key"],
                    "properties": {"record_key": _NAME, "magnitude_key": _NAME},
                },
                "disclosure": {
                    "type": "object",
                    "properties": {
                        "group_cut_min_level": {
                            "type": "object",
                            "additionalProperties": _NAME,
                        },
                        "max_category_dims_at_oa": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    },
}
MODEL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["name", "cubes", "dimensions"],
    "additionalProperties": False,
    "properties": {
        "name": _TEXT,
        "label": _TEXT,
        "description": _TEXT,
        "info": {"type": "object"},
        "cubes": {"type": "array", "minItems": 1, "items": _CUBE},
        "dimensions": {"type": "array", "minItems": 1, "items": _DIMENSION},
        "schema": _TEXT,
        "datastore": _TEXT,
        "mappings": {"type": "object"},
        "joins": {"type": "array"},
    },
}


def _json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _check_schema(raw: Any) -> None:
    validator = jsonschema.Draft202012Validator(MODEL_SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        # The deepest error is the most specific. A oneOf failure reports at the parent with
        # one sub-error per branch: descend into the branch of the right type (an object
        # that was meant to be an object), so the message names the real problem.
        err = max(errors, key=lambda e: len(e.absolute_path))
        while err.context:
            branch = [e for e in err.context if e.validator != "type"] or list(err.context)
            err = max(branch, key=lambda e: len(e.absolute_path))
        raise ModelError(err.message, path=_json_path(err.absolute_path))


def _attr_dict(a: Any) -> dict[str, Any]:
    return {"name": a} if isinstance(a, str) else dict(a)


def _parse_level(dim: str, raw: Mapping[str, Any], path: str) -> Level:
    attrs = tuple(
        Attribute(dim, d["name"], d.get("label", d["name"]),
                  "integer" if d.get("info", {}).get("type") == "integer" else "string")
        for d in (_attr_dict(a) for a in raw["attributes"])
    )
    by_name = {a.name: a for a in attrs}
    if len(by_name) != len(attrs):
        raise ModelError("duplicate attribute names", path=f"{path}.attributes")

    def pick(key: str, default: Attribute) -> Attribute:
        name = raw.get(key)
        if name is None:
            return default
        if name not in by_name:
            raise ModelError(f"{key} {name!r} is not an attribute of the level",
                             path=f"{path}.{key}")
        return by_name[name]

    key = pick("key", attrs[0])
    label = pick("label_attribute", attrs[1] if len(attrs) > 1 else attrs[0])
    return Level(
        dimension=dim,
        name=raw["name"],
        label=raw["label"],
        description=raw.get("description", ""),
        attributes=attrs,
        key=key,
        label_attribute=label,
        order_attribute=pick("order_attribute", key),
        cardinality=raw.get("cardinality", "low"),
        role=raw.get("role"),
    )


def _parse_dimension(raw: Mapping[str, Any], path: str) -> Dimension:
    name = raw["name"]
    levels = tuple(
        _parse_level(name, lv, f"{path}.levels[{i}]") for i, lv in enumerate(raw["levels"])
    )
    by_name = {lv.name: lv for lv in levels}
    if len(by_name) != len(levels):
        raise ModelError("duplicate level names", path=f"{path}.levels")
    raw_h = raw.get("hierarchies") or [{"name": "default", "levels": [lv.name for lv in levels]}]
    hierarchies = []
    for i, h in enumerate(raw_h):
        hl = []
        for j, lname in enumerate(h["levels"]):
            if lname not in by_name:
                raise ModelError(
                    f"unknown level {lname!r}", path=f"{path}.hierarchies[{i}].levels[{j}]"
                )
            hl.append(by_name[lname])
        hierarchies.append(Hierarchy(name, h["name"], h.get("label", h["name"]), tuple(hl)))
    default = raw.get("default_hierarchy_name", hierarchies[0].name)
    if default not in {h.name for h in hierarchies}:
        raise ModelError(f"unknown hierarchy {default!r}", path=f"{path}.default_hierarchy_name")
    info = raw.get("info", {})
    members = tuple(Member(str(m["code"]), str(m["label"])) for m in info.get("members", ()))
    if len({m.code for m in members}) != len(members):
        raise ModelError("duplicate member codes", path=f"{path}.info.members")
    return Dimension(
        name=name,
        label=raw["label"],
        description=raw.get("description", ""),
        role=raw.get("role"),
        levels=levels,
        hierarchies=tuple(hierarchies),
        default_hierarchy_name=default,
        members=members,
        geographic=bool(info.get("geographic", False)),
    )


def _restrict(dim: Dimension, link: Mapping[str, Any], path: str) -> Dimension:
    """Apply a cube's dimension link (allowed hierarchies, default) to a shared dimension."""
    names = link.get("hierarchies")
    hierarchies = dim.hierarchies
    if names is not None:
        known = {h.name: h for h in dim.hierarchies}
        for i, n in enumerate(names):
            if n not in known:
                raise ModelError(f"unknown hierarchy {n!r}", path=f"{path}.hierarchies[{i}]")
        hierarchies = tuple(known[n] for n in names)
    default = link.get("default_hierarchy_name") or (
        dim.default_hierarchy_name
        if dim.default_hierarchy_name in {h.name for h in hierarchies}
        else hierarchies[0].name
    )
    if default not in {h.name for h in hierarchies}:
        raise ModelError(f"unknown hierarchy {default!r}", path=f"{path}.default_hierarchy_name")
    used = {lv.name for h in hierarchies for lv in h.levels}
    levels = tuple(lv for lv in dim.levels if lv.name in used)
    return Dimension(
        name=dim.name,
        label=dim.label,
        description=dim.description,
        role=dim.role,
        levels=levels,
        hierarchies=hierarchies,
        default_hierarchy_name=default,
        members=dim.members,
        geographic=dim.geographic,
    )


def _mean(raw: Mapping[str, Any], earlier: Sequence[Aggregate], path: str) -> Aggregate:
    """A mean aggregate, written as Cubes 1.1 computes it: ``"<sum> / <count>"``, the sum
    aggregate of an amount measure over the count aggregate, both listed before it.

    statcube's mean is the amount's total over the count (sum/count), never an average of
    fact rows — the expression says exactly that, so Cubes' own SQL store and statcube mean
    the same number. (Cubes' ``avg`` function would average the fact rows' pre-summed
    amounts.)"""
    parts = [p.strip() for p in str(raw["expression"]).split("/")]
    by_name = {a.name: a for a in earlier}
    if len(parts) != 2 or not all(p in by_name for p in parts):
        raise ModelError("a mean is written '<sum aggregate> / <count aggregate>', naming "
                         "aggregates listed before it", path=path)
    total, count = by_name[parts[0]], by_name[parts[1]]
    if total.function != "sum" or total.measure.kind != "amount" \
            or count.function != "sum" or count.measure.kind != "count":
        raise ModelError("a mean divides the sum of an amount by the sum of the count",
                         path=path)
    return Aggregate(raw["name"], raw["label"], total.measure, "avg",
                     f"{total.name} / {count.name}")


def _parse_cube(raw: Mapping[str, Any], dims: Mapping[str, Dimension], path: str) -> Cube:
    name = raw["name"]
    fact = raw["fact"]
    cube_dims = []
    # Links may also sit in info.dimension_links: Cubes 1.1 cannot copy a restricted
    # dimension under Python 3 (Hierarchy.__deepcopy__ deep-copies an odict_values view,
    # "can't pickle odict_values"), so the shipped model keeps its links where Cubes does
    # not look and lists plain dimension names.
    info_links = raw.get("info", {}).get("dimension_links", {})
    names = [link if isinstance(link, str) else link["name"] for link in raw["dimensions"]]
    for dname in info_links:
        if dname not in names:
            raise ModelError(f"link for dimension {dname!r}, which the cube does not list",
                             path=f"{path}.info.dimension_links.{dname}")
    for i, link in enumerate(raw["dimensions"]):
        link_d = {"name": link} if isinstance(link, str) else link
        dname = link_d["name"]
        where = f"{path}.dimensions[{i}]"
        if dname in info_links:
            if not isinstance(link, str):
                raise ModelError("link the dimension here or in info.dimension_links, not "
                                 "both", path=where)
            link_d = {"name": dname, **info_links[dname]}
            where = f"{path}.info.dimension_links.{dname}"
        if dname not in dims:
            raise ModelError(f"unknown dimension {dname!r}", path=f"{path}.dimensions[{i}]")
        cube_dims.append(_restrict(dims[dname], link_d, where))
    if len({d.name for d in cube_dims}) != len(cube_dims):
        raise ModelError("a dimension is listed twice", path=f"{path}.dimensions")
    if sum(1 for d in cube_dims if d.is_time) != 1:
        raise ModelError("a cube needs exactly one dimension with role 'time'",
                         path=f"{path}.dimensions")

    measures = []
    max_columns: dict[str, str] = {}
    for i, m in enumerate(raw["measures"]):
        kind = m["info"]["kind"]
        na = m.get("nonadditive")
        measures.append(
            Measure(m["name"], m["label"], kind, None if na in (None, "none") else na,
                    m["info"].get("unit"))
        )
        if kind == "amount":
            if "max_column" not in m["info"]:
                raise ModelError(
                    "an amount measure needs info.max_column (largest single value, for "
                    "magnitude protection)",
                    path=f"{path}.measures[{i}].info",
                )
            max_columns[m["name"]] = m["info"]["max_column"]
    if sum(1 for m in measures if m.kind == "count") != 1:
        raise ModelError("a cube needs exactly one count measure", path=f"{path}.measures")
    by_measure = {m.name: m for m in measures}
    aggregates: list[Aggregate] = []
    for i, a in enumerate(raw["aggregates"]):
        if "expression" in a:
            aggregates.append(_mean(a, aggregates, f"{path}.aggregates[{i}].expression"))
            continue
        if a["measure"] not in by_measure:
            raise ModelError(
                f"unknown measure {a['measure']!r}", path=f"{path}.aggregates[{i}].measure"
            )
        measure = by_measure[a["measure"]]
        if measure.kind == "count" and a["function"] != "sum":
            raise ModelError(
                "a count measure only supports function 'sum'",
                path=f"{path}.aggregates[{i}].function",
            )
        aggregates.append(Aggregate(a["name"], a["label"], measure, a["function"]))
    if len({a.name for a in aggregates}) != len(aggregates):
        raise ModelError("duplicate aggregate names", path=f"{path}.aggregates")
    if len(by_measure) != len(measures):
        raise ModelError("duplicate measure names", path=f"{path}.measures")
    clash = sorted({a.name for a in aggregates} & set(by_measure))
    if clash:  # Cubes' SQL browser fails on these ("Duplicate key …"): one namespace there
        raise ModelError(f"aggregate and measure share the name {clash[0]!r}; Cubes keeps "
                         "them in one namespace", path=f"{path}.aggregates")

    mappings = {
        ref: Column.parse(col, path=f"{path}.mappings.{ref}", default_table=fact)
        for ref, col in raw["mappings"].items()
    }
    joins = tuple(
        Join(
            Column.parse(j["master"], path=f"{path}.joins[{i}].master", default_table=fact),
            Column.parse(j["detail"], path=f"{path}.joins[{i}].detail"),
        )
        for i, j in enumerate(raw["joins"])
    )
    for i, j in enumerate(joins):
        if j.master.table != fact:
            raise ModelError(f"a join's master must be a column of the fact table {fact!r}",
                             path=f"{path}.joins[{i}].master")
    # A mapping key that names nothing is a typo that would leave an attribute unmapped.
    known_refs = {a.ref for d in cube_dims for a in dims[d.name].attributes()}
    known_refs |= set(by_measure)
    for ref in mappings:
        if ref not in known_refs:
            hint = suggest(ref, known_refs)
            raise ModelError(
                f"{ref!r} is neither an attribute of the cube's dimensions nor one of its "
                f"measures" + (f"; {hint}" if hint else ""), path=f"{path}.mappings.{ref}")
    joined = {fact} | {j.detail.table for j in joins}
    for d in cube_dims:
        for attr in d.attributes():
            if attr.ref not in mappings:
                raise ModelError(f"attribute {attr.ref!r} has no mapping", path=f"{path}.mappings")
            if mappings[attr.ref].table not in joined:
                raise ModelError(
                    f"table {mappings[attr.ref].table!r} is not joined",
                    path=f"{path}.mappings.{attr.ref}",
                )
    for m in measures:
        if m.name not in mappings:
            raise ModelError(f"measure {m.name!r} has no mapping (add \"{m.name}\": "
                             f"\"{fact}.<column>\")", path=f"{path}.mappings")
        if mappings[m.name].table != fact:
            raise ModelError(f"measure {m.name!r} must map to a column of the fact table "
                             f"{fact!r}", path=f"{path}.mappings.{m.name}")

    info = raw["info"]
    disc = info.get("disclosure", {})
    group_min = dict(disc.get("group_cut_min_level", {}))
    for dname, lname in group_min.items():
        dim = next((d for d in cube_dims if d.name == dname), None)
        if dim is None or lname not in {lv.name for lv in dim.levels}:
            raise ModelError(
                f"unknown level {dname}:{lname}",
                path=f"{path}.info.disclosure.group_cut_min_level.{dname}",
            )
    return Cube(
        name=name,
        label=raw["label"],
        description=raw.get("description", ""),
        kind=info["kind"],
        unit=info.get("unit", "person"),
        grain=info.get("grain", "month"),
        dimensions=tuple(cube_dims),
        measures=tuple(measures),
        aggregates=tuple(aggregates),
        physical=Physical(
            fact=fact,
            mappings=_frozen_map(mappings),
            joins=joins,
            record_key=info["keys"]["record_key"],
            magnitude_key=info["keys"]["magnitude_key"],
            max_columns=_frozen_map(max_columns),
        ),
        disclosure=DisclosureRules(
            group_cut_min_level=_frozen_map(group_min),
            max_category_dims_at_oa=int(disc.get("max_category_dims_at_oa", 1)),
        ),
        info=_frozen_map(info),
    )


def parse_model(raw: Any) -> Model:
    """Validate and freeze a model given as parsed JSON. Raises ModelError naming the path."""
    _check_schema(raw)
    dims: dict[str, Dimension] = {}
    for i, d in enumerate(raw["dimensions"]):
        dim = _parse_dimension(d, f"$.dimensions[{i}]")
        if dim.name in dims:
            raise ModelError(f"duplicate dimension {dim.name!r}", path=f"$.dimensions[{i}].name")
        dims[dim.name] = dim
    cubes: dict[str, Cube] = {}
    for i, c in enumerate(raw["cubes"]):
        cube = _parse_cube(c, dims, f"$.cubes[{i}]")
        if cube.name in cubes:
            raise ModelError(f"duplicate cube {cube.name!r}", path=f"$.cubes[{i}].name")
        cubes[cube.name] = cube
    return Model(
        name=raw["name"],
        label=raw.get("label", raw["name"]),
        description=raw.get("description", ""),
        dimensions=_frozen_map(dims),
        cubes=_frozen_map(cubes),
        info=_frozen_map(raw.get("info", {})),
    )


def load_model(path: Path | str) -> Model:
    """Read and validate model.json."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{p.name} is not valid JSON: {exc.msg} (line {exc.lineno}, "
                         f"column {exc.colno})") from None
    return parse_model(raw)


def default_model_path() -> Path:
    """model.json at the project root (the working directory wins, for deployments)."""
    cwd = Path.cwd() / "model.json"
    if cwd.exists():
        return cwd
    return Path(__file__).resolve().parent.parent / "model.json"
