"""The synthetic GB: deterministic, realistic in size and shape, and loadable as real files.

Magnitudes are checked against the published figures in DESIGN.md §3. The session dataset is
small (scale 0.01), so GB totals are *scaled estimates* (count / scale) with tolerances wide
enough for the Poisson noise of a 1% sample; the geography is checked at full scale, straight
from ``make_geography(1.0, seed)`` (a few seconds, no files).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from cube.build import required_columns
from cube.geography import find_lookups, load_geography
from cube.model import Model
from cube.synthetic import (
    OA_EW,
    OA_GB,
    OA_SCOTLAND,
    GenerateOptions,
    generate,
    make_geography,
    welsh_la_name,
)

TINY = GenerateOptions(scale=0.002, seed=11, start="2026-01", months=2)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def meta(synthetic_dir: Path) -> dict[str, Any]:
    return dict(json.loads((synthetic_dir / "metadata.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def gb() -> Any:
    return make_geography(1.0, 20261121)


# --- Determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, int]] = []
    generate(tmp_path / "a", TINY, lambda what, done, total: ticks.append((what, done, total)))
    generate(tmp_path / "b", TINY)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b
    assert len([f for f in a if f.endswith(".parquet")]) == 6 * 2  # every cube, every month
    # Progress is reported step by step up to a known total (the CLI draws it as a bar).
    assert [d for _, d, _ in ticks] == list(range(1, len(ticks) + 1))
    assert ticks[-1][1] == ticks[-1][2] == 1 + 6 * 2

    other = GenerateOptions(scale=TINY.scale, seed=TINY.seed + 1, start=TINY.start,
                            months=TINY.months)
    generate(tmp_path / "c", other)
    c = _digests(tmp_path / "c")
    assert a.keys() == c.keys()
    differing = [f for f in a if a[f] != c[f]]
    assert all(f in differing for f in a if f.startswith("microdata/"))
    assert "geography/OA21_LSOA21_MSOA21_LAD22_GB_LU.csv" in differing


def test_a_complete_dataset_is_not_regenerated(tmp_path: Path) -> None:
    generate(tmp_path / "a", TINY)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.parquet")}
    ticks: list[int] = []
    generate(tmp_path / "a", TINY, lambda what, done, total: ticks.append(done))
    assert ticks == []
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.parquet")} == before
    assert not (tmp_path / "a.tmp").exists()


def test_an_interrupted_run_leaves_nothing_behind(tmp_path: Path) -> None:
    def interrupt(what: str, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "a", TINY, interrupt)
    assert list(tmp_path.iterdir()) == []


# --- Geography at full scale -------------------------------------------------------------------


def test_full_scale_geography_counts(gb: Any) -> None:
    """Tolerances: OAs ±0.5% of the 2021 census (235,243 GB); LSOAs (Scottish data zones
    included) ±5% of 35,672 E&W + 6,976 Scotland; MSOAs (intermediate zones) ±8% of 7,264 E&W
    + 1,279 Scotland; LAs ±3% of the 350 GB authorities (2023); constituencies exactly 632
    (2024: 543 England, 32 Wales, 57 Scotland)."""
    oa = list(gb.oa_codes)
    assert abs(len(oa) - OA_GB) <= 0.005 * OA_GB
    assert abs(sum(c[0] == "S" for c in oa) - OA_SCOTLAND) <= 0.005 * OA_SCOTLAND
    assert abs(sum(c[0] != "S" for c in oa) - OA_EW) <= 0.005 * OA_EW
    ew_lsoa = sum(c[0] != "S" for c in gb.lsoa_codes)
    assert abs(ew_lsoa - 35_672) <= 0.05 * 35_672
    assert abs(len(gb.lsoa_codes) - (35_672 + 6_976)) <= 0.05 * (35_672 + 6_976)
    ew_msoa = sum(c[0] != "S" for c in gb.msoa_codes)
    assert abs(ew_msoa - 7_264) <= 0.08 * 7_264
    assert abs(len(gb.msoa_codes) - (7_264 + 1_279)) <= 0.08 * (7_264 + 1_279)
    assert abs(len(gb.la_codes) - 350) <= 0.03 * 350
    prefixes = [c[:3] for c in gb.pcon_codes]
    assert (prefixes.count("E14"), prefixes.count("W07"), prefixes.count("S14")) == (543, 32, 57)


def test_full_scale_geography_codes(gb: Any) -> None:
    patterns = {
        "oa": (list(gb.oa_codes), r"[EWS]00\d{6}"),
        "lsoa": (gb.lsoa_codes, r"[EWS]01\d{6}"),
        "msoa": (gb.msoa_codes, r"[EWS]02\d{6}"),
        "la": (gb.la_codes, r"(E06|E07|E08|E09|W06|S12)\d{6}"),
        "pcon": (gb.pcon_codes, r"(E14|W07|S14)\d{6}"),
    }
    for level, (codes, pattern) in patterns.items():
        rx = re.compile(pattern)
        assert all(rx.fullmatch(c) for c in codes), level
        assert len(set(codes)) == len(codes), f"duplicate {level} codes"
    # London boroughs are E09, and only London's.
    london = {c for c, r in zip(gb.la_codes, gb.la_region.tolist(), strict=True) if r == 6}
    assert london == {c for c in gb.la_codes if c.startswith("E09")}
    assert len(london) == 33


def test_full_scale_geography_nests(gb: Any) -> None:
    """Every OA is in exactly one LSOA, MSOA, LA and region, and those nest: an LSOA's OAs
    share one MSOA, an MSOA's one LA, a constituency lies in one region, all in one country."""
    def parents(child: np.ndarray, parent: np.ndarray) -> np.ndarray:
        pairs = np.unique(np.stack([child, parent], axis=1), axis=0)
        return np.bincount(pairs[:, 0])

    n = len(gb.oa_codes)
    for arr in (gb.oa_lsoa, gb.oa_msoa, gb.oa_la, gb.oa_pcon):
        assert arr.shape == (n,) and arr.min() >= 0
    assert set(np.unique(gb.oa_lsoa)) == set(range(len(gb.lsoa_codes)))
    assert (parents(gb.oa_lsoa, gb.oa_msoa) == 1).all()
    assert (parents(gb.oa_msoa, gb.oa_la) == 1).all()
    assert (parents(gb.oa_lsoa, gb.oa_pcon) == 1).all()
    region_of_oa = gb.la_region[gb.oa_la]
    assert (parents(gb.oa_pcon, region_of_oa) == 1).all()
    letters = np.array([c[0] for c in gb.oa_codes])
    for idx, codes in ((gb.oa_lsoa, gb.lsoa_codes), (gb.oa_msoa, gb.msoa_codes),
                       (gb.oa_la, gb.la_codes), (gb.oa_pcon, gb.pcon_codes)):
        assert (np.array([c[0] for c in codes])[idx] == letters).all()


# --- Loading the generated files as real files --------------------------------------------------


def test_generated_lookups_load_without_warnings(synthetic_dir: Path,
                                                 meta: dict[str, Any]) -> None:
    lookups = find_lookups(synthetic_dir / "geography")
    assert set(lookups) == {"oa_lookup", "region_lookup", "constituency_lookup"}
    load = load_geography(lookups["oa_lookup"], lookups["region_lookup"],
                          lookups["constituency_lookup"])
    assert load.warnings == ()
    t = load.table
    assert t.num_rows == meta["geography"]["oa"]
    con = duckdb.connect()
    con.register("geo", t)
    row = con.execute(
        "SELECT count(DISTINCT lsoa_code), count(DISTINCT msoa_code), count(DISTINCT la_code), "
        "count(DISTINCT pcon_code), count(*) FILTER (WHERE pcon_code IS NULL) FROM geo"
    ).fetchone()
    g = meta["geography"]
    assert row == (g["lsoa"], g["msoa"], g["la"], g["pcon"], 0)
    regions = dict(con.execute("SELECT DISTINCT region_code, region_name FROM geo").fetchall())
    assert regions["E12000007"] == "London"
    assert regions["W92000004"] == "Wales" and regions["S92000003"] == "Scotland"
    assert len(regions) == 11


def test_welsh_areas_have_welsh_names_unlike_their_english_ones(synthetic_dir: Path) -> None:
    """As in ONS's files, only Welsh areas carry NMW names; here each differs from the English
    name (so a test of Welsh labels can tell them apart), deterministically, and the LSOA and
    MSOA names follow their LA's Welsh name as ONS's do."""
    lookups = find_lookups(synthetic_dir / "geography")
    rows = load_geography(lookups["oa_lookup"], lookups["region_lookup"]).table.to_pylist()
    welsh = [r for r in rows if r["country_code"] == "W92000004"]
    others = [r for r in rows if r["country_code"] != "W92000004"]
    assert welsh and others
    levels = ("lsoa", "msoa", "la")
    for r in welsh:
        for level in levels:
            english, cy = r[f"{level}_name"], r[f"{level}_name_cy"]
            assert cy and cy != english, (level, english)
        assert r["lsoa_name_cy"].startswith(r["la_name_cy"] + " ")
        assert r["lsoa_name_cy"].removeprefix(r["la_name_cy"]) == \
            r["lsoa_name"].removeprefix(r["la_name"])
        assert r["la_name_cy"] == welsh_la_name(r["la_name"])
        assert r["country_name_cy"] == r["region_name_cy"] == "Cymru"
    assert all(r[f"{level}_name_cy"] is None for r in others
               for level in (*levels, "region", "country"))
    las = {r["la_code"]: r["la_name_cy"] for r in welsh}
    assert len(set(las.values())) == len(las)  # as distinct as the English names
    assert welsh_la_name("Penfro") == "Sir Benfro" and welsh_la_name("Aber Moor") == \
        "Sir Aber y Waun"


def test_microdata_has_every_column_the_build_needs(synthetic_dir: Path, model: Model) -> None:
    for cube in model.cubes.values():
        for path in sorted((synthetic_dir / "microdata" / cube.name).glob("*.parquet")):
            names = set(pq.read_schema(path).names)
            assert set(required_columns(cube)) <= names, (cube.name, path.name)


# --- Magnitudes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cube", "gb_total", "tolerance"), [
    ("housing_benefit", 2_300_000, 0.05),   # HB caseload 2024
    ("universal_credit", 7_200_000, 0.05),  # UC people, October 2024
    ("pip", 3_600_000, 0.05),               # PIP claims in payment
    ("benefit_cap", 114_000, 0.10),         # households capped (1,140 at scale 0.01)
])
def test_stock_totals_scale_to_gb(meta: dict[str, Any], cube: str, gb_total: int,
                                  tolerance: float) -> None:
    scale = meta["options"]["scale"]
    first = meta["cubes"][cube]["by_month"][meta["months"][0]]
    assert abs(first / scale - gb_total) <= tolerance * gb_total


def test_flow_totals_scale_to_gb(meta: dict[str, Any]) -> None:
    scale, months = meta["options"]["scale"], len(meta["months"])
    per_year = {c: meta["cubes"][c]["records"] / scale * 12 / months
                for c in ("nino_registrations", "sanctions")}
    assert 600_000 * 0.95 <= per_year["nino_registrations"] <= 760_000 * 1.05
    # Recent sanction decisions run well below the 2013 JSA peak of 860k a year.
    assert 200_000 <= per_year["sanctions"] <= 860_000


def test_category_shares(meta: dict[str, Any]) -> None:
    """Shares in the first month, ±3 percentage points of the published ones."""
    uc = meta["cubes"]["universal_credit"]["shares"]
    assert abs(uc["conditionality"]["no_work_req"] - 0.40) <= 0.03
    pip = meta["cubes"]["pip"]["shares"]["daily_living"]
    total = 2.0 + 1.7 + 0.16
    for code, millions in (("enhanced", 2.0), ("standard", 1.7), ("nil", 0.16)):
        assert abs(pip[code] - millions / total) <= 0.03, code
    for shares in (uc["conditionality"], pip, meta["cubes"]["housing_benefit"]["shares"]["tenure"]):
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_amounts_are_pence_at_published_means(synthetic_dir: Path, meta: dict[str, Any]) -> None:
    month = meta["months"][0]
    con = duckdb.connect()
    hb = str(synthetic_dir / "microdata" / "housing_benefit" / f"{month}.parquet")
    assert con.execute(f"SELECT typeof(weekly_award), min(weekly_award) > 0 FROM '{hb}' "
                       "GROUP BY ALL").fetchall() == [("BIGINT", True)]
    means = dict(con.execute(
        f"SELECT CASE WHEN tenure LIKE 'social%' THEN 'social' ELSE tenure END, "
        f"avg(weekly_award) / 100 FROM '{hb}' GROUP BY 1").fetchall())
    assert 90 <= meta["cubes"]["housing_benefit"]["mean_amount_pounds"]["weekly_award"] <= 110
    assert 85 <= means["social"] <= 95
    assert 110 <= means["private"] <= 118
    cap = meta["cubes"]["benefit_cap"]["mean_amount_pounds"]["weekly_reduction"]
    assert abs(cap - 57) <= 5


def test_counts_per_oa_are_over_dispersed(synthetic_dir: Path, meta: dict[str, Any]) -> None:
    """Negative binomial, not Poisson: variance well above the mean, many small cells."""
    con = duckdb.connect()
    lookup = synthetic_dir / "geography" / "OA21_LSOA21_MSOA21_LAD22_GB_LU.csv"
    uc = synthetic_dir / "microdata" / "universal_credit" / f"{meta['months'][0]}.parquet"
    mean, var, small = con.execute(
        f"SELECT avg(n), var_pop(n), avg((n < 10)::INT) FROM (SELECT l.OA21CD, "
        f"count(u.oa_code) AS n FROM read_csv('{lookup}') l LEFT JOIN '{uc}' u "
        "ON u.oa_code = l.OA21CD GROUP BY 1)").fetchone()  # type: ignore[misc]
    assert var / mean > 3
    assert small > 0.02


def test_stock_units_persist_across_months(synthetic_dir: Path, meta: dict[str, Any]) -> None:
    """A claimant keeps their unit id (so their record key) and area from month to month."""
    m1, m2 = meta["months"][:2]
    d = synthetic_dir / "microdata" / "housing_benefit"
    con = duckdb.connect()
    stayed, same_oa, n1 = con.execute(
        f"SELECT count(b.unit_id), count(*) FILTER (WHERE a.oa_code = b.oa_code), count(*) "
        f"FROM '{d / f'{m1}.parquet'}' a LEFT JOIN '{d / f'{m2}.parquet'}' b USING (unit_id)"
    ).fetchone()  # type: ignore[misc]
    assert 0.95 <= stayed / n1 < 1.0  # about 2% leave each month
    assert same_oa == stayed
    dups = con.execute(f"SELECT count(*) - count(DISTINCT unit_id) FROM '{d / f'{m2}.parquet'}'"
                       ).fetchone()
    assert dups == (0,)
