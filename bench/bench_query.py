"""Query engine latency against hand-written DuckDB SQL, on the same warehouse, in one run.

    python -m bench.bench_query                 # scale 0.05, 12 months (built once, reused)
    python -m bench.bench_query --scale 0.01 --repeat 30

For each question of a fixed mix, two ways of answering it are timed, interleaved:

- **engine**: the whole raw path a request takes — ``Request`` → ``Query.from_request`` →
  SQL compilation → execution on the read-only DuckDB file → Arrow, for the cells *and* the
  summary (``RawCube.lean``, what the disclosure gate reads for an unpaged request that
  orders and filters on attributes only, else ``RawCube.aggregate``; the cube's latest
  period is cached, as in a server);
- **sql**: the same raw path with resident rollups off (``RawCube(resident=False)``: every
  question runs its SQL statement, as before cube/resident.py), compiled SQL reused;
- **hand**: SQL an analyst would write for the same answer (the same raw columns: count,
  key sums mod K, amount sums and maxima; the same order and paging), filtering the fact
  table's period column directly, executed on its own read-only connection to the same
  file and fetched as Arrow.

Both sides' answers are compared cell by cell before timing, so the mix measures equal work.
The report gives the median of each, their ratio per query, the geometric mean of the ratios
and the ratio of total time. Target: engine ≤ 1.15 × hand on the base fact tables.

The warehouse is synthetic (random record-key secret, generated here) and lives under
``data/bench/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bench.common import warehouse_args, warehouse_from_args
from cube.engine import canonical
from cube.model import Model, default_model_path, load_model
from cube.query import Request
from cube.raw import RawCube
from cube.workspace import Workspace

K = 4096





# --- the mix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    cube: str
    request: dict[str, Any]
    cells_sql: str
    summary_sql: str


def _raw_cols(fact: str, amount: str | None = None) -> str:
    cols = (f"sum({fact}.n)::BIGINT AS n, (sum({fact}.rk) % {K})::INTEGER AS rk, "
            f"(sum({fact}.rk2) % {K})::INTEGER AS rk2")
    if amount:
        cols += (f", sum({fact}.{amount}_sum)::BIGINT AS s, "
                 f"max({fact}.{amount}_max)::BIGINT AS mx")
    return cols


def mix(latest: int) -> list[Case]:
    """The fixed query mix. ``latest`` is the newest month id (YYYYMM) in the warehouse."""
    hb = _raw_cols("f", "weekly_award")
    uc = _raw_cols("f")
    prev = latest - 1
    y = latest // 100
    return [
        Case("hb_region", "housing_benefit", {"drilldown": "geography:region"},
             f"SELECT g.country_code, g.country_name, g.region_code, g.region_name, {hb} "
             f"FROM fact_housing_benefit f JOIN dim_geography g ON g.oa_code = f.oa_code "
             f"WHERE f.month_id = {latest} GROUP BY ALL ORDER BY g.country_code, "
             f"g.region_code",
             f"SELECT {hb} FROM fact_housing_benefit f WHERE f.month_id = {latest}"),
        Case("uc_la_month", "universal_credit",
             {"drilldown": "geography:la", "cut": f"time@ym:{y},{prev % 100}"},
             f"SELECT g.country_code, g.country_name, g.region_code, g.region_name, "
             f"g.la_code, g.la_name, {uc} FROM fact_universal_credit f JOIN dim_geography g "
             f"ON g.oa_code = f.oa_code WHERE f.month_id = {prev} GROUP BY ALL "
             f"ORDER BY g.country_code, g.region_code, g.la_code",
             f"SELECT {uc} FROM fact_universal_credit f WHERE f.month_id = {prev}"),
        Case("uc_month_conditionality", "universal_credit",
             {"drilldown": "time@ym:month|conditionality"},
             f"SELECT t.year, t.month, t.month_label, c.conditionality_code, "
             f"c.conditionality_name, c.conditionality_order, {uc} "
             f"FROM fact_universal_credit f JOIN dim_month t ON t.month_id = f.month_id "
             f"JOIN dim_conditionality c ON c.conditionality_code = f.conditionality "
             f"GROUP BY ALL ORDER BY t.year, t.month, c.conditionality_order, "
             f"c.conditionality_code",
             f"SELECT {uc} FROM fact_universal_credit f"),
        Case("pip_lsoa_page", "pip",
             {"drilldown": "geography:lsoa", "pagesize": 100, "page": 3},
             f"SELECT g.country_code, g.country_name, g.region_code, g.region_name, "
             f"g.la_code, g.la_name, g.msoa_code, g.msoa_name, g.lsoa_code, g.lsoa_name, "
             f"{uc}, count(*) OVER () AS total FROM fact_pip f JOIN dim_geography g "
             f"ON g.oa_code = f.oa_code WHERE f.month_id = {latest} GROUP BY g.country_code, "
             f"g.country_name, g.region_code, g.region_name, g.la_code, g.la_name, "
             f"g.msoa_code, g.msoa_name, g.lsoa_code, g.lsoa_name "
             f"ORDER BY g.country_code, g.region_code, g.la_code, g.msoa_code, g.lsoa_code "
             f"LIMIT 100 OFFSET 300",
             f"SELECT {uc} FROM fact_pip f WHERE f.month_id = {latest}"),
        Case("pip_top_la", "pip",
             {"drilldown": "geography:la", "top": "3:claimants:geography"},
             f"SELECT * EXCLUDE (r) FROM (SELECT g.country_code, g.country_name, "
             f"g.region_code, g.region_name, g.la_code, g.la_name, {uc}, row_number() OVER ("
             f"PARTITION BY g.country_code, g.region_code ORDER BY sum(f.n) DESC, "
             f"g.country_code, g.region_code, g.la_code) AS r FROM fact_pip f "
             f"JOIN dim_geography g ON g.oa_code = f.oa_code WHERE f.month_id = {latest} "
             f"GROUP BY g.country_code, g.country_name, g.region_code, g.region_name, "
             f"g.la_code, g.la_name) WHERE r <= 3 ORDER BY country_code, region_code, la_code",
             f"SELECT {uc} FROM fact_pip f WHERE f.month_id = {latest}"),
        Case("hb_tenure_regions", "housing_benefit",
             {"drilldown": "tenure",
              "cut": "geography:E92000001,E12000007;E92000001,E12000008;W92000004"},
             f"SELECT d.tenure_code, d.tenure_name, d.tenure_order, {hb} "
             f"FROM fact_housing_benefit f JOIN dim_geography g ON g.oa_code = f.oa_code "
             f"JOIN dim_tenure d ON d.tenure_code = f.tenure WHERE f.month_id = {latest} "
             f"AND (g.region_code IN ('E12000007', 'E12000008') OR "
             f"g.country_code = 'W92000004') GROUP BY ALL ORDER BY d.tenure_order, "
             f"d.tenure_code",
             f"SELECT {hb} FROM fact_housing_benefit f JOIN dim_geography g "
             f"ON g.oa_code = f.oa_code WHERE f.month_id = {latest} AND (g.region_code IN "
             f"('E12000007', 'E12000008') OR g.country_code = 'W92000004')"),
        Case("sanctions_month_outcome", "sanctions",
             {"drilldown": "time:month|outcome"},
             f"SELECT t.year, t.quarter, t.quarter_label, t.month, t.month_label, "
             f"o.outcome_code, o.outcome_name, o.outcome_order, {uc} FROM fact_sanctions f "
             f"JOIN dim_month t ON t.month_id = f.month_id JOIN dim_outcome o "
             f"ON o.outcome_code = f.outcome GROUP BY ALL ORDER BY t.year, t.quarter, "
             f"t.month, o.outcome_order, o.outcome_code",
             f"SELECT {uc} FROM fact_sanctions f"),
        Case("sanctions_jcp_range", "sanctions",
             {"drilldown": "jcp:district", "cut": f"time@ym:{y},{prev % 100 - 2}-{y},"
                                                   f"{prev % 100}|benefit:JSA"},
             f"SELECT j.group_code, j.group_name, j.district_code, j.district_name, {uc} "
             f"FROM fact_sanctions f JOIN dim_jcp j ON j.office_code = f.jcp_office "
             f"WHERE f.month_id BETWEEN {prev - 2} AND {prev} AND f.benefit = 'JSA' "
             f"GROUP BY ALL ORDER BY j.group_code, j.district_code",
             f"SELECT {uc} FROM fact_sanctions f WHERE f.month_id BETWEEN {prev - 2} AND "
             f"{prev} AND f.benefit = 'JSA'"),
        Case("cap_children_band", "benefit_cap", {"drilldown": "children|cap_band"},
             f"SELECT c.children_code, c.children_name, c.children_order, b.cap_band_code, "
             f"b.cap_band_name, b.cap_band_order, {_raw_cols('f', 'weekly_reduction')} "
             f"FROM fact_benefit_cap f JOIN dim_children c ON c.children_code = f.children "
             f"JOIN dim_cap_band b ON b.cap_band_code = f.cap_band WHERE f.month_id = "
             f"{latest} GROUP BY ALL ORDER BY c.children_order, c.children_code, "
             f"b.cap_band_order, b.cap_band_code",
             f"SELECT {_raw_cols('f', 'weekly_reduction')} FROM fact_benefit_cap f "
             f"WHERE f.month_id = {latest}"),
        Case("nino_quarter_area", "nino_registrations", {"drilldown": "time:quarter|world_area"},
             f"SELECT t.year, t.quarter, t.quarter_label, w.world_area_code, "
             f"w.world_area_name, w.world_area_order, {uc} FROM fact_nino_registrations f "
             f"JOIN dim_quarter t ON t.quarter_id = f.quarter_id JOIN dim_world_area w "
             f"ON w.world_area_code = f.world_area GROUP BY ALL ORDER BY t.year, t.quarter, "
             f"w.world_area_order, w.world_area_code",
             f"SELECT {uc} FROM fact_nino_registrations f"),
        Case("hb_lsoa_oas", "housing_benefit",
             {"drilldown": "geography:oa", "cut": "LSOA"},  # cut filled in at run time
             "", ""),
    ]


def _lsoa_case(case: Case, con: duckdb.DuckDBPyConnection, latest: int) -> Case:
    """The selective query: the OAs of one LSOA (the first with data), one month."""
    row = con.execute(
        "SELECT g.country_code, g.region_code, g.la_code, g.msoa_code, g.lsoa_code "
        "FROM fact_housing_benefit f JOIN dim_geography g ON g.oa_code = f.oa_code "
        "WHERE f.month_id = ? ORDER BY 5 LIMIT 1", [latest]).fetchone()
    assert row is not None
    hb = _raw_cols("f", "weekly_award")
    where = (f"f.month_id = {latest} AND g.country_code = '{row[0]}' AND g.region_code = "
             f"'{row[1]}' AND g.la_code = '{row[2]}' AND g.msoa_code = '{row[3]}' AND "
             f"g.lsoa_code = '{row[4]}'")
    cols = ("g.country_code, g.country_name, g.region_code, g.region_name, g.la_code, "
            "g.la_name, g.msoa_code, g.msoa_name, g.lsoa_code, g.lsoa_name, g.oa_code")
    return Case(case.name, case.cube, {"drilldown": "geography:oa", "cut": "geography:"
                                       + ",".join(row), "pagesize": 1000},
                f"SELECT {cols}, {hb}, count(*) OVER () AS total FROM fact_housing_benefit f "
                f"JOIN dim_geography g ON g.oa_code = f.oa_code WHERE {where} GROUP BY {cols} "
                "ORDER BY g.country_code, g.region_code, g.la_code, g.msoa_code, "
                "g.lsoa_code, g.oa_code LIMIT 1000",
                f"SELECT {hb} FROM fact_housing_benefit f JOIN dim_geography g "
                f"ON g.oa_code = f.oa_code WHERE {where}")


# --- timing -----------------------------------------------------------------------------------


def _values(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in canonical(table).to_pylist()]


def check(case: Case, engine: Callable[[], Any], hand: Callable[[], Any]) -> None:
    """Both sides must give the same cells (attributes and raw values) and summary."""
    raw = engine()
    cells, summary = hand()
    ours = raw.cells.select([c for c in raw.cells.column_names
                             if c not in {"claimants", "people", "decisions", "households",
                                          "registrations", "weekly_award_sum",
                                          "weekly_award_mean", "weekly_reduction_sum",
                                          "weekly_reduction_mean"}])
    theirs = cells.drop_columns(["total"]) if "total" in cells.column_names else cells
    if _values(ours) != _values(theirs):
        raise AssertionError(f"{case.name}: engine and hand-written SQL disagree")
    if _values(raw.summary) != _values(summary):
        raise AssertionError(f"{case.name}: summaries disagree")


def median_ms(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


Row = tuple[str, float, float, float, float]


def run(warehouse: Path, model: Model, repeat: int) -> list[Row]:
    """(query, engine cold ms, engine warm ms, engine without resident rollups ms, hand ms)
    medians per query."""
    ws = Workspace.open(model, warehouse)
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET enable_progress_bar = false")
    latest = int(con.execute("SELECT max(month_id) FROM fact_housing_benefit").fetchone()[0])  # type: ignore[index]
    rows = []
    for case in mix(latest):
        if case.name == "hb_lsoa_oas":
            case = _lsoa_case(case, con, latest)
        browser = ws.cube(case.cube)

        sql_raw = RawCube(ws.engine, browser.cube, ws.gate.k, resident=False)

        def warm(c: Case = case, b: Any = browser, raw: RawCube = browser.raw) -> Any:
            # what the gate reads for an unpaged request ordering and filtering on
            # attributes only (RawCube.lean; cube/raw.py); else the raw page with totals
            q = b.query(Request.make(c.cube, **c.request))
            lean = q.pagesize is None and not q.needs_measure_values_in_sql
            return raw.lean(q) if lean else raw.aggregate(q)

        def cold(c: Case = case, b: Any = browser) -> Any:
            b.raw._compiled.clear()  # compile every time, as for a query never seen before
            b.raw._plans.clear()
            b.raw._rollups.clear()
            b.raw._sources.clear()
            return warm(c, b)

        def sql(c: Case = case, b: Any = browser, raw: RawCube = sql_raw) -> Any:
            return warm(c, b, raw)

        def hand(c: Case = case) -> tuple[pa.Table, pa.Table]:
            return (con.execute(c.cells_sql).to_arrow_table(),
                    con.execute(c.summary_sql).to_arrow_table())

        check(case, cold, hand)
        check(case, sql, hand)
        for _ in range(2):  # warm all
            warm()
            sql()
            hand()
        c_times: list[float] = []
        w_times: list[float] = []
        s_times: list[float] = []
        h_times: list[float] = []
        timed: list[tuple[Callable[[], Any], list[float]]] = [
            (cold, c_times), (warm, w_times), (sql, s_times), (hand, h_times)]
        orders = list(itertools.permutations(timed))
        for i in range(repeat):
            # Interleaved, so drift hits all alike, and each round in the next of every
            # order: whatever runs just after the hand SQL pays for DuckDB's worker threads
            # still winding down (measured: a never-seen shape 3.25 ms right after it,
            # 1.73 ms otherwise). Rotating one order is not enough: it keeps each variant's
            # successor, so "cold" followed the hand SQL in three rounds of four.
            for fn, times in orders[i % len(orders)]:
                times += median_ms(fn, 1)
        rows.append((case.name, statistics.median(c_times), statistics.median(w_times),
                     statistics.median(s_times), statistics.median(h_times)))
    con.close()
    ws.close()
    return rows


def report(rows: list[Row], label: str) -> None:
    print(f"\nstatcube query engine vs hand-written DuckDB SQL ({label}; median ms)")
    print("  cold = SQL compiled for every request; warm = compiled SQL reused (same query "
          "seen before); sql = warm with resident rollups off")
    print(f"{'query':26} {'cold':>8} {'warm':>8} {'sql':>8} {'hand':>8} {'cold/hand':>10} "
          f"{'warm/hand':>10} {'sql/hand':>10}")
    for name, c, w, q, h in rows:
        print(f"{name:26} {c:8.2f} {w:8.2f} {q:8.2f} {h:8.2f} {c / h:10.2f} {w / h:10.2f} "
              f"{q / h:10.2f}")
    timings = [r[1:] for r in rows]  # (cold, warm, sql, hand) of each query
    tc, tw, tq, th = (sum(t[i] for t in timings) for i in (0, 1, 2, 3))
    print(f"{'total':26} {tc:8.2f} {tw:8.2f} {tq:8.2f} {th:8.2f} {tc / th:10.2f} "
          f"{tw / th:10.2f} {tq / th:10.2f}")
    for i, what in ((0, "cold"), (1, "warm"), (2, "sql")):
        geo = math.exp(sum(math.log(t[i] / t[3]) for t in timings) / len(rows))
        print(f"geometric mean of {what}/hand ratios: {geo:.3f} (target ≤ 1.15)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_query", description=__doc__)
    warehouse_args(p)
    args = p.parse_args(argv)
    model = load_model(default_model_path())
    warehouse, label = warehouse_from_args(model, args)
    report(run(warehouse, model, args.repeat), label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
