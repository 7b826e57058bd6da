"""Member labels in another language: the one place that knows where translations live.

Why: the Stat-Xplore API (``Accept-Language: cy``) and the Slicer API (``lang=cy``) both
answer in Welsh where the data has Welsh names, and both must find them the same way, with
the same fallback. ONS's geography lookups name Welsh areas in Welsh (their ``…NMW``
columns); the build keeps those names (cube/geography.py), and this module reads them.

Where a translation lives — the convention: a level's label in language ``L`` is the column
beside its label column in the same table, named ``<label column>_<L>``
(``dim_geography.la_name`` → ``dim_geography.la_name_cy``), the suffix naming Cubes uses for
localised columns. A translation is optional twice over:

- per warehouse: a warehouse built before the columns existed lacks them, and is served as
  before, in the default language (no format change was needed);
- per member: ``NULL`` means "no name in that language" (ONS names only Welsh areas in
  Welsh), and the member keeps its default label — a table mixes Welsh and English labels,
  as Stat-Xplore's own Welsh tables do.

The translation columns are not declared in model.json: a declared attribute would appear in
every Slicer cell and member, and Cubes 1.1 (which must read the same file) would look for a
``…_en`` column as well. So the model describes them by this convention alone, and
:func:`translation_columns` lists them for checks (tests/test_model.py: every warehouse column
is mapped or is one of these; ``statcube load-pg`` copies every column of the tables the model
describes, these included).

Labels carry no values, so nothing here passes the disclosure gate; a level's translations are
read once per warehouse connection (a few thousand Welsh names at most) and kept.

    >>> names = translations(ws.cube("pip"), level, "cy")   # doctest: +SKIP
    >>> names.get("W06000001", english_label)               # doctest: +SKIP
    'Ynys Môn'
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from cube.model import Column, Cube, Level, Model

if TYPE_CHECKING:
    from cube.engine import Engine
    from cube.workspace import CubeBrowser

#: Label languages statcube answers in: the model's own (English) and Welsh.
LANGUAGES: tuple[str, ...] = ("en", "cy")
#: The language of the labels in model.json and in the label columns themselves.
DEFAULT_LANGUAGE = "en"

_EMPTY: Mapping[Any, str] = MappingProxyType({})
#: Per engine: table → its column names, and (table, key, translation column) → translations.
_columns: weakref.WeakKeyDictionary[Engine, dict[str, frozenset[str]]] = \
    weakref.WeakKeyDictionary()
_cache: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str, str], Mapping[Any, str]]] = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()


def language(requested: str | None) -> str | None:
    """The offered language a requested locale names, or None if it names none: ``cy``,
    ``cy-GB``, ``cy_GB`` and ``CY`` all mean ``cy``. For parameters such as the Slicer API's
    ``lang=`` (Cubes passes locales like ``en_GB``); whether None falls back to
    :data:`DEFAULT_LANGUAGE` or is refused is the caller's choice.

    >>> language("cy_GB"), language("EN"), language("fr"), language(None)
    ('cy', 'en', None, None)
    """
    if not requested:
        return None
    primary = requested.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def translation_column(cube: Cube, level: Level, lang: str) -> Column | None:
    """Where ``level``'s labels in ``lang`` would be, by the convention above; None for the
    default language (the label column itself) or a language statcube does not offer."""
    if lang == DEFAULT_LANGUAGE or lang not in LANGUAGES:
        return None
    label = cube.physical.column(level.label_attribute.ref)
    return Column(label.table, f"{label.column}_{lang}")


def translation_columns(model: Model) -> set[Column]:
    """Every column the convention allows a warehouse to hold beside the model's mappings:
    the translation of each level's label column into each non-default language."""
    return {c for cube in model.cubes.values() for dim in cube.dimensions for level in dim.levels
            for lang in LANGUAGES if (c := translation_column(cube, level, lang)) is not None}


def translations(browser: CubeBrowser, level: Level, lang: str) -> Mapping[Any, str]:
    """Member key → label in ``lang`` for the members of ``level`` that have one.

    Empty for the default language, a language not offered, a level without a translation
    column in this warehouse (older builds, levels no lookup names in Welsh) — so a caller
    always writes ``translations(…).get(key, default_label)``. Keys are as the engine returns
    the level's key column (ONS codes as text)."""
    column = translation_column(browser.cube, level, lang)
    if column is None:
        return _EMPTY
    key = browser.cube.physical.column(level.key.ref)
    if key.table != column.table:
        return _EMPTY
    engine = browser.ws.engine
    slot = (column.table, key.column, column.column)
    with _lock:
        found = _cache.get(engine, {}).get(slot)
    if found is not None:
        return found
    if column.column not in _table_columns(engine, column.table):
        found = _EMPTY
    else:
        t = sa.table(column.table, sa.column(key.column), sa.column(column.column))
        rows = engine.execute(sa.select(t.c[key.column], t.c[column.column]).distinct()
                              .where(t.c[column.column].is_not(None)))
        found = MappingProxyType(dict(zip(rows.column(0).to_pylist(),
                                          rows.column(1).to_pylist(), strict=True)))
    with _lock:
        _cache.setdefault(engine, {})[slot] = found
    return found


def localise_rows(browser: CubeBrowser, levels: Iterable[Level],
                  rows: Sequence[Mapping[str, Any]], lang: str) -> list[dict[str, Any]]:
    """``rows`` (dicts keyed by attribute ref, as cells and members are) with each level's
    label attribute in ``lang`` where the member has a translation, else unchanged. Rows
    without a level's key or label attribute are left alone for that level. New dicts: the
    caller's rows are not modified.

    >>> localise_rows(b, [la], [{"geography.la_code": "W06000001",     # doctest: +SKIP
    ...                          "geography.la_name": "Isle of Anglesey"}], "cy")
    [{'geography.la_code': 'W06000001', 'geography.la_name': 'Ynys Môn'}]
    """
    out = [dict(row) for row in rows]
    for level in levels:
        names = translations(browser, level, lang)
        if not names:
            continue
        key, label = level.key.ref, level.label_attribute.ref
        for row in out:
            if label in row and key in row:
                row[label] = names.get(row[key], row[label])
    return out


def localise_table(browser: CubeBrowser, levels: Iterable[Level], table: pa.Table,
                   lang: str) -> pa.Table:
    """An Arrow table of cells or members (columns named by attribute ref) with each level's
    label column in ``lang`` where the member has a translation, else unchanged: what the
    Slicer API's ``lang=`` and any other Arrow consumer use. Same schema, same rows."""
    for level in levels:
        key, label = level.key.ref, level.label_attribute.ref
        if key not in table.column_names or label not in table.column_names:
            continue
        names = translations(browser, level, lang)
        if not names:
            continue
        keys = table.column(key).to_pylist()
        old = table.column(label).to_pylist()
        new = [names.get(k, v) for k, v in zip(keys, old, strict=True)]
        i = table.column_names.index(label)
        table = table.set_column(i, table.field(i), pa.array(new, table.field(i).type))
    return table


def localise_path(browser: CubeBrowser, levels: Sequence[Level],
                  path: Sequence[Mapping[str, Any]] | None, lang: str
                  ) -> list[dict[str, Any]] | None:
    """A cell-details path (one dict per level, with ``_key``, ``_label`` and the level's
    attributes, as /cell gives it) with labels in ``lang`` where the member has one."""
    if path is None:
        return None
    out = []
    for level, element in zip(levels, path, strict=False):
        e = dict(element)
        name = translations(browser, level, lang).get(e.get("_key"))
        if name is not None:
            e["_label"] = name
            if level.label_attribute.ref in e:
                e[level.label_attribute.ref] = name
        out.append(e)
    return out


def _table_columns(engine: Engine, table: str) -> frozenset[str]:
    """The column names of ``table`` (an empty, portable ``SELECT *``: the engine resolves
    the table exactly as it does for queries, schema search path included)."""
    with _lock:
        known = _columns.get(engine, {}).get(table)
    if known is not None:
        return known
    empty = engine.execute(sa.select(sa.literal_column("*")).select_from(sa.table(table))
                           .limit(0))
    known = frozenset(empty.column_names)
    with _lock:
        _columns.setdefault(engine, {})[table] = known
    return known
