"""cube/labels.py: members' labels in Welsh, on every engine, and on warehouses without them.

What users rely on: ``lang=cy`` / ``Accept-Language: cy`` names Welsh areas by the lookups'
Welsh names and every other member by its English name; a warehouse built before Welsh names
were kept (or loaded into PostgreSQL) answers the same way as the DuckDB file it came from.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cube import labels
from cube.geography import WELSH_NAME_COLUMNS
from cube.model import Level, Model
from cube.workspace import CubeBrowser, Workspace

pytestmark = pytest.mark.integration


def _level(browser: CubeBrowser, name: str, dimension: str = "geography") -> Level:
    return next(lv for lv in browser.cube.dimension(dimension).levels if lv.name == name)


def _names(warehouse: Path, level: str) -> dict[str, tuple[str, str | None]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(f"SELECT DISTINCT {level}_code, {level}_name, {level}_name_cy "
                           "FROM dim_geography").fetchall()
    return {code: (en, cy) for code, en, cy in rows}


@pytest.mark.parametrize("level", ["lsoa", "msoa", "la", "region", "country", "pcon"])
def test_welsh_names_of_welsh_areas_and_no_others(any_workspace: Workspace, warehouse: Path,
                                                  level: str) -> None:
    """On PostgreSQL too: ``load-pg`` copies the translation columns of dim_geography."""
    b = any_workspace.cube("pip")
    names = labels.translations(b, _level(b, level), "cy")
    expected = {code: cy for code, (_, cy) in _names(warehouse, level).items() if cy}
    assert dict(names) == expected
    assert all(code.startswith("W") for code in names)
    if level in ("region", "country"):
        assert dict(names) == {"W92000004": "Cymru"}
    elif level == "pcon":
        assert names == {}  # the synthetic constituency lookup has no Welsh names
    else:
        assert names


def test_no_translations_for_english_other_languages_and_untranslated_levels(
        workspace: Workspace) -> None:
    b = workspace.cube("housing_benefit")
    la = _level(b, "la")
    assert labels.translations(b, la, "en") == {}
    assert labels.translations(b, la, "fr") == {}
    assert labels.translation_column(b.cube, la, "en") is None
    assert labels.translations(b, _level(b, "oa"), "cy") == {}  # an OA is named by its code
    assert labels.translations(b, _level(b, "month", "time"), "cy") == {}
    assert labels.translations(b, _level(b, "tenure", "tenure"), "cy") == {}


def test_a_warehouse_without_welsh_columns_has_no_translations(model: Model, warehouse: Path,
                                                               tmp_path: Path) -> None:
    old = tmp_path / "old.duckdb"
    shutil.copy(warehouse, old)
    with duckdb.connect(str(old)) as con:
        for column in WELSH_NAME_COLUMNS.values():
            con.execute(f"ALTER TABLE dim_geography DROP COLUMN {column}")
    ws = Workspace.open(model, old)
    try:
        b = ws.cube("pip")
        assert labels.translations(b, _level(b, "la"), "cy") == {}
        rows = b.members("geography", level="la").members.to_pylist()
        assert labels.localise_rows(b, [_level(b, "la")], rows, "cy") == rows
    finally:
        ws.close()


def test_localise_rows_relabels_members_of_every_level_of_a_path(any_workspace: Workspace,
                                                                  warehouse: Path) -> None:
    """Members with ancestors (a members listing or drilled cells): each level's label in
    Welsh where it has one, English otherwise, keys and other attributes untouched."""
    b = any_workspace.cube("pip")
    hier = b.cube.dimension("geography").hierarchy("ons")
    levels = hier.levels[:4]  # country, region, la, msoa
    rows = b.members("geography", level="msoa").members.to_pylist()
    out = labels.localise_rows(b, levels, rows, "cy")
    las, msoas = _names(warehouse, "la"), _names(warehouse, "msoa")
    for before, after in zip(rows, out, strict=True):
        assert set(after) == set(before)
        la, msoa = before["geography.la_code"], before["geography.msoa_code"]
        welsh = la.startswith("W")
        assert after["geography.country_name"] == ("Cymru" if welsh else
                                                   before["geography.country_name"])
        assert after["geography.la_name"] == (las[la][1] if welsh else las[la][0])
        assert after["geography.msoa_name"] == (msoas[msoa][1] if welsh else msoas[msoa][0])
        assert {k: v for k, v in after.items() if not k.endswith("_name")} == \
            {k: v for k, v in before.items() if not k.endswith("_name")}
    assert rows == b.members("geography", level="msoa").members.to_pylist()  # not modified


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_localising_never_invents_or_drops_a_label(workspace: Workspace, data: Any) -> None:
    """Property: for any rows of LAs, in any language offered or not, localising keeps every
    row and key, gives a non-empty label, and is the identity unless the language is cy and
    the LA is Welsh."""
    b = workspace.cube("housing_benefit")
    la = _level(b, "la")
    every = b.members("geography", level="la").members.to_pylist()
    rows = data.draw(st.lists(st.sampled_from(every), max_size=12))
    lang = data.draw(st.sampled_from(["en", "cy", "fr", "cy-GB", ""]))
    out = labels.localise_rows(b, [la], rows, lang)
    assert len(out) == len(rows)
    for before, after in zip(rows, out, strict=True):
        assert after["geography.la_code"] == before["geography.la_code"]
        assert after["geography.la_name"]
        changed = after["geography.la_name"] != before["geography.la_name"]
        assert changed == (lang == "cy" and before["geography.la_code"].startswith("W"))


@given(st.sampled_from(["cy", "CY", "cy-GB", "cy_GB", " cy ", "en", "en-GB", "En_gb"]),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=3))
def test_a_requested_locale_names_an_offered_language_or_none(offered: str, other: str) -> None:
    assert labels.language(offered) == offered.strip()[:2].lower()
    assert labels.language(other) == (other if other in labels.LANGUAGES else None)
    assert labels.language(f"{other}-GB") == labels.language(other)
    assert labels.language("") is None and labels.language(None) is None
