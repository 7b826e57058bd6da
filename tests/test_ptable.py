"""Tests for the perturbation table (cube.disclosure.ptable)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cube.disclosure.ptable import (
    PTable,
    PTableParams,
    build_ptable,
    discrete_gaussian,
    maxent_distribution,
    noise_support,
    ptable_digest,
    row_distribution,
    slot_counts,
    variance_range,
)
from cube.errors import ConfigError

pytestmark = pytest.mark.unit

DEFAULT = PTableParams()
PARAM_SETS = [
    pytest.param(DEFAULT, id="defaults"),
    pytest.param(PTableParams(D=2, V=1.0, js=0), id="D2-V1-js0"),
    pytest.param(PTableParams(D=5, V=3.0, js=4), id="D5-V3-js4"),
    pytest.param(PTableParams(monotone=True), id="monotone"),
    pytest.param(PTableParams(pstay=0.5), id="pstay"),
]


def _variance(probs: dict[int, float]) -> float:
    return sum(v * v * p for v, p in probs.items())


def _mean(probs: dict[int, float]) -> float:
    return sum(v * p for v, p in probs.items())


def _target_variance(n: int, params: PTableParams) -> float:
    lo, hi = variance_range(n, params)
    return min(max(params.V, lo), hi)


# --- reference values (sdcTools ptable vignette) ------------------------------------------


def test_reference_symmetric_row_d2_v1() -> None:
    probs = row_distribution(2, PTableParams(D=2, V=1.0, js=0))
    assert list(probs) == [-2, -1, 0, 1, 2]
    assert [round(p, 4) for p in probs.values()] == [0.0638, 0.2447, 0.3830, 0.2447, 0.0638]


def test_reference_blocked_row_js1() -> None:
    # n = 1 with js = 1 may not stay at 1: published j = 0, 2, 3, i.e. v = -1, +1, +2.
    probs = row_distribution(1, PTableParams(D=2, V=1.08, js=1))
    assert list(probs) == [-1, 1, 2]
    assert [round(p, 4) for p in probs.values()] == [0.5133, 0.4600, 0.0267]


def test_reference_row1_d2_v1_is_monotone_maxent_without_variance() -> None:
    """The vignette's row n = 1 (0.3665, 0.3665, 0.1676, 0.0995).

    That row was made with ptable's default ``mono = TRUE`` and does not have variance V = 1:
    the vignette itself reports ``p_var = 0.932`` and 20 iterations (its variance check
    failed). It is exactly the monotone maximum-entropy row *without* the variance
    constraint. V = 1 is feasible for that row (at a single point), so row_distribution,
    which keeps the variance wherever it can, differs from the vignette here.
    """
    support = noise_support(1, PTableParams(D=2, V=1.0, js=0))
    assert support == (-1, 0, 1, 2)
    vignette = maxent_distribution(support, None, monotone=True)
    assert [round(p, 4) for p in vignette.values()] == [0.3665, 0.3665, 0.1676, 0.0995]
    assert _variance(vignette) == pytest.approx(0.932, abs=5e-4)

    mono = PTableParams(D=2, V=1.0, js=0, monotone=True)
    assert variance_range(1, mono)[1] == pytest.approx(1.0)
    ours = row_distribution(1, mono)
    assert ours == pytest.approx({-1: 0.375, 0: 0.375, 1: 0.125, 2: 0.125}, abs=1e-6)
    assert _variance(ours) == pytest.approx(1.0, abs=1e-8)

    # Without monotonicity: the usual maxent form p ∝ exp(a v + b v²) with variance 1.
    free = row_distribution(1, PTableParams(D=2, V=1.0, js=0))
    assert [round(p, 4) for p in free.values()] == [0.3981, 0.3058, 0.1942, 0.1019]
    assert _variance(free) == pytest.approx(1.0, abs=1e-8)


# --- the maximum-entropy rows -------------------------------------------------------------


@pytest.mark.parametrize(("d", "v"), [(2, 1.0), (3, 2.0), (5, 3.0), (4, 0.3), (3, 5.0)])
def test_discrete_gaussian_agrees_with_maxent(d: int, v: float) -> None:
    gauss = discrete_gaussian(d, v)
    assert list(gauss) == list(range(-d, d + 1))
    assert sum(gauss.values()) == pytest.approx(1.0, abs=1e-12)
    assert _mean(gauss) == pytest.approx(0.0, abs=1e-12)
    assert _variance(gauss) == pytest.approx(v, abs=1e-10)
    solved = maxent_distribution(range(-d, d + 1), v)
    assert solved == pytest.approx(gauss, abs=1e-5)


@pytest.mark.parametrize("params", PARAM_SETS[:3])
def test_free_rows_have_the_maxent_form(params: PTableParams) -> None:
    """Without monotone/pstay, an interior maxent row satisfies log p = a + b·v + c·v²."""
    assert not params.monotone and params.pstay is None
    for n in range(1, params.ncat + 1):
        probs = {v: p for v, p in row_distribution(n, params).items() if p > 0}
        if len(probs) < 4:
            continue  # pinned down by the equalities alone
        v = np.array(list(probs), dtype=float)
        design = np.vstack([np.ones_like(v), v, v * v]).T
        logp = np.log(list(probs.values()))
        coef, *_ = np.linalg.lstsq(design, logp, rcond=None)
        assert np.max(np.abs(design @ coef - logp)) < 1e-4, n


@pytest.mark.parametrize("params", PARAM_SETS)
def test_row_constraints(params: PTableParams) -> None:
    assert row_distribution(0, params) == {0: 1.0}
    for n in range(1, params.ncat + 3):
        probs = row_distribution(n, params)
        assert tuple(probs) == noise_support(n, params)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert _mean(probs) == pytest.approx(0.0, abs=1e-9)
        assert _variance(probs) == pytest.approx(_target_variance(n, params), abs=1e-7)
        for v, p in probs.items():
            assert p >= 0.0
            assert abs(v) <= params.D
            assert n + v >= 0
            assert not 1 <= n + v <= params.js
        if params.monotone:
            neg = [probs[v] for v in sorted(probs, reverse=True) if v <= 0]
            pos = [probs[v] for v in sorted(probs) if v >= 0]
            for side in (neg, pos):
                assert all(a >= b - 1e-9 for a, b in itertools.pairwise(side))
        if params.pstay is not None and 0 in probs:
            assert probs[0] >= params.pstay - 1e-9


def test_counts_above_ncat_use_the_symmetric_row() -> None:
    sym = row_distribution(DEFAULT.ncat, DEFAULT)
    assert sym == discrete_gaussian(DEFAULT.D, DEFAULT.V)
    assert row_distribution(DEFAULT.ncat + 1, DEFAULT) == sym
    assert row_distribution(10**9, DEFAULT) == sym


def test_default_rows_1_and_2_sit_on_the_variance_boundary() -> None:
    # js = 2 leaves n = 1 with v in {-1, +2, +3} and n = 2 with {-2, +1, +2, +3}: the
    # smallest unbiased variance is exactly 2 = V, reached by one distribution only.
    assert variance_range(1, DEFAULT) == pytest.approx((2.0, 3.0))
    assert variance_range(2, DEFAULT) == pytest.approx((2.0, 6.0))
    assert row_distribution(1, DEFAULT) == pytest.approx({-1: 2 / 3, 2: 1 / 3, 3: 0.0}, abs=1e-9)
    assert row_distribution(2, DEFAULT) == pytest.approx(
        {-2: 1 / 3, 1: 2 / 3, 2: 0.0, 3: 0.0}, abs=1e-9
    )
    for n in range(3, DEFAULT.ncat + 1):
        lo, hi = variance_range(n, DEFAULT)
        assert lo < DEFAULT.V < hi


def test_infeasible_variance_uses_the_closest_feasible() -> None:
    params = PTableParams(D=5, V=3.0, js=4)
    # Small counts must jump past 1..4, so their variance cannot be as low as 3.
    expected = {1: 4.0, 2: 6.0, 3: 6.0, 4: 4.0}
    for n, var in expected.items():
        lo, _ = variance_range(n, params)
        assert lo == pytest.approx(var)
        assert _variance(row_distribution(n, params)) == pytest.approx(var, abs=1e-8)
    # Monotone defaults: row 4 (v in -1..3) cannot reach variance 2.
    mono = PTableParams(monotone=True)
    assert variance_range(4, mono)[1] == pytest.approx(4 / 3)
    assert _variance(row_distribution(4, mono)) == pytest.approx(4 / 3, abs=1e-8)


def test_maxent_distribution_rejects_impossible_constraints() -> None:
    with pytest.raises(ConfigError):
        maxent_distribution([1, 2], 1.0)  # no value <= 0: mean 0 impossible
    with pytest.raises(ConfigError):
        maxent_distribution([-1, 0, 1], 2.0)  # variance above 1 impossible
    with pytest.raises(ConfigError):
        maxent_distribution([-1, 0, 0, 1], 0.5)


# --- slots --------------------------------------------------------------------------------


def test_slot_counts_exact_mean_uses_spare_values() -> None:
    # 4096 is not divisible by 3, so {-1: 2/3, 2: 1/3} alone cannot be split exactly.
    slots = slot_counts({-1: 2 / 3, 2: 1 / 3, 3: 0.0}, 4096)
    assert sum(slots.values()) == 4096
    assert sum(v * s for v, s in slots.items()) == 0
    assert slots == {-1: 2731, 2: 1364, 3: 1}


def test_slot_counts_keeps_rare_values() -> None:
    probs = discrete_gaussian(5, 0.5)
    assert probs[5] * 4096 < 0.5
    slots = slot_counts(probs, 4096)
    assert sum(slots.values()) == 4096
    assert sum(v * s for v, s in slots.items()) == 0
    assert all(s >= 1 for s in slots.values())


def test_slot_counts_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        slot_counts({-1: 0.5, 1: 0.6}, 4096)
    with pytest.raises(ConfigError):
        slot_counts({-1: 2 / 3, 2: 1 / 3}, 4096)  # no exact zero-mean split exists


# --- the built table ----------------------------------------------------------------------


@pytest.mark.parametrize("params", PARAM_SETS)
def test_table_invariants(params: PTableParams) -> None:
    table = build_ptable(params)
    values = table.values
    assert values.shape == (params.ncat + 1, params.K)
    assert values.dtype == np.int8
    assert not values.flags.writeable
    assert not np.any(values[0])
    for pcv in range(1, params.ncat + 1):
        row = values[pcv].astype(np.int64)
        assert int(row.sum()) == 0  # Σ v·slots = 0 exactly
        assert int(np.abs(row).max()) <= params.D
        published = pcv + row
        assert np.all(published >= 0)
        assert not np.any((published >= 1) & (published <= params.js))
        shares = table.row_probabilities(pcv)
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
        assert _variance(shares) == pytest.approx(_target_variance(pcv, params), abs=0.05)
        probs = row_distribution(pcv, params)
        assert set(shares) <= set(probs)
        assert all(shares.get(v, 0.0) > 0 for v, p in probs.items() if p > 0)
        off = sum(abs(shares.get(v, 0.0) - p) for v, p in probs.items()) * params.K
        assert off < 2 * params.D + 2  # slots stay close to p·K
        if params.pstay is not None and 0 in probs:
            assert shares[0] >= params.pstay - 2 / params.K


@pytest.mark.parametrize(
    "params",
    [
        PTableParams(D=6, V=0.2, js=1),  # probabilities down to ~1e-40
        PTableParams(D=5, V=24.5, js=0),  # variance near D²
        PTableParams(D=5, V=16.1, js=4, pstay=0.363),  # rows pinned to one distribution
        PTableParams(D=6, V=0.32, js=0, monotone=True),
    ],
    ids=["tiny-V", "huge-V", "pinned", "tiny-V-monotone"],
)
def test_extreme_parameters_still_build(params: PTableParams) -> None:
    table = build_ptable(params)
    for pcv in range(1, params.ncat + 1):
        row = table.values[pcv].astype(np.int64)
        assert int(row.sum()) == 0
        published = pcv + row
        assert np.all(published >= 0)
        assert not np.any((published >= 1) & (published <= params.js))
        probs = row_distribution(pcv, params)
        assert _variance(probs) == pytest.approx(_target_variance(pcv, params), abs=1e-7)


def test_values_are_read_only() -> None:
    table = build_ptable(DEFAULT)
    with pytest.raises(ValueError):
        table.values[1, 0] = 0
    with pytest.raises(ValueError):
        table.symmetric_row()[0] = 0
    writable = np.array(table.values)
    rebuilt = PTable(DEFAULT, writable, table.digest)
    writable[1, 0] += 1  # the PTable holds its own read-only copy
    assert not rebuilt.values.flags.writeable
    assert ptable_digest(DEFAULT, rebuilt.values) == table.digest


def test_rows_are_shuffled_deterministically() -> None:
    table = build_ptable(DEFAULT)
    slots = slot_counts(row_distribution(3, DEFAULT), DEFAULT.K)
    layout = np.repeat(np.array(list(slots), dtype=np.int8), list(slots.values()))
    expected = np.random.default_rng(DEFAULT.seed + 3).permutation(layout)
    assert np.array_equal(table.values[3], expected)
    assert not np.array_equal(table.values[3], layout)


def test_digest_is_stable_and_cached() -> None:
    first = build_ptable(DEFAULT)
    assert build_ptable(DEFAULT) is first
    assert build_ptable() == first
    build_ptable.cache_clear()
    again = build_ptable(PTableParams())
    assert again is not first
    assert again.digest == first.digest
    assert np.array_equal(again.values, first.values)
    assert again == first
    assert len(first.digest) == 64
    assert int(first.digest, 16) >= 0
    assert ptable_digest(DEFAULT, first.values) == first.digest


class ParamChange(TypedDict, total=False):
    """A subset of :class:`PTableParams` fields to replace."""

    D: int
    V: float
    js: int
    K: int
    seed: int
    monotone: bool
    pstay: float | None


@pytest.mark.parametrize(
    "change",
    [
        {"D": 4},
        {"V": 2.5},
        {"js": 1},
        {"K": 2048},
        {"seed": DEFAULT.seed + 1},
        {"monotone": True},
        {"pstay": 0.3},
    ],
    ids=lambda c: next(iter(c)),
)
def test_digest_changes_with_every_param(change: ParamChange) -> None:
    other = dataclasses.replace(DEFAULT, **change)
    assert build_ptable(other).digest != build_ptable(DEFAULT).digest


def test_digest_covers_the_values() -> None:
    table = build_ptable(DEFAULT)
    tampered = np.array(table.values)
    tampered[1, [0, 1]] = tampered[1, [1, 0]]
    if np.array_equal(tampered, table.values):
        tampered[2, [0, 5]] = tampered[2, [5, 0]]
    assert ptable_digest(DEFAULT, tampered) != table.digest
    with pytest.raises(ConfigError):
        PTable(DEFAULT, tampered, table.digest)


def test_lookup() -> None:
    table = build_ptable(DEFAULT)
    ncat, k = DEFAULT.ncat, DEFAULT.K
    ckey = np.arange(k)
    for n in range(ncat + 1):
        assert np.array_equal(table.lookup(np.full(k, n), ckey), table.values[n])
    big = np.array([ncat + 1, 50, 10**6, 2**40], dtype=np.int64)
    keys = np.array([0, 17, 4095, 1234])
    assert np.array_equal(table.lookup(big, keys), table.values[ncat, keys])
    assert np.array_equal(table.symmetric_row(), table.values[ncat])
    # broadcasting and scalars
    assert table.lookup(np.arange(3)[:, None], ckey[None, :8]).shape == (3, 8)
    assert int(table.lookup(7, 5)) == int(table.values[ncat, 5])
    assert table.lookup(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).size == 0


@pytest.mark.parametrize(
    ("n", "ckey"),
    [([-1], [0]), ([1], [-1]), ([1], [4096]), ([1.5], [0]), ([1], [0.0])],
)
def test_lookup_rejects_bad_input(n: list[float], ckey: list[float]) -> None:
    with pytest.raises(ConfigError):
        build_ptable(DEFAULT).lookup(np.array(n), np.array(ckey))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=0, max_value=2**62), ckey=st.integers(0, DEFAULT.K - 1))
def test_published_counts_avoid_blocked_values(n: int, ckey: int) -> None:
    table = build_ptable(DEFAULT)
    pvalue = int(table.lookup(np.array([n], dtype=np.int64), np.array([ckey]))[0])
    assert abs(pvalue) <= DEFAULT.D
    published = n + pvalue
    assert published >= 0
    assert not 1 <= published <= DEFAULT.js
    if n == 0:
        assert pvalue == 0


def test_to_arrow() -> None:
    table = build_ptable(DEFAULT)
    arrow = table.to_arrow()
    assert arrow.schema.field("pcv").type == pa.int16()
    assert arrow.schema.field("ckey").type == pa.int16()
    assert arrow.schema.field("pvalue").type == pa.int8()
    assert arrow.num_rows == (DEFAULT.ncat + 1) * DEFAULT.K
    pcv = arrow.column("pcv").to_numpy()
    ckey = arrow.column("ckey").to_numpy()
    pvalue = arrow.column("pvalue").to_numpy()
    assert np.array_equal(pvalue[pcv.astype(np.int64) * DEFAULT.K + ckey], pvalue)
    assert np.array_equal(table.values[pcv, ckey], pvalue)
    assert arrow.schema.metadata[b"statcube.ptable.digest"] == table.digest.encode()


def test_row_probabilities() -> None:
    table = build_ptable(DEFAULT)
    assert table.row_probabilities(0) == {0: 1.0}
    assert table.row_probabilities(1) == {-1: 2731 / 4096, 2: 1364 / 4096, 3: 1 / 4096}
    with pytest.raises(ConfigError):
        table.row_probabilities(DEFAULT.ncat + 1)


def test_build_time_is_small() -> None:
    import time

    params = PTableParams(seed=DEFAULT.seed + 99)
    start = time.perf_counter()
    build_ptable(params)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5 * params.ncat, elapsed


# --- parameters ---------------------------------------------------------------------------


def test_params_defaults_and_ncat() -> None:
    assert PTableParams(D=3, V=2.0, js=2, K=4096, seed=20240501) == DEFAULT
    assert DEFAULT.ncat == 6
    assert PTableParams(D=5, js=4, V=3).ncat == 10


def test_params_normalise_numbers() -> None:
    as_int = PTableParams(V=2)
    assert isinstance(as_int.V, float)
    assert as_int == DEFAULT
    assert hash(as_int) == hash(DEFAULT)
    assert build_ptable(as_int).digest == build_ptable(DEFAULT).digest
    assert isinstance(PTableParams(D=np.int64(3)).D, int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"D": 0}, "D"),
        ({"D": 128}, "D"),
        ({"D": 3.0}, "D"),
        ({"D": True}, "D"),
        ({"V": 0.0}, "V"),
        ({"V": -1.0}, "V"),
        ({"V": 9.0}, "V"),
        ({"V": math.nan}, "V"),
        ({"V": "2"}, "V"),
        ({"js": -1}, "js"),
        ({"js": 4}, "js"),
        ({"D": 4, "js": 4}, "js"),  # 5 does not divide K
        ({"K": 1000}, "K"),
        ({"K": 128}, "K"),
        ({"K": 65536}, "K"),
        ({"seed": -1}, "seed"),
        ({"monotone": 1}, "monotone"),
        ({"pstay": 0.0}, "pstay"),
        ({"pstay": 1.0}, "pstay"),
    ],
)
def test_params_validation(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        PTableParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_js_equal_to_d_allowed_when_d_plus_1_divides_k() -> None:
    params = PTableParams(D=3, V=2.0, js=3)
    table = build_ptable(params)
    assert table.row_probabilities(1) == {-1: 0.75, 3: 0.25}


def test_params_from_mapping() -> None:
    params = PTableParams.from_mapping({"D": 5, "V": 3, "js": 4, "monotone": True})
    assert params == PTableParams(D=5, V=3.0, js=4, monotone=True)
    assert PTableParams.from_mapping({}) == DEFAULT
    assert PTableParams.from_mapping(params.to_mapping()) == params
    with pytest.raises(ConfigError) as info:
        PTableParams.from_mapping({"D": 3, "varaince": 2.0})
    assert info.value.parameter == "varaince"
    with pytest.raises(ConfigError) as info:
        PTableParams.from_mapping({"d": 3})
    assert info.value.parameter == "d"
    assert info.value.hint is not None and "'D'" in info.value.hint
    with pytest.raises(ConfigError) as info:
        PTableParams.from_mapping({"K": "4096"})
    assert info.value.parameter == "K"
