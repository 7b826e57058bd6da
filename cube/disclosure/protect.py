"""Cell key perturbation: raw cells in, published values out. Two paths, one arithmetic.

Counts:  n̂ = 0 if n = 0, else n + ptable[min(n, NCAT), ckey]   (ckey = Σ record keys mod K)
Sums:    Ŝ = max(0, S + sign(v)·⌊(x_max·|v|·δ‰ + 500) / 1000⌋)  with v = ptable[NCAT, ckey2],
         and Ŝ = 0 where n̂ = 0
Cells whose n̂ is 0 are dropped, exactly as empty cells are absent.
Means:   round_half_up(Ŝ / n̂) in pence, only when n̂ ≥ threshold; otherwise withheld.

The same formulas exist twice — vectorised here (numpy over Arrow) for query results, and as
SQL in sql_path.py for exports and for queries that sort or filter on values — because both
paths must give identical values for the same cell; tests compare them cell by cell. All
arithmetic is in integer pence so floating point cannot make the two disagree. Amounts are
presented in pounds (pence / 100).

Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from cube.disclosure.rules import Protection
from cube.model import Aggregate

N, RK, RK2 = "__n", "__rk", "__rk2"


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


def published_sums(s: NDArray[np.int64], xmax: NDArray[np.int64], ckey2: NDArray[np.int64],
                   p: Protection) -> NDArray[np.int64]:
    v = p.ptable.symmetric_row()[ckey2].astype(np.int64)
    mag = (xmax * np.abs(v) * p.delta_milli + 500) // 1000
    return np.maximum(0, s + np.sign(v) * mag)


def published_means(s_hat: NDArray[np.int64], n_hat: NDArray[np.int64], p: Protection
                    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    withheld = n_hat < p.mean_threshold
    safe_n = np.where(withheld, 1, n_hat)
    mean = (2 * s_hat + safe_n) // (2 * safe_n)
    return mean, withheld


def protect_table(raw: pa.Table, aggregates: Sequence[Aggregate], p: Protection,
                  keep: Sequence[str], *, drop_zero: bool = True) -> pa.Table:
    """Raw cells → public columns ``keep`` + one column per aggregate (+ withheld flags).

    Cells published as zero are dropped (``drop_zero``), exactly like empty cells: a visible
    zero row would reveal that 1 or 2 records are there. A summary (one cell that must be
    answered) keeps its row, with every sum published as zero along with its count.
    """
    n = _ints(raw, N)
    n_hat = published_counts(n, _ints(raw, RK), p)
    if drop_zero and len(n_hat) and not n_hat.all():
        visible = n_hat != 0
        raw = raw.filter(pa.array(visible))
        n, n_hat = n[visible], n_hat[visible]
    cols: dict[str, pa.Array] = {name: raw.column(name) for name in keep}
    sums: dict[str, NDArray[np.int64]] = {}
    for a in aggregates:
        if a.measure.kind == "count":
            cols[a.name] = pa.array(n_hat, pa.int64())
            continue
        m = a.measure.name
        if m not in sums:
            sums[m] = np.where(n_hat == 0, 0, published_sums(
                _ints(raw, f"__{m}_sum"), _ints(raw, f"__{m}_max"), _ints(raw, RK2), p))
        if a.function == "sum":
            cols[a.name] = pa.array(sums[m] / 100.0, pa.float64())
        else:
            mean, withheld = published_means(sums[m], n_hat, p)
            cols[a.name] = pa.array(mean / 100.0, pa.float64(), mask=withheld)
            cols[withheld_column(a.name)] = pa.array(withheld, pa.bool_())
    return pa.table(cols)
