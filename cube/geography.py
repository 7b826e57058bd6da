"""Load ONS geography lookup CSVs into one row per output area (OA) with all its ancestors.

Why this module exists: the warehouse's ``dim_geography`` holds one row per census output area
with every ancestor code and name (LSOA, MSOA, local authority, region, country and, when given,
Westminster constituency). Users build it from the lookup files the Office for National
Statistics publishes, and those files are not uniform: headers come in upper or lower case,
sometimes behind a UTF-8 BOM; Welsh names are sometimes written in Windows-1252 rather than UTF-8;
each level carries its own year suffix (``OA21CD`` beside ``LAD22CD`` and ``PCON25CD``); the
2011 file spells the LSOA name column ``LSO11ANM``; optional ``NMW`` (Welsh name),
``ObjectId`` and ``FID`` columns come and go; names contain quoted commas ("Bristol, City
of"); lines end in CRLF and files end in blank lines. This module absorbs those quirks in one
place so that nothing downstream sees them.

It also refuses bad input loudly. A lookup that puts an LSOA in two MSOAs, or an English local
authority in no region, would silently corrupt every rollup built on it, so every problem found
is collected (a bounded list with a count of the rest) and raised as one
:class:`~cube.errors.InputDataError` whose entries name the file, the 1-based line (the header is
line 1) and the offending code.

Decisions:

* Files are read with the :mod:`csv` module rather than ``pyarrow.csv``: it gives physical line
  numbers for messages (``pyarrow.csv`` silently skips blank lines), handles quoted commas and
  CRLF, and the encoding fallback is decided on the bytes before parsing. Validation is plain
  Python tuned for the common case (see :class:`_Loader`); a GB OA lookup plus constituency
  lookup (2 × 235k rows) loads in about 2–3 s on a small machine.
* A file that is not valid UTF-8 is decoded whole as Windows-1252 and the load says so in
  ``warnings``; guessing line by line would hide a mixed-encoding file.
* Columns are recognised by pattern (:data:`HEADER_PATTERN`) on the upper-cased header, never by
  exact name, so year suffixes may differ between levels and files. Columns the pattern does not
  know (``ObjectId``, ``FID``, ``GlobalID``) are ignored.
* Welsh names (``LSOA21NMW``, ``MSOA21NMW``, ``LAD22NMW``, ``PCON25NMW``, ``RGNyyNMW``,
  ``CTRYyyNMW``) are kept in the ``*_name_cy`` columns (:data:`WELSH_NAME_COLUMNS`), so that
  APIs can answer in Welsh (``Accept-Language: cy``, ``lang=cy``; see cube/labels.py). ONS
  fills them for Welsh areas only, so they are null elsewhere and optional everywhere: a file
  without them loads as before, with null Welsh names. Wales's own name comes from
  :data:`COUNTRIES_CY` ("Cymru") unless a file names it, and since Wales is its own region, its
  region has the same Welsh name. A Welsh name that differs between two rows of one area is a
  problem like a differing English name.
* Wales and Scotland have no English region: their local authorities take the country as region
  (``region_code`` = country code, ``region_name`` = country name). An empty region, a pseudo code
  such as ``W99999999`` or the country's own code in a region column all mean "none".
* Country comes from a ``CTRYyyCD`` column when a file has one, else from the first letter of the
  local authority code. Region and country names come from the files when present, else from
  :data:`REGIONS` / :data:`COUNTRIES`.

This module imports nothing from statcube except :mod:`cube.errors`, and does no SQL.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import pyarrow as pa

from cube.errors import InputDataError

__all__ = [
    "COUNTRIES",
    "COUNTRIES_CY",
    "GEOGRAPHY_COLUMNS",
    "HEADER_PATTERN",
    "LEVEL_PATTERNS",
    "MAX_PROBLEMS",
    "REGIONS",
    "WELSH_NAME_COLUMNS",
    "GeographyLoad",
    "find_lookups",
    "load_geography",
    "read_lookup_csv",
]

#: English name column → Welsh name column. Named ``<column>_cy``, the convention
#: cube/labels.py reads (a label column's translation into a language sits beside it, suffixed
#: with the language code). After the original columns, so warehouses built before they existed
#: differ only by lacking them.
WELSH_NAME_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        f"{level}_name": f"{level}_name_cy"
        for level in ("lsoa", "msoa", "la", "region", "country", "pcon")
    }
)

GEOGRAPHY_COLUMNS: tuple[str, ...] = (
    "oa_code",
    "lsoa_code",
    "lsoa_name",
    "msoa_code",
    "msoa_name",
    "la_code",
    "la_name",
    "region_code",
    "region_name",
    "country_code",
    "country_name",
    "pcon_code",
    "pcon_name",
    *WELSH_NAME_COLUMNS.values(),
)

LEVEL_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        "oa": re.compile(r"^[EWS]00\d{6}$"),
        "lsoa": re.compile(r"^[EWS]01\d{6}$"),
        "msoa": re.compile(r"^[EWS]02\d{6}$"),
        "la": re.compile(r"^(?:E0[6-9]|W06|S12)\d{6}$"),
        # The region of a Welsh or Scottish area is its country.
        "region": re.compile(r"^(?:E12|W92|S92)\d{6}$"),
        "country": re.compile(r"^[EWS]92\d{6}$"),
        "pcon": re.compile(r"^(?:E14|W07|S14)\d{6}$"),
    }
)

COUNTRIES: Mapping[str, str] = MappingProxyType(
    {"E92000001": "England", "W92000004": "Wales", "S92000003": "Scotland"}
)
#: Welsh names of countries when no file gives one. ONS lookups carry Welsh names for Welsh
#: areas only, so only Wales has one here.
COUNTRIES_CY: Mapping[str, str] = MappingProxyType({"W92000004": "Cymru"})

REGIONS: Mapping[str, str] = MappingProxyType(
    {
        "E12000001": "North East",
        "E12000002": "North West",
        "E12000003": "Yorkshire and The Humber",
        "E12000004": "East Midlands",
        "E12000005": "West Midlands",
        "E12000006": "East of England",
        "E12000007": "London",
        "E12000008": "South East",
        "E12000009": "South West",
    }
)

#: A normalised (upper-case) header naming a geography column: entity, optional 2-digit year,
#: kind. ``LSO`` + ``ANM`` is the 2011 file's spelling of ``LSOA`` + ``NM``.
HEADER_PATTERN: re.Pattern[str] = re.compile(
    r"^(OA|LSOA|LSO|MSOA|LAD|RGN|CTRY|PCON)(\d{2})?(CD|NM|NMW|ANM)$"
)

#: How many problems an InputDataError lists before summarising the rest as a count.
MAX_PROBLEMS = 100

_ENTITY_LEVEL = {
    "OA": "oa",
    "LSOA": "lsoa",
    "LSO": "lsoa",
    "MSOA": "msoa",
    "LAD": "la",
    "RGN": "region",
    "CTRY": "country",
    "PCON": "pcon",
}
_SUFFIX_KIND = {"CD": "code", "NM": "name", "ANM": "name", "NMW": "name_cy"}
_LEVEL_LABEL = {
    "oa": "OA",
    "lsoa": "LSOA",
    "msoa": "MSOA",
    "la": "LA",
    "region": "region",
    "country": "country",
    "pcon": "constituency",
}
_KIND_LABEL = {"code": "code", "name": "name", "name_cy": "Welsh name"}
_LEVEL_ENTITY = {"oa": "OA", "lsoa": "LSOA", "msoa": "MSOA", "la": "LAD", "region": "RGN",
                 "country": "CTRY", "pcon": "PCON"}  # fmt: skip
_COUNTRY_OF_LETTER = {"E": "E92000001", "W": "W92000004", "S": "S92000003"}
_COUNTRY_WORD = {"E": "England", "W": "Wales", "S": "Scotland", "N": "Northern Ireland"}
# Codes ONS uses for "no such area" (e.g. W99999999 for the region of a Welsh area).
_PSEUDO_CODE = re.compile(r"^[A-Z]99999999$")

_Column = tuple[str, str]  # (level, kind), kind "code", "name" or "name_cy" (Welsh name)
_Loc = tuple[str, int]  # (file name, 1-based line)


class _Areas(NamedTuple):
    """An LA's region and country, with their names (Welsh: None when there is none)."""

    region: str
    region_name: str
    region_name_cy: str | None
    country: str
    country_name: str
    country_name_cy: str | None


# --- public types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GeographyLoad:
    """The result of :func:`load_geography`.

    ``table`` has the columns :data:`GEOGRAPHY_COLUMNS` (all strings), one row per OA sorted by
    ``oa_code``; ``pcon_code``/``pcon_name`` are null when no constituency file was given, and
    the ``*_name_cy`` (Welsh name) columns wherever the files give no Welsh name.
    ``warnings`` holds things the user should know but that did not stop the load (an encoding
    fallback, identical duplicate rows, rows for areas the OA lookup does not cover).
    """

    table: pa.Table
    warnings: tuple[str, ...]


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Csv:
    """One parsed file: normalised headers and non-blank rows with their physical line."""

    name: str
    headers: tuple[str, ...]
    header_line: int
    rows: list[list[str]]
    lines: Sequence[int]
    warnings: tuple[str, ...]


def _decode(data: bytes, name: str) -> tuple[str, str | None]:
    """Text of a file and a warning if it was not UTF-8.

    A file that is not valid UTF-8 is decoded whole as Windows-1252 (latin-1 if even that
    fails): ONS files that are not UTF-8 are Windows exports, and decoding line by line would
    mix encodings invisibly.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError as exc:
            raise InputDataError(
                f"{name} is not readable text",
                problems=[f"{name}: starts with a UTF-16 mark but is not UTF-16 ({exc.reason})"],
            ) from exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"first bad byte 0x{data[exc.start]:02X} at line {line}"
    try:
        text, encoding = data.decode("cp1252"), "cp1252 (Windows-1252)"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    return text, f"{name}: not valid UTF-8 ({where}); decoded the whole file as {encoding}"


# Text that shows a field padded in a way skipinitialspace does not handle: a space before a
# delimiter, quote or line end, after a line start or an opening quote, or any tab. Plain
# substring tests (fast on 20 MB); a false positive only costs the time of stripping.
_PADDING_MARKS = (" ,", ' "', " \r", " \n", "\n ", '" ', "\t")


def _padded(text: str) -> bool:
    return text.startswith(" ") or text.endswith(" ") or any(m in text for m in _PADDING_MARKS)


def _normalise_header(header: str) -> str:
    return header.strip().lstrip("\ufeff").strip().upper()


def _parse(text: str, name: str) -> tuple[list[list[str]], Sequence[int]]:
    """CSV records and the physical line each starts on.

    Leading spaces after a delimiter are dropped by the C parser (skipinitialspace). The fast
    path parses in one call and numbers records by position, which holds when no quoted field
    spans lines; otherwise the text is parsed again, tracking the reader's line count.
    """
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        records = list(reader)
        if reader.line_num == len(records):  # one physical line per record
            return records, range(1, len(records) + 1)
        reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
        records, lines = [], []
        previous_end = 0
        for record in reader:
            records.append(record)
            lines.append(previous_end + 1)
            previous_end = reader.line_num
    except csv.Error as exc:
        raise InputDataError(
            f"{name} is not a valid CSV file", problems=[f"{name} line {reader.line_num}: {exc}"]
        ) from exc
    return records, lines


def _read(path: Path) -> _Csv:
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputDataError(
            f"lookup file {name} not found", problems=[f"{name}: no such file"]
        ) from exc
    except OSError as exc:
        raise InputDataError(
            f"lookup file {name} cannot be read", problems=[f"{name}: {exc.strerror}"]
        ) from exc
    text, warning = _decode(data, name)
    warnings = (warning,) if warning else ()
    records, lines = _parse(text.lstrip("\ufeff"), name)
    # Fields are stripped in Python only when the text shows padding, which ONS files never have.
    if _padded(text):
        records = [[field.strip() for field in record] for record in records]
    # Drop blank lines and rows of empty cells (Excel leaves those at the end).
    blank = {i for i, r in enumerate(records) if not (r and (r[0] or any(r)))}
    if blank:
        keep = [i for i in range(len(records)) if i not in blank]
        records, lines = [records[i] for i in keep], [lines[i] for i in keep]
    if not records:
        return _Csv(name, (), 0, [], (), warnings)
    headers = tuple(_normalise_header(h) for h in records[0])
    return _Csv(name, headers, lines[0], records[1:], lines[1:], warnings)


def read_lookup_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a lookup CSV: normalised (stripped, upper-case) headers and the non-blank rows.

    Handles a UTF-8 BOM, CRLF line endings, quoted fields, trailing blank lines and files that
    are not UTF-8 (decoded as Windows-1252). Fields are stripped of surrounding spaces. An empty
    file gives ``([], [])``; an unreadable one raises :class:`InputDataError`.

    >>> headers, rows = read_lookup_csv(Path("OA21_LAD22.csv"))  # doctest: +SKIP
    >>> headers[:2]                                              # doctest: +SKIP
    ['OA21CD', 'LSOA21CD']
    """
    parsed = _read(path)
    return list(parsed.headers), parsed.rows


# --- column recognition ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    index: Mapping[_Column, int]
    years: Mapping[str, str]  # level -> year suffix of its code column ("" if none)

    def get(self, level: str, kind: str) -> int | None:
        return self.index.get((level, kind))

    def has(self, level: str, kind: str = "code") -> bool:
        return (level, kind) in self.index


def _recognise(headers: Sequence[str]) -> tuple[_Columns, list[str]]:
    """Map (level, kind) to a column index; also problems (duplicate or competing columns)."""
    found: dict[_Column, list[int]] = {}
    years: dict[str, str] = {}
    for i, header in enumerate(headers):
        match = HEADER_PATTERN.match(header)
        if match is None:
            continue
        entity, year, suffix = match.groups()
        kind = _SUFFIX_KIND.get(suffix)
        if kind is None:
            continue
        level = _ENTITY_LEVEL[entity]
        found.setdefault((level, kind), []).append(i)
        if kind == "code":
            years.setdefault(level, year or "")
    problems = []
    for (level, kind), indices in found.items():
        if len(indices) > 1:
            names = ", ".join(headers[i] for i in indices)
            problems.append(
                f"several {_LEVEL_LABEL[level]} {_KIND_LABEL[kind]} columns ({names}); keep one"
            )
    index = {key: indices[0] for key, indices in found.items()}
    return _Columns(MappingProxyType(index), MappingProxyType(years)), problems


def _expected(level: str, kind: str) -> str:
    suffix = "CD" if kind == "code" else "NM"
    return f"{_LEVEL_LABEL[level]} {kind} ({_LEVEL_ENTITY[level]}yy{suffix})"


_OA_REQUIRED: tuple[_Column, ...] = (
    ("oa", "code"),
    ("lsoa", "code"),
    ("lsoa", "name"),
    ("msoa", "code"),
    ("msoa", "name"),
    ("la", "code"),
    ("la", "name"),
)
_PCON_REQUIRED: tuple[_Column, ...] = (("oa", "code"), ("pcon", "code"), ("pcon", "name"))


def _classify(columns: _Columns) -> str | None:
    """Which lookup a file is, judged by its header; None if it is none of them."""
    if all(columns.has(level) for level in ("oa", "lsoa", "msoa", "la")):
        return "oa_lookup"
    if columns.has("oa") and columns.has("pcon"):
        return "constituency_lookup"
    if columns.has("region") and (columns.has("la") or columns.has("oa")):
        return "region_lookup"
    return None


#: Indices of a file's optional region and country columns: code, name and Welsh name of each.
_RegionColumns = tuple[int | None, int | None, int | None, int | None, int | None, int | None]


def _region_columns(cols: _Columns) -> _RegionColumns:
    return (cols.get("region", "code"), cols.get("region", "name"), cols.get("region", "name_cy"),
            cols.get("country", "code"), cols.get("country", "name"),
            cols.get("country", "name_cy"))  # fmt: skip


# --- problem collection ----------------------------------------------------------------------


class _Problems:
    """Collects problems, keeping the first MAX_PROBLEMS texts and counting the rest."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, loc: _Loc, message: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_PROBLEMS:
            self.shown.append(f"{_where(loc)}: {message}")

    def raise_if_any(self, files: Iterable[str]) -> None:
        if not self.count:
            return
        problems = list(self.shown)
        if self.count > len(problems):
            problems.append(f"… and {self.count - len(problems)} more problems")
        noun = "problem" if self.count == 1 else "problems"
        raise InputDataError(
            f"{self.count} {noun} in geography lookup {', '.join(files)}", problems=problems
        )


def _where(loc: _Loc) -> str:
    return f"{loc[0]} line {loc[1]}"


class _Links:
    """A many-to-one mapping (child -> parent, or code -> name) that records where each link
    was first seen and reports a child given a second, different parent — once per pair."""

    def __init__(self, problems: _Problems, describe: str) -> None:
        self.first: dict[str, tuple[str, _Loc]] = {}
        self._problems = problems
        self._reported: set[tuple[str, str]] = set()
        self._describe = describe  # format with child, new, old, old_loc

    def add(self, child: str, parent: str, loc: _Loc) -> bool:
        seen = self.first.get(child)
        if seen is None:
            self.first[child] = (parent, loc)
            return True
        if seen[0] == parent:
            return True
        if (child, parent) not in self._reported:
            self._reported.add((child, parent))
            old = seen[0] or "(none)"
            new = parent or "(none)"
            self._problems.add(
                loc, self._describe.format(child=child, new=new, old=old, old_loc=_where(seen[1]))
            )
        return False

    def value(self, child: str) -> str | None:
        seen = self.first.get(child)
        return None if seen is None else seen[0]


def _parent_links(problems: _Problems, child: str, parent: str) -> _Links:
    return _Links(
        problems,
        f"{child} {{child}} is in {parent} {{new}} here but in {parent} {{old}} at {{old_loc}}",
    )


def _name_links(problems: _Problems, level: str, verb: str = "is named") -> _Links:
    return _Links(
        problems, f"{level} {{child}} {verb} {{new!r}} here but {{old!r}} at {{old_loc}}"
    )


def _bad_code(header: str, value: str, level: str) -> str:
    """Describe a value that does not match its level's code format."""
    label = _LEVEL_LABEL[level]
    if not value:
        return f"empty {label} code in {header}"
    looks_like = next(
        (other for other, pattern in LEVEL_PATTERNS.items() if pattern.match(value)), None
    )
    hint = f" (it looks like {_a(_LEVEL_LABEL[looks_like])} code)" if looks_like else ""
    return f"{header} value {value!r} is not {_a(label)} code (e.g. {_EXAMPLE[level]}){hint}"


def _a(label: str) -> str:
    """The label with its indefinite article: 'an LSOA', 'a region'."""
    return ("an " if label[0] in "AEIOLM" else "a ") + label


_EXAMPLE = {"oa": "E00000001", "lsoa": "E01000001", "msoa": "E02000001", "la": "E06000001",
            "region": "E12000001", "country": "E92000001", "pcon": "E14001001"}  # fmt: skip


# --- loading ---------------------------------------------------------------------------------


class _Loader:
    """State of one load_geography call: links between levels, names and problems.

    The row loops are the hot path (a GB file has ~235k rows): they check codes with the
    compiled patterns inline, and check and record each distinct set of parent cells (LSOA,
    MSOA, LA codes and names) once, however the rows are ordered — a GB file has ~47k such sets
    for 235k OAs. Anything unusual goes to a slower method that says exactly what is wrong.
    """

    def __init__(self) -> None:
        self.problems = _Problems()
        self.warnings: list[str] = []
        p = self.problems
        self.oa_file = ""
        self.oas: dict[str, tuple[str, str, str]] = {}  # oa -> (lsoa, msoa, la)
        self.oa_line: dict[str, int] = {}  # oa -> its line in the OA lookup
        self.la_line: dict[str, _Loc] = {}  # la -> its first row in the OA lookup
        self.lsoa_msoa = _parent_links(p, "LSOA", "MSOA")
        self.msoa_la = _parent_links(p, "MSOA", "LA")
        self.la_region = _parent_links(p, "LA", "region")
        self.la_country = _parent_links(p, "LA", "country")
        self.bad_region: set[str] = set()  # LAs whose region cell was invalid (reported)
        self.oa_pcon: dict[str, str] = {}
        self.names = {level: _name_links(p, _LEVEL_LABEL[level]) for level in _LEVEL_LABEL}
        self.names_cy = {level: _name_links(p, _LEVEL_LABEL[level], "has Welsh name")
                         for level in _LEVEL_LABEL}  # fmt: skip

    # -- cell checks (slow path) ------------------------------------------------------------

    def check_fields(self, csv_: _Csv, row: list[str], line: int) -> bool:
        width = len(csv_.headers)
        if len(row) == width or (len(row) > width and not any(row[width:])):
            return True
        self.problems.add(
            (csv_.name, line),
            f"{len(row)} fields but the header has {width}"
            + (" (an unquoted comma in a name?)" if len(row) > width else ""),
        )
        return False

    def code(self, csv_: _Csv, row: list[str], line: int, index: int, level: str) -> bool:
        value = row[index]
        if LEVEL_PATTERNS[level].match(value):
            return True
        self.problems.add((csv_.name, line), _bad_code(csv_.headers[index], value, level))
        return False

    def codes(self, csv_: _Csv, row: list[str], line: int, levels: Mapping[str, int]) -> None:
        """Report every bad code in a row, or else the first pair in different countries."""
        ok = True
        for level, index in levels.items():
            ok = self.code(csv_, row, line, index, level) and ok
        if not ok:
            return
        (first_level, first_index), *rest = levels.items()
        first = row[first_index]
        for level, index in rest:
            value = row[index]
            if value[0] != first[0]:
                self.problems.add(
                    (csv_.name, line),
                    f"{_LEVEL_LABEL[first_level]} {first} is in {_COUNTRY_WORD[first[0]]} but "
                    f"{_LEVEL_LABEL[level]} {value} is in {_COUNTRY_WORD[value[0]]}",
                )
                return

    def region_value(self, csv_: _Csv, row: list[str], line: int, index: int) -> str | None:
        """A region cell's code ("" for none) or None if it is invalid (a problem is added)."""
        value = row[index]
        loc = (csv_.name, line)
        if not value or _PSEUDO_CODE.match(value):
            return ""
        if not LEVEL_PATTERNS["region"].match(value):
            self.problems.add(loc, _bad_code(csv_.headers[index], value, "region"))
            return None
        if value.startswith("E12") and value not in REGIONS:
            self.problems.add(loc, f"region {value} is not one of the nine English regions")
            return None
        if not value.startswith("E12") and value not in COUNTRIES:
            self.problems.add(loc, f"{csv_.headers[index]} value {value!r} is not a known country")
            return None
        return value

    def country_value(self, csv_: _Csv, row: list[str], line: int, index: int) -> str | None:
        """A country cell's code ("" for none) or None if it is invalid (a problem is added)."""
        value = row[index]
        if value in COUNTRIES:
            return value
        if not value or _PSEUDO_CODE.match(value):
            return ""
        header = csv_.headers[index]
        if LEVEL_PATTERNS["country"].match(value):
            message = f"{header} value {value!r} is not a known country"
        else:
            message = _bad_code(header, value, "country")
        self.problems.add((csv_.name, line), message)
        return None

    def name(self, csv_: _Csv, row: list[str], line: int, index: int | None, level: str,
             code: str, required: bool, welsh: int | None = None) -> None:  # fmt: skip
        """Record an area's name (and its Welsh name from column ``welsh``, if any: optional,
        since ONS leaves it empty outside Wales)."""
        if welsh is not None and row[welsh]:
            self.names_cy[level].add(code, row[welsh], (csv_.name, line))
        if index is None:
            return
        value = row[index]
        if value:
            self.names[level].add(code, value, (csv_.name, line))
        elif required:
            self.problems.add(
                (csv_.name, line), f"empty {csv_.headers[index]} for {_LEVEL_LABEL[level]} {code}"
            )

    # -- files ------------------------------------------------------------------------------

    def load_oa_lookup(self, csv_: _Csv, cols: _Columns) -> None:
        i_oa, i_lsoa, i_lsoa_nm, i_msoa, i_msoa_nm, i_la, i_la_nm = (
            cols.index[c] for c in _OA_REQUIRED
        )
        i_lsoa_cy, i_msoa_cy, i_la_cy = (cols.get(level, "name_cy")
                                         for level in ("lsoa", "msoa", "la"))  # fmt: skip
        regions = _region_columns(cols)
        optional = [i for i in (i_lsoa_cy, i_msoa_cy, i_la_cy, *regions) if i is not None]
        parents_of = itemgetter(i_lsoa, i_lsoa_nm, i_msoa, i_msoa_nm, i_la, i_la_nm, *optional)
        code_columns = {"oa": i_oa, "lsoa": i_lsoa, "msoa": i_msoa, "la": i_la}
        is_oa, is_lsoa, is_msoa, is_la = (LEVEL_PATTERNS[level].match for level in code_columns)
        name = self.oa_file = csv_.name
        width = len(csv_.headers)
        oas, oa_line = self.oas, self.oa_line
        # Parent cells already checked and recorded -> their (lsoa, msoa, la), shared by OAs.
        recorded: dict[tuple[str, ...], tuple[str, str, str]] = {}
        previous: object = None  # the parent cells of the row before
        parents_ok = pending = False
        lsoa = msoa = la = ""
        triple = (lsoa, msoa, la)
        duplicates = 0
        first_duplicate = 0
        for row, line in zip(csv_.rows, csv_.lines, strict=True):
            if len(row) != width and not self.check_fields(csv_, row, line):
                continue
            oa = row[i_oa]
            parents = parents_of(row)
            if parents != previous:
                previous = parents
                known = recorded.get(parents)
                if known is not None:
                    triple = known
                    lsoa, msoa, la = known
                    parents_ok, pending = True, False
                else:
                    lsoa, msoa, la = row[i_lsoa], row[i_msoa], row[i_la]
                    triple = (lsoa, msoa, la)
                    parents_ok = bool(
                        is_lsoa(lsoa)
                        and is_msoa(msoa)
                        and is_la(la)
                        and lsoa[0] == msoa[0] == la[0]
                    )
                    pending = True  # links and names of these parents still to record
            if not (parents_ok and is_oa(oa) and oa[0] == la[0]):
                self.codes(csv_, row, line, code_columns)
                continue
            seen = oas.get(oa)
            if seen is not None:
                if seen == triple:
                    duplicates += 1
                    first_duplicate = first_duplicate or line
                else:
                    self.problems.add(
                        (name, line),
                        f"OA {oa} is repeated with different parents: LSOA {lsoa}, MSOA {msoa}, "
                        f"LA {la} here but LSOA {seen[0]}, MSOA {seen[1]}, LA {seen[2]} "
                        f"at {name} line {oa_line[oa]}",
                    )
                continue
            oas[oa] = triple
            oa_line[oa] = line
            if not pending:
                continue
            pending = False
            recorded[parents] = triple
            loc = (name, line)
            self.la_line.setdefault(la, loc)
            self.lsoa_msoa.add(lsoa, msoa, loc)
            self.msoa_la.add(msoa, la, loc)
            self.name(csv_, row, line, i_lsoa_nm, "lsoa", lsoa, True, i_lsoa_cy)
            self.name(csv_, row, line, i_msoa_nm, "msoa", msoa, True, i_msoa_cy)
            self.name(csv_, row, line, i_la_nm, "la", la, True, i_la_cy)
            self.region_columns(csv_, row, line, la, regions)
        if duplicates:
            self.warnings.append(
                f"{name}: {duplicates} repeated row(s) for an OA already seen with the same "
                f"parents were ignored (first at line {first_duplicate})"
            )

    def region_columns(self, csv_: _Csv, row: list[str], line: int, la: str,
                       columns: _RegionColumns) -> None:  # fmt: skip
        """Record the LA's region and country from whichever of those columns a row has."""
        i_rgn, i_rgn_nm, i_rgn_cy, i_ctry, i_ctry_nm, i_ctry_cy = columns
        loc = (csv_.name, line)
        if i_rgn is not None:
            region = self.region_value(csv_, row, line, i_rgn)
            if region is None:
                self.bad_region.add(la)
            else:
                self.la_region.add(la, region, loc)
                if region:
                    level = "region" if region.startswith("E12") else "country"
                    self.name(csv_, row, line, i_rgn_nm, level, region, False, i_rgn_cy)
        if i_ctry is not None:
            country = self.country_value(csv_, row, line, i_ctry)
            if country:
                self.la_country.add(la, country, loc)
                self.name(csv_, row, line, i_ctry_nm, "country", country, False, i_ctry_cy)

    def load_region_lookup(self, csv_: _Csv, cols: _Columns) -> None:
        by_la = cols.has("la")
        i_key = cols.index[("la", "code") if by_la else ("oa", "code")]
        regions = _region_columns(cols)
        width = len(csv_.headers)
        unknown = 0
        for row, line in zip(csv_.rows, csv_.lines, strict=True):
            if len(row) != width and not self.check_fields(csv_, row, line):
                continue
            key = row[i_key]
            if not self.code(csv_, row, line, i_key, "la" if by_la else "oa"):
                continue
            if by_la:
                la: str | None = key if key in self.la_line else None
            else:
                parents = self.oas.get(key)
                la = parents[2] if parents else None
            if la is None:
                unknown += 1
                continue
            self.region_columns(csv_, row, line, la, regions)
        if unknown:
            what = "local authorities" if by_la else "OAs"
            self.warnings.append(
                f"{csv_.name}: {unknown} row(s) for {what} not in {self.oa_file} were ignored"
            )

    def load_constituency_lookup(self, csv_: _Csv, cols: _Columns) -> None:
        i_oa, i_pcon, i_pcon_nm = (cols.index[c] for c in _PCON_REQUIRED)
        i_pcon_cy = cols.get("pcon", "name_cy")
        code_columns = {"oa": i_oa, "pcon": i_pcon}
        is_oa, is_pcon = LEVEL_PATTERNS["oa"].match, LEVEL_PATTERNS["pcon"].match
        name = csv_.name
        width = len(csv_.headers)
        oas, oa_pcon = self.oas, self.oa_pcon
        pcon_line: dict[str, int] = {}
        previous = ("", "", "")  # (code, name, Welsh name) of the last constituency recorded
        checked, pcon_ok = "", False  # the last constituency code pattern-checked, and result
        for row, line in zip(csv_.rows, csv_.lines, strict=True):
            if len(row) != width and not self.check_fields(csv_, row, line):
                continue
            oa, pcon = row[i_oa], row[i_pcon]
            if pcon != checked:
                checked, pcon_ok = pcon, bool(is_pcon(pcon))
            if not (pcon_ok and is_oa(oa) and oa[0] == pcon[0]):
                self.codes(csv_, row, line, code_columns)
                continue
            if oa not in oas:
                self.problems.add((name, line), f"OA {oa} is not in the OA lookup {self.oa_file}")
                continue
            seen = oa_pcon.get(oa)
            if seen is not None:
                if seen != pcon:
                    self.problems.add(
                        (name, line),
                        f"OA {oa} is in constituency {pcon} here but in constituency {seen} "
                        f"at {name} line {pcon_line[oa]}",
                    )
                continue
            oa_pcon[oa] = pcon
            pcon_line[oa] = line
            names = (pcon, row[i_pcon_nm], "" if i_pcon_cy is None else row[i_pcon_cy])
            if names != previous:
                previous = names
                self.name(csv_, row, line, i_pcon_nm, "pcon", pcon, True, i_pcon_cy)

    # -- whole-load checks ------------------------------------------------------------------

    def resolve_las(self, region_file: str | None) -> dict[str, _Areas]:
        """LA -> its region and country with their names, checking each LA."""
        resolved: dict[str, _Areas] = {}
        for la in sorted(self.la_line):
            letter = la[0]
            country = self._country(la, letter)
            if country is None:
                continue
            region_seen = self.la_region.first.get(la)
            region = region_seen[0] if region_seen else ""
            if region and region[0] != letter:
                self.problems.add(
                    region_seen[1] if region_seen else self.la_line[la],
                    f"LA {la} is in {_COUNTRY_WORD[letter]} but its region {region} is in "
                    f"{_COUNTRY_WORD.get(region[0], '?')}",
                )
                continue
            if region.startswith(("E92", "W92", "S92")):
                region = "" if letter == "E" else region
            if not region:
                if letter == "E" and la not in self.bad_region:
                    self._no_region(la, region_seen, region_file)
                    continue
                region = country
            resolved[la] = _Areas(region, self._name(region), self._name_cy(region),
                                  country, self._name(country), self._name_cy(country))
        return resolved

    def _country(self, la: str, letter: str) -> str | None:
        seen = self.la_country.first.get(la)
        if seen is None or not seen[0]:
            return _COUNTRY_OF_LETTER[letter]
        if seen[0][0] != letter:
            self.problems.add(
                seen[1],
                f"LA {la} is in {_COUNTRY_WORD[letter]} but its country is {seen[0]} "
                f"({COUNTRIES[seen[0]]})",
            )
            return None
        return seen[0]

    def _no_region(self, la: str, seen: tuple[str, _Loc] | None, region_file: str | None) -> None:
        if seen is not None:
            self.problems.add(seen[1], f"English LA {la} has no region")
        elif region_file is None:
            self.problems.add(
                self.la_line[la], f"English LA {la} has no region (no region lookup was given)"
            )
        else:
            self.problems.add(
                self.la_line[la], f"English LA {la} has no region: it is not in {region_file}"
            )

    def _name(self, code: str) -> str:
        level = "region" if code.startswith("E12") else "country"
        from_file = self.names[level].value(code)
        if from_file:
            return from_file
        return REGIONS.get(code) or COUNTRIES[code]

    def _name_cy(self, code: str) -> str | None:
        """The Welsh name of a region or country: from the files, else Wales's own."""
        level = "region" if code.startswith("E12") else "country"
        return self.names_cy[level].value(code) or COUNTRIES_CY.get(code)

    def check_constituency_coverage(self, pcon_file: str) -> None:
        missing = sorted(oa for oa in self.oas if oa not in self.oa_pcon)
        for oa in missing:
            self.problems.add(
                (self.oa_file, self.oa_line[oa]), f"OA {oa} has no constituency in {pcon_file}"
            )

    def table(self, las: Mapping[str, _Areas], with_pcon: bool) -> pa.Table:
        """The output table. Each ancestor level is built once as a small Arrow array and
        expanded to one value per OA with ``take`` — much faster than converting 235k Python
        strings per column."""
        oa_codes = sorted(self.oas)
        parents = [self.oas[oa] for oa in oa_codes]
        columns: dict[str, pa.Array] = {"oa_code": pa.array(oa_codes, pa.string())}

        def expand(
            per_oa: list[str], codes: list[str], attributes: Mapping[str, Sequence[str | None]]
        ) -> None:
            """Add columns holding, for each OA, an attribute of its ancestor ``per_oa``;
            ``attributes`` are lists aligned with the distinct ``codes``."""
            position = {code: i for i, code in enumerate(codes)}
            indices = pa.array([position[code] for code in per_oa], pa.int32())
            for column, values in attributes.items():
                columns[column] = pa.array(values, pa.string()).take(indices)

        def names(level: str, codes: Iterable[str]) -> list[str]:
            first = self.names[level].first
            return [first[code][0] for code in codes]

        def names_cy(level: str, codes: Iterable[str]) -> list[str | None]:
            return [self.names_cy[level].value(code) for code in codes]  # None: no Welsh name

        for level, part in (("lsoa", 0), ("msoa", 1)):
            per_oa = [p[part] for p in parents]
            codes = list(dict.fromkeys(per_oa))
            expand(per_oa, codes, {f"{level}_code": codes, f"{level}_name": names(level, codes),
                                   f"{level}_name_cy": names_cy(level, codes)})
        per_la = [p[2] for p in parents]
        la_codes = list(dict.fromkeys(per_la))
        areas = [las[la] for la in la_codes]
        expand(
            per_la,
            la_codes,
            {
                "la_code": la_codes,
                "la_name": names("la", la_codes),
                "la_name_cy": names_cy("la", la_codes),
                "region_code": [area.region for area in areas],
                "region_name": [area.region_name for area in areas],
                "region_name_cy": [area.region_name_cy for area in areas],
                "country_code": [area.country for area in areas],
                "country_name": [area.country_name for area in areas],
                "country_name_cy": [area.country_name_cy for area in areas],
            },
        )
        if with_pcon:
            per_oa = [self.oa_pcon[oa] for oa in oa_codes]
            codes = list(dict.fromkeys(per_oa))
            expand(per_oa, codes, {"pcon_code": codes, "pcon_name": names("pcon", codes),
                                   "pcon_name_cy": names_cy("pcon", codes)})
        else:
            for column in ("pcon_code", "pcon_name", "pcon_name_cy"):
                columns[column] = pa.nulls(len(oa_codes), pa.string())
        schema = pa.schema([(column, pa.string()) for column in GEOGRAPHY_COLUMNS])
        return pa.table([columns[column] for column in GEOGRAPHY_COLUMNS], schema=schema)


def _header_problems(csv_: _Csv, role: str, problems: _Problems) -> _Columns:
    """Recognise a file's columns, adding problems for an empty file or missing columns."""
    loc = (csv_.name, max(csv_.header_line, 1))
    if not csv_.headers:
        problems.add(loc, f"the file is empty (expected {_a(role)} with a header line)")
        return _Columns(MappingProxyType({}), MappingProxyType({}))
    columns, duplicates = _recognise(csv_.headers)
    for text in duplicates:
        problems.add(loc, text)
    if role == "OA lookup":
        required = _OA_REQUIRED
    elif role == "constituency lookup":
        required = _PCON_REQUIRED
    else:
        required = (("region", "code"),)
    missing = [_expected(*column) for column in required if column not in columns.index]
    if role == "region lookup" and not (columns.has("la") or columns.has("oa")):
        missing.insert(0, "LA code (LADyyCD) or OA code (OAyyCD)")
    if missing:
        problems.add(
            loc,
            f"missing required column(s) for {_a(role)}: {'; '.join(missing)}; "
            f"found {', '.join(csv_.headers)}",
        )
    elif not csv_.rows:
        problems.add(loc, f"the file has a header but no data rows (expected {_a(role)})")
    return columns


def load_geography(
    oa_lookup: Path,
    region_lookup: Path | None = None,
    constituency_lookup: Path | None = None,
) -> GeographyLoad:
    """Load ONS lookups into one row per OA with every ancestor; see the module docstring.

    ``oa_lookup`` maps OA → LSOA → MSOA → LA (it may also carry region and country columns).
    ``region_lookup`` maps LA → region or OA → region; England needs it unless the OA lookup
    has region columns. ``constituency_lookup`` maps OA → Westminster constituency; without it
    the ``pcon_*`` columns are null. Raises :class:`InputDataError` listing every problem found.

    >>> load = load_geography(Path("OA21_LAD22.csv"), Path("LAD22_RGN22.csv"))  # doctest: +SKIP
    >>> load.table.column_names[:3]                                           # doctest: +SKIP
    ['oa_code', 'lsoa_code', 'lsoa_name']
    """
    with _cyclic_gc_paused():
        return _load(oa_lookup, region_lookup, constituency_lookup)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    A GB lookup makes millions of small lists and tuples, none in reference cycles; with the
    collector on, repeated full scans of them add about a third to the load time. Memory is
    still freed by reference counting, and the previous state is restored on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load(
    oa_lookup: Path, region_lookup: Path | None, constituency_lookup: Path | None
) -> GeographyLoad:
    """load_geography's stages: read and recognise, load rows, resolve LAs, build."""
    files: list[tuple[Path, str]] = [(oa_lookup, "OA lookup")]
    if region_lookup is not None:
        files.append((region_lookup, "region lookup"))
    if constituency_lookup is not None:
        files.append((constituency_lookup, "constituency lookup"))
    file_names = [path.name for path, _ in files]

    # Stage 1: read every file and recognise its columns; stop if any file is unusable.
    loader = _Loader()
    parsed: dict[str, tuple[_Csv, _Columns]] = {}
    for path, role in files:
        csv_ = _read(path)
        loader.warnings.extend(csv_.warnings)
        parsed[role] = (csv_, _header_problems(csv_, role, loader.problems))
    loader.problems.raise_if_any(file_names)

    # Stage 2: rows, file by file — the OA lookup first, since the others refer to its OAs.
    oa_csv, oa_cols = parsed["OA lookup"]
    loader.load_oa_lookup(oa_csv, oa_cols)
    if "region lookup" in parsed:
        loader.load_region_lookup(*parsed["region lookup"])
    if "constituency lookup" in parsed:
        pcon_csv, pcon_cols = parsed["constituency lookup"]
        loader.load_constituency_lookup(pcon_csv, pcon_cols)
        loader.check_constituency_coverage(pcon_csv.name)
    for role, (csv_, cols) in parsed.items():
        year = cols.years.get("oa")
        if role != "OA lookup" and year is not None and year != oa_cols.years.get("oa"):
            loader.warnings.append(
                f"{csv_.name} uses OA{year} codes but {oa_csv.name} uses "
                f"OA{oa_cols.years.get('oa')} codes; the OA vintages may not match"
            )

    # Stage 3: each LA's region and country, then the table.
    region_name = region_lookup.name if region_lookup is not None else None
    las = loader.resolve_las(region_name)
    loader.problems.raise_if_any(file_names)
    table = loader.table(las, with_pcon=constituency_lookup is not None)
    return GeographyLoad(table=table, warnings=tuple(loader.warnings))


# --- finding files ---------------------------------------------------------------------------


def _read_header(path: Path) -> tuple[str, ...]:
    """The normalised header of a CSV file without reading the whole file."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    text, _ = _decode(head, path.name)
    text = text.lstrip("\ufeff")
    for record in csv.reader(io.StringIO(text, newline="")):
        fields = [field.strip() for field in record]
        if any(fields):
            return tuple(_normalise_header(h) for h in fields)
    return ()


def find_lookups(directory: Path) -> dict[str, Path]:
    """Recognise the lookup files in a folder by their headers.

    Returns a dict with key ``"oa_lookup"`` and, when found, ``"region_lookup"`` and
    ``"constituency_lookup"`` — ready for ``load_geography(**find_lookups(folder))``. CSV files
    that are none of these are ignored. Raises :class:`InputDataError` if two files look like
    the same kind of lookup or no OA lookup is found.
    """
    if not directory.is_dir():
        raise InputDataError(
            f"lookup folder {directory.name} not found",
            problems=[f"{directory.name}: not a folder"],
        )
    kinds: dict[str, list[Path]] = {}
    seen: list[str] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if path.suffix.lower() != ".csv":
            continue
        headers = _read_header(path)
        kind = _classify(_recognise(headers)[0]) if headers else None
        if kind is None:
            seen.append(f"{path.name}: " + (", ".join(headers) if headers else "empty"))
        else:
            kinds.setdefault(kind, []).append(path)
            seen.append(f"{path.name}: {kind.replace('_', ' ')}")
    ambiguous = [
        f"{len(paths)} files look like a {kind.replace('_', ' ')}: "
        + ", ".join(p.name for p in paths)
        for kind, paths in kinds.items()
        if len(paths) > 1
    ]
    if ambiguous:
        raise InputDataError(
            f"ambiguous lookup files in {directory.name}; keep one of each kind",
            problems=ambiguous,
        )
    if "oa_lookup" not in kinds:
        raise InputDataError(
            f"no OA lookup (a CSV with OAyyCD, LSOAyyCD, MSOAyyCD and LADyyCD columns) "
            f"in {directory.name}",
            problems=seen or [f"{directory.name}: no CSV files"],
        )
    return {kind: paths[0] for kind, paths in kinds.items()}
