"""Utility of the protected output: how far published cells are from the raw ones, in
aggregate (``statcube sdc-report``).

An operator choosing or checking protection parameters needs to know what the noise costs
users: how much counts move on average, how many cells change at all, how far the published
table's distribution is from the raw one, and how much published means err. This module
computes those figures for one cube at one level and period, from the raw cells and the
values the gate publishes for them (protect.py's formulas on the same raw cells, so exactly
the values users see).

It reports aggregate statistics only — never a raw cell value — and refuses levels with
fewer than :data:`MIN_CELLS` cells, where an average over cells would come too close to
being one cell's own deviation.

Figures, over the non-empty cells of the level (``n`` raw, ``n̂`` published):

- mean absolute deviation of counts: mean of ``|n̂ − n|``;
- share of cells changed: share with ``n̂ ≠ n``;
- Hellinger distance between the raw and the published table, each scaled to sum to 1:
  ``H = sqrt(½ · Σ (√p − √q)²)``, between 0 (same distribution) and 1; utility ``1 − H``;
- for amount cubes, relative error of published means: mean of ``|m̂ − m| / m`` over cells
  whose mean is published (``m = S / n`` raw, ``m̂ = Ŝ / n̂`` published), and the share of
  means withheld.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from cube import sql as compiler
from cube.disclosure.protect import (
    RK,
    RK2,
    N,
    published_counts,
    published_means,
    published_sums,
)
from cube.disclosure.rules import check_query
from cube.errors import ArgumentError
from cube.query import MAX_PAGESIZE, Query, Request

if TYPE_CHECKING:
    from cube.workspace import CubeBrowser

#: Fewest cells a report covers: with fewer, averages come close to single cells.
MIN_CELLS = 10


@dataclass(frozen=True)
class MeanUtility:
    """Utility of one published mean (an ``avg`` aggregate)."""

    aggregate: str
    published: int
    withheld: int
    relative_error: float | None  # mean |m̂ − m| / m over published means; None if none

    def to_json(self) -> dict[str, Any]:
        return {"aggregate": self.aggregate, "published": self.published,
                "withheld": self.withheld, "mean_relative_error": self.relative_error}


@dataclass(frozen=True)
class UtilityReport:
    """Aggregate utility figures for one cube, level and period."""

    cube: str
    level: str
    period: str
    release: str
    ptable: str
    parameters: dict[str, Any]
    cells: int
    count_aggregate: str
    mean_absolute_deviation: float
    share_changed: float
    hellinger: float
    means: tuple[MeanUtility, ...]

    @property
    def hellinger_utility(self) -> float:
        return 1.0 - self.hellinger

    def to_json(self) -> dict[str, Any]:
        return {
            "cube": self.cube, "level": self.level, "period": self.period,
            "release": self.release, "ptable": self.ptable,
            "parameters": dict(self.parameters), "cells": self.cells,
            "count_aggregate": self.count_aggregate,
            "mean_absolute_deviation": self.mean_absolute_deviation,
            "share_changed": self.share_changed,
            "hellinger_distance": self.hellinger,
            "hellinger_utility": self.hellinger_utility,
            "means": [m.to_json() for m in self.means],
        }

    def to_text(self) -> str:
        p = self.parameters
        level = self.level.split(":")[-1]
        level_name = level.upper() if len(level) <= 4 else level
        c = self.count_aggregate
        rows = [
            ("cells (non-empty)", f"{self.cells:,}", ""),
            (f"{c}: mean absolute deviation", f"{self.mean_absolute_deviation:.3f}", ""),
            (f"{c}: share of cells changed", f"{100 * self.share_changed:.1f}%", ""),
            (f"{c}: Hellinger distance", f"{self.hellinger:.5f}",
             f"utility {self.hellinger_utility:.5f}"),
        ]
        for m in self.means:
            err = "n/a" if m.relative_error is None else f"{100 * m.relative_error:.3f}%"
            rows.append((f"{m.aggregate}: relative error of {level_name} means", err,
                         f"{m.published:,} published, {m.withheld:,} withheld"))
        width = max(len(label) for label, _, _ in rows) + 2
        lines = [
            f"sdc-report: {self.cube} by {self.level}, {self.period} (release {self.release})",
            f"p-table {self.ptable}: D={p['D']}, V={p['V']}, js={p['js']}; "
            f"magnitudes {_magnitude_words(p['magnitude'])}; totals and means need a "
            f"published count >= {p['mean_threshold']}",
        ]
        lines += [f"  {label.ljust(width)}{value:>10}" + (f"  ({note})" if note else "")
                  for label, value, note in rows]
        return "\n".join(lines)


def _magnitude_words(m: Mapping[str, Any]) -> str:
    return (f"p_small={m['p_small']}, p_large={m['p_large']}, flex_point={m['flex_point']}, "
            f"q={m['q']}, dominance p={m['dominance_p']}%")


def _period_cut(browser: CubeBrowser, period: str | None) -> tuple[str, str]:
    """(time cut string, period label) for ``YYYY-MM`` (or ``YYYY-Qn`` for quarterly cubes);
    default: the newest visible period."""
    cube = browser.cube
    tdim = cube.time_dimension
    if tdim is None:
        return "", "all"
    if period is None:
        latest = browser.latest_period
        if latest is None:
            raise ArgumentError(f"cube {cube.name!r} has no data", parameter="period")
        y, m = latest
    else:
        try:
            y_text, rest = period.split("-", 1)
            y = int(y_text)
            m = int(rest[1:]) * 3 if rest[:1].upper() == "Q" else int(rest)
            if not 1 <= m <= 12:
                raise ValueError(period)
        except ValueError:
            raise ArgumentError("period must be YYYY-MM (or YYYY-Qn for a quarterly cube)",
                                parameter="period", value=period) from None
    parts = {"year": y, "quarter": (m - 1) // 3 + 1, "month": m}
    hier = tdim.hierarchy()
    if cube.grain == "quarter":
        levels = [lv.name for lv in hier.levels if lv.name != "month"]
        label = f"{y:04d}-Q{parts['quarter']}"
    else:
        levels = [lv.name for lv in hier.levels]
        label = f"{y:04d}-{m:02d}"
    return f"{tdim.name}:" + ",".join(str(parts[lv]) for lv in levels), label


def _ints(table: pa.Table, name: str) -> NDArray[np.int64]:
    col = table.column(name).fill_null(0)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def hellinger(raw: NDArray[np.int64], published: NDArray[np.int64]) -> float:
    """Hellinger distance between two tables of counts, each scaled to sum to 1."""
    p_total, q_total = int(raw.sum()), int(published.sum())
    if p_total == 0 or q_total == 0:
        return 0.0 if p_total == q_total else 1.0
    p = np.sqrt(raw / p_total)
    q = np.sqrt(published / q_total)
    return float(np.sqrt(0.5 * np.sum((p - q) ** 2)))


def sdc_report(browser: CubeBrowser, level: str, period: str | None = None) -> UtilityReport:
    """Utility figures for ``level`` (``dim:level`` or ``dim@hierarchy:level``) of the
    browser's cube in one period (default: the newest visible one)."""
    cube = browser.cube
    cut, label = _period_cut(browser, period)
    query: Query = browser.query(Request.make(cube.name, cut=cut, drilldown=level,
                                              page=0, pagesize=MAX_PAGESIZE))
    if len(query.drilldown) != 1:
        raise ArgumentError("give exactly one level, e.g. geography:la", parameter="level",
                            value=level)
    check_query(query)
    gate = browser.ws.gate
    p = gate.protection
    raw = browser.raw.aggregate(query).cells
    cells = raw.num_rows
    if cells < MIN_CELLS:
        raise ArgumentError(
            f"{level} has {cells} non-empty cell(s) in {label}; a report needs at least "
            f"{MIN_CELLS}, so that no figure comes close to describing a single cell",
            parameter="level", value=level, hint="choose a finer level")
    n = _ints(raw, N)
    n_hat = published_counts(n, _ints(raw, RK), p)
    diff = np.abs(n_hat - n)
    means = []
    for a in query.aggregates:
        if a.function != "avg":
            continue
        m = a.measure.name
        s = _ints(raw, compiler.sum_col(m))
        s_hat = published_sums(n, n_hat, s, _ints(raw, compiler.max_col(m)), _ints(raw, RK2), p)
        mean_hat, withheld = published_means(s_hat, n_hat, p)
        shown = ~withheld & (n > 0) & (s > 0)
        true_mean = s[shown] / n[shown]
        rel = np.abs(mean_hat[shown] - true_mean) / true_mean
        means.append(MeanUtility(a.name, int(shown.sum()), int(withheld.sum()),
                                 float(rel.mean()) if rel.size else None))
    count = next(a.name for a in cube.aggregates if a.measure.kind == "count")
    return UtilityReport(
        cube=cube.name, level=query.drilldown[0].level.ref, period=label,
        release=browser.ws.release, ptable=p.ptable.digest[:12],
        parameters=p.report_parameters(),
        cells=cells, count_aggregate=count,
        mean_absolute_deviation=float(diff.mean()),
        share_changed=float((diff > 0).mean()),
        hellinger=hellinger(n, n_hat),
        means=tuple(means),
    )
