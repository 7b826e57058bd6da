"""What the magnitude protection costs users, and what it protects: measured, not assumed.

    python -m bench.bench_magnitudes                  # scale 0.2, 3 months (built once)
    python -m bench.bench_magnitudes --scale 0.05

For every cube with an amount measure, the local authority × month cells are asked for
through the public API (``CubeBrowser.aggregate``: the gate, as every output gets them) and
compared with the raw cells of the same query (``CubeBrowser._raw_aggregate``). Printed, for
cells with a published count of at least 100:

- the share of published means within 1% of the true mean (target: ≥ 95% in every cube),
  the median and 95th percentile of the relative error;
- the same for the published totals;
- and how much of the mean's error the count noise alone would cause (the mean a user would
  get from the true total over the published count), so the two sources can be told apart.

Then, over output-area × month cells: how many cells have one record and publish a total
(must be none), and how many cells the p% dominance rule marks (with the bound the gate
uses) publish their true total (must be none).

Only aggregate figures are printed, never a cell.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import warehouse_args, warehouse_from_args
from cube import sql as compiler
from cube.model import default_model_path, load_model
from cube.query import Request
from cube.workspace import Workspace

ALL = 1_000_000
KEYS = ["geography.la_code", "time.year", "time.month"]


def _cells(ws: Workspace, cube: str, drilldown: str) -> tuple[dict[str, np.ndarray],
                                                                 dict[str, np.ndarray]]:
    """Raw and published cells of one query, aligned on their keys (published cells only)."""
    b = ws.cube(cube)
    measure = next(m for m in b.cube.measures if m.kind == "amount").name
    count = next(a for a in b.cube.aggregates if a.measure.kind == "count").name
    total = next(a for a in b.cube.aggregates if a.measure.name == measure
                 and a.function == "sum").name
    mean = next(a for a in b.cube.aggregates if a.measure.name == measure
                and a.function == "avg").name
    query = b.query(Request.make(cube, drilldown=drilldown,
                                 aggregates=f"{count}|{total}|{mean}", pagesize=ALL))
    raw = b._raw_aggregate(query).cells
    pub = b.aggregate_query(query).cells
    keys = [a.ref for a in query.cell_attributes]
    index = {tuple(r): i for i, r in enumerate(zip(*(raw.column(k).to_pylist() for k in keys),
                                                  strict=True))}
    rows = [index[tuple(r)] for r in zip(*(pub.column(k).to_pylist() for k in keys),
                                         strict=True)]
    r = {"n": raw.column(compiler.N).to_numpy()[rows].astype(np.int64),
         "s": raw.column(compiler.sum_col(measure)).to_numpy()[rows].astype(np.int64),
         "x1": raw.column(compiler.max_col(measure)).to_numpy()[rows].astype(np.int64)}
    p = {"n": pub.column(count).to_numpy().astype(np.int64),
         "s": np.asarray(pub.column(total).to_numpy(zero_copy_only=False), dtype=float),
         "mean": np.asarray(pub.column(mean).to_numpy(zero_copy_only=False), dtype=float)}
    return r, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    warehouse_args(ap, scale=0.2, months=3, repeat=1)
    args = ap.parse_args()
    model = load_model(default_model_path())
    path, label = warehouse_from_args(model, args)
    ws = Workspace.open(model, path)
    print(f"magnitude protection, {label}, {time.strftime('%Y-%m-%d')}")
    print(f"parameters: {ws.gate.protection.report_parameters()}")
    for cube in ws.cube_names:
        if not any(m.kind == "amount" for m in ws.cube(cube).cube.measures):
            continue
        r, p = _cells(ws, cube, "geography:la|time:month")
        big = p["n"] >= 100
        true_mean = r["s"][big] / r["n"][big]
        mean_err = np.abs(p["mean"][big] * 100 - true_mean) / true_mean
        sum_err = np.abs(p["s"][big] * 100 - r["s"][big]) / r["s"][big]
        count_only = np.abs(r["s"][big] / p["n"][big] - true_mean) / true_mean
        print(f"\n{cube}: LA × month, {int(big.sum())} of {big.size} published cells "
              "with a published count >= 100")
        for name, err in (("mean", mean_err), ("total", sum_err),
                          ("true total / published count", count_only)):
            print(f"  {name:30s} within 1%: {100 * float((err <= 0.01).mean()):5.1f}%   "
                  f"median {100 * float(np.median(err)):.3f}%   "
                  f"p95 {100 * float(np.percentile(err, 95)):.3f}%")
        r, p = _cells(ws, cube, "geography:oa|time:month")
        lone = (r["n"] == 1) & ~np.isnan(p["s"])
        # the bound the gate uses marks a superset of the exact p% rule's cells
        dom = 100 * np.maximum(r["s"] - 2 * r["x1"], 0) < 10 * r["x1"]
        shown = ~np.isnan(p["s"])
        exact = shown & dom & (np.rint(p["s"] * 100) == r["s"])
        print(f"  OA × month: {int((r['n'] == 1).sum()):,} published one-record cells, "
              f"{int(lone.sum())} publish a total; {int((dom & shown).sum()):,} dominated "
              f"cells publish a total, {int(exact.sum())} of them the true one")


if __name__ == "__main__":
    main()
