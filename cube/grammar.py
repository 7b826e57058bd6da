"""The Slicer query-string grammar: cuts, drilldowns, aggregate/measure lists and order.

This module owns the *syntax* of the Cubes Slicer API parameters and nothing else. Each
parameter has a ``parse_*`` function producing immutable values and a ``format_*`` function
producing the canonical text, with ``parse(format(x)) == x`` for every valid value.

It is pure syntax: it must not import SQL, Flask or model code. Names parsed here (dimensions,
hierarchies, levels, attributes, aggregates) are only checked to be identifiers; they are
resolved against the model elsewhere.

Cut grammar (``cut=``)::

    cuts      := cut ("|" cut)*
    cut       := ["!"] NAME ["@" NAME] ":" value
    value     := path                      point cut
               | path (";" path)+          set cut
               | [path] "-" [path]         range cut (at least one bound)
    path      := key ("," key)*            level keys, coarse to fine
    key       := (CHAR | "\\" SPECIAL)+    SPECIAL is one of  \\ ! | : ; , -
    NAME      := [A-Za-z_][A-Za-z0-9_]*

Inside a key an unescaped ``| : ; , -`` is structural, a backslash must be followed by a
SPECIAL, and an unescaped ``!`` is taken literally (as Cubes does); :func:`escape_key` escapes
``!`` anyway. Keys are otherwise arbitrary text (unicode, spaces). ``,``, ``;`` and ``-``
cannot be mixed freely: a value with ``;`` is a set and may not contain an unescaped ``-``,
and a range has exactly one ``-``.

Drilldown (``drilldown=``): items ``dim``, ``dim:level``, ``dim@hier`` or ``dim@hier:level``.
Aggregates/measures: identifiers. Order (``order=``): ``attr`` or ``attr:asc|desc`` (direction
case-insensitive, default ascending), ``attr`` a dotted identifier such as
``geography.la_name``. For these three, items are separated by ``|`` or ``,`` and the
parameter may be repeated (pass a sequence of strings). An empty value (or an empty repeated
value) means "none"; an empty item inside a non-empty value (``a||b``, ``a,``) is an error.

Every parse failure raises :class:`~cube.errors.GrammarError` with ``parameter``, ``value``
(the raw text) and ``position`` (0-based offset into that raw text). The dataclasses enforce
their own invariants in ``__post_init__`` (raising ``ValueError``/``TypeError``) so that every
value that can be constructed can also be formatted and parsed back to itself; in particular
a :class:`SetCut` has at least two paths (a one-path set is written, and parsed, as a
:class:`PointCut`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

from cube.errors import GrammarError

__all__ = [
    "Cut",
    "DrilldownSpec",
    "OrderSpec",
    "PointCut",
    "RangeCut",
    "SetCut",
    "escape_key",
    "format_cut",
    "format_cuts",
    "format_drilldown",
    "format_names",
    "format_order",
    "parse_cut",
    "parse_cuts",
    "parse_drilldown",
    "parse_names",
    "parse_order",
    "unescape_key",
]

#: Characters that :func:`escape_key` prefixes with a backslash.
SPECIAL_CHARACTERS = "\\!|:;,-"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# One token of a cut value: a run of plain characters, an escape (group 2 is "" for a
# trailing lone backslash) or a single structural character.
_VALUE_TOKEN = re.compile(r"([^\\|:;,\-]+)|\\(.?)|(.)", re.DOTALL)
# In a whole cut string: an escape pair (skipped) or an unescaped "|".
_CUT_SEPARATOR = re.compile(r"\\.|\|", re.DOTALL)
_LIST_SEPARATOR = re.compile(r"[|,]")
_SPECIALS_TEXT = " ".join(SPECIAL_CHARACTERS)
_ESCAPE_TABLE = str.maketrans({c: "\\" + c for c in SPECIAL_CHARACTERS})


# --- values -------------------------------------------------------------------------------


def _check_name(value: object, what: str, pattern: re.Pattern[str] = _NAME) -> None:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"invalid {what} name {value!r}")


def _check_path(path: object, what: str = "path") -> tuple[str, ...]:
    if isinstance(path, str) or not isinstance(path, Iterable):
        raise TypeError(f"{what} must be a sequence of keys, not {type(path).__name__}")
    keys = tuple(path)
    if not keys:
        raise ValueError(f"{what} must have at least one key")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what} keys must be non-empty strings, got {key!r}")
    return keys


def _check_dimension(dimension: object, hierarchy: object) -> None:
    _check_name(dimension, "dimension")
    if hierarchy is not None:
        _check_name(hierarchy, "hierarchy")


@dataclass(frozen=True, slots=True)
class PointCut:
    """``dim[@hier]:k1,k2``: the members under one path."""

    dimension: str
    path: tuple[str, ...]
    hierarchy: str | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        _check_dimension(self.dimension, self.hierarchy)
        object.__setattr__(self, "path", _check_path(self.path))


@dataclass(frozen=True, slots=True)
class SetCut:
    """``dim[@hier]:p1;p2;…``: the union of two or more paths."""

    dimension: str
    paths: tuple[tuple[str, ...], ...]
    hierarchy: str | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        _check_dimension(self.dimension, self.hierarchy)
        if isinstance(self.paths, str) or not isinstance(self.paths, Iterable):
            raise TypeError("paths must be a sequence of paths")
        paths = tuple(_check_path(p) for p in self.paths)
        if len(paths) < 2:
            raise ValueError("a set cut needs at least two paths (use PointCut for one)")
        object.__setattr__(self, "paths", paths)


@dataclass(frozen=True, slots=True)
class RangeCut:
    """``dim[@hier]:from-to``, either bound may be open (None) but not both."""

    dimension: str
    from_path: tuple[str, ...] | None
    to_path: tuple[str, ...] | None
    hierarchy: str | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        _check_dimension(self.dimension, self.hierarchy)
        if self.from_path is None and self.to_path is None:
            raise ValueError("a range cut needs at least one bound")
        if self.from_path is not None:
            object.__setattr__(self, "from_path", _check_path(self.from_path, "from_path"))
        if self.to_path is not None:
            object.__setattr__(self, "to_path", _check_path(self.to_path, "to_path"))


Cut: TypeAlias = PointCut | SetCut | RangeCut


@dataclass(frozen=True, slots=True)
class DrilldownSpec:
    """``dim``, ``dim:level``, ``dim@hier`` or ``dim@hier:level``."""

    dimension: str
    hierarchy: str | None = None
    level: str | None = None

    def __post_init__(self) -> None:
        _check_dimension(self.dimension, self.hierarchy)
        if self.level is not None:
            _check_name(self.level, "level")


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """``attr`` or ``attr:desc``; ``attr`` may be dotted (``geography.la_name``)."""

    attribute: str
    descending: bool = False

    def __post_init__(self) -> None:
        _check_name(self.attribute, "attribute", _ATTRIBUTE)


# --- shared scanning helpers --------------------------------------------------------------


class _Context:
    """Where we are: the raw text, how to report positions, and what to name it."""

    __slots__ = ("base", "parameter", "text")

    def __init__(self, text: str, parameter: str, base: int = 0) -> None:
        self.text = text
        self.parameter = parameter
        self.base = base

    def fail(self, message: str, index: int) -> NoReturn:
        raise GrammarError(
            message, parameter=self.parameter, value=self.text, position=self.base + index
        )


def _name_at(
    ctx: _Context,
    start: int,
    end: int,
    stops: str,
    what: str,
    where: str,
    pattern: re.Pattern[str] = _NAME,
) -> tuple[str, int]:
    """Read a name from ``start`` up to the first of ``stops`` (or ``end``).

    Returns the name and the index just after it.
    """
    text = ctx.text
    stop = start
    while stop < end and text[stop] not in stops:
        stop += 1
    if stop == start:
        ctx.fail(f"missing {what} name in {where!r}", start)
    match = pattern.match(text, start, stop)
    if match is None or match.end() != stop:
        bad = start if match is None else match.end()
        ctx.fail(f"invalid {what} name {text[start:stop]!r} in {where!r}", bad)
    return text[start:stop], stop


# --- cuts ---------------------------------------------------------------------------------


def escape_key(key: str) -> str:
    """Escape every special character of a path key with a backslash."""
    return key.translate(_ESCAPE_TABLE)


def unescape_key(text: str, *, parameter: str = "cut", offset: int = 0) -> str:
    """The inverse of :func:`escape_key`; raises GrammarError for an unparseable key."""
    ctx = _Context(text, parameter, offset)
    parts: list[str] = []
    for match in _VALUE_TOKEN.finditer(text):
        kind = match.lastindex
        if kind == 1:
            parts.append(match.group(1))
        elif kind == 2:
            parts.append(_escaped(ctx, match, text))
        else:
            char = match.group(3)
            ctx.fail(f"unescaped {char!r} in key {text!r} (write it as '\\{char}')", match.start())
    if not parts:
        ctx.fail("empty key", 0)
    return "".join(parts)


def _escaped(ctx: _Context, match: re.Match[str], where: str) -> str:
    char = match.group(2)
    if not char:
        ctx.fail(f"trailing backslash in {where!r}", match.start())
    if char not in SPECIAL_CHARACTERS:
        escape = "\\" + char
        ctx.fail(
            f"invalid escape {escape!r} in {where!r} (a backslash may only precede one of "
            f"{_SPECIALS_TEXT})",
            match.start(),
        )
    return char


# A path region of a cut value: (start, end, keys, key start indices).
_Region = tuple[int, int, list[str], list[int]]


def _path(ctx: _Context, region: _Region) -> tuple[str, ...]:
    start, end, keys, starts = region
    for key, key_start in zip(keys, starts, strict=True):
        if not key:
            ctx.fail(f"empty key in path {ctx.text[start:end]!r}", key_start)
    return tuple(keys)


def _parse_cut(ctx: _Context, lo: int, hi: int) -> Cut:
    """Parse the cut in ``ctx.text[lo:hi]``."""
    text = ctx.text
    where = text[lo:hi]
    if lo == hi:
        ctx.fail(f"empty cut in {ctx.text!r} (expected 'dimension:path')", lo)

    # Dimension spec: ["!"] NAME ["@" NAME], up to the first ":".
    colon = text.find(":", lo, hi)
    spec_end = hi if colon < 0 else colon
    start = lo
    invert = text[start] == "!"
    if invert:
        start += 1
    dimension, index = _name_at(ctx, start, spec_end, "@", "dimension", where)
    hierarchy: str | None = None
    if index < spec_end:  # text[index] == "@"
        hierarchy, index = _name_at(ctx, index + 1, spec_end, "@", "hierarchy", where)
        if index < spec_end:
            ctx.fail(f"unexpected '@' in cut {where!r}", index)
    if colon < 0:
        ctx.fail(f"missing ':' and path after dimension in cut {where!r}", hi)

    # Value: scan into path regions separated by ";" or "-", keys separated by ",".
    regions: list[_Region] = []
    semicolons: list[int] = []
    dashes: list[int] = []
    keys: list[str] = []
    starts: list[int] = []
    parts: list[str] = []
    region_start = key_start = colon + 1
    for match in _VALUE_TOKEN.finditer(text, colon + 1, hi):
        kind = match.lastindex
        if kind == 1:
            parts.append(match.group(1))
            continue
        if kind == 2:
            parts.append(_escaped(ctx, match, where))
            continue
        char = match.group(3)
        position = match.start()
        if char == ",":
            keys.append("".join(parts))
            starts.append(key_start)
            parts = []
            key_start = position + 1
        elif char == ";" or char == "-":
            keys.append("".join(parts))
            starts.append(key_start)
            regions.append((region_start, position, keys, starts))
            (semicolons if char == ";" else dashes).append(position)
            keys, starts, parts = [], [], []
            region_start = key_start = position + 1
        else:  # ":" or "|"
            ctx.fail(f"unescaped {char!r} in cut {where!r} (write it as '\\{char}')", position)
    keys.append("".join(parts))
    starts.append(key_start)
    regions.append((region_start, hi, keys, starts))

    if dashes:
        if semicolons:
            ctx.fail(f"unescaped '-' in set cut {where!r} (write it as '\\-')", dashes[0])
        if len(dashes) > 1:
            ctx.fail(f"more than one '-' in range cut {where!r}", dashes[1])
        low, high = regions
        from_path = None if low[0] == low[1] else _path(ctx, low)
        to_path = None if high[0] == high[1] else _path(ctx, high)
        if from_path is None and to_path is None:
            ctx.fail(f"range cut {where!r} needs at least one bound", dashes[0])
        return RangeCut(dimension, from_path, to_path, hierarchy, invert)
    if semicolons:
        paths = []
        for region in regions:
            if region[0] == region[1]:
                ctx.fail(f"empty path in set cut {where!r}", region[0])
            paths.append(_path(ctx, region))
        return SetCut(dimension, tuple(paths), hierarchy, invert)
    (region,) = regions
    if region[0] == region[1]:
        ctx.fail(f"missing path after ':' in cut {where!r}", region[0])
    return PointCut(dimension, _path(ctx, region), hierarchy, invert)


def parse_cut(text: str, *, parameter: str = "cut", offset: int = 0) -> Cut:
    """Parse one cut. Error positions are reported as ``offset`` + index into ``text``."""
    return _parse_cut(_Context(text, parameter, offset), 0, len(text))


def parse_cuts(text: str, *, parameter: str = "cut") -> tuple[Cut, ...]:
    """Parse a ``|``-separated list of cuts; ``""`` gives ``()``."""
    if not text:
        return ()
    ctx = _Context(text, parameter)
    cuts: list[Cut] = []
    lo = 0
    for match in _CUT_SEPARATOR.finditer(text):
        if match.end() - match.start() == 1:  # an unescaped "|" (escape pairs are skipped)
            cuts.append(_parse_cut(ctx, lo, match.start()))
            lo = match.end()
    cuts.append(_parse_cut(ctx, lo, len(text)))
    return tuple(cuts)


def _format_path(path: tuple[str, ...]) -> str:
    return ",".join(key.translate(_ESCAPE_TABLE) for key in path)


def format_cut(cut: Cut) -> str:
    """The canonical text of one cut."""
    head = ("!" if cut.invert else "") + cut.dimension
    if cut.hierarchy is not None:
        head += "@" + cut.hierarchy
    if isinstance(cut, PointCut):
        value = _format_path(cut.path)
    elif isinstance(cut, SetCut):
        value = ";".join(_format_path(path) for path in cut.paths)
    elif isinstance(cut, RangeCut):
        low = "" if cut.from_path is None else _format_path(cut.from_path)
        high = "" if cut.to_path is None else _format_path(cut.to_path)
        value = f"{low}-{high}"
    else:
        raise TypeError(f"not a cut: {cut!r}")
    return f"{head}:{value}"


def format_cuts(cuts: Iterable[Cut]) -> str:
    """The canonical ``|``-separated text of several cuts (``""`` for none)."""
    return "|".join(format_cut(cut) for cut in cuts)


# --- drilldown, names, order --------------------------------------------------------------


def _items(value: str | Sequence[str], parameter: str) -> Iterator[tuple[_Context, int, int]]:
    """Yield (context, lo, hi) for each ``|``/``,``-separated item of each value."""
    values: Sequence[str] = (value,) if isinstance(value, str) else value
    for text in values:
        if not text:
            continue
        ctx = _Context(text, parameter)
        lo = 0
        for match in _LIST_SEPARATOR.finditer(text):
            if match.start() == lo:
                ctx.fail(f"empty item in {text!r}", lo)
            yield ctx, lo, match.start()
            lo = match.end()
        if lo == len(text):
            ctx.fail(f"empty item in {text!r}", lo)
        yield ctx, lo, len(text)


def parse_drilldown(
    value: str | Sequence[str], *, parameter: str = "drilldown"
) -> tuple[DrilldownSpec, ...]:
    """Parse drilldown items ``dim[@hier][:level]``, ``|``/``,``-separated or repeated."""
    specs: list[DrilldownSpec] = []
    for ctx, lo, hi in _items(value, parameter):
        where = ctx.text[lo:hi]
        dimension, index = _name_at(ctx, lo, hi, "@:", "dimension", where)
        hierarchy: str | None = None
        level: str | None = None
        if index < hi and ctx.text[index] == "@":
            hierarchy, index = _name_at(ctx, index + 1, hi, "@:", "hierarchy", where)
        if index < hi and ctx.text[index] == ":":
            level, index = _name_at(ctx, index + 1, hi, "@:", "level", where)
        if index < hi:
            ctx.fail(f"unexpected {ctx.text[index]!r} in drilldown {where!r}", index)
        specs.append(DrilldownSpec(dimension, hierarchy, level))
    return tuple(specs)


def format_drilldown(specs: Iterable[DrilldownSpec]) -> str:
    """The canonical ``|``-separated text of drilldown items."""
    out = []
    for spec in specs:
        text = spec.dimension
        if spec.hierarchy is not None:
            text += "@" + spec.hierarchy
        if spec.level is not None:
            text += ":" + spec.level
        out.append(text)
    return "|".join(out)


def parse_names(value: str | Sequence[str], *, parameter: str) -> tuple[str, ...]:
    """Parse a list of identifiers (aggregates, measures), ``|``/``,``-separated or repeated."""
    names: list[str] = []
    for ctx, lo, hi in _items(value, parameter):
        name, _ = _name_at(ctx, lo, hi, "", "name", ctx.text[lo:hi])
        names.append(name)
    return tuple(names)


def format_names(names: Iterable[str]) -> str:
    """The canonical ``|``-separated text of a list of identifiers."""
    out = []
    for name in names:
        _check_name(name, "item")
        out.append(name)
    return "|".join(out)


def parse_order(value: str | Sequence[str], *, parameter: str = "order") -> tuple[OrderSpec, ...]:
    """Parse order items ``attr[:asc|:desc]``, ``|``/``,``-separated or repeated."""
    specs: list[OrderSpec] = []
    for ctx, lo, hi in _items(value, parameter):
        where = ctx.text[lo:hi]
        attribute, index = _name_at(ctx, lo, hi, ":", "attribute", where, _ATTRIBUTE)
        descending = False
        if index < hi:  # text[index] == ":"
            direction = ctx.text[index + 1 : hi]
            if not direction:
                ctx.fail(f"missing order direction after ':' in {where!r}", index + 1)
            folded = direction.lower() if direction.isascii() else direction
            if folded not in ("asc", "desc"):
                ctx.fail(
                    f"invalid order direction {direction!r} in {where!r} (use 'asc' or 'desc')",
                    index + 1,
                )
            descending = folded == "desc"
        specs.append(OrderSpec(attribute, descending))
    return tuple(specs)


def format_order(specs: Iterable[OrderSpec]) -> str:
    """The canonical ``|``-separated text of order items (``:desc`` only when descending)."""
    return "|".join(spec.attribute + (":desc" if spec.descending else "") for spec in specs)
