"""Tests for cube.geography: loading ONS lookup CSVs, with their real-world quirks.

The clean fixtures live in tests/fixtures/geography/gb/; every quirky variant (BOM, CRLF,
latin-1, lower-case or 2011 headers, extra columns…) is derived from them into tmp_path, so a
test shows exactly which bytes it feeds the loader.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cube.errors import InputDataError
from cube.geography import (
    COUNTRIES,
    GEOGRAPHY_COLUMNS,
    LEVEL_PATTERNS,
    MAX_PROBLEMS,
    REGIONS,
    WELSH_NAME_COLUMNS,
    GeographyLoad,
    find_lookups,
    load_geography,
    read_lookup_csv,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "geography" / "gb"
OA_FILE = "OA21_LSOA21_MSOA21_LAD22_GB.csv"
RGN_FILE = "LAD22_RGN22_EN_LU.csv"
PCON_FILE = "OA21_PCON25_GB_LU.csv"


def _row(oa: str, lsoa: str, lsoa_nm: str, msoa: str, msoa_nm: str, la: str, la_nm: str,
         region: str, region_nm: str, country: str, country_nm: str,
         pcon: str | None, pcon_nm: str | None,
         welsh: tuple[str | None, ...] = (None,) * 6) -> dict[str, str | None]:  # fmt: skip
    """A dim_geography row; ``welsh`` are the Welsh names of LSOA, MSOA, LA, region, country
    and constituency (None: the files give none)."""
    values = (oa, lsoa, lsoa_nm, msoa, msoa_nm, la, la_nm, region, region_nm, country,
              country_nm, pcon, pcon_nm, *welsh)  # fmt: skip
    return dict(zip(GEOGRAPHY_COLUMNS, values, strict=True))


ENG, WAL, SCO = ("E92000001", "England"), ("W92000004", "Wales"), ("S92000003", "Scotland")
HARTLEPOOL = ("E06000001", "Hartlepool", "E12000001", "North East", *ENG)
EXPECTED = [
    _row("E00023851", "E01004734", "Westminster 018A", "E02000977", "Westminster 018",
         "E09000033", "Westminster", "E12000007", "London", *ENG,
         "E14001172", "Cities of London and Westminster"),
    _row("E00060274", "E01011954", "Hartlepool 001A", "E02002483", "Hartlepool 001",
         *HARTLEPOOL, "E14001286", "Hartlepool"),
    _row("E00060275", "E01011954", "Hartlepool 001A", "E02002483", "Hartlepool 001",
         *HARTLEPOOL, "E14001286", "Hartlepool"),
    _row("E00073128", "E01014485", "Bristol 001A", "E02003012", "Bristol 001",
         "E06000023", "Bristol, City of", "E12000009", "South West", *ENG,
         "E14001130", "Bristol North West"),
    _row("S00088956", "S01006506", "Cults, Bieldside and Milltimber West - 01",
         "S02001236", "Cults, Bieldside and Milltimber West", "S12000033", "Aberdeen City",
         *SCO, *SCO, "S14000001", "Aberdeen North"),
    _row("W00000001", "W01000001", "Isle of Anglesey 001A", "W02000001",
         "Isle of Anglesey 001", "W06000001", "Isle of Anglesey", *WAL, *WAL,
         "W07000081", "Ynys Môn",
         ("Ynys Môn 001A", "Ynys Môn 001", "Ynys Môn", "Cymru", "Cymru", "Ynys Môn")),
    _row("W00000500", "W01000530", "Bridgend 001A", "W02000100", "Bridgend 001",
         "W06000013", "Bridgend", *WAL, *WAL, "W07000084", "Bridgend",
         ("Pen-y-bont ar Ogwr 001A", "Pen-y-bont ar Ogwr 001", "Pen-y-bont ar Ogwr", "Cymru",
          "Cymru", "Pen-y-bont ar Ogwr")),
]  # fmt: skip
UNCOVERED_LA_WARNING = f"{RGN_FILE}: 1 row(s) for local authorities not in {OA_FILE} were ignored"


def _without_pcon(rows: list[dict[str, str | None]]) -> list[dict[str, str | None]]:
    return [{**row, "pcon_code": None, "pcon_name": None, "pcon_name_cy": None} for row in rows]


def _fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _write(directory: Path, name: str, text: str, *, encoding: str = "utf-8",
           newline: str = "\n", bom: bool = False) -> Path:  # fmt: skip
    data = text.replace("\n", newline).encode(encoding)
    if bom:
        data = b"\xef\xbb\xbf" + data
    path = directory / name
    path.write_bytes(data)
    return path


def _set_header(text: str, header: str) -> str:
    return header + "\n" + text.split("\n", 1)[1]


def _problems(exc: pytest.ExceptionInfo[InputDataError]) -> str:
    return "\n".join(exc.value.problems)


def _load_texts(tmp_path: Path, texts: dict[str, str]) -> GeographyLoad:
    paths = {name: _write(tmp_path, name, text) for name, text in texts.items()}
    return load_geography(*paths.values())


# --- the clean fixtures ----------------------------------------------------------------------


def test_gb_fixtures_load_to_one_row_per_oa_with_all_ancestors() -> None:
    load = load_geography(FIXTURES / OA_FILE, FIXTURES / RGN_FILE, FIXTURES / PCON_FILE)
    assert load.table.column_names == list(GEOGRAPHY_COLUMNS)
    assert load.table.schema == pa.schema([(c, pa.string()) for c in GEOGRAPHY_COLUMNS])
    assert load.table.to_pylist() == EXPECTED
    assert load.warnings == (UNCOVERED_LA_WARNING,)


def test_wales_and_scotland_act_as_their_own_region() -> None:
    load = load_geography(FIXTURES / OA_FILE, FIXTURES / RGN_FILE)
    by_oa = {row["oa_code"]: row for row in load.table.to_pylist()}
    for oa, (code, name) in {"W00000001": WAL, "W00000500": WAL, "S00088956": SCO}.items():
        row = by_oa[oa]
        assert (row["region_code"], row["region_name"]) == (code, name)
        assert (row["country_code"], row["country_name"]) == (code, name)


def test_without_constituency_file_pcon_columns_are_null() -> None:
    load = load_geography(FIXTURES / OA_FILE, FIXTURES / RGN_FILE)
    assert load.table.to_pylist() == _without_pcon(EXPECTED)
    assert load.table.column("pcon_code").null_count == len(EXPECTED)
    assert load.table.schema.field("pcon_name").type == pa.string()


def test_find_lookups_recognises_files_by_header(tmp_path: Path) -> None:
    assert find_lookups(FIXTURES) == {
        "oa_lookup": FIXTURES / OA_FILE,
        "region_lookup": FIXTURES / RGN_FILE,
        "constituency_lookup": FIXTURES / PCON_FILE,
    }
    # Names do not matter, headers do; unrelated CSVs are ignored.
    _write(tmp_path, "a.csv", _lower_headers(_fixture_text(PCON_FILE)))
    _write(tmp_path, "b.csv", _fixture_text(OA_FILE), bom=True)
    _write(tmp_path, "c.csv", "WD22CD,WD22NM\nE05000001,Somewhere\n")
    found = find_lookups(tmp_path)
    assert found == {"oa_lookup": tmp_path / "b.csv", "constituency_lookup": tmp_path / "a.csv"}
    assert load_geography(**found, region_lookup=FIXTURES / RGN_FILE).table.num_rows == 7


def test_find_lookups_refuses_ambiguous_or_missing_oa_lookup(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / RGN_FILE, tmp_path / "rgn.csv")
    _write(tmp_path, "empty.csv", "")
    with pytest.raises(InputDataError, match="no OA lookup") as missing:
        find_lookups(tmp_path)
    assert "rgn.csv: region lookup" in _problems(missing)
    assert "empty.csv: empty" in _problems(missing)

    shutil.copy(FIXTURES / OA_FILE, tmp_path / "one.csv")
    shutil.copy(FIXTURES / OA_FILE, tmp_path / "two.csv")
    with pytest.raises(InputDataError, match="ambiguous") as ambiguous:
        find_lookups(tmp_path)
    assert "one.csv, two.csv" in _problems(ambiguous)

    with pytest.raises(InputDataError, match="not found"):
        find_lookups(tmp_path / "nowhere")


def test_read_lookup_csv_normalises_headers_and_drops_blank_lines(tmp_path: Path) -> None:
    text = 'oa21cd ,Lsoa21Nm,FID\n E00000001,"Bristol, City of" ,1\n\n,,\n'
    path = _write(tmp_path, "x.csv", text, newline="\r\n", bom=True)
    assert read_lookup_csv(path) == (
        ["OA21CD", "LSOA21NM", "FID"],
        [["E00000001", "Bristol, City of", "1"]],
    )
    assert read_lookup_csv(_write(tmp_path, "empty.csv", "\n\n")) == ([], [])


# --- quirks of real files: each variant loads to the same table ------------------------------

Quirk = Callable[[dict[str, str]], dict[str, str]]


def _on_all(change: Callable[[str], str]) -> Quirk:
    return lambda texts: {name: change(text) for name, text in texts.items()}


def _on(name: str, change: Callable[[str], str]) -> Quirk:
    return lambda texts: {**texts, name: change(texts[name])}


def _lower_headers(text: str) -> str:
    header, rest = text.split("\n", 1)
    return header.lower() + "\n" + rest


def _header_2011(text: str) -> str:
    # The 2011 lookup spells the LSOA name column LSO11ANM and has no Welsh-name columns.
    return _set_header(
        text,
        "OA11CD,LSOA11CD,LSO11ANM,LSOA11NMW,MSOA11CD,MSOA11NM,MSOA11NMW,LAD11CD,LAD11NM,"
        "LAD11NMW,ObjectId",
    )


def _extra_columns(text: str) -> str:
    header, *rows = text.rstrip("\n").split("\n")
    out = [f"FID,{header},GlobalID"] + [f"{i},{row},{{guid-{i}}}" for i, row in enumerate(rows)]
    return "\n".join(out) + "\n"


def _padded(text: str) -> str:
    return "\n".join("  " + line.replace(",", " ,\t") for line in text.split("\n"))


def _reorder_columns(text: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        list(reversed(row)) for row in csv.reader(io.StringIO(text))
    )
    return out.getvalue()


QUIRKS: dict[str, Quirk] = {
    "lower-case headers": _on_all(_lower_headers),
    "utf-8 BOM": _on_all(lambda t: "\ufeff" + t),
    "CRLF line endings": _on_all(lambda t: t.replace("\n", "\r\n")),
    "trailing blank lines and empty cells": _on_all(lambda t: t + "\n\n,,,,\r\n\n"),
    "2011 headers with LSO11ANM": _on(OA_FILE, _header_2011),
    "FID and GlobalID columns": _on_all(_extra_columns),
    "columns in another order": _on(RGN_FILE, _reorder_columns),
    "padded fields": _on(PCON_FILE, _padded),
    "CRLF plus BOM plus lower case": _on_all(
        lambda t: "\ufeff" + _lower_headers(t).replace("\n", "\r\n")
    ),
}


@pytest.mark.parametrize("quirk", list(QUIRKS.values()), ids=list(QUIRKS))
def test_quirky_variants_load_to_the_same_table(tmp_path: Path, quirk: Quirk) -> None:
    texts = quirk({name: _fixture_text(name) for name in (OA_FILE, RGN_FILE, PCON_FILE)})
    load = _load_texts(tmp_path, texts)
    assert load.table.to_pylist() == EXPECTED
    assert UNCOVERED_LA_WARNING in load.warnings


def test_latin1_welsh_names_fall_back_and_warn(tmp_path: Path) -> None:
    oa = _write(tmp_path, "oa.csv", _fixture_text(OA_FILE), encoding="latin-1")
    pcon = _write(tmp_path, "pcon.csv", _fixture_text(PCON_FILE), encoding="cp1252")
    load = load_geography(oa, FIXTURES / RGN_FILE, pcon)
    assert load.table.to_pylist() == EXPECTED  # "Ynys Môn" decoded right
    encoding_warnings = [w for w in load.warnings if "not valid UTF-8" in w]
    assert len(encoding_warnings) == 2
    assert encoding_warnings[0].startswith("oa.csv: not valid UTF-8")
    assert "0xF4 at line 7" in encoding_warnings[0]  # ô of "Ynys Môn" in the 7th line
    assert "cp1252" in encoding_warnings[0]
    assert encoding_warnings[1].startswith("pcon.csv: not valid UTF-8")
    assert read_lookup_csv(pcon)[1][5][2] == "Ynys Môn"


def test_valid_utf8_welsh_names_need_no_fallback(tmp_path: Path) -> None:
    text = _fixture_text(OA_FILE)
    assert "Ynys Môn" in text and "Pen-y-bont ar Ogwr" in text
    _, rows = read_lookup_csv(FIXTURES / OA_FILE)
    assert "Ynys Môn" in rows[5] and "Pen-y-bont ar Ogwr" in rows[0]
    load = load_geography(_write(tmp_path, "oa.csv", text), FIXTURES / RGN_FILE)
    assert not [w for w in load.warnings if "UTF-8" in w]


def test_welsh_names_are_kept_for_welsh_areas_only() -> None:
    """NMW columns become the *_name_cy columns, after the original ones; ONS leaves them
    empty outside Wales, which is null here, never an empty string or the English name."""
    load = load_geography(FIXTURES / OA_FILE, FIXTURES / RGN_FILE, FIXTURES / PCON_FILE)
    assert list(GEOGRAPHY_COLUMNS[-6:]) == list(WELSH_NAME_COLUMNS.values()) == [
        "lsoa_name_cy", "msoa_name_cy", "la_name_cy", "region_name_cy", "country_name_cy",
        "pcon_name_cy"]  # fmt: skip
    for row in load.table.to_pylist():
        welsh = [row[c] for c in WELSH_NAME_COLUMNS.values()]
        if row["country_code"] == "W92000004":
            assert all(welsh) and row["region_name_cy"] == row["country_name_cy"] == "Cymru"
        else:
            assert welsh == [None] * 6, row["oa_code"]


def test_files_without_welsh_columns_give_null_welsh_names_but_cymru(tmp_path: Path) -> None:
    """Welsh-name columns are optional: without them every Welsh name is null, except Wales's
    own (as country and as its own region), which needs no file."""
    header, *lines = _fixture_text(OA_FILE).rstrip("\n").split("\n")
    keep = [i for i, h in enumerate(header.split(",")) if not h.endswith("NMW")]
    rows = [[cell for i, cell in enumerate(r) if i in keep]
            for r in csv.reader(io.StringIO("\n".join([header, *lines])))]  # fmt: skip
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    load = load_geography(_write(tmp_path, "oa.csv", out.getvalue()), FIXTURES / RGN_FILE)
    expected = [{**row, **{c: None for c in WELSH_NAME_COLUMNS.values()}}
                for row in _without_pcon(EXPECTED)]  # fmt: skip
    for row in expected:
        if row["country_code"] == "W92000004":
            row["region_name_cy"] = row["country_name_cy"] = "Cymru"
    assert load.table.to_pylist() == expected


def test_welsh_region_and_country_names_from_the_files(tmp_path: Path) -> None:
    """RGNyyNMW/CTRYyyNMW columns name regions and countries in Welsh when a file has them."""
    lines = _fixture_text(OA_FILE).rstrip("\n").split("\n")
    out = [lines[0] + ",CTRY22CD,CTRY22NM,CTRY22NMW"]
    welsh = {"E": "E92000001,England,Lloegr", "W": "W92000004,Wales,Cymru (o'r ffeil)",
             "S": "S92000003,Scotland,Yr Alban"}  # fmt: skip
    out += [f"{line},{welsh[line[0]]}" for line in lines[1:]]
    region = "LAD22CD,RGN22CD,RGN22NM,RGN22NMW\nE06000001,E12000001,North East,Gogledd Ddwyrain\n"
    region += "E06000023,E12000009,,\nE09000033,E12000007,London,Llundain\n"
    load = load_geography(_write(tmp_path, "oa.csv", "\n".join(out) + "\n"),
                          _write(tmp_path, "rgn.csv", region))  # fmt: skip
    names = {r["oa_code"]: (r["region_name_cy"], r["country_name_cy"])
             for r in load.table.to_pylist()}  # fmt: skip
    assert names == {
        "E00023851": ("Llundain", "Lloegr"),
        "E00060274": ("Gogledd Ddwyrain", "Lloegr"),
        "E00060275": ("Gogledd Ddwyrain", "Lloegr"),
        "E00073128": (None, "Lloegr"),  # an empty Welsh name is no Welsh name
        "S00088956": ("Yr Alban", "Yr Alban"),
        "W00000001": ("Cymru (o'r ffeil)", "Cymru (o'r ffeil)"),
        "W00000500": ("Cymru (o'r ffeil)", "Cymru (o'r ffeil)"),
    }


def test_a_welsh_name_that_differs_between_rows_is_a_problem(tmp_path: Path) -> None:
    header = ("OA21CD,LSOA21CD,LSOA21NM,LSOA21NMW,MSOA21CD,MSOA21NM,MSOA21NMW,LAD22CD,LAD22NM,"
              "LAD22NMW")
    error = _load_error(tmp_path, "\n".join([
        header,
        "W00000001,W01000001,Anglesey 001A,Ynys Môn 001A,W02000001,Anglesey 001,Ynys Môn 001,"
        "W06000001,Isle of Anglesey,Ynys Môn",
        "W00000002,W01000001,Anglesey 001A,Ynys Mon 001A,W02000001,Anglesey 001,Ynys Môn 001,"
        "W06000001,Isle of Anglesey,Ynys Môn",
    ]) + "\n")
    assert error.value.problems == (
        "oa.csv line 3: LSOA W01000001 has Welsh name 'Ynys Mon 001A' here but "
        "'Ynys Môn 001A' at oa.csv line 2",
    )
    two = header.replace(",LAD22NMW", ",LAD22NMW,LAD21NMW")
    error = _load_error(tmp_path, two + "\n")
    assert "several LA Welsh name columns (LAD22NMW, LAD21NMW); keep one" in _problems(error)


def test_mixed_year_suffixes_and_oa_vintage_warning(tmp_path: Path) -> None:
    # OA21 beside LAD22, RGN22 and PCON25 is normal; an OA11 constituency file is suspicious.
    pcon = _set_header(_fixture_text(PCON_FILE), "OA11CD,PCON24CD,PCON24NM,PCON24NMW,FID")
    load = _load_texts(tmp_path, {OA_FILE: _fixture_text(OA_FILE),
                                  RGN_FILE: _fixture_text(RGN_FILE), PCON_FILE: pcon})  # fmt: skip
    assert load.table.to_pylist() == EXPECTED
    assert f"{PCON_FILE} uses OA11 codes but {OA_FILE} uses OA21 codes" in load.warnings[-1]


def test_region_lookup_keyed_by_oa_with_pseudo_codes_for_wales(tmp_path: Path) -> None:
    region = (
        "OA21CD,RGN21CD,RGN21NM\n"
        "E00023851,E12000007,London\n"
        "E00060274,E12000001,North East\n"
        "E00060275,E12000001,North East\n"
        "E00073128,E12000009,South West\n"
        "W00000001,W99999999,(pseudo) Wales\n"
        "W00000500,,\n"
        "E00999999,E12000002,North West\n"
    )
    load = load_geography(FIXTURES / OA_FILE, _write(tmp_path, "rgn.csv", region))
    assert load.table.to_pylist() == _without_pcon(EXPECTED)
    assert load.warnings == (f"rgn.csv: 1 row(s) for OAs not in {OA_FILE} were ignored",)


def test_region_columns_in_the_oa_lookup_need_no_region_file(tmp_path: Path) -> None:
    regions = {"E": "E12000007,London", "W": ",", "S": "S92000003,Scotland"}
    hartlepool_or_bristol = {"E06000001": "E12000001,North East", "E06000023": "E12000009,"}
    lines = _fixture_text(OA_FILE).rstrip("\n").split("\n")
    out = [lines[0] + ",RGN22CD,RGN22NM,CTRY22CD,CTRY22NM"]
    for line in lines[1:]:
        la = next(csv.reader([line]))[7]
        region = hartlepool_or_bristol.get(la, regions[la[0]])
        country = {"E": "E92000001,England", "W": "W92000004,Wales", "S": "S92000003,"}[la[0]]
        out.append(f"{line},{region},{country}")
    load = load_geography(_write(tmp_path, "oa.csv", "\n".join(out) + "\n"))
    assert load.table.to_pylist() == _without_pcon(EXPECTED)  # names fall back to REGIONS
    assert load.warnings == ()


def test_identical_repeated_rows_are_tolerated_with_a_warning(tmp_path: Path) -> None:
    text = _fixture_text(OA_FILE)
    repeated = text + text.split("\n")[3] + "\n"
    load = load_geography(_write(tmp_path, "oa.csv", repeated), FIXTURES / RGN_FILE)
    assert load.table.to_pylist() == _without_pcon(EXPECTED)
    assert "oa.csv: 1 repeated row(s)" in load.warnings[0]
    assert "line 9" in load.warnings[0]


# --- malformed input: one error naming file, line and code for every problem ----------------

OA_HEADER = "OA21CD,LSOA21CD,LSOA21NM,MSOA21CD,MSOA21NM,LAD22CD,LAD22NM"


def _oa_rows(*rows: str) -> str:
    return OA_HEADER + "\n" + "\n".join(rows) + "\n"


def _load_error(tmp_path: Path, oa: str, region: str | None = None,
                pcon: str | None = None) -> pytest.ExceptionInfo[InputDataError]:  # fmt: skip
    paths = [_write(tmp_path, "oa.csv", oa)]
    paths.append(_write(tmp_path, "rgn.csv", region) if region is not None else FIXTURES / RGN_FILE)
    if pcon is not None:
        paths.append(_write(tmp_path, "pcon.csv", pcon))
    with pytest.raises(InputDataError) as error:
        load_geography(*paths)
    return error


HP = "E01011954,Hartlepool 001A,E02002483,Hartlepool 001,E06000001,Hartlepool"


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "")
    assert error.value.problems == (
        "oa.csv line 1: the file is empty (expected an OA lookup with a header line)",
    )
    error = _load_error(tmp_path, "\r\n\r\n")
    assert "oa.csv line 1: the file is empty" in _problems(error)
    error = _load_error(tmp_path, OA_HEADER + "\n\n")
    assert "oa.csv line 1: the file has a header but no data rows" in _problems(error)


def test_missing_columns_are_named_with_what_was_found(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        "OA21CD,LSOA21CD,MSOA21CD,MSOA21NM,LAD22CD,ObjectId\n"
        "E00060274,E01011954,E02002483,Hartlepool 001,E06000001,1\n",
        region="LAD22CD,LAD22NM\nE06000001,Hartlepool\n",
        pcon="OA21CD,PCON25NM\nE00060274,Hartlepool\n",
    )
    problems = error.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("oa.csv line 1: missing required column(s) for an OA lookup")
    assert "LSOA name (LSOAyyNM)" in problems[0] and "LA name (LADyyNM)" in problems[0]
    assert "found OA21CD, LSOA21CD, MSOA21CD, MSOA21NM, LAD22CD, OBJECTID" in problems[0]
    assert problems[1].startswith("rgn.csv line 1: missing required column(s) for a region")
    assert "region code (RGNyyCD)" in problems[1]
    assert problems[2].startswith("pcon.csv line 1: missing required column(s)")
    assert "constituency code (PCONyyCD)" in problems[2]
    assert "3 problems" in str(error.value)


def test_codes_of_the_wrong_level_are_named(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _oa_rows(
            f"E00060274,{HP}",
            f"E01011954,{HP}",  # an LSOA code in the OA column
            "E00060276,E01011954,Hartlepool 001A,E02002483,Hartlepool 001,E12000001,Hartlepool",
            "E00060277,W01000001,Hartlepool 001A,E02002483,Hartlepool 001,E06000001,Hartlepool",
            "E0006027,E01011954,x,E02002483,y,E06000001,Hartlepool",
        ),
    )
    problems = _problems(error)
    assert (
        "oa.csv line 3: OA21CD value 'E01011954' is not an OA code (e.g. E00000001) "
        "(it looks like an LSOA code)"
    ) in problems
    assert "oa.csv line 4: LAD22CD value 'E12000001' is not an LA code" in problems
    assert "oa.csv line 5: OA E00060277 is in England but LSOA W01000001 is in Wales" in problems
    assert "oa.csv line 6: OA21CD value 'E0006027' is not an OA code" in problems
    assert error.value.problems[0].startswith("oa.csv line 3")


def test_duplicate_oa_with_different_parents(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _oa_rows(
            f"E00060274,{HP}",
            "E00060274,E01011955,Hartlepool 001B,E02002483,Hartlepool 001,E06000001,Hartlepool",
        ),
    )
    assert error.value.problems == (
        "oa.csv line 3: OA E00060274 is repeated with different parents: LSOA E01011955, "
        "MSOA E02002483, LA E06000001 here but LSOA E01011954, MSOA E02002483, LA E06000001 "
        "at oa.csv line 2",
    )


def test_child_with_two_parents_names_both(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _oa_rows(
            f"E00060274,{HP}",
            "E00060275,E01011954,Hartlepool 001A,E02002484,Hartlepool 002,E06000001,Hartlepool",
            "E00073128,E01014485,Bristol 001A,E02002483,Hartlepool 001,E06000023,Bristol",
            "E00060276,E01011956,Hartlepool 001C,E02002483,Hartlepool 001,E06000001,Hartlepool",
        ),
    )
    assert error.value.problems == (
        "oa.csv line 3: LSOA E01011954 is in MSOA E02002484 here but in MSOA E02002483 "
        "at oa.csv line 2",
        "oa.csv line 4: MSOA E02002483 is in LA E06000023 here but in LA E06000001 "
        "at oa.csv line 2",
    )


def test_la_in_two_regions_names_both(tmp_path: Path) -> None:
    region = "LAD22CD,RGN22CD\nE06000001,E12000001\nE06000001,E12000002\n"
    error = _load_error(tmp_path, _oa_rows(f"E00060274,{HP}"), region=region)
    assert error.value.problems == (
        "rgn.csv line 3: LA E06000001 is in region E12000002 here but in region E12000001 "
        "at rgn.csv line 2",
    )


def test_english_la_without_region(tmp_path: Path) -> None:
    oa = _oa_rows(
        f"E00060274,{HP}",
        'E00073128,E01014485,Bristol 001A,E02003012,Bristol 001,E06000023,"Bristol, City of"',
    )
    error = _load_error(tmp_path, oa, region="LAD22CD,RGN22CD\nE06000001,\n")
    assert error.value.problems == (
        "rgn.csv line 2: English LA E06000001 has no region",
        "oa.csv line 3: English LA E06000023 has no region: it is not in rgn.csv",
    )
    with pytest.raises(InputDataError) as no_file:
        load_geography(_write(tmp_path, "oa.csv", oa))
    assert "oa.csv line 2: English LA E06000001 has no region (no region lookup was given)" in (
        _problems(no_file)
    )


def test_region_in_another_country(tmp_path: Path) -> None:
    oa = _oa_rows(
        "W00000001,W01000001,Isle of Anglesey 001A,W02000001,Anglesey 001,W06000001,Anglesey",
        f"E00060274,{HP}",
    )
    region = "LAD22CD,RGN22CD\nW06000001,E12000002\nE06000001,S92000003\n"
    error = _load_error(tmp_path, oa, region=region)
    assert error.value.problems == (
        "rgn.csv line 3: LA E06000001 is in England but its region S92000003 is in Scotland",
        "rgn.csv line 2: LA W06000001 is in Wales but its region E12000002 is in England",
    )


def test_unknown_region_code(tmp_path: Path) -> None:
    region = "LAD22CD,RGN22CD\nE06000001,E12000010\n"
    error = _load_error(tmp_path, _oa_rows(f"E00060274,{HP}"), region=region)
    assert error.value.problems == (
        "rgn.csv line 2: region E12000010 is not one of the nine English regions",
    )


def test_constituency_coverage_both_ways(tmp_path: Path) -> None:
    oa = _oa_rows(f"E00060274,{HP}", f"E00060275,{HP}")
    pcon = (
        "OA21CD,PCON25CD,PCON25NM\n"
        "E00060274,E14001286,Hartlepool\n"
        "E00060299,E14001286,Hartlepool\n"
        "E00060274,E14001287,Elsewhere\n"
        "E00060274,W07000081,Ynys Môn\n"
    )
    error = _load_error(tmp_path, oa, pcon=pcon)
    assert error.value.problems == (
        "pcon.csv line 3: OA E00060299 is not in the OA lookup oa.csv",
        "pcon.csv line 4: OA E00060274 is in constituency E14001287 here but in constituency "
        "E14001286 at pcon.csv line 2",
        "pcon.csv line 5: OA E00060274 is in England but constituency W07000081 is in Wales",
        "oa.csv line 3: OA E00060275 has no constituency in pcon.csv",
    )


def test_inconsistent_names_and_unquoted_commas(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _oa_rows(
            f"E00060274,{HP}",
            "E00060275,E01011954,Hartlepool 001A,E02002483,Hartlepool 001,E06000001,Hartlepool,",
            "E00060276,E01011954,Hartlepool 1A,E02002483,Hartlepool 001,E06000001,Hartlepool",
            "E00073128,E01014485,Bristol 001A,E02003012,Bristol 001,E06000023,Bristol, City of",
            "E00073129,E01014485,Bristol 001A,E02003012,,E06000023,Bristol",
        ),
    )
    assert error.value.problems == (
        "oa.csv line 4: LSOA E01011954 is named 'Hartlepool 1A' here but 'Hartlepool 001A' "
        "at oa.csv line 2",
        "oa.csv line 5: 8 fields but the header has 7 (an unquoted comma in a name?)",
        "oa.csv line 6: empty MSOA21NM for MSOA E02003012",
    )


def test_all_problems_are_collected_but_the_list_is_bounded(tmp_path: Path) -> None:
    rows = [f"X{i:08d},{HP}" for i in range(250)]
    error = _load_error(tmp_path, _oa_rows(*rows))
    problems = error.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].startswith("oa.csv line 2: OA21CD value 'X00000000' is not an OA code")
    assert problems[MAX_PROBLEMS - 1].startswith("oa.csv line 101: OA21CD value 'X00000099'")
    assert problems[-1] == f"… and {250 - MAX_PROBLEMS} more problems"
    assert str(error.value).startswith("250 problems in geography lookup oa.csv")


def test_problems_from_several_files_come_in_one_error(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _oa_rows(f"E00060274,{HP}", f"E0006027X,{HP}"),
        region="LAD22CD,RGN22CD\nE06000001,E12000001\nE6000001,E12000001\n",
        pcon="OA21CD,PCON25CD,PCON25NM\nE00060274,E1400128,Hartlepool\n",
    )
    problems = _problems(error)
    assert "oa.csv line 3: OA21CD value 'E0006027X'" in problems
    assert "rgn.csv line 3: LAD22CD value 'E6000001'" in problems
    assert "pcon.csv line 2: PCON25CD value 'E1400128'" in problems


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    # CRLF, a BOM, a blank line and a quoted name spanning two lines: line 6 is still line 6.
    text = (
        f"{OA_HEADER}\n\n"
        'E00060274,E01011954,"Hartlepool\n001A",E02002483,Hartlepool 001,E06000001,Hartlepool\n'
        f"E00060275,{HP}\n"
        f"E0006027,{HP}\n"
    )
    path = _write(tmp_path, "oa.csv", text, newline="\r\n", bom=True)
    with pytest.raises(InputDataError) as error:
        load_geography(path, FIXTURES / RGN_FILE)
    assert error.value.problems == (
        "oa.csv line 5: LSOA E01011954 is named 'Hartlepool 001A' here but "
        "'Hartlepool\\r\\n001A' at oa.csv line 3",
        "oa.csv line 6: OA21CD value 'E0006027' is not an OA code (e.g. E00000001)",
    )


def test_competing_columns_and_country_columns_are_checked(tmp_path: Path) -> None:
    error = _load_error(tmp_path, OA_HEADER + ",LAD23CD\n" + f"E00060274,{HP},E06000001\n")
    assert error.value.problems == (
        "oa.csv line 1: several LA code columns (LAD22CD, LAD23CD); keep one",
    )
    oa = OA_HEADER + ",CTRY22CD\n" + f"E00060274,{HP},W92000004\n"
    error = _load_error(tmp_path, oa)
    assert error.value.problems == (
        "oa.csv line 2: LA E06000001 is in England but its country is W92000004 (Wales)",
    )


# --- order does not matter -------------------------------------------------------------------

OA_LINES = _fixture_text(OA_FILE).rstrip("\n").split("\n")
PCON_LINES = _fixture_text(PCON_FILE).rstrip("\n").split("\n")


@settings(max_examples=40, deadline=None)
@given(
    oa_order=st.permutations(range(len(OA_LINES) - 1)),
    pcon_order=st.permutations(range(len(PCON_LINES) - 1)),
)
def test_row_order_does_not_change_the_table(
    tmp_path_factory: pytest.TempPathFactory, oa_order: list[int], pcon_order: list[int]
) -> None:
    directory = tmp_path_factory.mktemp("shuffled")
    oa = [OA_LINES[0]] + [OA_LINES[1 + i] for i in oa_order]
    pcon = [PCON_LINES[0]] + [PCON_LINES[1 + i] for i in pcon_order]
    load = load_geography(
        _write(directory, OA_FILE, "\n".join(oa) + "\n"),
        FIXTURES / RGN_FILE,
        _write(directory, PCON_FILE, "\n".join(pcon) + "\n"),
    )
    assert load.table.to_pylist() == EXPECTED


# --- the reference data ----------------------------------------------------------------------


def test_reference_codes_match_their_level_patterns() -> None:
    assert len(REGIONS) == 9
    assert all(LEVEL_PATTERNS["region"].match(code) for code in REGIONS)
    assert all(LEVEL_PATTERNS["country"].match(code) for code in COUNTRIES)
    assert all(LEVEL_PATTERNS["region"].match(code) for code in COUNTRIES if code[0] != "E")
    for level, code in {"oa": "S00088956", "lsoa": "W01000001", "msoa": "E02000977",
                        "la": "E08000001", "pcon": "S14000001"}.items():  # fmt: skip
        assert [name for name, p in LEVEL_PATTERNS.items() if p.match(code)] == [level]


# --- scale -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_gb_sized_lookup_loads_whole(tmp_path: Path) -> None:
    """235k OAs with constituencies load completely (speed is measured in bench/, not here)."""
    oa_lines = ["OA21CD,LSOA21CD,LSOA21NM,LSOA21NMW,MSOA21CD,MSOA21NM,MSOA21NMW,LAD22CD,"
                "LAD22NM,LAD22NMW,ObjectId"]  # fmt: skip
    pcon_lines = ["OA21CD,PCON25CD,PCON25NM,PCON25NMW,ObjectId"]
    region_lines = ["LAD22CD,LAD22NM,RGN22CD,RGN22NM,ObjectId"]
    prefix = {"E": ("E06", "E14"), "W": ("W06", "W07"), "S": ("S12", "S14")}
    n = 0
    for la_number in range(392):
        c = "E" if la_number < 300 else "W" if la_number < 322 else "S"
        la = f"{prefix[c][0]}{la_number:06d}"
        pcon = f"{prefix[c][1]}{la_number:06d}"
        if c == "E":
            region = f"E1200000{la_number % 9 + 1}"
            region_lines.append(f'{la},"Place, {la_number}",{region},,{la_number}')
        for lsoa_number in range(la_number * 100, la_number * 100 + 100):
            msoa = f"{c}02{lsoa_number // 5:06d}"
            for _ in range(6):
                n += 1
                oa_lines.append(
                    f'{c}00{n:06d},{c}01{lsoa_number:06d},"Place, {lsoa_number}",,{msoa},'
                    f'M {msoa},,{la},"Place, {la_number}",,{n}'
                )
                pcon_lines.append(f"{c}00{n:06d},{pcon},Seat {la_number},,{n}")
    files = [
        _write(tmp_path, name, "\n".join(lines) + "\n", newline="\r\n")
        for name, lines in (("oa.csv", oa_lines), ("rgn.csv", region_lines),
                            ("pcon.csv", pcon_lines))
    ]  # fmt: skip
    load = load_geography(*files)
    assert load.table.num_rows == n == 235_200
    assert load.warnings == ()
    assert load.table.column("pcon_code").null_count == 0
