"""The build: facts that add up to the microdata, exact key sums, and refusal of bad input.

Everything here is checked against the input files read independently (pyarrow / plain
DuckDB over the Parquet) and against record keys computed one record at a time with the
reference :func:`cube.keys.record_keys` — never against the build's own intermediate tables.
Bad-input tests edit a tiny generated dataset (two cubes, two months, ~9k records). Those a
Spark build supports run on both builds (``build_on``: duckdb | spark, tests/conftest.py):
the same refusals in the same words (file, row or line, column, value), the same
skip-bad-rows report, and the same facts as the DuckDB build of the same input.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import TEST_SECRET, AggregateArgs, Builder

from cube.build import WAREHOUSE_FORMAT, BuildOptions, BuildReport, build, required_columns
from cube.errors import ArgumentError, InputDataError
from cube.geography import GEOGRAPHY_COLUMNS
from cube.keys import K_DEFAULT, record_keys
from cube.model import Cube, Model
from cube.synthetic import GenerateOptions, generate
from cube.workspace import Workspace

K = K_DEFAULT
HB = "housing_benefit"
TINY = GenerateOptions(scale=0.002, seed=11, start="2026-01", months=2,
                       cubes=(HB, "sanctions"))
HB_JAN = Path("microdata") / HB / "2026-01.parquet"


@pytest.fixture
def ro() -> Iterator[Any]:
    """Open warehouses read-only, closing them after the test."""
    opened: list[duckdb.DuckDBPyConnection] = []

    def connect(path: Path) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(path), read_only=True)
        opened.append(con)
        return con
    yield connect
    for con in opened:
        con.close()


def _parquet(synthetic_dir: Path, cube: str) -> str:
    return str(synthetic_dir / "microdata" / cube / "*.parquet")


# --- The session warehouse against the session microdata ---------------------------------------


def test_every_cube_counts_every_record(model: Model, synthetic_dir: Path, built: BuildReport,
                                        ro: Any) -> None:
    con = ro(built.warehouse)
    for cube in model.cubes.values():
        files = sorted((synthetic_dir / "microdata" / cube.name).glob("*.parquet"))
        records = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        facts = con.execute(f"SELECT sum(n), count(*) FROM {cube.physical.fact}").fetchone()
        assert facts is not None
        assert facts[0] == records == built.cubes[cube.name].records, cube.name
        assert facts[1] == built.cubes[cube.name].fact_rows


def test_counts_per_period_match(model: Model, synthetic_dir: Path, warehouse: Path,
                                 ro: Any) -> None:
    con = ro(warehouse)
    for cube in model.cubes.values():
        period = "quarter_id" if cube.grain == "quarter" else "month_id"
        expr = ("year(d) * 10 + quarter(d)" if cube.grain == "quarter"
                else "year(d) * 100 + month(d)")
        raw = con.execute(
            f"SELECT {expr} AS p, count(*) FROM (SELECT strptime(month, '%Y-%m') AS d "
            f"FROM read_parquet('{_parquet(synthetic_dir, cube.name)}')) GROUP BY p ORDER BY p"
        ).fetchall()
        facts = con.execute(f"SELECT {period}, sum(n)::BIGINT FROM {cube.physical.fact} "
                            f"GROUP BY 1 ORDER BY 1").fetchall()
        assert facts == raw, cube.name


def test_amount_sums_and_maxima_match(model: Model, synthetic_dir: Path, warehouse: Path,
                                      ro: Any) -> None:
    con = ro(warehouse)
    checked = 0
    for cube in model.cubes.values():
        for m in cube.measures:
            if m.kind != "amount":
                continue
            col = cube.physical.column(m.name).column
            mx = cube.physical.max_columns[m.name]
            raw = con.execute(f"SELECT month, sum({m.name})::BIGINT, max({m.name}) FROM "
                              f"read_parquet('{_parquet(synthetic_dir, cube.name)}') "
                              "GROUP BY 1 ORDER BY 1").fetchall()
            facts = con.execute(
                f"SELECT printf('%04d-%02d', month_id // 100, month_id % 100), "
                f"sum({col})::BIGINT, max({mx}) FROM {cube.physical.fact} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert facts == raw, (cube.name, m.name)
            checked += 1
    assert checked == 2  # housing benefit award, benefit cap reduction


def _cells_from_records(cube: Cube, table: pa.Table) -> dict[tuple[Any, ...], list[int]]:
    """Finest cells computed in Python from records: count, key sums, amount sum and max."""
    codes = [c for c in required_columns(cube) if c not in {"unit_id"}
             and not any(m.name == c for m in cube.measures)]
    amounts = [m.name for m in cube.measures if m.kind == "amount"]
    cols = {c: table.column(c).to_pylist() for c in [*codes, "unit_id", *amounts]}
    cells: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for i, unit in enumerate(cols["unit_id"]):
        rk, rk2 = record_keys(TEST_SECRET, str(unit))
        cell = cells[tuple(cols[c][i] for c in codes)]
        cell[0] += 1
        cell[1] += rk
        cell[2] += rk2
        for a in amounts:
            cell[3] += cols[a][i]
            cell[4] = max(cell[4], cols[a][i])
    return cells


@pytest.mark.parametrize("cube_name", [HB, "sanctions"])
def test_every_finest_cell_of_a_month_matches_its_records(
        model: Model, synthetic_dir: Path, warehouse: Path, ro: Any, cube_name: str) -> None:
    """All cells of one month: n, rk = Σ rkey mod K, rk2 likewise, amount sum and max."""
    cube = model.cube(cube_name)
    month = "2026-08"
    table = pq.read_table(synthetic_dir / "microdata" / cube_name / f"{month}.parquet")
    expected = {
        key: (n, s1 % K, s2 % K, *((a, mx) if cube_name == HB else ()))
        for key, (n, s1, s2, a, mx) in _cells_from_records(cube, table).items()
    }
    codes = [c for c in required_columns(cube) if c not in {"unit_id", "month"}
             and not any(m.name == c for m in cube.measures)]
    extra = ", weekly_award_sum, weekly_award_max" if cube_name == HB else ""
    rows = ro(warehouse).execute(
        f"SELECT {', '.join(codes)}, n, rk, rk2{extra} FROM {cube.physical.fact} "
        "WHERE month_id = 202608").fetchall()
    got = {(month, *r[:len(codes)]): tuple(r[len(codes):]) for r in rows}
    assert got == expected


def test_dim_geography_keeps_the_lookups_welsh_names(synthetic_dir: Path, warehouse: Path,
                                                      ro: Any) -> None:
    """dim_geography is the geography load, column for column (Welsh names after the
    others), one row per OA: a Welsh LA's Welsh name is its LAD22NMW, others have none."""
    con = ro(warehouse)
    columns = [r[0] for r in con.execute("DESCRIBE dim_geography").fetchall()]
    assert columns == list(GEOGRAPHY_COLUMNS)
    lookup = pacsv.read_csv(synthetic_dir / "geography" / "OA21_LSOA21_MSOA21_LAD22_GB_LU.csv")
    nmw = {la: cy or None for la, cy in zip(lookup.column("LAD22CD").to_pylist(),
                                            lookup.column("LAD22NMW").to_pylist(), strict=True)}
    built = dict(con.execute("SELECT DISTINCT la_code, la_name_cy FROM dim_geography"
                             ).fetchall())
    assert built == nmw
    assert {la for la, cy in built.items() if cy} == {la for la in built if la.startswith("W")}


def test_key_sums_roll_up_exactly(model: Model, synthetic_dir: Path, warehouse: Path,
                                  ro: Any) -> None:
    """Rolling finest cells up to local authority (per month) and to GB (per quarter) gives
    the key sum of the records: Σ rk mod K over cells == Σ rkey mod K over records."""
    con = ro(warehouse)
    table = pq.read_table(_parquet(synthetic_dir, HB).replace("*", "2026-06"),
                          columns=["unit_id", "oa_code"])
    la_of = dict(con.execute("SELECT oa_code, la_code FROM dim_geography").fetchall())
    by_la: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for unit, oa in zip(table.column("unit_id").to_pylist(), table.column("oa_code").to_pylist(),
                        strict=True):
        rk, rk2 = record_keys(TEST_SECRET, str(unit))
        by_la[la_of[oa]][0] += rk
        by_la[la_of[oa]][1] += rk2
    rolled = con.execute(
        "SELECT g.la_code, sum(f.rk) % 4096, sum(f.rk2) % 4096 FROM fact_housing_benefit f "
        "JOIN dim_geography g USING (oa_code) WHERE f.month_id = 202606 GROUP BY 1").fetchall()
    assert {la: (a, b) for la, a, b in rolled} == {
        la: (a % K, b % K) for la, (a, b) in by_la.items()}

    # A flow, whole quarters, every record.
    nino = pa.concat_tables(
        pq.read_table(f, columns=["unit_id", "month"])
        for f in sorted((synthetic_dir / "microdata" / "nino_registrations").glob("*.parquet")))
    by_q: dict[int, int] = defaultdict(int)
    for unit, month in zip(nino.column("unit_id").to_pylist(), nino.column("month").to_pylist(),
                           strict=True):
        by_q[int(month[:4]) * 10 + (int(month[5:]) - 1) // 3 + 1] += record_keys(
            TEST_SECRET, str(unit))[0]
    totals = con.execute("SELECT quarter_id, sum(rk) % 4096 FROM fact_nino_registrations "
                         "GROUP BY 1").fetchall()
    assert dict(totals) == {q: s % K for q, s in by_q.items()}


def test_a_random_sample_of_cells_matches_its_records(model: Model, synthetic_dir: Path,
                                                      warehouse: Path, ro: Any) -> None:
    """Universal Credit, every month: 100 random cells, each found again in the records."""
    con = ro(warehouse)
    cube = model.cube("universal_credit")
    cells = con.execute("SELECT oa_code, conditionality, employment, age_band, gender, "
                        "month_id, n, rk, rk2 FROM fact_universal_credit").fetchall()
    sample = random.Random(5).sample(cells, 100)
    wanted = {(oa, c, e, a, g, f"{m // 100}-{m % 100:02d}"): (n, rk, rk2)
              for oa, c, e, a, g, m, n, rk, rk2 in sample}
    records = con.execute(
        "SELECT unit_id, oa_code, conditionality, employment, age_band, gender, month FROM "
        f"read_parquet('{_parquet(synthetic_dir, cube.name)}') WHERE oa_code IN "
        f"({', '.join(repr(k[0]) for k in wanted)})").fetchall()
    found: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for unit, *key in records:
        if tuple(key) in wanted:
            rk, rk2 = record_keys(TEST_SECRET, str(unit))
            acc = found[tuple(key)]
            acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + rk, acc[2] + rk2
    assert {k: (n, a % K, b % K) for k, (n, a, b) in found.items()} == wanted


def test_facts_are_at_the_finest_grain(model: Model, warehouse: Path, ro: Any) -> None:
    con = ro(warehouse)
    for cube in model.cubes.values():
        grain = [j.master.column for j in cube.physical.joins]
        dup = con.execute(f"SELECT count(*) FROM (SELECT {', '.join(grain)} FROM "
                          f"{cube.physical.fact} GROUP BY ALL HAVING count(*) > 1)").fetchone()
        nulls = con.execute(f"SELECT count(*) FROM {cube.physical.fact} WHERE "
                            + " OR ".join(f"{c} IS NULL" for c in grain)).fetchone()
        assert dup == (0,) and nulls == (0,), cube.name
        # Every fact row joins to its dimensions (no orphan codes).
        for j in cube.physical.joins:
            orphans = con.execute(
                f"SELECT count(*) FROM {cube.physical.fact} f ANTI JOIN {j.detail.table} d "
                f"ON f.{j.master.column} = d.{j.detail.column}").fetchone()
            assert orphans == (0,), (cube.name, j.detail.table)


def test_facts_are_stored_in_period_order(model: Model, warehouse: Path, ro: Any) -> None:
    """Stocks are always queried one period at a time: with rows stored period by period,
    DuckDB's row-group min/max lets such a query skip the other periods."""
    con = ro(warehouse)
    for cube in model.cubes.values():
        period = "quarter_id" if cube.grain == "quarter" else "month_id"
        backwards = con.execute(
            f"SELECT count(*) FROM (SELECT {period} < lag({period}) OVER (ORDER BY rowid) AS b "
            f"FROM {cube.physical.fact}) WHERE b").fetchone()
        assert backwards == (0,), cube.name


def test_a_file_holding_several_months_builds_the_same_facts(
        model: Model, inp: Path, tmp_path: Path, ro: Any) -> None:
    a = _build(inp, tmp_path / "a", model)
    hb = inp / "microdata" / HB
    both = pa.concat_tables([pq.read_table(f) for f in sorted(hb.glob("*.parquet"))][::-1])
    for f in hb.glob("*.parquet"):
        f.unlink()
    pq.write_table(both, hb / "all.parquet")
    b = _build(inp, tmp_path / "b", model)
    query = "SELECT * FROM fact_housing_benefit"
    rows_a = ro(a.warehouse).execute(query + " ORDER BY ALL").fetchall()
    assert ro(b.warehouse).execute(query + " ORDER BY ALL").fetchall() == rows_a
    months = [r[0] for r in ro(b.warehouse).execute(
        "SELECT month_id FROM fact_housing_benefit ORDER BY rowid").fetchall()]
    assert months == sorted(months)


def test_microdata_never_reaches_the_warehouse(warehouse: Path, ro: Any) -> None:
    con = ro(warehouse)
    columns = con.execute("SELECT table_name, column_name FROM information_schema.columns"
                          ).fetchall()
    assert columns
    assert not [c for c in columns if "unit" in c[1].lower()]
    # Build scaffolding (the month type) is gone: the only types of its own the file holds
    # are the codelists that the code columns of facts and dimensions are stored as.
    types = {t for (t,) in con.execute(
        "SELECT type_name FROM duckdb_types() WHERE NOT internal").fetchall()}
    assert types and all(t.startswith("codelist_") for t in types), types


def test_codes_are_stored_as_codelists_in_code_order(warehouse: Path, ro: Any) -> None:
    """Category and office codes are ENUMs of their codelist (cheap to write), as are the
    dimension keys they join to (an ENUM = VARCHAR join would hide the join's filter from the
    fact scan); members are in code order, so sorting a column sorts its codes as text
    would. OA codes stay text on both sides (an ENUM of ~235k OAs would ride along with
    every Arrow result)."""
    con = ro(warehouse)
    for fact, column, codelist, dim, code in [
            ("fact_housing_benefit", "tenure", "codelist_tenure", "dim_tenure", "tenure_code"),
            ("fact_pip", "daily_living", "codelist_daily_living", "dim_daily_living",
             "daily_living_code"),
            ("fact_sanctions", "jcp_office", "codelist_jcp", "dim_jcp", "office_code")]:
        members = con.execute(f"SELECT enum_range(NULL::{codelist})").fetchone()[0]
        assert members == sorted(r[0] for r in con.execute(f"SELECT {code} FROM {dim}"
                                                           ).fetchall())
        for table, col in ((fact, column), (dim, code)):
            types = con.execute(f"SELECT DISTINCT typeof({col}) FROM {table}").fetchall()
            assert len(types) == 1 and types[0][0].startswith("ENUM("), (table, col, types)
        stored = [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {fact} "
                                            f"ORDER BY {column}").fetchall()]
        assert stored == sorted(stored)
    for table in ("fact_housing_benefit", "fact_sanctions", "dim_geography"):
        assert con.execute(f"SELECT DISTINCT typeof(oa_code) FROM {table}").fetchall() == [
            ("VARCHAR",)]


def test_release_metadata(built: BuildReport, warehouse: Path, ro: Any) -> None:
    meta = {k: json.loads(v) for k, v in
            ro(warehouse).execute("SELECT key, value FROM statcube_meta").fetchall()}
    assert built.release == meta["release"] == "2026-11"  # the last month of the data
    assert meta["format"] == WAREHOUSE_FORMAT == 2
    assert warehouse.name == "2026-11.duckdb"
    assert meta["months"][0] == "2026-06" and len(meta["months"]) == 6
    assert set(meta["cubes"]) == set(built.cubes)
    assert len(meta["ptable_digest"]) == 64
    assert not built.report_path.exists()  # a clean build writes no bad-row report


# --- Bad input (a tiny dataset, edited per test) ----------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "gb"
    generate(out, TINY)
    return out


@pytest.fixture
def inp(tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset that a test may edit."""
    return Path(shutil.copytree(tiny, tmp_path / "in"))


def _edit(path: Path, rows: dict[int, dict[str, Any]], *, drop: str | None = None) -> None:
    """Rewrite a Parquet file with some values changed (0-based rows) or a column dropped."""
    t = pq.read_table(path)
    cols: dict[str, pa.Array] = {}
    for name in t.column_names:
        if name == drop:
            continue
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        values = col.to_pylist()
        for row, change in rows.items():
            if name in change:
                values[row] = change[name]
        cols[name] = pa.array(values, col.type)
    pq.write_table(pa.table(cols), path)


def _build(inp: Path, out: Path, model: Model, **options: Any) -> BuildReport:
    return build(model, inp, out, TEST_SECRET, BuildOptions(**options))


def _value(path: Path, row: int, column: str) -> Any:
    return pq.read_table(path, columns=[column]).column(column)[row].as_py()


BAD_VALUES = [
    ("oa_code", "E00999999", "unknown output area code"),
    ("oa_code", None, "unknown output area code"),
    ("month", "2026-13", "month is not YYYY-MM"),
    ("month", "Jan 2026", "month is not YYYY-MM"),
    ("weekly_award", -500, "amount must be a whole, non-negative number of pence"),
    ("weekly_award", None, "amount must be a whole, non-negative number of pence"),
    ("tenure", "council", "unknown tenure type code"),
    ("unit_id", None, "missing unit id"),
]


def test_bad_values_are_refused_naming_file_row_and_value(
        model: Model, inp: Path, tmp_path: Path, build_on: Builder) -> None:
    """Every kind of bad value (one per row, rows 42 to 49 as a spreadsheet numbers them)
    and a unit twice in one month of a stock: the build refuses, names each row, column and
    value in one fixed order (missing ids, then column by column, then duplicates) and
    writes nothing — in the same words on either engine."""
    unit = _value(inp / HB_JAN, 3, "unit_id")
    rows: dict[int, dict[str, Any]] = {41 + i: {column: value}
                                       for i, (column, value, _) in enumerate(BAD_VALUES)}
    rows[7] = {"unit_id": unit}
    _edit(inp / HB_JAN, rows)
    out = tmp_path / "wh"
    with pytest.raises(InputDataError) as info:
        build_on(model, inp, out, TEST_SECRET, BuildOptions())
    err = info.value
    assert err.message.startswith(f"{HB}: 10 bad input row(s); nothing was built")
    row = {(column, value): f"{HB_JAN} row {42 + i}: {column}="
           f"{None if value is None else str(value)!r}: {what}"
           for i, (column, value, what) in enumerate(BAD_VALUES)}
    assert err.problems == (
        row["unit_id", None], row["month", "2026-13"], row["month", "Jan 2026"],
        row["oa_code", "E00999999"], row["oa_code", None], row["tenure", "council"],
        row["weekly_award", -500], row["weekly_award", None],
        *(f"{HB_JAN} row {r}: unit_id='{unit}': unit appears 2 times in month 2026-01"
          for r in (4, 8)))
    assert list(out.iterdir()) == []  # no warehouse, no temporary file, no report


def test_the_same_unit_twice_in_a_month_of_a_flow_is_fine(model: Model, inp: Path,
                                                          tmp_path: Path) -> None:
    """Two sanction decisions for one person in a month are two decisions."""
    path = inp / "microdata" / "sanctions" / "2026-01.parquet"
    _edit(path, {1: {"unit_id": _value(path, 0, "unit_id")}})
    rep = _build(inp, tmp_path / "wh", model)
    assert rep.cubes["sanctions"].records == sum(
        pq.ParquetFile(f).metadata.num_rows for f in path.parent.glob("*.parquet"))


def test_missing_column_names_the_file(model: Model, inp: Path, tmp_path: Path,
                                       build_on: Builder) -> None:
    _edit(inp / HB_JAN, {}, drop="passported")
    with pytest.raises(InputDataError) as info:
        build_on(model, inp, tmp_path / "wh", TEST_SECRET, BuildOptions())
    assert "housing_benefit: microdata is missing required column(s)" in info.value.message
    assert info.value.problems == (f"{HB_JAN}: missing column(s) passported",)
    assert not (tmp_path / "wh").exists() or list((tmp_path / "wh").iterdir()) == []


def test_bad_csv_rows_are_located_by_line(model: Model, inp: Path, tmp_path: Path,
                                          build_on: Builder) -> None:
    """CSV inputs: the header is line 1, so data row i (0-based) is line i + 2."""
    table = pq.read_table(inp / HB_JAN)
    (inp / HB_JAN).unlink()
    csv = inp / HB_JAN.with_suffix(".csv")
    pacsv.write_csv(table, csv)
    lines = csv.read_text(encoding="utf-8").splitlines()
    fields = lines[3001].split(",")
    fields[table.column_names.index("oa_code")] = '"W00000000"'
    lines[3001] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputDataError) as info:
        build_on(model, inp, tmp_path / "wh", TEST_SECRET, BuildOptions())
    assert info.value.problems == (
        f"{HB_JAN.with_suffix('.csv')} line 3002: oa_code='W00000000': unknown output area "
        "code",)


def test_csv_input_builds_the_same_warehouse_as_parquet(model: Model, inp: Path, tmp_path: Path,
                                                        ro: Any, build_on: Builder) -> None:
    """Text ids in CSV ("123") and integer ids in Parquet (123) get the same record keys: the
    CSV built on either engine gives the DuckDB build of the Parquet."""
    a = _build(inp, tmp_path / "a", model)
    for path in list((inp / "microdata").rglob("*.parquet")):
        pacsv.write_csv(pq.read_table(path), path.with_suffix(".csv"))
        path.unlink()
    b = build_on(model, inp, tmp_path / "b", TEST_SECRET, BuildOptions())
    for fact in ("fact_housing_benefit", "fact_sanctions"):
        rows_a = ro(a.warehouse).execute(f"SELECT * FROM {fact} ORDER BY ALL").fetchall()
        rows_b = ro(b.warehouse).execute(f"SELECT * FROM {fact} ORDER BY ALL").fetchall()
        assert rows_a == rows_b and rows_a


def test_skip_bad_rows_builds_without_them_and_reports_them(
        model: Model, inp: Path, tmp_path: Path, ro: Any, build_on: Builder) -> None:
    """Refused by default; with skip_bad_rows built without them, reported in the same words,
    and the facts are exactly the DuckDB build of the input without those rows."""
    unit = _value(inp / HB_JAN, 3, "unit_id")
    _edit(inp / HB_JAN, {10: {"oa_code": "S00999999"}, 20: {"weekly_award": -1},
                         7: {"unit_id": unit}})
    with pytest.raises(InputDataError) as refused:
        build_on(model, inp, tmp_path / "refused", TEST_SECRET, BuildOptions())
    assert refused.value.message.startswith(f"{HB}: 4 bad input row(s); nothing was built")
    assert list((tmp_path / "refused").iterdir()) == []  # nothing written, no temporary
    rep = build_on(model, inp, tmp_path / "wh", TEST_SECRET, BuildOptions(skip_bad_rows=True))
    hb = rep.cubes[HB]
    assert hb.skipped == 4  # two bad values, and both rows of the duplicated unit
    report = json.loads(rep.report_path.read_text(encoding="utf-8"))
    assert rep.report_path == tmp_path / "wh" / "2026-02.build-report.json"
    assert report["cubes"][HB]["skipped"] == 4
    assert report["cubes"][HB]["problems"] == [
        f"{HB_JAN} row 11: oa_code='S00999999': unknown output area code",
        f"{HB_JAN} row 21: weekly_award='-1': amount must be a whole, non-negative number "
        "of pence",
        f"{HB_JAN} row 4: unit_id='{unit}': unit appears 2 times in month 2026-01",
        f"{HB_JAN} row 8: unit_id='{unit}': unit appears 2 times in month 2026-01",
    ]
    assert report["cubes"]["sanctions"]["skipped"] == 0
    assert refused.value.problems == tuple(report["cubes"][HB]["problems"])

    # The result is exactly the build of the input without those four rows.
    t = pq.read_table(inp / HB_JAN)
    keep = [i for i in range(t.num_rows) if i not in {3, 7, 10, 20}]
    pq.write_table(t.take(keep), inp / HB_JAN)
    clean = _build(inp, tmp_path / "clean", model)
    assert clean.cubes[HB].records == hb.records
    query = "SELECT * FROM fact_housing_benefit ORDER BY ALL"
    assert ro(rep.warehouse).execute(query).fetchall() == ro(clean.warehouse).execute(
        query).fetchall()
    assert not clean.report_path.exists()


def test_rebuild_replaces_the_warehouse_atomically(model: Model, inp: Path, tmp_path: Path,
                                                   ro: Any) -> None:
    out = tmp_path / "wh"
    first = _build(inp, out, model, release="r1")
    reader = ro(first.warehouse)  # a server reading the release during the rebuild
    before = reader.execute("SELECT sum(n) FROM fact_housing_benefit").fetchone()
    pq.write_table(pq.read_table(inp / HB_JAN).slice(0, 100), inp / HB_JAN)
    second = _build(inp, out, model, release="r1")
    assert second.warehouse == first.warehouse
    # The open reader still sees the complete old release, undisturbed...
    assert reader.execute("SELECT sum(n) FROM fact_housing_benefit").fetchone() == before
    reader.close()
    # ...and the next one to open the path gets the new release.
    after = ro(second.warehouse).execute("SELECT sum(n) FROM fact_housing_benefit").fetchone()
    assert after is not None and before is not None
    assert after[0] == second.cubes[HB].records < before[0]
    assert sorted(p.name for p in out.iterdir()) == ["r1.duckdb"]


def test_failed_rebuild_leaves_the_previous_warehouse(model: Model, inp: Path, tmp_path: Path,
                                                      ro: Any) -> None:
    out = tmp_path / "wh"
    first = _build(inp, out, model)
    size = first.warehouse.stat().st_size
    _edit(inp / HB_JAN, {5: {"tenure": "council"}})
    with pytest.raises(InputDataError):
        _build(inp, out, model)
    assert sorted(p.name for p in out.iterdir()) == ["2026-02.duckdb"]
    assert first.warehouse.stat().st_size == size
    assert ro(first.warehouse).execute("SELECT sum(n) FROM fact_housing_benefit").fetchone() == (
        first.cubes[HB].records,)


def test_threads_do_not_change_the_result(model: Model, tiny: Path, tmp_path: Path,
                                          ro: Any) -> None:
    ticks: list[tuple[str, int, int]] = []
    a = build(model, tiny, tmp_path / "a", TEST_SECRET, BuildOptions(threads=1),
              lambda what, done, total: ticks.append((what, done, total)))
    b = _build(tiny, tmp_path / "b", model, threads=2)
    query = "SELECT * FROM fact_sanctions ORDER BY ALL"
    assert ro(a.warehouse).execute(query).fetchall() == ro(b.warehouse).execute(
        query).fetchall()
    # Progress for a bar: steps only go forward, and the last is the total.
    assert [d for _, d, _ in ticks] == sorted(d for _, d, _ in ticks)
    assert ticks[-1][1:] == (4, 4) and ticks[-1][0] in {HB, "sanctions"}
    assert {w for w, _, _ in ticks} >= {"geography", "dimensions", "housing_benefit: keys",
                                         "sanctions: facts", HB, "sanctions"}


def test_temporary_files_of_killed_builds_are_removed(model: Model, tiny: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "wh"
    out.mkdir()
    stale = out / f".2026-02.duckdb.tmp-{_exited_pid()}"
    live = out / f".2026-02.duckdb.tmp-{os.getppid()}"  # a build still running elsewhere
    stale.write_bytes(b"half a warehouse")
    live.write_bytes(b"being written")
    _build(tiny, out, model)
    assert sorted(p.name for p in out.iterdir()) == [live.name, "2026-02.duckdb"]


def _exited_pid() -> int:
    """The pid of a process that has exited (and been reaped): no process has it now."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_input_folder_problems(model: Model, tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(ArgumentError, match="input directory not found"):
        _build(tmp_path / "nope", tmp_path / "wh", model)
    empty = Path(shutil.copytree(tiny / "geography", tmp_path / "empty" / "geography")).parent
    with pytest.raises(InputDataError, match="no microdata found"):
        _build(empty, tmp_path / "wh", model)
    with pytest.raises(ArgumentError, match="release ids"):
        _build(tiny, tmp_path / "wh", model, release="../x")


# --- Older warehouses ----------------------------------------------------------------------------

FORMAT_1_QUERIES: list[tuple[str, AggregateArgs]] = [
    ("housing_benefit", {"drilldown": "tenure|age_band", "cut": "tenure:private;social_la"}),
    ("housing_benefit", {"drilldown": "geography:oa", "pagesize": 20, "page": 2,
                         "order": "geography.oa_code:desc"}),
    ("sanctions", {"drilldown": "jcp:office|benefit", "cut": "outcome:no_such_code"}),
    ("sanctions", {"drilldown": "jcp:office", "order": "jcp.office_code"}),
    ("pip", {"drilldown": "daily_living|mobility", "order": "daily_living.daily_living_code:desc"}),
]


def test_a_format_1_warehouse_gives_the_same_answers(model: Model, warehouse: Path,
                                                     workspace: Any, tmp_path: Path) -> None:
    """Releases built before codes were stored as ENUMs (every code as text, no ``format``
    in the metadata) stay on disk and must keep serving exactly the same results."""
    old = tmp_path / "2026-11.duckdb"
    shutil.copy(warehouse, old)
    con = duckdb.connect(str(old))
    columns = con.execute("SELECT table_name, column_name, data_type FROM "
                          "information_schema.columns WHERE data_type LIKE 'ENUM%'").fetchall()
    assert columns  # the current format has ENUM columns to turn back into text
    for table, column, _ in columns:
        con.execute(f"ALTER TABLE {table} ALTER {column} TYPE VARCHAR")
    for (name,) in con.execute("SELECT type_name FROM duckdb_types() WHERE NOT internal"
                               ).fetchall():
        con.execute(f"DROP TYPE {name}")
    con.execute("DELETE FROM statcube_meta WHERE key = 'format'")
    con.close()
    ws = Workspace.open(model, old)
    try:
        for cube, kw in FORMAT_1_QUERIES:
            new, older = workspace.cube(cube).aggregate(**kw), ws.cube(cube).aggregate(**kw)
            assert older.cells.schema == new.cells.schema, (cube, kw)
            assert older.to_json() == new.to_json(), (cube, kw)
    finally:
        ws.close()
