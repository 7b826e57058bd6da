"""Synthetic Great Britain: geography lookups and claimant microdata at realistic magnitudes.

No real DWP microdata can be had, so statcube makes its own in the formats the real sources
use: geography lookups in ONS's CSV column layout (real region and country codes; synthetic,
well-formed OA/LSOA/MSOA/LA/constituency codes in realistic counts and nesting), a Jobcentre
Plus office list, and one Parquet file of claimant records per cube and month.

Realism that matters for disclosure control and for benchmarks:
- national totals and category shares from published DWP figures (see ``CUBES`` below);
- counts per OA over-dispersed (gamma-mixed Poisson, i.e. negative binomial), with local
  authority effects, so many small cells exist — the cells SDC has to protect;
- stocks (caseloads) persist: a unit keeps its id, area and most attributes from month to
  month, with monthly exits and entries, so record keys are stable across months.

Everything is deterministic for a seed (numpy SeedSequence streams per purpose), and months
are simulated in order from ``start``: a run of more months writes the same files for the
months they share, so a history generated once and a release three months later read the same
inputs for the old months, as real monthly extracts would (the national benchmark relies on
it; tests/test_bench_national.py checks it). Memory is
bounded by the largest monthly stock (about 7.2M UC records at scale 1.0); files are written
one cube-month at a time. Output is written to a temporary directory renamed into place.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cube.errors import ArgumentError

# --- Real geography facts -----------------------------------------------------------------

#: (region code, name, country code, population in millions (2021), LAs (2023),
#: constituencies (2024))
REGIONS: tuple[tuple[str, str, str, float, int, int], ...] = (
    ("E12000001", "North East", "E92000001", 2.65, 12, 27),
    ("E12000002", "North West", "E92000001", 7.42, 35, 73),
    ("E12000003", "Yorkshire and The Humber", "E92000001", 5.48, 15, 54),
    ("E12000004", "East Midlands", "E92000001", 4.88, 35, 47),
    ("E12000005", "West Midlands", "E92000001", 5.95, 30, 57),
    ("E12000006", "East of England", "E92000001", 6.33, 45, 61),
    ("E12000007", "London", "E92000001", 8.80, 33, 75),
    ("E12000008", "South East", "E92000001", 9.28, 64, 91),
    ("E12000009", "South West", "E92000001", 5.70, 27, 58),
    ("W92000004", "Wales", "W92000004", 3.11, 22, 32),
    ("S92000003", "Scotland", "S92000003", 5.44, 32, 57),
)
COUNTRIES = {"E92000001": "England", "W92000004": "Wales", "S92000003": "Scotland"}
#: 2021 census output areas: England and Wales together, and Scotland.
OA_EW = 188_880
OA_SCOTLAND = 46_363
OA_GB = OA_EW + OA_SCOTLAND

_SYLLABLES = {
    "E": (
        ("Ash", "Brad", "Carl", "Dun", "East", "Fair", "Glen", "Hart", "King", "Lang", "Marl",
         "Nor", "Oak", "Pen", "Ravens", "Shel", "Thorn", "Up", "Wal", "West", "Whit", "Wolver",
         "Brom", "Chel", "Dar", "Elm", "Fern", "Gos", "Hol", "Ket", "Lut", "Mel", "Ox", "Pres",
         "Rother", "Stan", "Tun", "Wey", "York", "Bas", "Cran", "Ever", "Harle", "Sand"),
        ("ford", "ham", "ton", "field", "wick", "bury", "ley", "wood", "mouth", "bridge", "by",
         "stead", "worth", "minster", "borough", "chester", "well", "combe", "dale", "port"),
    ),
    "W": (
        ("Aber", "Llan", "Pont", "Caer", "Tre", "Bryn", "Cwm", "Pen", "Mer", "Rhos", "Ystrad",
         "Glyn", "Maes", "Nant", "Porth"),
        ("dare", "ystwyth", "gwyn", "fach", "fawr", "elli", "ddu", "wen", "goch", "dyfi",
         "tawe", "cynon", "rhondda"),
    ),
    "S": (
        ("Kil", "Inver", "Dun", "Glen", "Strath", "Auch", "Bal", "Kirk", "Loch", "Ard", "Craig",
         "Fal", "Mont", "Tay"),
        ("marnock", "ness", "dee", "more", "clyde", "tyre", "lin", "side", "burgh", "keld",
         "rose", "lie", "ord", "haven"),
    ),
}
#: OAs per LSOA, drawn uniformly from these: E&W LSOAs hold about 5.3 OAs (188,880 / 35,672),
#: Scottish data zones about 6.6 (46,363 / 6,976).
_LSOA_SIZES_EW = (4,) * 5 + (5,) * 6 + (6,) * 6 + (7,) * 3
_LSOA_SIZES_S = (5,) * 3 + (6,) * 6 + (7,) * 6 + (8,) * 5
_PCON_SUFFIXES = ("North", "South", "East", "West", "Central", "and District", "Rural", "Valley")


# --- Cube definitions: magnitudes and shares -------------------------------------------------

@dataclass(frozen=True)
class Category:
    column: str
    codes: tuple[str, ...]
    shares: tuple[float, ...]


@dataclass(frozen=True)
class CubeSpec:
    """How to simulate one cube. ``total`` is the GB figure at scale 1.0 in the first month."""

    name: str
    kind: str  # "stock" | "flow"
    total: float
    monthly_trend: float  # multiplicative change per month
    exit_rate: float  # monthly probability a unit leaves (stocks)
    la_beta: float  # sensitivity to area deprivation
    categories: tuple[Category, ...]
    source: str
    london_factor: float = 1.0


AGE = ("16to24", "25to34", "35to44", "45to54", "55to64", "65plus")

CUBES: tuple[CubeSpec, ...] = (
    CubeSpec(
        "housing_benefit", "stock", 2_300_000, 0.990, 0.020, 1.0,
        (
            Category("tenure", ("social_la", "social_ha", "private", "other"),
                     (0.27, 0.45, 0.26, 0.02)),
            Category("age_band", AGE, (0.03, 0.09, 0.12, 0.16, 0.20, 0.40)),
            Category("family_type", ("single_nochild", "single_child", "couple_nochild",
                                     "couple_child"), (0.62, 0.18, 0.13, 0.07)),
            Category("passported", ("passported", "not_passported"), (0.55, 0.45)),
        ),
        "DWP Housing Benefit caseload 2024: 2.3M claimants (peak 5.07M, May 2013); mean "
        "weekly award about £100 (social about £90, private about £115).",
    ),
    CubeSpec(
        "universal_credit", "stock", 7_200_000, 1.008, 0.030, 0.8,
        (
            Category("conditionality", ("searching", "working_req", "no_work_req", "planning",
                                        "preparing", "working_no_req"),
                     (0.24, 0.11, 0.40, 0.015, 0.06, 0.175)),
            Category("age_band", AGE, (0.14, 0.28, 0.25, 0.18, 0.14, 0.01)),
            Category("gender", ("F", "M"), (0.56, 0.44)),
        ),
        "DWP: 7.2M people on Universal Credit (October 2024), about 40% with no work "
        "requirements.",
    ),
    CubeSpec(
        "pip", "stock", 3_600_000, 1.006, 0.012, 0.7,
        (
            Category("daily_living", ("enhanced", "standard", "nil"), (0.52, 0.44, 0.04)),
            Category("mobility", ("enhanced", "standard", "nil"), (0.38, 0.25, 0.37)),
            Category("condition", ("psychiatric", "musculoskeletal_general", "neurological",
                                   "musculoskeletal_regional", "respiratory", "other"),
                     (0.38, 0.19, 0.13, 0.11, 0.04, 0.15)),
            Category("age_band", AGE, (0.10, 0.13, 0.15, 0.20, 0.27, 0.15)),
            Category("gender", ("F", "M"), (0.55, 0.45)),
        ),
        "DWP: about 3.6M PIP claims in payment; daily living enhanced 2.0M, standard 1.7M, "
        "nil 0.16M.",
    ),
    CubeSpec(
        "sanctions", "flow", 30_000, 1.0, 1.0, 1.2,
        (
            Category("benefit", ("JSA", "ESA"), (0.7, 0.3)),
            Category("outcome", ("adverse", "non_adverse", "reserved", "cancelled"),
                     (0.55, 0.25, 0.08, 0.12)),
            Category("reason", ("fail_attend", "not_seeking", "refused_job", "left_job",
                                "fail_activity", "other"),
                     (0.55, 0.15, 0.05, 0.05, 0.12, 0.08)),
        ),
        "JSA/ESA sanction decisions: about 30k a month in recent years (JSA peaked at 860k "
        "a year in 2013).",
    ),
    CubeSpec(
        "benefit_cap", "stock", 114_000, 1.005, 0.080, 1.1,
        (
            Category("family_type", ("single_nochild", "single_child", "couple_nochild",
                                     "couple_child"), (0.05, 0.68, 0.02, 0.25)),
            Category("children", ("0", "1", "2", "3", "4", "5plus"),
                     (0.07, 0.12, 0.22, 0.26, 0.17, 0.16)),
        ),
        "DWP: about 114k households capped, mean reduction about £57 a week.",
        london_factor=2.5,
    ),
    CubeSpec(
        "nino_registrations", "flow", 58_000, 1.0, 1.0, 0.3,
        (
            Category("world_area", ("eu14", "eu8", "eu2", "eu_other", "europe_other", "asia",
                                    "middle_east", "africa", "americas", "oceania"),
                     (0.06, 0.04, 0.04, 0.01, 0.04, 0.45, 0.05, 0.24, 0.05, 0.02)),
            Category("age_band", AGE, (0.30, 0.45, 0.15, 0.06, 0.03, 0.01)),
            Category("gender", ("F", "M"), (0.45, 0.55)),
        ),
        "NINo registrations to adult overseas nationals: 600k-760k a year (about 58k a "
        "month).",
        london_factor=3.0,
    ),
)
CUBE_SPECS = {c.name: c for c in CUBES}

#: Weekly amounts in pounds: (mean, standard deviation) by tenure for HB, and the cap.
HB_AWARD = {"social_la": (90.0, 25.0), "social_ha": (94.0, 26.0), "private": (115.0, 40.0),
            "other": (95.0, 30.0)}
CAP_REDUCTION = (57.0, 45.0)
CAP_BANDS = ((5_000, "0to50"), (10_000, "50to100"), (15_000, "100to150"),
             (20_000, "150to200"), (10**12, "200plus"))


# --- Options and results ---------------------------------------------------------------------

@dataclass(frozen=True)
class GenerateOptions:
    scale: float = 0.01
    seed: int = 20261121
    start: str = "2025-04"  # first month, YYYY-MM
    months: int = 20  # to 2026-11: complete quarters, and room for a future release
    cubes: tuple[str, ...] = tuple(c.name for c in CUBES)

    def __post_init__(self) -> None:
        if not 0.0005 <= self.scale <= 1.0:
            raise ArgumentError("scale must be between 0.0005 and 1.0", parameter="scale",
                                value=str(self.scale))
        if not 1 <= self.months <= 240:
            raise ArgumentError("months must be between 1 and 240", parameter="months",
                                value=str(self.months))
        parse_month(self.start)
        unknown_cubes = set(self.cubes) - set(CUBE_SPECS)
        if unknown_cubes:
            raise ArgumentError(f"unknown cube(s): {', '.join(sorted(unknown_cubes))}",
                                parameter="cubes")

    def month_list(self) -> list[str]:
        y, m = parse_month(self.start)
        out = []
        for _ in range(self.months):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def parse_month(text: str) -> tuple[int, int]:
    try:
        y_s, m_s = text.split("-")
        y, m = int(y_s), int(m_s)
    except ValueError:
        raise ArgumentError("month must look like YYYY-MM", parameter="start",
                            value=text) from None
    if not (1990 <= y <= 2100 and 1 <= m <= 12 and len(y_s) == 4 and len(m_s) == 2):
        raise ArgumentError("month must look like YYYY-MM", parameter="start", value=text)
    return y, m


@dataclass
class CubeTotals:
    records: int = 0
    by_month: dict[str, int] = field(default_factory=dict)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_amount_pounds: dict[str, float] = field(default_factory=dict)


ProgressFn = Callable[[str, int, int], None]


# --- Geography ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthGeography:
    """Index arrays over OAs; the CSV lookups are written from these."""

    oa_codes: np.ndarray  # str
    oa_la: np.ndarray  # int index into la_*
    oa_lsoa: np.ndarray
    oa_msoa: np.ndarray
    oa_pcon: np.ndarray
    lsoa_codes: list[str]
    lsoa_names: list[str]
    msoa_codes: list[str]
    msoa_names: list[str]
    la_codes: list[str]
    la_names: list[str]
    la_region: np.ndarray  # int index into REGIONS
    pcon_codes: list[str]
    pcon_names: list[str]
    oa_weight: np.ndarray  # relative population/deprivation weight per OA
    la_effect: np.ndarray


def _names(rng: np.random.Generator, country: str, n: int, taken: set[str]) -> list[str]:
    pre, suf = _SYLLABLES[country[0]]
    out: list[str] = []
    while len(out) < n:
        name = str(rng.choice(pre)) + str(rng.choice(suf))
        if name in taken:
            name = f"{name} {('Upon', 'on Sea', 'Vale', 'Heath', 'Moor')[len(out) % 5]}"
        if name in taken:
            continue
        taken.add(name)
        out.append(name)
    return out


def make_geography(scale: float, seed: int) -> SynthGeography:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    pop_ew = sum(r[3] for r in REGIONS if r[2] != "S92000003")
    la_fraction = min(1.0, float(np.sqrt(scale)))
    counters: dict[str, int] = {}

    def code(prefix: str) -> str:
        counters[prefix] = counters.get(prefix, 0) + 1
        return f"{prefix}{counters[prefix]:06d}"

    taken: set[str] = set()
    oa_codes: list[str] = []
    oa_la: list[int] = []
    oa_lsoa: list[int] = []
    oa_msoa: list[int] = []
    oa_pcon: list[int] = []
    lsoa_codes: list[str] = []
    lsoa_names: list[str] = []
    msoa_codes: list[str] = []
    msoa_names: list[str] = []
    la_codes: list[str] = []
    la_names: list[str] = []
    la_region: list[int] = []
    pcon_codes: list[str] = []
    pcon_names: list[str] = []
    for ri, (_rcode, _rname, ctry, pop, n_la_real, n_pcon_real) in enumerate(REGIONS):
        letter = ctry[0]
        real_oas = OA_SCOTLAND if letter == "S" else OA_EW * pop / pop_ew
        n_la = max(1, round(n_la_real * la_fraction))
        n_oa = max(n_la * 20, round(real_oas * scale))
        n_pcon = max(1, min(round(n_pcon_real * la_fraction), n_oa // 10))
        shares = rng.dirichlet(np.full(n_la, 6.0))
        sizes = np.maximum(20, np.round(shares * n_oa).astype(int))
        names = _names(rng, letter, n_la, taken)
        region_lsoa_start = len(lsoa_codes)
        lsoa_sizes = _LSOA_SIZES_S if letter == "S" else _LSOA_SIZES_EW
        msoa_sizes = (4, 8) if letter == "S" else (4, 7)
        for li in range(n_la):
            if letter == "S":
                la_prefix = "S12"
            elif letter == "W":
                la_prefix = "W06"
            elif ri == 6:
                la_prefix = "E09"
            else:
                la_prefix = ("E06", "E07", "E08")[int(rng.integers(0, 3))]
            la_idx = len(la_codes)
            la_codes.append(code(la_prefix))
            la_names.append(names[li])
            la_region.append(ri)
            # OAs -> LSOAs (4-8 OAs) -> MSOAs (4-7 LSOAs), numbered within the LA like ONS names.
            remaining = int(sizes[li])
            lsoa_in_la: list[int] = []
            while remaining > 0:
                k = min(remaining, lsoa_sizes[int(rng.integers(0, len(lsoa_sizes)))])
                if remaining - k < 4:
                    k = remaining
                lsoa_idx = len(lsoa_codes)
                lsoa_codes.append(code(f"{letter}01"))
                lsoa_in_la.append(lsoa_idx)
                for _ in range(k):
                    oa_codes.append(code(f"{letter}00"))
                    oa_la.append(la_idx)
                    oa_lsoa.append(lsoa_idx)
                remaining -= k
            msoa_num = 0
            pos = 0
            msoa_of_lsoa: dict[int, int] = {}
            while pos < len(lsoa_in_la):
                k = int(rng.integers(*msoa_sizes))
                if len(lsoa_in_la) - pos - k < 3:
                    k = len(lsoa_in_la) - pos
                msoa_num += 1
                msoa_idx = len(msoa_codes)
                msoa_codes.append(code(f"{letter}02"))
                msoa_names.append(f"{names[li]} {msoa_num:03d}")
                for j, lsoa_idx in enumerate(lsoa_in_la[pos:pos + k]):
                    msoa_of_lsoa[lsoa_idx] = msoa_idx
                    lsoa_names.append(f"{names[li]} {msoa_num:03d}{chr(65 + j % 26)}")
                pos += k
            start = len(oa_msoa)
            oa_msoa.extend(msoa_of_lsoa[lsoa] for lsoa in oa_lsoa[start:])
        # Constituencies: contiguous runs of LSOAs within the region, of similar OA counts.
        region_lsoas = list(range(region_lsoa_start, len(lsoa_codes)))
        pcon_prefix = {"E": "E14", "W": "W07", "S": "S14"}[letter]
        bounds = np.linspace(0, len(region_lsoas), n_pcon + 1).round().astype(int)
        pcon_of_lsoa: dict[int, int] = {}
        for pi in range(n_pcon):
            pcon_idx = len(pcon_codes)
            pcon_codes.append(code(pcon_prefix))
            first = region_lsoas[bounds[pi]]
            base = la_names[oa_la[oa_lsoa.index(first)]]
            pcon_names.append(f"{base} {_PCON_SUFFIXES[pi % len(_PCON_SUFFIXES)]}")
            for lsoa_idx in region_lsoas[bounds[pi]:bounds[pi + 1]]:
                pcon_of_lsoa[lsoa_idx] = pcon_idx
        oa_pcon.extend(pcon_of_lsoa[lsoa] for lsoa in oa_lsoa[len(oa_pcon):])
    # Deprivation: an LA effect (lognormal) times an OA effect (gamma): over-dispersion.
    la_effect = rng.lognormal(0.0, 0.4, len(la_codes))
    oa_weight = rng.gamma(1.5, 1 / 1.5, len(oa_codes))
    return SynthGeography(
        oa_codes=np.array(oa_codes),
        oa_la=np.array(oa_la, dtype=np.int32),
        oa_lsoa=np.array(oa_lsoa, dtype=np.int32),
        oa_msoa=np.array(oa_msoa, dtype=np.int32),
        oa_pcon=np.array(oa_pcon, dtype=np.int32),
        lsoa_codes=lsoa_codes,
        lsoa_names=lsoa_names,
        msoa_codes=msoa_codes,
        msoa_names=msoa_names,
        la_codes=la_codes,
        la_names=la_names,
        la_region=np.array(la_region, dtype=np.int32),
        pcon_codes=pcon_codes,
        pcon_names=pcon_names,
        oa_weight=oa_weight,
        la_effect=la_effect,
    )


def _write_csv(path: Path, header: Sequence[str], rows: Any) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")  # ONS files use CRLF
        w.writerow(header)
        w.writerows(rows)


#: Soft mutation of a word's first consonant, as after "Sir" (county): Penfro → Sir Benfro.
_SOFT_MUTATION = (("Ll", "L"), ("Rh", "R"), ("C", "G"), ("P", "B"), ("T", "D"), ("G", ""),
                  ("B", "F"), ("D", "Dd"), ("M", "F"))  # fmt: skip
#: Welsh for the words _names adds to tell apart two places of one name.
_WELSH_TAILS = {" Upon": " Uchaf", " on Sea": " ar Fôr", " Vale": " y Fro", " Heath": " y Rhos",
                " Moor": " y Waun"}  # fmt: skip


def welsh_la_name(name: str) -> str:
    """The synthetic Welsh name (``LAD22NMW``) of a Welsh local authority named ``name``.

    Real Welsh authorities often have a Welsh name unlike the English one (Pembrokeshire /
    Sir Benfro, Bridgend / Pen-y-bont ar Ogwr), and APIs answering in Welsh must show it: so
    every synthetic one differs, deterministically (no random draw, so the rest of a dataset
    is unchanged by it) — "Sir" and the soft-mutated name, as in Sir Benfro or Sir Gaerfyrddin,
    with the distinguishing words in Welsh. Non-ASCII on purpose ("ar Fôr"), as real names are.

    >>> welsh_la_name("Caerelli"), welsh_la_name("Llanwen Vale"), welsh_la_name("Aberdare")
    ('Sir Gaerelli', 'Sir Lanwen y Fro', 'Sir Aberdare')
    """
    tail = next((t for t in _WELSH_TAILS if name.endswith(t)), "")
    base = name[: len(name) - len(tail)]
    for english, mutated in _SOFT_MUTATION:
        if base.startswith(english):
            base = mutated + base[len(english):]
            break
    return f"Sir {base[:1].upper()}{base[1:]}{_WELSH_TAILS.get(tail, '')}"


def write_geography(geo: SynthGeography, directory: Path) -> dict[str, Path]:
    """Write the three lookups in ONS's column layout (and the JCP office list). Welsh names
    (``…NMW``) are filled for Welsh areas only, as ONS does: MSOA and LSOA names are the
    LA's Welsh name with the same number ("Sir Benfro 001A"), as ONS's are."""
    directory.mkdir(parents=True, exist_ok=True)
    oa_path = directory / "OA21_LSOA21_MSOA21_LAD22_GB_LU.csv"
    welsh = {i: welsh_la_name(geo.la_names[i]) for i, c in enumerate(geo.la_codes)
             if c.startswith("W")}  # fmt: skip

    def cy(la: int, name: str) -> str:
        """The Welsh name of an area of LA ``la`` named ``name``; empty outside Wales."""
        if la not in welsh:
            return ""
        return welsh[la] + name[len(geo.la_names[la]):]

    _write_csv(
        oa_path,
        ["OA21CD", "LSOA21CD", "LSOA21NM", "LSOA21NMW", "MSOA21CD", "MSOA21NM", "MSOA21NMW",
         "LAD22CD", "LAD22NM", "LAD22NMW", "ObjectId"],
        (
            (oa, geo.lsoa_codes[ls], geo.lsoa_names[ls], cy(la, geo.lsoa_names[ls]),
             geo.msoa_codes[ms], geo.msoa_names[ms], cy(la, geo.msoa_names[ms]),
             geo.la_codes[la], geo.la_names[la], cy(la, geo.la_names[la]), i + 1)
            for i, (oa, ls, ms, la) in enumerate(
                zip(geo.oa_codes.tolist(), geo.oa_lsoa.tolist(), geo.oa_msoa.tolist(),
                    geo.oa_la.tolist(), strict=True))
        ),
    )
    rgn_path = directory / "LAD22_RGN22_EN_LU.csv"
    _write_csv(
        rgn_path,
        ["LAD22CD", "LAD22NM", "RGN22CD", "RGN22NM", "ObjectId"],
        (
            (c, geo.la_names[i], REGIONS[r][0], REGIONS[r][1], i + 1)
            for i, (c, r) in enumerate(zip(geo.la_codes, geo.la_region.tolist(), strict=True))
            if c.startswith("E")
        ),
    )
    pcon_path = directory / "OA21_PCON25_GB_LU.csv"
    _write_csv(
        pcon_path,
        ["OA21CD", "PCON25CD", "PCON25NM", "ObjectId"],
        (
            (oa, geo.pcon_codes[p], geo.pcon_names[p], i + 1)
            for i, (oa, p) in enumerate(zip(geo.oa_codes.tolist(), geo.oa_pcon.tolist(),
                                            strict=True))
        ),
    )
    return {"oa_lookup": oa_path, "region_lookup": rgn_path, "constituency_lookup": pcon_path}


def jcp_offices(geo: SynthGeography) -> list[tuple[str, str, str, str, str, str, str]]:
    """Offices (3-letter mnemonics) one to three per LA, districts of a few LAs, one group per
    region: (office_code, office_name, district_code, district_name, group_code, group_name,
    la_code)."""
    rng = np.random.default_rng(np.random.SeedSequence([len(geo.la_codes), 7]))
    letters = np.array(list("ABCDEFGHJKLMNPRSTUVWY"))
    used: set[str] = set()
    rows = []
    district_n = 0
    for ri, region in enumerate(REGIONS):
        las = [i for i in range(len(geo.la_codes)) if geo.la_region[i] == ri]
        group_code = f"G{ri + 1:02d}"
        group_name = f"{region[1]} Group"
        for start in range(0, len(las), 4):
            district_n += 1
            district_code = f"D{district_n:03d}"
            district_name = f"{geo.la_names[las[start]]} and District"
            for la in las[start:start + 4]:
                for j in range(1 + int(rng.integers(0, 3))):
                    while True:
                        mnemonic = "".join(rng.choice(letters, 3))
                        if mnemonic not in used:
                            used.add(mnemonic)
                            break
                    name = geo.la_names[la] + ("" if j == 0 else f" {('North', 'South')[j - 1]}")
                    rows.append((mnemonic, f"{name} Jobcentre", district_code, district_name,
                                 group_code, group_name, geo.la_codes[la]))
    return rows


# --- Claimants -------------------------------------------------------------------------------

def _area_rates(geo: SynthGeography, spec: CubeSpec) -> np.ndarray:
    la = geo.la_effect ** spec.la_beta
    london = np.where(geo.la_region == 6, spec.london_factor, 1.0)
    w = geo.oa_weight * (la * london)[geo.oa_la]
    return np.asarray(w / w.sum())


def _draw(rng: np.random.Generator, cat: Category, n: int) -> np.ndarray:
    p = np.asarray(cat.shares, dtype=float)
    return rng.choice(len(cat.codes), size=n, p=p / p.sum()).astype(np.int8)


def _gamma_pence(rng: np.random.Generator, mean: float, sd: float, n: int) -> np.ndarray:
    shape = (mean / sd) ** 2
    pounds = rng.gamma(shape, sd * sd / mean, n)
    return np.maximum(1, np.round(pounds * 100)).astype(np.int64)


@dataclass
class _Population:
    unit_id: np.ndarray
    oa: np.ndarray
    cats: dict[str, np.ndarray]
    amount: np.ndarray | None


def _new_units(rng: np.random.Generator, spec: CubeSpec, rates: np.ndarray, n: int,
               next_id: int) -> _Population:
    oa = rng.choice(len(rates), size=n, p=rates).astype(np.int32)
    cats = {c.column: _draw(rng, c, n) for c in spec.categories}
    amount = None
    if spec.name == "housing_benefit":
        tenure = CUBES[0].categories[0].codes
        amount = np.empty(n, dtype=np.int64)
        for i, t in enumerate(tenure):
            sel = cats["tenure"] == i
            amount[sel] = _gamma_pence(rng, *HB_AWARD[t], int(sel.sum()))
        # Spare room subsidy: social renters below pension age, about one in eight.
        social = cats["tenure"] <= 1
        working_age = cats["age_band"] < AGE.index("65plus")
        reduced = social & working_age & (rng.random(n) < 0.12)
        cats["spare_room"] = np.where(reduced, 0, np.where(social, 1, 2)).astype(np.int8)
    elif spec.name == "benefit_cap":
        amount = _gamma_pence(rng, *CAP_REDUCTION, n)
    elif spec.name == "universal_credit":
        cond = cats["conditionality"]
        working = (cond == 1) | (cond == 5)
        cats["employment"] = np.where(working | (rng.random(n) < 0.08), 0, 1).astype(np.int8)
    return _Population(np.arange(next_id, next_id + n, dtype=np.int64), oa, cats, amount)


def _concat(a: _Population, b: _Population) -> _Population:
    return _Population(
        np.concatenate([a.unit_id, b.unit_id]),
        np.concatenate([a.oa, b.oa]),
        {k: np.concatenate([a.cats[k], b.cats[k]]) for k in a.cats},
        None if a.amount is None or b.amount is None else np.concatenate([a.amount, b.amount]),
    )


def _take(p: _Population, keep: np.ndarray) -> _Population:
    return _Population(p.unit_id[keep], p.oa[keep], {k: v[keep] for k, v in p.cats.items()},
                       None if p.amount is None else p.amount[keep])


EXTRA_CODES = {
    "spare_room": ("reduced", "not_reduced", "not_applicable"),
    "employment": ("employed", "not_employed"),
}
AMOUNT_COLUMN = {"housing_benefit": "weekly_award", "benefit_cap": "weekly_reduction"}


def _table(spec: CubeSpec, pop: _Population, month: str, geo: SynthGeography,
           offices: np.ndarray | None, office_of_la: list[np.ndarray] | None,
           rng: np.random.Generator) -> pa.Table:
    n = len(pop.unit_id)
    cols: dict[str, pa.Array] = {
        "unit_id": pa.array(pop.unit_id),
        "month": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                                pa.array([month])),
        "oa_code": pa.DictionaryArray.from_arrays(pa.array(pop.oa), pa.array(geo.oa_codes)),
    }
    codes = {c.column: c.codes for c in spec.categories} | EXTRA_CODES
    for col, idx in pop.cats.items():
        cols[col] = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(codes[col]))
    if spec.name == "benefit_cap" and pop.amount is not None:
        band = np.searchsorted(np.array([b for b, _ in CAP_BANDS]), pop.amount, side="left")
        cols["cap_band"] = pa.DictionaryArray.from_arrays(
            pa.array(band.astype(np.int8)), pa.array([c for _, c in CAP_BANDS]))
    if pop.amount is not None:
        cols[AMOUNT_COLUMN[spec.name]] = pa.array(pop.amount)
    if offices is not None and office_of_la is not None:
        la = geo.oa_la[pop.oa]
        choice = np.empty(n, dtype=np.int32)
        for li in np.unique(la):
            sel = np.flatnonzero(la == li)
            choice[sel] = rng.choice(office_of_la[li], size=len(sel))
        cols["jcp_office"] = pa.DictionaryArray.from_arrays(pa.array(choice), pa.array(offices))
    return pa.table(cols)


def _record_shares(spec: CubeSpec, pop: _Population, totals: CubeTotals) -> None:
    codes = {c.column: c.codes for c in spec.categories} | EXTRA_CODES
    n = max(1, len(pop.unit_id))
    for col, idx in pop.cats.items():
        counts = np.bincount(idx, minlength=len(codes[col]))
        totals.shares[col] = {c: round(float(k) / n, 5) for c, k in zip(codes[col], counts,
                                                                        strict=True)}
    if pop.amount is not None:
        totals.mean_amount_pounds[AMOUNT_COLUMN[spec.name]] = round(
            float(pop.amount.mean()) / 100, 2) if len(pop.amount) else 0.0


def generate(out_dir: Path, options: GenerateOptions = GenerateOptions(),
             progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write a synthetic GB dataset under ``out_dir``; returns the metadata it wrote.

    A complete dataset with the same options is left alone (reruns are free); anything else
    is built in a sibling temporary directory and renamed into place at the end.
    """
    meta_path = out_dir / "metadata.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if old.get("options") == _options_dict(options):
            return dict(old)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = _write_dataset(tmp, options, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # an interrupted run leaves nothing behind
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return meta


def _write_dataset(tmp: Path, options: GenerateOptions,
                   progress: ProgressFn | None) -> dict[str, Any]:
    """generate()'s work, into the temporary folder: lookups, then one cube-month at a time
    (memory is bounded by one month's stock, whatever the number of months)."""
    months = options.month_list()
    total_steps = 1 + len(options.cubes) * len(months)
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if progress:
            progress(what, step, total_steps)

    geo = make_geography(options.scale, options.seed)
    lookups = write_geography(geo, tmp / "geography")
    office_rows = jcp_offices(geo)
    _write_csv(tmp / "geography" / "JCP_OFFICES.csv",
               ["office_code", "office_name", "district_code", "district_name", "group_code",
                "group_name", "LAD22CD"], office_rows)
    offices = np.array([r[0] for r in office_rows])
    la_index = {c: i for i, c in enumerate(geo.la_codes)}
    office_of_la: list[list[int]] = [[] for _ in geo.la_codes]
    for i, r in enumerate(office_rows):
        office_of_la[la_index[r[6]]].append(i)
    office_arrays = [np.array(x, dtype=np.int32) for x in office_of_la]
    _write_boundaries(geo, tmp / "boundaries")
    tick("geography")

    cube_meta: dict[str, Any] = {}
    for ci, name in enumerate(options.cubes):
        spec = CUBE_SPECS[name]
        rng = np.random.default_rng(np.random.SeedSequence([options.seed, 100 + ci]))
        rates = _area_rates(geo, spec)
        target0 = spec.total * options.scale
        totals = CubeTotals()
        pop: _Population | None = None
        next_id = 1
        cube_dir = tmp / "microdata" / name
        cube_dir.mkdir(parents=True)
        for mi, month in enumerate(months):
            target = target0 * spec.monthly_trend**mi
            if spec.kind == "stock":
                if pop is None:
                    pop = _new_units(rng, spec, rates, int(rng.poisson(target)), next_id)
                else:
                    stay = rng.random(len(pop.unit_id)) >= spec.exit_rate
                    pop = _take(pop, stay)
                    entrants = max(0, int(rng.poisson(max(0.0, target - len(pop.unit_id)))))
                    pop = _concat(pop, _new_units(rng, spec, rates, entrants, next_id))
                    if name == "universal_credit":  # circumstances change month to month
                        move = rng.random(len(pop.unit_id)) < 0.04
                        fresh = _new_units(rng, spec, rates, int(move.sum()), 0)
                        for col in ("conditionality", "employment"):
                            pop.cats[col][move] = fresh.cats[col]
                next_id = int(pop.unit_id.max(initial=0)) + 1
                month_pop = pop
            else:
                month_pop = _new_units(rng, spec, rates, int(rng.poisson(target)), next_id)
                next_id += len(month_pop.unit_id)
            table = _table(spec, month_pop, month, geo,
                           offices if name == "sanctions" else None,
                           office_arrays if name == "sanctions" else None, rng)
            pq.write_table(table, cube_dir / f"{month}.parquet", compression="zstd",
                           row_group_size=1_000_000)
            totals.records += table.num_rows
            totals.by_month[month] = table.num_rows
            if mi == 0:
                _record_shares(spec, month_pop, totals)
            tick(f"{name} {month}")
        cube_meta[name] = {"kind": spec.kind, "source": spec.source,
                           "target_gb_first_month": spec.total,
                           "monthly_trend": spec.monthly_trend, **asdict(totals)}
    meta = {
        "generator": "statcube synthetic GB v1",
        "options": _options_dict(options),
        "months": months,
        "geography": {
            "oa": len(geo.oa_codes), "lsoa": len(geo.lsoa_codes), "msoa": len(geo.msoa_codes),
            "la": len(geo.la_codes), "region": len(REGIONS), "pcon": len(geo.pcon_codes),
            "jcp_offices": len(office_rows),
        },
        "lookups": {k: str(v.relative_to(tmp)) for k, v in lookups.items()}
        | {"jcp_offices": "geography/JCP_OFFICES.csv"},
        "cubes": cube_meta,
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return meta


def _options_dict(options: GenerateOptions) -> dict[str, Any]:
    d = asdict(options)
    d["cubes"] = list(options.cubes)
    return d


def _write_boundaries(geo: SynthGeography, directory: Path) -> None:
    """Hex-cartogram boundaries for every LA, region and country (cube/boundaries.py), as
    GeoJSON files keyed by ONS-style code properties, like real boundary downloads."""
    from cube.boundaries import synthetic_areas, write_geojson

    las = [(c, n, REGIONS[r][0]) for c, n, r in
           zip(geo.la_codes, geo.la_names, geo.la_region.tolist(), strict=True)]
    regions = {r[0]: (r[1], r[2]) for r in REGIONS}
    write_geojson(synthetic_areas(las, regions, COUNTRIES), directory)

