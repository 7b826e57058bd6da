"""Query parameters, declared once.

:data:`PARAMS` names every query parameter with its help text, JSON schema and an example;
:data:`ENDPOINT_PARAMS` says which endpoint takes which. The parser (:func:`read`), the
OpenAPI document (server/openapi.py) and the README all come from these two tables, so a
parameter cannot be accepted without being documented, or documented without being accepted.

Parsing is strict: an unknown parameter is a 400 naming it (``measures`` gets a hint: Cubes
1.1 silently ignored it on /aggregate), a non-repeatable parameter given twice is a 400,
``page_size`` is an alias of ``pagesize``. Values stay strings: their grammar is cube/'s
business (cube/grammar.py via :meth:`cube.query.Query.from_request`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cube.errors import ArgumentError, ForbiddenError, UserError
from cube.query import MAX_PAGESIZE, Request

#: Parameters any endpoint tolerates and ignores: the classic cache-buster of browsers.
IGNORED = frozenset({"_"})
FORMATS = ("json", "csv", "arrow", "parquet")
#: /members also answers Cubes' JSON Lines (one member per line), as Cubes' Slicer does.
MEMBERS_FORMATS = (*FORMATS, "json_lines")
#: Every format any endpoint offers (format= is checked against this before the endpoint).
ALL_FORMATS = (*FORMATS, "geojson", "json_lines")
#: /aggregate also answers GeoJSON when drilled by a geography level with boundaries.
AGGREGATE_FORMATS = (*FORMATS, "geojson")
HEADERS = ("names", "labels", "none")


@dataclass(frozen=True)
class Param:
    name: str
    help: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    example: str | None = None
    repeatable: bool = False
    aliases: tuple[str, ...] = ()


PARAMS: Mapping[str, Param] = {p.name: p for p in (
    Param("cut", "Cells to include: `dim[@hier]:path`, sets `a;b`, ranges `a-b`, negation "
          "`!dim:…`, several joined by `|` (or repeated).", example="geography:E92000001",
          repeatable=True),
    Param("drilldown", "Break down by `dim`, `dim:level` or `dim@hier:level`; several "
          "separated by `|` or `,`, or repeated. Without a level: the level below the cut.",
          example="geography:region", repeatable=True),
    Param("aggregates", "Aggregates to compute, separated by `|` or `,` (default: all).",
          example="claimants", repeatable=True),
    Param("order", "Sort by an attribute or aggregate: `attr` or `attr:desc`, several "
          "separated by `|` or `,`.", example="claimants:desc", repeatable=True),
    Param("page", "0-based page number (needs pagesize).",
          {"type": "integer", "minimum": 0, "maximum": 10**9}, example="0"),
    Param("pagesize", "Cells per page; alias `page_size`.",
          {"type": "integer", "minimum": 1, "maximum": MAX_PAGESIZE}, example="100",
          aliases=("page_size",)),
    Param("split", "A cut whose cells are marked `__within_split__` true or false.",
          example="geography:E12000007"),
    Param("having", "Keep cells whose published aggregate compares true: `agg>number`, "
          "several joined by `|`.", example="claimants>100"),
    Param("top", "Keep the N largest cells by an aggregate: `N:aggregate`, or "
          "`N:aggregate:dimension` for the top N within each parent member.",
          example="5:claimants"),
    Param("format", "Response format (default: from the Accept header, else json).",
          {"type": "string", "enum": list(ALL_FORMATS)}, example="json"),
    Param("header", "CSV header row: attribute names, labels, or none.",
          {"type": "string", "enum": list(HEADERS)}, example="names"),
    Param("prettyprint", "Indent JSON output.", {"type": "boolean"}, example="true"),
    Param("release", "Release id (default: the latest published release).",
          example=None),
    Param("hierarchy", "Hierarchy of the dimension (default: its default hierarchy).",
          example=None),
    Param("depth", "Number of levels of the hierarchy to list (default: all).",
          {"type": "integer", "minimum": 1, "maximum": 20}, example="2"),
    Param("level", "List members of this level (instead of depth).", example=None),
    Param("queries", "The named queries of a report, as JSON (GET; POST sends a JSON body).",
          example=None),
    Param("lang", "Language of labels (a language tag such as `en` or `cy`). Labels come in "
          "that language where the warehouse holds it, else in English.",
          {"type": "string", "pattern": "^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$"},
          example="en"),
    Param("fields", "Attributes to list, by reference or name, separated by `,` "
          "(default: all attributes of the listed levels).",
          example="geography.region_code,geography.region_name", repeatable=True),
    Param("dimension", "Only the cuts on this dimension.", example="geography"),
)}

_COMMON = ("format", "prettyprint", "lang")
ENDPOINT_PARAMS: Mapping[str, tuple[str, ...]] = {
    "version": _COMMON,
    "info": _COMMON,
    "cubes": ("release", *_COMMON),
    "model": ("release", *_COMMON),
    "aggregate": ("cut", "drilldown", "aggregates", "order", "page", "pagesize", "split",
                  "having", "top", "header", "release", *_COMMON),
    "members": ("cut", "hierarchy", "depth", "level", "page", "pagesize", "header",
                "fields", "order", "release", *_COMMON),
    "cell": ("cut", "dimension", "release", *_COMMON),
    "report": ("cut", "queries", "release", *_COMMON),
    "facts": (),
    "openapi": (),
    "map": (),
    "exports": ("prettyprint",),
    "export_file": (),
    "health_live": (),
    "health_ready": (),
}
#: Formats per endpoint; the others answer JSON only (``format=json`` is accepted there).
ENDPOINT_FORMATS: Mapping[str, tuple[str, ...]] = {"aggregate": AGGREGATE_FORMATS,
                                                   "members": MEMBERS_FORMATS}


def formats_for(endpoint: str) -> tuple[str, ...]:
    return ENDPOINT_FORMATS.get(endpoint, ("json",))

_HINTS = {
    "measures": "statcube publishes protected aggregates, not raw measures: use aggregates= "
                "(see /cube/<cube>/model for their names)",
}


@dataclass(frozen=True)
class Args:
    """Validated parameter values of one request, by canonical name."""

    values: Mapping[str, tuple[str, ...]]

    def one(self, name: str) -> str | None:
        v = self.values.get(name)
        return None if not v else v[0]

    def many(self, name: str) -> tuple[str, ...]:
        return self.values.get(name, ())

    def joined_cut(self, name: str = "cut") -> str:
        return "|".join(v for v in self.many(name) if v)

    def integer(self, name: str) -> int | None:
        v = self.one(name)
        if v is None or v == "":
            return None
        try:
            number = int(v)
        except ValueError:
            raise ArgumentError(f"{name} must be a whole number", parameter=name,
                                value=v) from None
        schema = PARAMS[name].schema if name in PARAMS else {}
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and number < low) or (high is not None and number > high):
            # the declared range is a 400 on every endpoint (members answered 413 for
            # pagesize=1000001, as if it were a size limit of the role)
            raise ArgumentError(f"{name} must be between {low:,} and {high:,}",
                                parameter=name, value=v)
        return number

    def flag(self, name: str) -> bool:
        v = self.one(name)
        if v is None:
            return False
        low = v.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ArgumentError(f"{name} must be true or false", parameter=name, value=v)

    def choice(self, name: str, choices: Sequence[str], default: str | None) -> str | None:
        v = self.one(name)
        if v is None:
            return default
        if v.lower() not in choices:  # "" too: an empty choice is a mistake, not the default
            raise ArgumentError(f"{name} must be one of {', '.join(choices)}", parameter=name,
                                value=v)
        return v.lower()


def read(endpoint: str, multi: Any) -> Args:
    """Validate the names in a werkzeug MultiDict (or any ``.lists()`` mapping)."""
    allowed = ENDPOINT_PARAMS[endpoint]
    alias_of = {a: p for p in allowed for a in PARAMS[p].aliases}
    out: dict[str, list[str]] = {}
    for name, values in multi.lists():
        if name in IGNORED:
            continue
        canonical = alias_of.get(name, name)
        if canonical not in allowed:
            raise unknown_parameter(name, allowed)
        if canonical in out:  # lists() yields each name once: both name and alias given
            raise ArgumentError(f"give {canonical} or its alias, not both",
                                parameter=canonical, value=name)
        if len(values) > 1 and not PARAMS[canonical].repeatable:
            raise ArgumentError(f"{canonical} may be given only once", parameter=canonical,
                                value=values[1])
        out.setdefault(canonical, []).extend(values)
    return Args({k: tuple(v) for k, v in out.items()})


_LANG = re.compile(str(PARAMS["lang"].schema["pattern"]))


def check_lang(value: str | None) -> None:
    """``lang`` as Cubes takes it (every endpoint): a language tag. Labels come in that
    language where the warehouse holds it (Welsh, ``cy``: cube/labels.py), else in English
    (Cubes too falls back to the model's default language)."""
    if value is not None and value != "" and not _LANG.fullmatch(value):
        raise ArgumentError("lang must be a language tag such as 'en' or 'cy'",
                            parameter="lang", value=value[:40])


def unknown_parameter(name: str, allowed: Sequence[str]) -> UserError:
    valid = sorted({*allowed, *(a for p in allowed for a in PARAMS[p].aliases)})
    return ArgumentError(f"unknown parameter {name!r}", parameter=name,
                         hint=_HINTS.get(name) or ("valid: " + ", ".join(valid) if valid
                                                   else "this endpoint takes no parameters"))


def aggregate_request(cube: str, args: Args) -> Request:
    return Request.make(cube, cut=args.joined_cut(), drilldown=args.many("drilldown"),
                        aggregates=args.many("aggregates"), order=args.many("order"),
                        page=args.one("page"), pagesize=args.one("pagesize"),
                        split=args.one("split"), having=args.one("having"), top=args.one("top"))


# --- /report bodies ------------------------------------------------------------------------

REPORT_QUERY_TYPES = ("aggregate", "members", "cell")
_REPORT_KEYS = {
    "aggregate": ("cut", "drilldown", "aggregates", "order", "page", "pagesize", "page_size",
                  "split", "having", "top"),
    "members": ("cut", "dimension", "hierarchy", "depth", "level", "page", "pagesize",
                "page_size", "fields", "order"),
    "cell": ("cut", "dimension"),
}
MAX_REPORT_QUERIES = 20


@dataclass(frozen=True)
class ReportQuery:
    name: str
    type: str
    args: Args


def report_queries(body: Any, shared_cut: str) -> list[ReportQuery]:
    """Parse ``{"queries": {name: {"query": type, …}}}`` (the Cubes 1.1 report shape)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("queries"), Mapping):
        raise ArgumentError('a report is a JSON object {"queries": {"name": {"query": '
                            '"aggregate", …}}}', parameter="queries")
    extra = set(body) - {"queries", "cut"}
    if extra:
        raise ArgumentError(f"unknown report keys: {', '.join(sorted(extra))}",
                            parameter="queries")
    queries = body["queries"]
    if not 1 <= len(queries) <= MAX_REPORT_QUERIES:
        raise ArgumentError(f"a report holds 1 to {MAX_REPORT_QUERIES} queries",
                            parameter="queries")
    body_cut = _text(body.get("cut", ""), "cut")
    out = []
    for name, spec in queries.items():
        where = f"queries.{name}"
        if not isinstance(spec, Mapping):
            raise ArgumentError("each query is a JSON object", parameter=where)
        qtype = spec.get("query", "aggregate")
        if qtype in ("facts", "fact"):
            raise facts_refused()
        if qtype not in REPORT_QUERY_TYPES:
            raise ArgumentError(f"query type must be one of {', '.join(REPORT_QUERY_TYPES)}",
                                parameter=f"{where}.query", value=str(qtype))
        values: dict[str, list[str]] = {}
        for key, value in spec.items():
            if key == "query":
                continue
            if key not in _REPORT_KEYS[qtype]:
                raise ArgumentError(f"unknown key {key!r} in a {qtype} query",
                                    parameter=f"{where}.{key}",
                                    hint="valid: " + ", ".join(_REPORT_KEYS[qtype]))
            canonical = "pagesize" if key == "page_size" else key
            items = value if isinstance(value, list) else [value]
            values[canonical] = [_text(v, f"{where}.{key}") for v in items]
        cuts = [c for c in (shared_cut, body_cut, *values.pop("cut", [])) if c]
        if cuts:
            values["cut"] = ["|".join(cuts)]
        out.append(ReportQuery(str(name), qtype, Args({k: tuple(v) for k, v in values.items()})))
    return out


def _text(value: Any, parameter: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ArgumentError("expected a string or a whole number", parameter=parameter,
                            value=str(value)[:100])
    return str(value)


def facts_refused() -> UserError:
    """/facts, /fact and report queries of those types: 403, always."""
    return ForbiddenError(
        "record-level data is never published: statcube serves only aggregated cells, each "
        "protected by disclosure control",
        hint="use /cube/<cube>/aggregate with a drilldown (e.g. drilldown=geography:la)")
