"""Perturbation tables (p-tables) for the cell key method.

Why this module exists
----------------------
Under the cell key method every published count gets noise that is *looked up*, not drawn:
each record carries a random key ``rkey`` in ``0..K-1``, a cell's key is the sum of its
records' keys modulo ``K``, and the noise for a cell with original count ``n`` and cell key
``ckey`` is ``values[min(n, ncat), ckey]`` in a fixed table. The same cell therefore gets the
same noise in every query, so repeating a query, or asking for it through a different route,
reveals nothing new. The table has to be built once, deterministically, with statistical
properties that can be stated and checked:

* noise is unbiased (mean 0) and has a fixed variance ``V`` wherever that is achievable;
* noise is bounded, ``|v| <= D``, and never makes a count negative;
* published values ``1..js`` never occur (with ``js = 2`` no 1s or 2s are published);
* zeros stay zero (row 0 is all zeros), so structural zeros are not disguised;
* counts of ``ncat = D + js + 1`` and above share one symmetric row (a discrete Gaussian).

Each row's probabilities are the maximum-entropy distribution under those constraints (the
least informative noise that meets them). The probabilities are then turned into whole
numbers of key slots out of ``K`` by a small integer programme that keeps the mean *exactly*
zero, and the slots are shuffled per row with a fixed seed. The finished table is identified
by a SHA-256 content hash over its parameters and values, so the warehouse and the server can
check that they are using the same table.

This module only computes. It does no I/O, and knows nothing of SQL, the warehouse schema
beyond the Arrow column layout of ``sdc_ptable``, or HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, cast

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, brentq, linprog, milp, minimize

from cube.errors import ConfigError, suggest

__all__ = [
    "FORMAT",
    "PTable",
    "PTableParams",
    "build_ptable",
    "discrete_gaussian",
    "maxent_distribution",
    "noise_support",
    "ptable_digest",
    "row_distribution",
    "slot_counts",
    "variance_range",
]

#: Version tag of the canonical serialisation hashed into :attr:`PTable.digest`.
FORMAT: Final = "statcube-ptable/1"

_MAX_D: Final = 127  # pvalue is stored as int8
_MIN_K: Final = 256
_MAX_K: Final = 32768  # ckey is stored as int16 (0..K-1)
_MAX_SEED: Final = 2**63
#: An inequality whose largest feasible slack is below this is treated as always tight (e.g.
#: a probability forced to zero).
_ZERO_TOL: Final = 1e-9
#: Tolerance for checking that a solution meets the constraints.
_CHECK_TOL: Final = 1e-7


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PTableParams:
    """Design parameters of a count p-table.

    ``D`` maximum absolute noise; ``V`` target noise variance; ``js`` published values
    ``1..js`` are suppressed by construction; ``K`` number of cell keys (a power of two);
    ``seed`` for the per-row slot shuffle; ``monotone`` makes each row's probabilities
    non-increasing in ``|v|`` on each side of 0; ``pstay`` is a lower bound on the
    probability of no noise (``p(0)``) in rows where ``v = 0`` is allowed.

    Numbers are normalised on construction (``V`` and ``pstay`` become floats), so equal
    settings always give equal params, hashes and digests.
    """

    D: int = 3
    V: float = 2.0
    js: int = 2
    K: int = 4096
    seed: int = 20240501
    monotone: bool = False
    pstay: float | None = None

    def __post_init__(self) -> None:
        d = _int_param("D", self.D)
        js = _int_param("js", self.js)
        k = _int_param("K", self.K)
        seed = _int_param("seed", self.seed)
        v = _real_param("V", self.V)
        if not isinstance(self.monotone, bool):
            raise ConfigError(
                f"p-table parameter monotone must be true or false, got {self.monotone!r}",
                parameter="monotone",
                value=repr(self.monotone),
            )
        pstay = None if self.pstay is None else _real_param("pstay", self.pstay)

        if not 1 <= d <= _MAX_D:
            raise ConfigError(
                f"p-table parameter D must be between 1 and {_MAX_D}, got {d}",
                parameter="D",
                value=str(d),
                hint="D is the largest absolute noise; noise values are stored as int8",
            )
        if not 0.0 < v < d * d:
            raise ConfigError(
                f"p-table parameter V must be > 0 and < D² = {d * d}, got {v}",
                parameter="V",
                value=str(v),
                hint="noise bounded by D has variance below D² unless it is always ±D",
            )
        if not 0 <= js <= d:
            raise ConfigError(
                f"p-table parameter js must be between 0 and D = {d}, got {js}",
                parameter="js",
                value=str(js),
                hint="with js > D a count just above D could not be perturbed without bias",
            )
        if js == d and k % (d + 1):
            # Count 1 could then only become 0 or 1 + D, with p(-1) = D / (D + 1): an exactly
            # zero-mean split of the K key slots needs D + 1 to divide K.
            raise ConfigError(
                f"p-table parameter js = D = {d} needs D + 1 to divide K = {k}",
                parameter="js",
                value=str(js),
                hint="use js < D (or D + 1 a power of two)",
            )
        if not (_MIN_K <= k <= _MAX_K and k & (k - 1) == 0):
            raise ConfigError(
                f"p-table parameter K must be a power of two from {_MIN_K} to {_MAX_K}, got {k}",
                parameter="K",
                value=str(k),
            )
        if not 0 <= seed < _MAX_SEED:
            raise ConfigError(
                f"p-table parameter seed must be between 0 and 2**63 - 1, got {seed}",
                parameter="seed",
                value=str(seed),
            )
        if pstay is not None and not 0.0 < pstay < 1.0:
            raise ConfigError(
                f"p-table parameter pstay must be > 0 and < 1 (or null), got {pstay}",
                parameter="pstay",
                value=str(pstay),
            )
        object.__setattr__(self, "D", d)
        object.__setattr__(self, "js", js)
        object.__setattr__(self, "K", k)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "V", v)
        object.__setattr__(self, "pstay", pstay)

    @property
    def ncat(self) -> int:
        """The symmetric row: counts ``n >= ncat`` all use row ``ncat``."""
        return self.D + self.js + 1

    @classmethod
    def from_mapping(cls, m: Mapping[str, object]) -> PTableParams:
        """Params from a mapping such as the ``ptable`` object of ``model.json``.

        Missing keys take their defaults; unknown keys and bad values raise
        :class:`~cube.errors.ConfigError` naming the parameter.
        """
        known = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in m.items():
            if not isinstance(key, str) or key not in known:
                name = str(key)
                same_letters = [k for k in known if k.lower() == name.lower()]
                hint = (
                    f"did you mean {same_letters[0]!r}? (names are case-sensitive)"
                    if same_letters
                    else suggest(name, known) or ("valid: " + ", ".join(known))
                )
                raise ConfigError(f"unknown p-table parameter {name!r}", parameter=name, hint=hint)
            kwargs[key] = value
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, object]:
        """The parameters as a plain JSON-ready dict (inverse of :meth:`from_mapping`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _int_param(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(
            f"p-table parameter {name} must be an integer, got {value!r}",
            parameter=name,
            value=repr(value),
        )
    return int(value)


def _real_param(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"p-table parameter {name} must be a number, got {value!r}",
            parameter=name,
            value=repr(value),
        )
    result = float(value)
    if not math.isfinite(result):
        raise ConfigError(
            f"p-table parameter {name} must be finite, got {value!r}",
            parameter=name,
            value=repr(value),
        )
    return result


def _count(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 0:
        raise ConfigError(
            f"{name} must be a non-negative integer, got {n!r}", parameter=name, value=repr(n)
        )
    return int(n)


# --- one row: support, feasible variance, maximum entropy ---------------------------------


def noise_support(n: int, params: PTableParams) -> tuple[int, ...]:
    """The noise values allowed for original count ``n``, ascending.

    ``|v| <= D``, ``n + v >= 0`` and ``n + v`` not in ``1..js``; for ``n = 0`` only ``0``.
    Counts above ``ncat`` have the same support as ``ncat`` (all of ``-D..D``).
    """
    return _support(min(_count(n), params.ncat), params.D, params.js)


def _support(row: int, d: int, js: int) -> tuple[int, ...]:
    if row == 0:
        return (0,)
    return tuple(v for v in range(-d, d + 1) if row + v >= 0 and not 1 <= row + v <= js)


def _chains(values: tuple[int, ...]) -> list[tuple[int, int]]:
    """Index pairs (inner, outer) of neighbours moving away from 0 on each side."""
    neg = [i for i, v in enumerate(values) if v <= 0]  # ascending v: outermost first
    pos = [i for i, v in enumerate(values) if v >= 0]  # ascending v: innermost first
    pairs = [(neg[k + 1], neg[k]) for k in range(len(neg) - 1)]
    pairs += [(pos[k], pos[k + 1]) for k in range(len(pos) - 1)]
    return pairs


def _linear_system(
    values: tuple[int, ...],
    variance: float | None,
    monotone: bool,
    pstay: float | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Equalities ``A_eq p = b_eq`` and inequalities ``A_ub p <= b_ub`` of a row (p >= 0 apart).

    Because the mean is fixed at 0, the variance ``Σ v² p`` is linear in ``p`` too.
    """
    v = np.asarray(values, dtype=np.float64)
    m = len(values)
    eq_rows = [np.ones(m), v]
    eq_rhs = [1.0, 0.0]
    if variance is not None:
        eq_rows.append(v * v)
        eq_rhs.append(float(variance))
    ub_rows: list[NDArray[np.float64]] = []
    ub_rhs: list[float] = []
    if monotone:
        for inner, outer in _chains(values):
            row = np.zeros(m)
            row[outer], row[inner] = 1.0, -1.0  # p(outer) - p(inner) <= 0
            ub_rows.append(row)
            ub_rhs.append(0.0)
    if pstay is not None and 0 in values:
        row = np.zeros(m)
        row[values.index(0)] = -1.0  # -p(0) <= -pstay
        ub_rows.append(row)
        ub_rhs.append(-float(pstay))
    a_ub = np.array(ub_rows) if ub_rows else np.zeros((0, m))
    return np.array(eq_rows), np.array(eq_rhs), a_ub, np.array(ub_rhs)


def _lp(
    c: NDArray[np.float64],
    a_eq: NDArray[np.float64],
    b_eq: NDArray[np.float64],
    a_ub: NDArray[np.float64],
    b_ub: NDArray[np.float64],
    what: str,
) -> NDArray[np.float64]:
    res = linprog(
        c,
        A_ub=a_ub if len(a_ub) else None,
        b_ub=b_ub if len(a_ub) else None,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=(0.0, 1.0),
        method="highs",
    )
    if res.status == 2:
        raise ConfigError(f"no noise distribution meets the constraints ({what})")
    if not res.success:
        raise ConfigError(f"linear programme failed ({what}): {res.message}")
    return cast(NDArray[np.float64], np.clip(res.x, 0.0, 1.0))


def _check_values(values: Iterable[int]) -> tuple[int, ...]:
    vals = tuple(sorted(_int_param("values", v) for v in values))
    if not vals or len(set(vals)) != len(vals):
        raise ConfigError("noise values must be distinct integers", parameter="values")
    if vals[0] > 0 or vals[-1] < 0:
        raise ConfigError(
            "noise values must include values <= 0 and >= 0 for zero-mean noise",
            parameter="values",
        )
    return vals


@functools.lru_cache(maxsize=1024)
def _variance_bounds(
    values: tuple[int, ...], monotone: bool, pstay: float | None
) -> tuple[float, float]:
    a_eq, b_eq, a_ub, b_ub = _linear_system(values, None, monotone, pstay)
    v2 = np.asarray(values, dtype=np.float64) ** 2
    lo = float(v2 @ _lp(v2, a_eq, b_eq, a_ub, b_ub, "smallest variance"))
    hi = float(v2 @ _lp(-v2, a_eq, b_eq, a_ub, b_ub, "largest variance"))
    return lo, hi


def variance_range(n: int, params: PTableParams) -> tuple[float, float]:
    """Smallest and largest noise variance any admissible row for count ``n`` can have.

    Admissible: zero mean, the support of :func:`noise_support`, plus the ``monotone`` and
    ``pstay`` constraints if set. Both ends are attained. Row 0 gives ``(0.0, 0.0)``.
    """
    values = noise_support(n, params)
    if values == (0,):
        return 0.0, 0.0
    return _variance_bounds(values, params.monotone, params.pstay)


def maxent_distribution(
    values: Iterable[int],
    variance: float | None,
    *,
    monotone: bool = False,
    pstay: float | None = None,
) -> dict[int, float]:
    """Maximum-entropy distribution on ``values`` with mean 0 and the given variance.

    ``variance=None`` drops the variance constraint. ``monotone`` and ``pstay`` are as in
    :class:`PTableParams`. Raises :class:`~cube.errors.ConfigError` if nothing meets the
    constraints. Returns ``{v: p}`` for every value, ascending (forced zeros included).

    Method. With the mean fixed, the variance is linear in ``p``, so the feasible set is a
    polytope. A linear programme first finds the inequalities that hold with equality for
    *every* feasible distribution (values forced to probability 0, monotone steps forced
    flat) and a relative-interior point. If the equalities then leave one distribution, that
    is the answer. Otherwise:

    1. ignoring ``monotone``/``pstay``, the maximiser has the form ``p(v) ∝ exp(a·v + b·v²)``
       on the values that can be positive; ``(a, b)`` minimise the convex dual
       ``log Σ exp(a·v + b·(v² − V))``, solved by Newton's method (``trust-exact``: the
       dual is smooth and two-dimensional, and the stopping rule is on the moments, so the
       row is exact even when some probabilities are astronomically small). If that
       distribution meets the ``monotone``/``pstay`` constraints it is also the
       constrained maximiser;
    2. otherwise SLSQP maximises the entropy directly over ``p`` (bounds ``0..1``, the
       equalities reduced to an orthonormal basis so that degenerate rows give no redundant
       constraints, and the remaining inequalities), from the relative-interior point.
    """
    vals = _check_values(values)
    if variance is not None:
        variance = _real_param("variance", variance)
    if pstay is not None:
        pstay = _real_param("pstay", pstay)
    a_eq, b_eq, a_ub, b_ub = _linear_system(vals, variance, monotone, pstay)
    m = len(vals)
    none = np.zeros((0, m))

    # 1. Only the equalities (and p >= 0): exponential-family solution via the dual.
    p0, loose = _face(a_eq, b_eq, none, np.zeros(0))
    free = loose[:m]
    eq = _orthonormal_rows(a_eq[:, free], b_eq)
    if eq is None:
        p = p0
    else:
        p = np.zeros(m)
        p[free] = _dual_maxent(np.asarray(vals, dtype=np.float64)[free], variance)
    if len(a_ub) and np.max(a_ub @ p - b_ub) > _CHECK_TOL:
        # 2. The inequalities bind: solve the primal with SLSQP.
        p = _primal_maxent(a_eq, b_eq, a_ub, b_ub)

    g_all = np.vstack([-np.eye(m), a_ub])
    h_all = np.concatenate([np.zeros(m), b_ub])
    if np.max(np.abs(a_eq @ p - b_eq)) > _CHECK_TOL or np.max(g_all @ p - h_all) > _CHECK_TOL:
        raise ConfigError("maximum-entropy optimisation did not meet the constraints")
    p = np.maximum(p, 0.0)
    return {v: float(pv) for v, pv in zip(vals, p, strict=True)}


def _face(
    a_eq: NDArray[np.float64],
    b_eq: NDArray[np.float64],
    a_ub: NDArray[np.float64],
    b_ub: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A relative-interior point of the polytope and which inequalities have slack there.

    Inequalities are ``p >= 0`` (the first ``m``) followed by the rows of ``A_ub``; those
    without slack hold with equality for every feasible ``p`` (e.g. a probability forced to
    0). One linear programme on the homogenised system finds them all: with ``p = x / τ``,
    maximise ``Σ y`` subject to ``A_eq x = b_eq τ``, ``G x + y <= h τ``, ``0 <= y <= 1`` and
    ``1 <= τ <= 1 / _ZERO_TOL``. Scaling by ``τ`` lets every inequality that can be slack
    reach ``y = 1`` at once, while those that cannot stay at ``y = 0``.
    """
    m = a_eq.shape[1]
    g_all = np.vstack([-np.eye(m), a_ub])
    h_all = np.concatenate([np.zeros(m), b_ub])
    r = len(g_all)
    c = np.concatenate([np.zeros(m), -np.ones(r), [0.0]])
    res = linprog(
        c,
        A_ub=np.hstack([g_all, np.eye(r), -h_all[:, None]]),
        b_ub=np.zeros(r),
        A_eq=np.hstack([a_eq, np.zeros((len(a_eq), r)), -b_eq[:, None]]),
        b_eq=np.zeros(len(a_eq)),
        bounds=[(0.0, None)] * m + [(0.0, 1.0)] * r + [(1.0, 1.0 / _ZERO_TOL)],
        method="highs",
    )
    if res.status == 2:
        raise ConfigError("no noise distribution meets the constraints")
    if not res.success:
        raise ConfigError(f"linear programme failed (noise distribution): {res.message}")
    loose = np.asarray(res.x[m : m + r] > 0.5)
    p0 = res.x[:m] / res.x[-1]
    p0[~loose[:m]] = 0.0
    return p0, loose


def _orthonormal_rows(
    mat: NDArray[np.float64], rhs: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Equivalent full-rank equalities ``Q x = r`` for ``mat x = rhs``; None if x is pinned."""
    u, sing, vt = np.linalg.svd(mat, full_matrices=False)
    rank = int(np.sum(sing > sing[0] * 1e-10))
    if rank >= mat.shape[1]:
        return None
    return vt[:rank], (u[:, :rank].T @ rhs) / sing[:rank]


def _dual_maxent(v: NDArray[np.float64], variance: float | None) -> NDArray[np.float64]:
    """``p ∝ exp(θ·f(v))`` with ``E f = (0, V)`` for ``f = (v, v²)`` (or ``f = v``)."""
    scale = float(np.max(np.abs(v)))
    x = v / scale  # well-conditioned features
    feats = [x] if variance is None else [x, x * x - variance / scale**2]
    f = np.vstack(feats)  # k × n, targets 0

    def probs(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        e = theta @ f
        w = np.exp(e - e.max())
        return cast(NDArray[np.float64], w / w.sum())

    def dual(theta: NDArray[np.float64]) -> float:
        e = theta @ f
        top = float(e.max())
        return top + math.log(float(np.exp(e - top).sum()))

    def dual_grad(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return f @ probs(theta)

    def dual_hess(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        p = probs(theta)
        mean = f @ p
        return (f * p) @ f.T - np.outer(mean, mean)

    res = minimize(
        dual,
        np.zeros(len(feats)),
        jac=dual_grad,
        hess=dual_hess,
        method="trust-exact",
        options={"gtol": 1e-13, "maxiter": 1000},
    )
    # Near the optimum the dual's value is flat to rounding, which stops trust-exact early;
    # plain Newton steps on the moment equations then finish the job. The caller checks the
    # constraints either way.
    theta = res.x
    grad = dual_grad(theta)
    for _ in range(50):
        if np.max(np.abs(grad)) < 1e-14:
            break
        step = np.linalg.lstsq(dual_hess(theta), grad, rcond=None)[0]
        new_grad = dual_grad(theta - step)
        if np.max(np.abs(new_grad)) >= np.max(np.abs(grad)):
            break
        theta, grad = theta - step, new_grad
    return probs(theta)


def _primal_maxent(
    a_eq: NDArray[np.float64],
    b_eq: NDArray[np.float64],
    a_ub: NDArray[np.float64],
    b_ub: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Entropy maximised over ``p`` by SLSQP, with the constraints made well posed first."""
    m = a_eq.shape[1]
    p0, loose = _face(a_eq, b_eq, a_ub, b_ub)
    free = loose[:m]
    tight_ub = ~loose[m:]
    eq = _orthonormal_rows(
        np.vstack([a_eq, a_ub[tight_ub]])[:, free], np.concatenate([b_eq, b_ub[tight_ub]])
    )
    if eq is None:  # the constraints pin the distribution down completely
        return p0
    eq_mat, eq_vec = eq
    ub_mat, ub_vec = a_ub[~tight_ub][:, free], b_ub[~tight_ub]
    constraints: list[dict[str, Any]] = [
        {"type": "eq", "fun": lambda q: eq_mat @ q - eq_vec, "jac": lambda q: eq_mat}
    ]
    if len(ub_mat):
        constraints.append(
            {"type": "ineq", "fun": lambda q: ub_vec - ub_mat @ q, "jac": lambda q: -ub_mat}
        )

    def neg_entropy(q: NDArray[np.float64]) -> float:
        q = np.maximum(q, 1e-300)
        return float(q @ np.log(q))

    def neg_entropy_grad(q: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.log(np.maximum(q, 1e-300)) + 1.0

    res = minimize(
        neg_entropy,
        p0[free],
        jac=neg_entropy_grad,
        method="SLSQP",
        bounds=Bounds(0.0, 1.0),
        constraints=constraints,
        options={"ftol": 1e-15, "maxiter": 500},
    )
    # Status 8: the line search cannot improve at this precision; the caller checks the
    # constraints either way.
    if not res.success and res.status != 8:
        raise ConfigError(f"maximum-entropy optimisation failed: {res.message}")
    p = np.zeros(m)
    p[free] = res.x
    return p


def discrete_gaussian(D: int, V: float) -> dict[int, float]:
    """``p(v) ∝ exp(−λ v²)`` on ``−D..D`` with ``λ`` chosen so the variance is ``V``.

    This is the closed form of the maximum-entropy row for counts ``>= ncat``, where every
    value in ``−D..D`` is allowed (the mean is 0 by symmetry). ``λ`` is negative when ``V``
    exceeds the variance of the uniform distribution, ``D(D+1)/3``.
    """
    d = _int_param("D", D)
    var = _real_param("V", V)
    if d < 1 or not 0.0 < var < d * d:
        raise ConfigError(f"need D >= 1 and 0 < V < D², got D={d}, V={var}", parameter="V")
    v = np.arange(-d, d + 1, dtype=np.float64)
    v2 = v * v

    def probs(lam: float) -> NDArray[np.float64]:
        e = -lam * v2
        w = np.exp(e - e.max())
        return cast(NDArray[np.float64], w / w.sum())

    def excess(lam: float) -> float:
        return float(probs(lam) @ v2) - var

    # The variance falls from D² (λ → −∞) to 0 (λ → ∞): bracket the root, then solve.
    lo, hi = -1.0, 1.0
    while excess(hi) > 0.0:
        hi *= 2.0
    while excess(lo) < 0.0:
        lo *= 2.0
    lam = float(brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))
    return {int(k): float(p) for k, p in zip(v, probs(lam), strict=True)}


def _meets_shape(probs: Mapping[int, float], monotone: bool, pstay: float | None) -> bool:
    vals = tuple(sorted(probs))
    if monotone and any(
        probs[vals[outer]] > probs[vals[inner]] + _CHECK_TOL for inner, outer in _chains(vals)
    ):
        return False
    return not (pstay is not None and 0 in probs and probs[0] < pstay - _CHECK_TOL)


def row_distribution(n: int, params: PTableParams) -> dict[int, float]:
    """Noise probabilities ``{v: p}`` for original count ``n`` (continuous, before slots).

    The row is the maximum-entropy distribution on :func:`noise_support` with mean 0 and
    variance ``V``, subject to ``monotone`` and ``pstay`` if set. Row 0 is ``{0: 1.0}``;
    counts ``n >= ncat`` use the symmetric row, computed in closed form by
    :func:`discrete_gaussian` (falling back to the general solver if that form breaks the
    ``monotone`` or ``pstay`` constraint).

    Infeasible variance: for small counts the support is cut off by ``n + v >= 0`` and by the
    blocked values ``1..js``, and with ``monotone``/``pstay`` also by those constraints, so
    ``V`` may be out of reach. The achievable variances of a row form an interval
    ``[lo, hi]`` (:func:`variance_range`; the variance is linear in ``p`` once the mean is
    fixed, so both ends come from linear programmes). If ``V`` lies outside it the row uses
    the nearest end, i.e. the closest feasible variance, which keeps the noise unbiased and
    in range at the cost of a different variance for that count only. At an end of the
    interval the distribution is usually unique and some allowed values get probability 0.

    Where ``V`` is feasible the row has exactly that variance, even if only one distribution
    achieves it. (The R package ``ptable`` keeps its optimiser's answer when that misses the
    variance: its vignette's monotone row ``n = 1`` for ``D = 2, V = 1, js = 0`` has variance
    0.932, where this function gives ``{-1: 3/8, 0: 3/8, 1: 1/8, 2: 1/8}`` with variance 1.)
    """
    row = min(_count(n), params.ncat)
    p = params
    return dict(_row_probs(row, row == p.ncat, p.D, p.V, p.js, p.monotone, p.pstay))


@functools.lru_cache(maxsize=1024)
def _row_probs(
    row: int,
    symmetric: bool,
    d: int,
    var: float,
    js: int,
    monotone: bool,
    pstay: float | None,
) -> tuple[tuple[int, float], ...]:
    """Cached body of :func:`row_distribution` (``K`` and ``seed`` do not affect a row)."""
    if row == 0:
        return ((0, 1.0),)
    if symmetric:
        gauss = discrete_gaussian(d, var)
        if _meets_shape(gauss, monotone, pstay):
            return tuple(gauss.items())
    values = _support(row, d, js)
    lo, hi = _variance_bounds(values, monotone, pstay)
    target = min(max(var, lo), hi)
    return tuple(maxent_distribution(values, target, monotone=monotone, pstay=pstay).items())


# --- slots --------------------------------------------------------------------------------


def slot_counts(probs: Mapping[int, float], K: int) -> dict[int, int]:
    """Whole numbers of key slots per noise value: ``Σ slots = K`` and ``Σ v·slots = 0``.

    Minimises ``Σ |slots(v) − p(v)·K|`` by a small integer programme (the absolute values
    are linearised with one auxiliary variable each; the search starts in a small box around
    ``p·K`` and widens it only if the box cannot contain the optimum). Every ``v`` with
    ``p(v) > 0`` keeps at least one slot when that is possible. Values present in ``probs``
    with probability 0 may receive slots if an exactly zero mean needs them (e.g.
    ``{-1: 2/3, 2: 1/3}`` cannot be split exactly into 4096 slots). Returns ``{v: slots}``
    for every key of ``probs``.
    """
    k = _int_param("K", K)
    if k < 1:
        raise ConfigError(f"K must be positive, got {k}", parameter="K")
    vals = _check_values(probs)
    p = np.array([_real_param("probs", probs[v]) for v in vals])
    if np.any(p < 0.0) or abs(float(p.sum()) - 1.0) > 1e-6:
        raise ConfigError("probabilities must be >= 0 and sum to 1", parameter="probs")
    m = len(vals)
    target = p * k
    v = np.asarray(vals, dtype=np.float64)
    eye = np.eye(m)
    # Variables x = [s_1..s_m, t_1..t_m]; minimise Σ t with t >= |s − pK|.
    c = np.concatenate([np.zeros(m), np.ones(m)])
    constraints = [
        LinearConstraint(np.hstack([eye, eye]), target, np.inf),  # t + s >= pK
        LinearConstraint(np.hstack([-eye, eye]), -target, np.inf),  # t − s >= −pK
        LinearConstraint(np.concatenate([np.ones(m), np.zeros(m)])[None, :], k, k),
        LinearConstraint(np.concatenate([v, np.zeros(m)])[None, :], 0.0, 0.0),
    ]
    integrality = np.concatenate([np.ones(m), np.zeros(m)])
    ints = np.asarray(vals, dtype=np.int64)
    for keep_support in (True, False):
        lower = np.where(keep_support & (p > 0.0), 1.0, 0.0)
        # Search a box |s − pK| <= w first (small, so HiGHS solves it quickly and reliably).
        # If the best cost inside is <= w it is optimal overall, because any split outside
        # the box already costs more than w; otherwise widen the box.
        forced = float(np.sum(np.maximum(lower - target, 0.0)))  # cost the lower bounds force
        width = 2 * int(np.max(np.abs(ints))) + 2 + math.ceil(forced)
        while True:
            lo = np.maximum(lower, np.floor(target) - width)
            hi = np.minimum(float(k), np.ceil(target) + width)
            res = milp(
                c,
                integrality=integrality,
                bounds=Bounds(
                    np.concatenate([lo, np.zeros(m)]), np.concatenate([hi, np.full(m, width + 1.0)])
                ),
                constraints=constraints,
                options={"mip_rel_gap": 0.0},
            )
            if res.success and (res.fun <= width + 1e-9 or width >= k):
                slots = np.rint(res.x[:m]).astype(np.int64)
                if int(slots.sum()) == k and int(slots @ ints) == 0:
                    return {val: int(n) for val, n in zip(vals, slots, strict=True)}
            if width >= k:
                break
            width *= 2
    raise ConfigError(f"cannot split the probabilities into {k} zero-mean slots")


# --- the table ----------------------------------------------------------------------------


def ptable_digest(params: PTableParams, values: NDArray[np.int8]) -> str:
    """SHA-256 hex of the canonical serialisation of ``params`` and ``values``.

    The serialisation is a compact, key-sorted JSON header (format tag, params, shape),
    a NUL byte, then the values as int8 bytes in row-major order.
    """
    arr = np.ascontiguousarray(values, dtype=np.int8)
    header = json.dumps(
        {"format": FORMAT, "params": params.to_mapping(), "shape": list(arr.shape)},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    h = hashlib.sha256(header.encode("utf-8"))
    h.update(b"\0")
    h.update(arr.tobytes(order="C"))
    return h.hexdigest()


@dataclass(frozen=True)
class PTable:
    """A built p-table: ``values[pcv, ckey]`` is the noise for row ``pcv`` and cell key ``ckey``.

    ``values`` has shape ``(ncat + 1, K)``, dtype int8, and is read-only. Equality and hashing
    use ``params`` and ``digest`` (the digest covers the values). Constructing a PTable checks
    that ``digest`` matches; use :func:`build_ptable` to make one.
    """

    params: PTableParams
    values: NDArray[np.int8] = field(compare=False, repr=False)
    digest: str

    def __post_init__(self) -> None:
        shape = (self.params.ncat + 1, self.params.K)
        arr = np.asarray(self.values)
        if arr.dtype != np.int8 or arr.shape != shape:
            raise ConfigError(
                f"p-table values must be int8 with shape {shape}, got {arr.dtype} {arr.shape}",
                parameter="values",
            )
        arr = arr.copy()
        arr.flags.writeable = False
        object.__setattr__(self, "values", arr)
        if ptable_digest(self.params, arr) != self.digest:
            raise ConfigError("p-table digest does not match its params and values")

    def lookup(self, n: ArrayLike, ckey: ArrayLike) -> NDArray[np.int8]:
        """Noise for original counts ``n`` (any integers >= 0) and cell keys (0..K-1).

        Vectorised with NumPy broadcasting; counts above ``ncat`` use row ``ncat``.
        """
        n_arr = np.asarray(n)
        c_arr = np.asarray(ckey)
        if n_arr.dtype.kind not in "iu" or (n_arr.size and int(n_arr.min()) < 0):
            raise ConfigError("counts must be non-negative integers", parameter="n")
        if c_arr.dtype.kind not in "iu" or (
            c_arr.size and (int(c_arr.min()) < 0 or int(c_arr.max()) >= self.params.K)
        ):
            raise ConfigError(
                f"cell keys must be integers in 0..{self.params.K - 1}", parameter="ckey"
            )
        pcv = np.minimum(n_arr, self.params.ncat)
        return np.asarray(self.values[pcv, c_arr], dtype=np.int8)

    def symmetric_row(self) -> NDArray[np.int8]:
        """Row ``ncat`` (read-only), the noise used for magnitudes."""
        return cast(NDArray[np.int8], self.values[self.params.ncat])

    def to_arrow(self) -> pa.Table:
        """The table in long form for the warehouse table ``sdc_ptable``.

        Columns ``pcv`` int16, ``ckey`` int16, ``pvalue`` int8, sorted by (pcv, ckey). The
        schema metadata carries the digest and the params as JSON.
        """
        rows, k = self.values.shape
        schema = pa.schema(
            [("pcv", pa.int16()), ("ckey", pa.int16()), ("pvalue", pa.int8())],
            metadata={
                "statcube.ptable.format": FORMAT,
                "statcube.ptable.digest": self.digest,
                "statcube.ptable.params": json.dumps(self.params.to_mapping(), sort_keys=True),
            },
        )
        return pa.Table.from_arrays(
            [
                pa.array(np.repeat(np.arange(rows, dtype=np.int16), k)),
                pa.array(np.tile(np.arange(k, dtype=np.int16), rows)),
                pa.array(self.values.ravel()),
            ],
            schema=schema,
        )

    def row_probabilities(self, pcv: int) -> dict[int, float]:
        """Realised share of key slots per noise value in row ``pcv`` (0..ncat)."""
        row = _count(pcv, "pcv")
        if row > self.params.ncat:
            raise ConfigError(
                f"pcv must be between 0 and {self.params.ncat}, got {row}", parameter="pcv"
            )
        vals, counts = np.unique(self.values[row], return_counts=True)
        return {int(v): int(c) / self.params.K for v, c in zip(vals, counts, strict=True)}


@functools.lru_cache(maxsize=16)
def build_ptable(params: PTableParams = PTableParams()) -> PTable:
    """Build (or fetch from the cache) the p-table for ``params``.

    Row 0 is all zeros. For each row ``pcv`` in ``1..ncat`` the probabilities of
    :func:`row_distribution` become slot counts (:func:`slot_counts`), which are laid out over
    the ``K`` cell keys in ascending ``v`` and shuffled with ``numpy.random.default_rng(seed +
    pcv)``. The result is deterministic for given params (and NumPy/SciPy versions; the digest
    shows whether two builds agree).
    """
    values = np.zeros((params.ncat + 1, params.K), dtype=np.int8)
    for pcv in range(1, params.ncat + 1):
        try:
            slots = slot_counts(row_distribution(pcv, params), params.K)
        except ConfigError as exc:
            raise ConfigError(f"cannot build p-table row {pcv}: {exc.message}") from exc
        layout = np.repeat(
            np.array(list(slots), dtype=np.int8), np.array(list(slots.values()), dtype=np.int64)
        )
        values[pcv] = np.random.default_rng(params.seed + pcv).permutation(layout)
    return PTable(params=params, values=values, digest=ptable_digest(params, values))
