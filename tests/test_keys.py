"""Record keys: the three implementations agree, and keys behave as the cell key method needs.

The reference is :func:`cube.keys.record_keys` (Python's :mod:`hmac`); the build uses
:class:`cube.keys.RecordKeyer`; :func:`cube.keys.duckdb_digest_sql` is the same HMAC in SQL.
If any two disagreed, a cell's key would depend on which code computed it, and the same
people would get different noise in the API and in an export.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cube.keys import (
    K_DEFAULT,
    RecordKeyer,
    duckdb_digest_sql,
    duckdb_keys_sql,
    hmac_pads,
    record_keys,
)

SECRET = b"statcube-test-secret-not-for-production"
#: A secret longer than SHA-256's 64-byte block: HMAC hashes it first.
LONG_SECRET = bytes(range(200))

#: The surrogates' Unicode category, typed as a category name (mypy infers plain ``str`` for
#: a bare ``("Cs",)`` passed to ``st.characters``).
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)

# Text ids of every kind: ASCII digits, any unicode (astral planes, combining marks), but no
# NUL and no surrogates (neither can be a DuckDB VARCHAR or UTF-8 text).
unit_text = st.text(
    alphabet=st.characters(blacklist_categories=SURROGATES, blacklist_characters="\x00"),
    min_size=1, max_size=40,
)


def _sql_keys(con: duckdb.DuckDBPyConnection, secret: bytes, ids: list[str], k: int
              ) -> list[tuple[int, int]]:
    inner, outer = hmac_pads(secret)
    rk, rk2 = duckdb_keys_sql("d", k)
    con.register("ids", pa.table({"i": pa.array(range(len(ids)), pa.int64()),
                                  "unit_id": pa.array(ids, pa.string())}))
    rows = con.execute(
        f"SELECT {rk}, {rk2} FROM (SELECT i, {duckdb_digest_sql('unit_id', '$inner', '$outer')}"
        " AS d FROM ids) ORDER BY i", {"inner": inner, "outer": outer}).fetchall()
    con.unregister("ids")
    return [(int(a), int(b)) for a, b in rows]


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(unit_text, min_size=1, max_size=60),
       secret=st.sampled_from([SECRET, LONG_SECRET, b"k"]))
def test_sql_hmac_equals_python_reference(con: duckdb.DuckDBPyConnection, ids: list[str],
                                          secret: bytes) -> None:
    assert _sql_keys(con, secret, ids, K_DEFAULT) == [record_keys(secret, i) for i in ids]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(unit_text, min_size=1, max_size=60),
       secret=st.sampled_from([SECRET, LONG_SECRET, b"k"]),
       k=st.sampled_from([2, 256, 4096, 32768]))
def test_batch_keyer_equals_python_reference(ids: list[str], secret: bytes, k: int) -> None:
    rk, rk2 = RecordKeyer(secret, k).keys(i.encode("utf-8") for i in ids)
    assert list(zip(rk.tolist(), rk2.tolist(), strict=True)) == [
        record_keys(secret, i, k) for i in ids]


def test_integer_ids_are_keyed_by_their_decimal_text(con: duckdb.DuckDBPyConnection) -> None:
    """Parquet holds integer ids, CSV text ids: the same unit must get the same key."""
    inner, outer = hmac_pads(SECRET)
    rk, rk2 = duckdb_keys_sql("d")
    rows = con.execute(
        f"SELECT i, {rk}, {rk2} FROM (SELECT i, {duckdb_digest_sql('i', '$inner', '$outer')} "
        "AS d FROM range(-5, 1000) t(i)) ORDER BY i", {"inner": inner, "outer": outer}
    ).fetchall()
    assert [(a, b) for _, a, b in rows] == [record_keys(SECRET, str(i)) for i, _, _ in rows]


def test_keys_depend_on_the_secret() -> None:
    ids = [str(i).encode() for i in range(2000)]
    a = RecordKeyer(SECRET).keys(ids)[0]
    b = RecordKeyer(SECRET + b"!").keys(ids)[0]
    # Independent keys agree by chance about 1/K of the time.
    assert np.mean(a == b) < 0.01


def test_keys_are_uniform_and_the_two_keys_independent() -> None:
    """Noise is unbiased only if cell keys are uniform over 0..K-1; the magnitude key must
    not be predictable from the record key."""
    n = 200_000
    rk, rk2 = RecordKeyer(SECRET).keys(str(i).encode() for i in range(n))
    for keys in (rk, rk2):
        assert keys.min() >= 0 and keys.max() < K_DEFAULT
        counts = np.bincount(keys, minlength=K_DEFAULT)
        expected = n / K_DEFAULT
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # 4095 degrees of freedom: mean 4095, sd ≈ 90.5; 5 sd either side.
        assert 4095 - 5 * 90.5 < chi2 < 4095 + 5 * 90.5
    assert abs(np.corrcoef(rk, rk2)[0, 1]) < 0.01


def test_sums_of_keys_mod_k_are_additive() -> None:
    """The cell key of a union of cells is the sum of their keys mod K: what lets rollups
    and drilldowns get exact cell keys from the fact table's ``rk``."""
    rk, _ = RecordKeyer(SECRET).keys(str(i).encode() for i in range(10_000))
    parts = np.array_split(rk, 7)
    assert sum(int(p.sum()) % K_DEFAULT for p in parts) % K_DEFAULT == int(rk.sum()) % K_DEFAULT


@pytest.mark.parametrize("k", [0, 3, 1000, 2**33])
def test_k_must_be_a_power_of_two(k: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RecordKeyer(SECRET, k)
    with pytest.raises(ValueError, match="power of two"):
        duckdb_keys_sql("d", k)
