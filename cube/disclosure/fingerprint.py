"""Digests of a warehouse's content, per period: what decides whether an export partition of
a new release may be carried over from the previous release's export (cube/export.py).

A protected export partition is a function of one period's fact rows, the dimension tables the
cube joins (geography above all), the p-table, the model and the software that writes it. The
exporter combines those into a partition fingerprint; this module computes the two parts that
read the warehouse: :func:`period_digests` (the fact rows of each period) and
:func:`dimension_digest` (the cube's non-time dimension tables). Only hex digests leave these
functions — never a row, a count or a sum — so the exporter never sees a raw column.

Why a digest of raw facts may be published (it is recorded in the export's provenance): the
fact rows hash together every column of every row of the period, including ``rk`` and
``rk2``, the sums of record keys derived from the warehouse's secret. Guessing the digest's
input means guessing every cell of the period *and* the secret-derived key sums of each, so
it cannot be brute-forced from published values, and one digest covers a whole period, never
a cell: it says nothing about any one cell except "unchanged since the last release".

How: order-independent multiset hashing in the engine, one scan of the fact table for all
periods — per period, the row count, the sum (exact, 128-bit) of a 64-bit hash of each row and
the XOR of a second, differently seeded hash of each row, then SHA-256 of those. Two different
sets of rows share all three by accident with probability about 2⁻⁶⁴ per period — enough to
detect changes, which is all it is for (nobody but the build writes the facts). DuckDB's
``hash`` is fast (measured: 5M rows in 0.4 s on 2 cores, some 20× faster than an MD5 of
each row) but not promised stable across DuckDB versions: the exporter records the DuckDB
version beside it, so an upgrade means a recomputation, never a wrong carry. On other
engines (PostgreSQL) no digest is computed: :func:`period_digests` returns nothing and
nothing is carried over.

Must not import the workspace, the exporter, the CLI or the HTTP layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import duckdb
import sqlalchemy as sa

from cube import sql as compiler
from cube.engine import Compiled, Engine
from cube.model import Cube

#: Bump when the digest's definition changes (older records then never match).
DIGEST_VERSION = 1


def engine_tag(engine: Engine) -> str | None:
    """Which hash function the digests of ``engine`` use (None: no digests on it)."""
    return f"duckdb-{duckdb.__version__}" if engine.name == "duckdb" else None


def _columns(engine: Engine, table: str) -> list[str]:
    empty = engine.execute(sa.select(sa.text("*")).select_from(sa.table(table)).limit(0))
    return sorted(empty.column_names)


def _row_digests(engine: Engine, table: str, columns: Sequence[str], group: str | None,
                 where: str = "") -> Iterable[tuple[object, str]]:
    """(group value, digest) per group of ``table``'s rows (one group if ``group`` is None)."""
    q = engine.dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in columns)
    key = q(group) if group else "0"
    sql = (f"SELECT {key} AS g, count(*) AS c, "
           f"CAST(sum(CAST(hash({cols}) AS HUGEINT)) AS VARCHAR) AS s, "
           f"CAST(bit_xor(hash({cols}, 'statcube-fingerprint')) AS VARCHAR) AS x "
           f"FROM {q(table)} {where} GROUP BY 1")
    rows = engine.run(Compiled(sql, [])).to_pylist()
    header = f"v{DIGEST_VERSION}|{table}|{','.join(columns)}"
    for r in rows:
        text = f"{header}|{r['g']}|{r['c']}|{r['s']}|{r['x']}"
        yield r["g"], hashlib.sha256(text.encode()).hexdigest()


def period_digests(engine: Engine, cube: Cube, periods: Sequence[int]) -> dict[int, str]:
    """A SHA-256 hex digest of each period's fact rows (every column), keyed by period
    (YYYYMM, or YYYYQ for quarterly cubes); a period without rows gets the digest of none.
    Empty on engines without digests (see the module docstring)."""
    if engine_tag(engine) is None or not periods:
        return {}
    fact = cube.physical.fact
    column = compiler.fact_period_column(cube)
    wanted = sorted({int(p) for p in periods})
    where = f"WHERE {engine.dialect.identifier_preparer.quote(column)} IN " \
            f"({', '.join(str(p) for p in wanted)})"
    found = {int(str(g)): d for g, d in
             _row_digests(engine, fact, _columns(engine, fact), column, where)}
    none = hashlib.sha256(f"v{DIGEST_VERSION}|{fact}|no rows".encode()).hexdigest()
    return {p: found.get(p, none) for p in wanted}


def dimension_tables(cube: Cube) -> list[str]:
    """The tables a cube's attributes live in other than the fact, its rollups and the time
    dimension (whose tables grow every release; exports drop time attributes)."""
    tdim = cube.time_dimension
    time_prefix = f"{tdim.name}." if tdim is not None else None
    tables = {col.table for ref, col in cube.physical.mappings.items()
              if not (time_prefix and ref.startswith(time_prefix))}
    return sorted(tables - {cube.physical.fact})


def dimension_digest(engine: Engine, cube: Cube) -> str | None:
    """One SHA-256 hex digest of every row of the cube's dimension tables (geography,
    categories, offices); None on engines without digests."""
    if engine_tag(engine) is None:
        return None
    h = hashlib.sha256(f"v{DIGEST_VERSION}".encode())
    for table in dimension_tables(cube):
        for _, digest in _row_digests(engine, table, _columns(engine, table), None):
            h.update(f"|{table}:{digest}".encode())
    return h.hexdigest()
