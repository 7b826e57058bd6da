"""Record keys for the cell key method.

A record key is ``HMAC-SHA256(secret, unit_id) mod K``: stable for a unit across months and
releases (so the same set of people always gets the same cell key and the same noise), and
unpredictable without the secret. The record key and the magnitude key come from disjoint
32-bit slices of the same HMAC digest: bits of a pseudo-random function's output are
independent, so the two keys are unrelated while each unit is hashed only once.

Keys are computed inside the SQL engine (DuckDB's sha256 over blobs) so millions of units are
keyed without a Python loop; :func:`record_key` is the reference implementation the tests
compare against. Keys are internal: they never leave the warehouse.
"""

from __future__ import annotations

import hashlib
import hmac

K_DEFAULT = 4096
_BLOCK = 64  # SHA-256 block size in bytes


def record_keys(secret: bytes, unit_id: str, k: int = K_DEFAULT) -> tuple[int, int]:
    """(record key, magnitude key) of one unit: the reference implementation."""
    digest = hmac.new(secret, unit_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[-4:], "big") % k, int.from_bytes(digest[-8:-4], "big") % k


def hmac_pads(secret: bytes) -> tuple[bytes, bytes]:
    """(inner, outer) padded keys, so SQL can compute H(outer || H(inner || m))."""
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def duckdb_digest_sql(column: str, inner_param: str, outer_param: str) -> str:
    """A DuckDB expression for the hex HMAC-SHA256 of ``column`` (an identifier from our code)."""
    inner = f"sha256({inner_param}::BLOB || encode({column}::VARCHAR))"
    return f"sha256({outer_param}::BLOB || unhex({inner}))"


def duckdb_keys_sql(digest: str, k: int = K_DEFAULT) -> tuple[str, str]:
    """Expressions for (record key, magnitude key) from a hex digest column.

    ``k`` must be a power of two ≤ 2**32, so a 32-bit slice mod k is uniform.
    """
    if k <= 0 or k & (k - 1) or k > 2**32:
        raise ValueError("K must be a power of two no larger than 2**32")
    rk = f"(('0x' || substr({digest}, 57, 8))::UBIGINT % {k})"
    rk2 = f"(('0x' || substr({digest}, 49, 8))::UBIGINT % {k})"
    return rk, rk2
