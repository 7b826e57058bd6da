"""The cost of disclosure control: protected answers against raw ones, in the same run.

    python -m bench.bench_protect                  # scale 0.05, 12 months (built once, reused)
    python -m bench.bench_protect --scale 0.01 --repeat 15

For each question of a fixed mix, the same ``Query`` is answered twice, interleaved, on the
same read-only DuckDB file and the same browser (so both reuse compiled SQL, as a server
does):

- **raw**: ``RawCube.aggregate`` — cells and summary with the internal columns
  (count, key sums, amount sums and maxima), i.e. the unprotected query;
- **protected**: ``Gate.aggregate`` — what every public output gets. Two groups:

  * *numpy path* (no ordering or filtering on values): the raw query above, then the
    p-table lookups, magnitudes and means in numpy, and the result type's checks;
  * *SQL path* (order, ``having`` or top-N on values): the protected SQL template — the
    aggregation joined to ``sdc_ptable`` (twice when amounts are asked for) — plus the
    summary statement.

A third group times the export path: draining ``Gate.stream`` (protected SQL) against
draining the raw statement of the same query as a stream.

The report gives medians per query, the ratio protected/raw, the geometric mean of the
ratios and the ratio of total time, per group. Target: at most 1.10 (10% extra latency).
The warehouse is synthetic and lives under ``data/bench/`` (shared with bench_query).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from bench.common import warehouse_args, warehouse_from_args
from cube import sql as compiler
from cube.model import Model, default_model_path, load_model
from cube.query import Query, Request
from cube.workspace import Workspace

ALL = 1_000_000


@dataclass(frozen=True)
class Case:
    name: str
    cube: str
    request: dict[str, Any]


NUMPY_MIX = [
    Case("hb_region", "housing_benefit", {"drilldown": "geography:region"}),
    Case("hb_la_tenure", "housing_benefit", {"drilldown": "geography:la|tenure"}),
    Case("uc_la", "universal_credit", {"drilldown": "geography:la"}),
    Case("uc_month_conditionality", "universal_credit",
         {"drilldown": "time:month|conditionality"}),
    Case("pip_lsoa_page", "pip", {"drilldown": "geography:lsoa", "pagesize": 100, "page": 3}),
    Case("hb_oa_all", "housing_benefit", {"drilldown": "geography:oa", "pagesize": ALL}),
    Case("sanctions_month_outcome", "sanctions", {"drilldown": "time:month|outcome"}),
    Case("cap_children_band", "benefit_cap", {"drilldown": "children|cap_band"}),
    Case("nino_quarter_area", "nino_registrations", {"drilldown": "time:quarter|world_area"}),
    Case("hb_lsoa_oas", "housing_benefit", {"drilldown": "geography:oa", "cut": "LSOA",
                                            "pagesize": 1000}),
]

SQL_MIX = [
    Case("pip_top_la", "pip", {"drilldown": "geography:la", "top": "3:claimants:geography"}),
    Case("hb_la_mean_desc", "housing_benefit",
         {"drilldown": "geography:la", "order": "weekly_award_mean:desc"}),
    Case("uc_oa_having_page", "universal_credit",
         {"drilldown": "geography:oa", "having": "people>=10", "pagesize": 100}),
    Case("cap_la_sum_desc", "benefit_cap",
         {"drilldown": "geography:la", "order": "weekly_reduction_sum:desc"}),
    Case("sanctions_office_top", "sanctions", {"drilldown": "jcp:office", "top": "5:decisions"}),
    Case("hb_msoa_claimants_desc", "housing_benefit",
         {"drilldown": "geography:msoa", "order": "claimants:desc", "pagesize": 50}),
]

STREAM_MIX = [
    Case("hb_oa_stream", "housing_benefit", {"drilldown": "geography:oa", "pagesize": ALL}),
    Case("uc_oa_gender_stream", "universal_credit",
         {"drilldown": "geography:oa|gender", "pagesize": ALL}),
    Case("cap_lsoa_month_stream", "benefit_cap",
         {"drilldown": "geography:lsoa|time:month", "pagesize": ALL}),
]


def _lsoa_cut(warehouse: Path) -> str:
    """A selective cut: one LSOA with data (its OAs are the cells)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        row = con.execute(
            "SELECT g.country_code, g.region_code, g.la_code, g.msoa_code, g.lsoa_code "
            "FROM fact_housing_benefit f JOIN dim_geography g ON g.oa_code = f.oa_code "
            "ORDER BY 5 LIMIT 1").fetchone()
    finally:
        con.close()
    assert row is not None
    return "geography:" + ",".join(row)


def _times(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


#: (query, raw median ms, protected median ms, cells, raw min ms, protected min ms)
Row = tuple[str, float, float, int, float, float]
#: (query, raw call, protected call, cells)
Pair = tuple[str, Callable[[], Any], Callable[[], Any], int]


def _compare(pairs: list[Pair], repeat: int) -> list[Row]:
    rows = []
    for name, raw, protected, cells in pairs:
        for _ in range(3):  # warm caches (compiled SQL, DuckDB buffers) on both sides
            raw()
            protected()
        r_times: list[float] = []
        p_times: list[float] = []
        for i in range(repeat):  # interleaved, alternating who goes first
            if i % 2:
                r_times.append(_times(raw))
                p_times.append(_times(protected))
            else:
                p_times.append(_times(protected))
                r_times.append(_times(raw))
        rows.append((name, statistics.median(r_times), statistics.median(p_times), cells,
                     min(r_times), min(p_times)))
    return rows


def run(warehouse: Path, model: Model, repeat: int) -> dict[str, list[Row]]:
    ws = Workspace.open(model, warehouse)
    gate = ws.gate
    p = gate.protection
    lsoa = _lsoa_cut(warehouse)

    def query(case: Case) -> tuple[Any, Query]:
        request = {k: (lsoa if v == "LSOA" else v) for k, v in case.request.items()}
        b = ws.cube(case.cube)
        return b, b.query(Request.make(case.cube, **request))

    out: dict[str, list[Row]] = {}
    for group, mix in (("numpy path", NUMPY_MIX), ("SQL path", SQL_MIX)):
        pairs: list[Pair] = []
        for case in mix:
            b, q = query(case)
            assert q.needs_measure_values_in_sql == (group == "SQL path"), case.name
            cells = gate.aggregate(b.raw, q).cells.num_rows

            def raw(b: Any = b, q: Query = q) -> Any:
                return b.raw.aggregate(q)

            def protected(b: Any = b, q: Query = q) -> Any:
                return gate.aggregate(b.raw, q)

            pairs.append((case.name, raw, protected, cells))
        out[group] = _compare(pairs, repeat)

    pairs = []
    for case in STREAM_MIX:
        b, q = query(case)
        q = replace(q, page=None, pagesize=None)

        def drain_raw(q: Query = q) -> int:  # compiled each time, as gate.stream does
            return sum(batch.num_rows for batch in ws.engine.stream(compiler.finish(q, p.k)))

        def drain_protected(b: Any = b, q: Query = q) -> int:
            return sum(batch.num_rows for batch in gate.stream(b.raw, q))

        pairs.append((case.name, drain_raw, drain_protected, drain_protected()))
    out["export stream"] = _compare(pairs, repeat)
    ws.close()
    return out


def report(groups: dict[str, list[Row]], label: str) -> None:
    print(f"\nstatcube: cost of disclosure control ({label}; ms, warm)")
    print("  median and best of the interleaved runs; 'best' resists noise from other load")
    for group, rows in groups.items():
        print(f"\n{group}")
        print(f"  {'query':26} {'cells':>8} {'raw':>8} {'protected':>10} {'ratio':>7}"
              f" {'best raw':>9} {'best prot':>10} {'ratio':>7}")
        for name, r, pr, cells, rmin, pmin in rows:
            print(f"  {name:26} {cells:8,} {r:8.2f} {pr:10.2f} {pr / r:7.3f}"
                  f" {rmin:9.2f} {pmin:10.2f} {pmin / rmin:7.3f}")
        tr, tp = sum(r[1] for r in rows), sum(r[2] for r in rows)
        br, bp = sum(r[4] for r in rows), sum(r[5] for r in rows)
        print(f"  {'total':26} {'':8} {tr:8.2f} {tp:10.2f} {tp / tr:7.3f}"
              f" {br:9.2f} {bp:10.2f} {bp / br:7.3f}")
        geo = math.exp(sum(math.log(r[2] / r[1]) for r in rows) / len(rows))
        geo_best = math.exp(sum(math.log(r[5] / r[4]) for r in rows) / len(rows))
        print(f"  geometric mean of protected/raw: {geo:.3f} median, {geo_best:.3f} best "
              "(target ≤ 1.10)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_protect", description=__doc__)
    warehouse_args(p)
    args = p.parse_args(argv)
    model = load_model(default_model_path())
    warehouse, label = warehouse_from_args(model, args)
    report(run(warehouse, model, args.repeat), label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
