"""Cell key perturbation: raw cells in, published values out. Two paths, one arithmetic.

Counts:  n̂ = 0 if n = 0, else n + ptable[min(n, NCAT), ckey]   (ckey = Σ record keys mod K)
Cells whose n̂ is 0 are dropped, exactly as empty cells are absent.

Amount totals (integer pence; S the true total, x1 the largest single amount, W = 100000):

    w    = ⌊W·fp·x1 / (fp·x1 + S)⌋            the flex weight: W for a cell that is its
                                              largest amount, → 0 as S grows past fp·x1
    w_q  = w, then ⌊w_q·w / W⌋ (q − 1 times)  steepness q
    m    = p_large + ⌊(p_small − p_large)·w_q / W⌋          share of x1, in 1/W
    dom  = 100·max(S − 2·x1, 0) < p·x1        the p% dominance rule, with the second largest
                                              amount taken at its largest possible value
    if dom: m = max(m, p·W/100), |v| += mu, sign never 0 (the count noise's sign, else the
            magnitude key's, else the key's parity), noise at least one penny
    mag  = ⌊(x1·|v|·m + W/2) / W⌋             v = ptable[NCAT, ckey2]
    Ŝ    = max(0, S + (n̂ − n)·round(S / n) + sign·mag)

That is the flex function of Gießing & Tent (sdcTools' cellKey), with the cell's size in
units of its largest amount as the flex variable: a cell of a few people gets noise of about
p_small of its largest amount, a cell of hundreds a few percent of one amount — a tiny share
of its total. The ``(n̂ − n)·round(S/n)`` term treats the people the count noise added or took
away as people with the cell's mean amount, so a published mean Ŝ / n̂ is not thrown off by
the count noise; it reveals n̂, which is published anyway, not n.

The mean threshold: where n̂ < threshold, the mean *and the total* are withheld (null, with
``<aggregate>_withheld``): a total over a handful of people is nearly their awards, and a
lone claimant's total would be their award in the p-table's zero-noise share of cases.
Means:   round_half_up(Ŝ / n̂) in pence, where not withheld.

The same formulas exist twice — vectorised here (numpy over Arrow) for query results, and as
SQL in sql_path.py for exports and for queries that sort or filter on values — because both
paths must give identical values for the same cell; tests compare them cell by cell. All
arithmetic is in integer pence, every intermediate below 2**53, so floating point cannot make
the two disagree. Amounts are presented in pounds (pence / 100).

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from cube.disclosure.rules import MAGNITUDE_SCALE, Protection
from cube.model import Aggregate
from cube.sql import RK, RK2, N, max_col, sum_col

__all__ = ["RK", "RK2", "N", "dominated", "flex_share", "has_withheld_flag", "protect_table",
           "published_counts", "published_means", "published_sums", "withheld_column"]


def withheld_column(aggregate: str) -> str:
    return f"{aggregate}_withheld"


def _ints(table: pa.Table, name: str) -> NDArray[np.int64]:
    col = table.column(name)
    if col.null_count:  # the SQL coalesces raw columns, so this is the rare case
        col = col.fill_null(0)
    return np.asarray(col.to_numpy(), dtype=np.int64)


def published_counts(n: NDArray[np.int64], ckey: NDArray[np.int64],
                     p: Protection) -> NDArray[np.int64]:
    noise = p.ptable.lookup(n, ckey).astype(np.int64)
    return np.where(n == 0, 0, n + noise)


def flex_share(s: NDArray[np.int64], x1: NDArray[np.int64], p: Protection
               ) -> NDArray[np.int64]:
    """m: the share of the largest amount x1 (in 1/MAGNITUDE_SCALE) that one step of
    magnitude noise is, falling from p_small to p_large as the cell grows."""
    scale = MAGNITUDE_SCALE
    fpx = p.flex_point * x1
    w = (scale * fpx) // np.maximum(fpx + s, 1)
    wq = w
    for _ in range(p.q - 1):
        wq = (wq * w) // scale
    lo, hi = p.fixed(p.p_large), p.fixed(p.p_small)
    return np.asarray(lo + ((hi - lo) * wq) // scale, dtype=np.int64)


def dominated(s: NDArray[np.int64], x1: NDArray[np.int64], p: Protection
              ) -> NDArray[np.bool_]:
    """The p% rule — the total less its two largest amounts is under p% of the largest —
    with the second largest taken at its upper bound min(x1, S − x1), which rolls up
    exactly from stored maxima: it marks every cell the exact rule marks, and a few more."""
    return np.asarray(100 * np.maximum(s - 2 * x1, 0) < p.dominance_p * x1, dtype=np.bool_)


def published_sums(n: NDArray[np.int64], n_hat: NDArray[np.int64], s: NDArray[np.int64],
                   x1: NDArray[np.int64], ckey2: NDArray[np.int64], p: Protection
                   ) -> NDArray[np.int64]:
    """Ŝ in pence (0 where n̂ = 0); see the module docstring."""
    scale = MAGNITUDE_SCALE
    v = p.ptable.symmetric_row()[ckey2].astype(np.int64)
    vc = n_hat - n
    safe_n = np.maximum(n, 1)
    mean = (2 * s + safe_n) // (2 * safe_n)
    dom = dominated(s, x1, p)
    m = flex_share(s, x1, p)
    m = np.where(dom, np.maximum(m, p.dominance_p * (scale // 100)), m)
    steps = np.abs(v) + np.where(dom, p.dominance_mu, 0)
    mag = (x1 * steps * m + scale // 2) // scale
    mag = np.where(dom, np.maximum(mag, 1), mag)
    parity = np.where(ckey2 % 2 == 0, 1, -1)
    dom_sign = np.where(vc != 0, np.sign(vc), np.where(v != 0, np.sign(v), parity))
    sign = np.where(dom, dom_sign, np.sign(v))
    s_hat = np.maximum(0, s + vc * mean + sign * mag)
    return np.where(n_hat == 0, 0, s_hat)


def published_means(s_hat: NDArray[np.int64], n_hat: NDArray[np.int64], p: Protection
                    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    withheld = n_hat < p.mean_threshold
    safe_n = np.where(withheld, 1, n_hat)
    mean = (2 * s_hat + safe_n) // (2 * safe_n)
    return mean, withheld


def has_withheld_flag(aggregate: Aggregate) -> bool:
    """Amount aggregates (totals and means) are withheld below the mean threshold and carry
    a ``<aggregate>_withheld`` flag; counts never are."""
    return aggregate.measure.kind == "amount"


def protect_table(raw: pa.Table, aggregates: Sequence[Aggregate], p: Protection,
                  keep: Sequence[str], *, drop_zero: bool = True,
                  keep_last: bool = False) -> pa.Table:
    """Raw cells → public columns ``keep`` + one column per aggregate (+ withheld flags).

    Cells published as zero are dropped (``drop_zero``), exactly like empty cells: a visible
    zero row would reveal that 1 or 2 records are there. A summary (one cell that must be
    answered) keeps its row, with every sum published as zero along with its count.
    Amount totals and means are withheld (null, flag true) where n̂ < the mean threshold.
    ``keep_last`` keeps the last row whatever its count: the gate appends the summary to
    the cells and protects both in one pass (the arithmetic is row by row).
    """
    n = _ints(raw, N)
    n_hat = published_counts(n, _ints(raw, RK), p)
    if drop_zero and len(n_hat) and not n_hat.all():
        visible = n_hat != 0
        if keep_last:
            visible[-1] = True
        raw = raw.filter(pa.array(visible))
        n, n_hat = n[visible], n_hat[visible]
    cols: dict[str, pa.Array] = {name: raw.column(name) for name in keep}
    sums: dict[str, NDArray[np.int64]] = {}
    flags: dict[str, pa.Array] = {}
    for a in aggregates:
        if a.measure.kind == "count":
            cols[a.name] = pa.array(n_hat, pa.int64())
            continue
        m = a.measure.name
        if m not in sums:
            sums[m] = published_sums(n, n_hat, _ints(raw, sum_col(m)), _ints(raw, max_col(m)),
                                     _ints(raw, RK2), p)
        mean, withheld = published_means(sums[m], n_hat, p)
        value = sums[m] if a.function == "sum" else mean
        cols[a.name] = pa.array(value / 100.0, pa.float64(), mask=withheld)
        flags[withheld_column(a.name)] = pa.array(withheld, pa.bool_())
    # Flags after the values, in aggregate order: the column order of the SQL path.
    return pa.table({**cols, **flags})
