"""Build a release warehouse (one DuckDB file) from geography lookups and claimant microdata.

The build is the only code that ever sees microdata. It validates every record (unknown OA,
bad month, unknown category code, negative or missing amount, a unit counted twice in one
month) and refuses the whole build with a report naming file, row, column and value — unless
the caller asks to skip bad rows, in which case the report is written beside the warehouse.
It then keys every unit (HMAC, see cube/keys.py) and aggregates to the finest grain: one row
per non-empty combination of OA × period × category codes holding the record count ``n``, the
key sums ``rk``/``rk2`` mod K, and per amount measure the sum and the largest single value.
Microdata itself is never copied into the warehouse.

The tables and columns written here are exactly what model.json's mappings and joins
describe (a test checks both directions), plus the translated labels cube/labels.py's
convention describes: ``dim_geography``'s Welsh names (``la_name_cy`` …) from the lookups.
The warehouse is written to a temporary file and renamed into place, so a reader never opens
a half-built release.

How it stays fast, and within a month's memory — a cube is built period by period, in batches
of whole periods (about :data:`_BATCH_ROWS` records; at national scale, one month each), two
passes over each batch's microdata when the input is clean, nothing per record in Python, no
sort of all the facts. Memory follows the biggest batch, not the history:

1. *Unit pass* — one ``GROUP BY unit_id`` over the batch yields its distinct units (to key
   them) and, for stocks, the duplicate check: a unit's number of records must equal its
   number of distinct months (a 64-bit ``bit_or`` of month positions). A batch holds whole
   months, so a unit counted twice in one month is always caught.
2. *Keys* — each unit is keyed once per build, in Python (:class:`cube.keys.RecordKeyer`,
   several times faster than the same HMAC in DuckDB SQL, since the secret's pad blocks are
   hashed once): keys of units seen in an earlier batch — or in an earlier build, through the
   unit-key cache beside the secret (cube/incremental.py) — are looked up, not recomputed.
   Two cubes are built at a time, so one cube's keys are hashed while the other's SQL runs
   (DuckDB releases the GIL).
3. *Fact pass* — the batch's records join their unit's keys and are grouped on the codes
   exactly as given (DuckDB hashes dictionary-encoded Parquet strings cheaply) and appended:
   smaller hash tables, and a table stored period by period without sorting it.
   Category and Jobcentre Plus codes are stored as ENUM types built from their codelists
   (``codelist_jcp`` from dim_jcp, ``codelist_<dimension>`` from the model's members; the
   dimension tables' keys have the same types, so joins compare ENUMs), which DuckDB
   writes about three times faster than VARCHAR — writing the fact table, not grouping,
   is most of a build. OA codes stay VARCHAR: DuckDB sends an ENUM's whole dictionary with
   every Arrow result, which for ~235k OAs costs a query 12 ms, and they are one column of
   several. Every category and office code goes through a cast to its codelist, so one
   outside it becomes NULL; OA codes are kept as given (step 4 checks them); a bad amount
   folds into a NULL OA code.
4. *Validation on the cells* — no fact column may be NULL (an unknown code, a bad amount, a
   month that is not YYYY-MM) and every OA code must be in ``dim_geography``; one scan of
   small columns and one anti join, so this costs almost nothing.

Readers see the codes as text: comparing an ENUM with a string compares text, the
codelists are in code order so an ENUM sorts as its text does, the query engine turns
DuckDB's dictionary-typed Arrow results into plain strings (cube/engine.py), and
cube/pg_load.py loads the columns into PostgreSQL as text.

*Incremental releases.* When the previous release in the warehouse folder was built from the
same model, p-table, secret and geography (cube/incremental.py), the build starts from a byte
copy of its file (at the temporary name; the previous file is only read). A period whose
input files are unchanged (same files by a keyed SHA-256 fingerprint) is not built at all:
its fact and rollup rows stay in the copy as they are — not re-inserted, not re-compressed,
not rewritten by the final checkpoint. The rows of every other period are deleted, new and
revised periods are built as above and appended, and their rollup rows aggregated; what
depends on the whole release (time dimensions, boundaries, metadata) is written again, and a
cube that cannot be reused is dropped and built whole. A past period whose inputs changed is
reported as a revision. ``BuildOptions.full`` (``statcube build --full``) builds a new file.

Only when a pass finds a problem does the slow path run: it rescans the input with file
names and row numbers to list each bad row, then (with ``skip_bad_rows``) reruns the fast
path on the remaining rows (of the whole cube, in one batch: bad input is rare, and its
report must be complete). Both paths use the same codelists, so they agree.

Measured (scale 0.05, 4.0M records, 2 cores, best of 3): 5.4 s, 1.35× a bare ``GROUP BY``
of the same files into DuckDB with codes as text (4.0 s); 6.3 s with every fact code stored
as text; 11.5 s for the build before this design (validation, duplicate, key and fact
passes each rescanning the input, ``NOT IN`` lookups, HMAC in SQL, a sort of all facts).
bench/bench_build.py also prints the floor — read, key, group and write alone, on all
cores — which is about 2.0 s here.

Identifiers in the SQL below come from model.json and this module, never from input files;
file paths and secrets are bound parameters or quoted literals of paths this module listed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cube.disclosure.ptable import PTable, PTableParams, build_ptable
from cube.errors import ArgumentError, InputDataError
from cube.geography import GeographyLoad, find_lookups, load_geography
from cube.incremental import (
    Previous,
    UnitKeyCache,
    check_cache_location,
    file_digests,
    find_previous,
    geography_digest,
    model_digest,
    period_fingerprints,
    revised,
    secret_fingerprint,
)
from cube.keys import K_DEFAULT, RecordKeyer
from cube.model import Cube, Model
from cube.rollups import (
    GEO_ID,
    Rollup,
    cells_sql,
    fact_key_column,
    finish_sql,
    geography_columns,
    levels_sql,
    regroup_sql,
)
from cube.rollups import _additive as additive_columns
from cube.rollups import declared as declared_rollups
from cube.rollups import select_sql as rollup_sql
from cube.sql import fact_period_column

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_PROBLEMS = 100
ProgressFn = Callable[[str, int, int], None]
_MONTH_RE = re.compile(r"(19|20|21)[0-9][0-9]-(0[1-9]|1[0-2])")
#: Units keyed per batch in Python: bounds the memory of the key pass.
_KEY_BATCH = 1 << 20
#: Cubes built at once (see _run_concurrently).
_CONCURRENT_CUBES = 2
#: Records per aggregation batch (whole periods; see _batches).
_BATCH_ROWS = 2_000_000
#: Prefix of the ENUM types used only during a build (dropped before the warehouse is closed).
_ENUM = "_statcube_enum_"
#: Prefix of the ENUM types category and office codes are stored as, kept in the warehouse:
#: ``codelist_jcp`` and ``codelist_<dimension>`` (OA codes are stored as text).
CODELIST = "codelist_"
#: The warehouse layout this module writes, recorded in ``statcube_meta`` as ``format``.
#: 2: category and office codes stored as ENUM codelists (1: every code as text). Readers
#: accept both; tools that keep warehouses around (bench/common.py) rebuild older ones.
#: The Welsh names in ``dim_geography`` (``*_name_cy``, cube/geography.py) are no format
#: change: they are optional columns after the others, which readers look for
#: (cube/labels.py), so a format-2 warehouse without them is served in English.
WAREHOUSE_FORMAT = 2
#: Integer unit-id types: such an id is missing only when NULL (no text to be blank).
_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                            "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
#: DuckDB errors that mean an unreadable or inconsistent input file (not a bug here).
_READ_ERRORS = (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)


@dataclass(frozen=True)
class BuildOptions:
    release: str | None = None  # default: the latest month in the data, e.g. "2026-11"
    skip_bad_rows: bool = False
    threads: int | None = None
    #: DuckDB's share of a build's memory. 2.5 GB, not 3: at national scale (12 months, two
    #: cubes and their rollups at once) 3 GB gave a peak RSS of 3.87 GiB (4.16 GB), 2.5 GB
    #: 3.26 GiB for 22% more wall time (spilling): the 4 GB target with room for longer
    #: histories (measured 2 December 2026, README "The national benchmark").
    memory_limit: str = "2.5GB"
    #: Rebuild every period even when the previous release holds it unchanged.
    full: bool = False
    #: Folder of the unit-key cache (cube/incremental.py), beside the secret; None: no cache.
    key_cache: Path | None = None


@dataclass
class CubeBuildReport:
    records: int = 0
    fact_rows: int = 0
    units: int = 0  # units per built batch, summed (a stock's unit counts once per batch)
    keyed: int = 0  # units whose keys were computed (not found in the key cache)
    skipped: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    #: Seconds per stage ("units", "keys", "facts", "problems"; "carry": deleting the copied
    #: fact's rows of periods not carried), for benchmarks.
    timings: dict[str, float] = field(default_factory=dict)
    #: Periods (month_id or quarter_id as text) kept from the previous release, and those
    #: rebuilt although the previous release held them, because their inputs changed.
    carried: list[str] = field(default_factory=list)
    revised: list[str] = field(default_factory=list)


@dataclass
class BuildReport:
    warehouse: Path
    release: str
    seconds: float = 0.0
    cubes: dict[str, CubeBuildReport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Seconds per stage; per cube its facts, "rollups" summed over the cubes (two run at
    #: once), "copy" the byte copy of the previous release.
    timings: dict[str, float] = field(default_factory=dict)
    #: The release this one started from a byte copy of (``reuse`` says so), or None with
    #: the reason it was not reused in ``reuse``.
    previous: str | None = None
    reuse: str = ""

    @property
    def records(self) -> int:
        return sum(c.records for c in self.cubes.values())

    @property
    def report_path(self) -> Path:
        """Where the bad-row report of a build with ``skip_bad_rows`` goes."""
        return self.warehouse.with_name(f"{self.release}.build-report.json")

    def to_json(self) -> dict[str, Any]:
        return {
            "warehouse": str(self.warehouse),
            "release": self.release,
            "seconds": round(self.seconds, 3),
            "records": self.records,
            "records_per_second": round(self.records / self.seconds) if self.seconds else None,
            "warnings": self.warnings,
            "previous": self.previous,
            "reuse": self.reuse,
            "cubes": {
                k: {"records": v.records, "fact_rows": v.fact_rows, "skipped": v.skipped,
                    "files": v.files, "problems": v.problems, "carried": v.carried,
                    "revised": v.revised}
                for k, v in self.cubes.items()
            },
        }

    @property
    def revisions(self) -> dict[str, list[str]]:
        """{cube: periods rebuilt because their inputs changed since the previous release}."""
        return {k: v.revised for k, v in self.cubes.items() if v.revised}


# --- Inputs ------------------------------------------------------------------------------------

def microdata_files(input_dir: Path, cube: str) -> list[Path]:
    d = input_dir / "microdata" / cube
    if not d.is_dir():
        return []
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in {".parquet", ".csv"})


def _category_dims(cube: Cube) -> list[str]:
    return [d.name for d in cube.dimensions if d.members]


def _has_jcp(cube: Cube) -> bool:
    return any(d.name == "jcp" for d in cube.dimensions)


def required_columns(cube: Cube) -> list[str]:
    """The microdata columns a cube needs: documented in the README."""
    cols = ["unit_id", "month", "oa_code"]
    if _has_jcp(cube):
        cols.append("jcp_office")
    cols += _category_dims(cube)
    cols += [m.name for m in cube.measures if m.kind == "amount"]
    return cols


def _literal(text: str) -> str:
    """A SQL string literal. Used only for file paths this module listed itself and for
    validated month strings, because DuckDB views and type definitions cannot hold bound
    parameters."""
    return "'" + text.replace("'", "''") + "'"


def _file_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        rows = con.execute(
            f"DESCRIBE SELECT * FROM read_csv({_literal(str(path))}, header = true, "
            "all_varchar = true)").fetchall()
    except (OSError, pa.ArrowException, duckdb.Error) as exc:
        raise InputDataError(f"cannot read microdata file {path.name}: {exc}",
                             problems=[f"{path}: {exc}"], parameter="microdata") from None
    return [r[0] for r in rows]


def _source_sql(files: Sequence[Path], *, located: bool) -> str:
    """One relation over all input files; with ``located``, also ``_file`` and ``_row``.

    ``_row`` is the 1-based data row of a Parquet file and the physical line of a CSV file
    (its header is line 1). Locating costs a column per row, so only the slow path asks.
    """
    parts: list[str] = []
    parquet = [_literal(str(f)) for f in files if f.suffix.lower() == ".parquet"]
    csvs = [f for f in files if f.suffix.lower() == ".csv"]
    if parquet and located:
        parts.append(
            "SELECT * EXCLUDE (filename, file_row_number), filename AS _file, "
            f"file_row_number + 1 AS _row FROM read_parquet([{', '.join(parquet)}], "
            "filename = true, file_row_number = true, union_by_name = true)"
        )
    elif parquet:
        parts.append(f"SELECT * FROM read_parquet([{', '.join(parquet)}], union_by_name = true)")
    if csvs and located:
        parts += [
            f"SELECT *, {_literal(str(f))} AS _file, row_number() OVER () + 1 AS _row "
            f"FROM read_csv({_literal(str(f))}, header = true, all_varchar = true)"
            for f in csvs
        ]
    elif csvs:
        lits = ", ".join(_literal(str(f)) for f in csvs)
        parts.append(f"SELECT * FROM read_csv([{lits}], header = true, all_varchar = true, "
                     "union_by_name = true)")
    return " UNION ALL BY NAME ".join(parts)


# --- Dimension tables ------------------------------------------------------------------------

def _dim_month(months: Sequence[int]) -> pa.Table:
    rows = sorted(set(months))
    return pa.table({
        "month_id": pa.array(rows, pa.int32()),
        "year": pa.array([m // 100 for m in rows], pa.int16()),
        "quarter": pa.array([(m % 100 - 1) // 3 + 1 for m in rows], pa.int8()),
        "month": pa.array([m % 100 for m in rows], pa.int8()),
        "quarter_label": [f"{m // 100} Q{(m % 100 - 1) // 3 + 1}" for m in rows],
        "month_label": [f"{MONTH_NAMES[m % 100 - 1]} {m // 100}" for m in rows],
    })


def _quarter_id(month_id: int) -> int:
    return (month_id // 100) * 10 + (month_id % 100 - 1) // 3 + 1


def _dim_quarter(months: Sequence[int]) -> pa.Table:
    qs = sorted({_quarter_id(m) for m in months})
    return pa.table({
        "quarter_id": pa.array(qs, pa.int32()),
        "year": pa.array([q // 10 for q in qs], pa.int16()),
        "quarter": pa.array([q % 10 for q in qs], pa.int8()),
        "quarter_label": [f"{q // 10} Q{q % 10}" for q in qs],
    })


def _dim_category(model: Model, name: str) -> pa.Table:
    dim = model.dimensions[name]
    return pa.table({
        f"{name}_code": [m.code for m in dim.members],
        f"{name}_name": [m.label for m in dim.members],
        f"{name}_order": pa.array(range(1, len(dim.members) + 1), pa.int16()),
    })


def _read_jcp(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv

    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in ("office_code", "district_code",
                                                   "group_code")}))
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{path.name}: cannot read: {exc}") from None
    needed = ["office_code", "office_name", "district_code", "district_name", "group_code",
              "group_name"]
    missing = [c for c in needed if c not in t.column_names]
    if missing:
        raise InputDataError(f"{path.name}: missing column(s) {', '.join(missing)}",
                             problems=[f"{path.name}: header has {', '.join(t.column_names)}"])
    t = t.select(needed)
    seen: set[str] = set()
    problems = []
    for line, code in enumerate(t.column("office_code").to_pylist(), start=2):
        if not code:
            problems.append(f"{path.name} line {line}: office_code is empty")
        elif code in seen:
            problems.append(f"{path.name} line {line}: office_code {code!r} appears twice")
        seen.add(code or "")
    if problems:
        raise InputDataError(f"{path.name}: {len(problems)} bad office row(s)",
                             problems=problems[:MAX_PROBLEMS])
    return t


def _create_enums(con: duckdb.DuckDBPyConnection, model: Model, cubes: Sequence[Cube],
                  months: Sequence[str], keep: Collection[str] = ()) -> None:
    """ENUM types for every code the microdata may hold: a failed TRY_CAST marks a bad row.

    The ``codelist_`` types are also the types of the fact tables' category and office
    columns (writing an ENUM column costs a third of writing the same codes as VARCHAR) and
    of the dimension keys they join to: an ENUM = VARCHAR join compares text, which stops
    DuckDB pushing the join's filter into the scan of the fact (measured: selective queries
    twice as slow). Members are in code order, because DuckDB sorts an ENUM by
    member position: in code (byte) order an ENUM column sorts exactly as its text does, so
    ORDER BY and paging do not change. (Comparing an ENUM with a string compares text, so
    cuts do not depend on the order either.) OA codes are checked against a build-only ENUM
    and stored as text (see the module docstring). A dimension table in ``keep`` already
    has its codelist type."""
    con.execute(f"CREATE TYPE {_ENUM}oa AS ENUM "
                "(SELECT oa_code FROM dim_geography ORDER BY oa_code)")
    keys = []
    if any(_has_jcp(c) for c in cubes):
        keys.append(("jcp", "dim_jcp", "office_code"))
    keys += [(name, f"dim_{name}", f"{name}_code")
             for name in sorted({d for c in cubes for d in _category_dims(c)})]
    for codelist, table, column in keys:
        if table in keep:
            continue
        con.execute(f"CREATE TYPE {CODELIST}{codelist} AS ENUM "
                    f"(SELECT {column} FROM {table} ORDER BY {column})")
        con.execute(f"ALTER TABLE {table} ALTER {column} TYPE {CODELIST}{codelist}")
    con.execute(f"CREATE TYPE {_ENUM}month AS ENUM "
                f"({', '.join(_literal(m) for m in months)})")


def _drop_enums(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the build-only ENUM types (the codelists stay: code columns are stored as them)."""
    for (name,) in con.execute(
            "SELECT type_name FROM duckdb_types() WHERE NOT internal AND starts_with("
            "type_name, $p)", {"p": _ENUM}).fetchall():
        con.execute(f"DROP TYPE {name}")


# --- One cube: plan, fast path, slow path --------------------------------------------------

@dataclass(frozen=True)
class _Check:
    column: str
    bad: str  # SQL condition true for a bad row
    what: str


@dataclass(frozen=True)
class _Plan:
    """The SQL pieces of one cube's build, derived from the model and the input's types."""

    cube: Cube
    #: (fact column, SQL expression over an input row: the code as given, NULL for a bad
    #: amount, so the row lands in a cell the post-check finds)
    keys: tuple[tuple[str, str], ...]
    #: (fact column, ENUM type of its valid codes): a ``codelist_`` type is also what the
    #: fact stores the column as; a build-only type (OA codes) means it is stored as text
    codelists: tuple[tuple[str, str], ...]
    period_col: str
    period_key: str  # expression over an input row that the fact groups on
    period_out: str  # expression over the grouped ``g.p`` giving month_id / quarter_id
    amounts: tuple[tuple[str, str, str, str], ...]  # (input column, expr, sum col, max col)
    checks: tuple[_Check, ...]
    month_key: str  # the month as ENUM (for the duplicate check)
    months: tuple[int, ...]  # every month id found in the input, ascending

    @property
    def fact(self) -> str:
        return self.cube.physical.fact

    def period_of(self, month: str) -> int | None:
        """The fact period (month_id or quarter_id) of a month string, None if invalid."""
        if not _MONTH_RE.fullmatch(month):
            return None
        m = int(month[:4]) * 100 + int(month[5:7])
        return _quarter_id(m) if self.period_col == "quarter_id" else m


def _amount_expr(column: str, sql_type: str) -> str:
    """An amount in whole pence as BIGINT, or NULL when it is not one."""
    t = sql_type.upper()
    if t in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}:
        return f"{column}::BIGINT"
    if t.startswith(("DOUBLE", "FLOAT", "DECIMAL", "REAL", "HUGEINT", "UBIGINT")):
        return f"CASE WHEN {column} = round({column}) THEN TRY_CAST({column} AS BIGINT) END"
    return (f"CASE WHEN regexp_full_match(trim({column}::VARCHAR), '[0-9]+') "
            f"THEN TRY_CAST(trim({column}::VARCHAR) AS BIGINT) END")


def _plan(model: Model, cube: Cube, types: dict[str, str], months: Sequence[int]) -> _Plan:
    month_key = f"TRY_CAST(month::VARCHAR AS {_ENUM}month)"
    # Periods: ENUM positions index a literal list of the months (or quarters) found.
    if cube.grain == "quarter":
        period_col = "quarter_id"
        period_key = f"{_int_list([_quarter_id(m) for m in months])}[enum_code({month_key}) + 1]"
        period_out = "g.p"
    else:  # group on the month's ENUM position (one byte); convert once per cell
        period_col = "month_id"
        period_key = month_key
        period_out = f"{_int_list(months)}[enum_code(g.p) + 1]"
    amounts = []
    for m in cube.measures:
        if m.kind == "amount":
            amounts.append((m.name, _amount_expr(m.name, types[m.name]),
                            cube.physical.column(m.name).column, cube.physical.max_columns[m.name]))
    amount_ok = " AND ".join(f"({expr}) >= 0" for _, expr, _, _ in amounts)
    keys = [("oa_code", f"CASE WHEN {amount_ok} THEN oa_code END" if amounts else "oa_code")]
    codelists = [("oa_code", f"{_ENUM}oa")]
    checks = [
        _Check("unit_id", "unit_id IS NULL OR trim(unit_id::VARCHAR) = ''", "missing unit id"),
        _Check("month", f"{month_key} IS NULL", "month is not YYYY-MM"),
        _Check("oa_code", f"TRY_CAST(oa_code::VARCHAR AS {_ENUM}oa) IS NULL",
               "unknown output area code"),
    ]
    if _has_jcp(cube):
        keys.append(("jcp_office", "jcp_office"))
        codelists.append(("jcp_office", f"{CODELIST}jcp"))
        checks.append(_Check("jcp_office",
                             f"TRY_CAST(jcp_office::VARCHAR AS {CODELIST}jcp) IS NULL",
                             "unknown Jobcentre Plus office"))
    for name in _category_dims(cube):
        keys.append((name, name))
        codelists.append((name, f"{CODELIST}{name}"))
        checks.append(_Check(name, f"TRY_CAST({name}::VARCHAR AS {CODELIST}{name}) IS NULL",
                             f"unknown {model.dimensions[name].label.lower()} code"))
    for col, expr, _, _ in amounts:
        checks.append(_Check(col, f"({expr}) IS NULL OR ({expr}) < 0",
                             "amount must be a whole, non-negative number of pence"))
    return _Plan(cube, tuple(keys), tuple(codelists), period_col, period_key, period_out,
                 tuple(amounts), tuple(checks), month_key, tuple(months))


def _plan_periods(cube: Cube) -> _Plan:
    """A plan good only for :meth:`_Plan.period_of` (which needs the cube's grain alone), for
    grouping files by period before the input's types are known."""
    return _Plan(cube, (), (), "quarter_id" if cube.grain == "quarter" else "month_id",
                 "", "", (), (), "", ())


def _int_list(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def _unit_pass(con: duckdb.DuckDBPyConnection, plan: _Plan, source: str, unit_type: str) -> int:
    """Distinct units of one batch into temp table ``units``; returns how many units are bad
    (missing id, or — for stocks — counted twice in one month). Ids are cast to the cube's
    id type so every batch's ids match the key table's."""
    bad_id = "unit_id IS NULL"
    if unit_type.upper() not in _INTEGER_TYPES:  # only text can be blank
        bad_id += " OR trim(unit_id::VARCHAR) = ''"
    uid = f"unit_id::{unit_type}"
    if plan.cube.kind != "stock":
        con.execute(f"CREATE OR REPLACE TEMP TABLE units AS SELECT DISTINCT {uid} AS unit_id "
                    f"FROM ({source})")
        dup = "false"
    else:
        if len(plan.months) <= 64:
            months = "bit_count(bit_or(1::UBIGINT << enum_code(m)))"
        else:
            months = "count(DISTINCT m)"
        con.execute(
            "CREATE OR REPLACE TEMP TABLE units AS SELECT unit_id, count(m) AS n_records, "
            f"{months} AS n_months FROM (SELECT {uid} AS unit_id, {plan.month_key} AS m "
            f"FROM ({source})) GROUP BY unit_id")
        dup = "n_records > n_months"
    row = con.execute(f"SELECT count(*) FILTER (WHERE {bad_id} OR {dup}) FROM units").fetchone()
    return int(row[0]) if row else 0


def _key_pass(con: duckdb.DuckDBPyConnection, keyer: RecordKeyer) -> tuple[int, int]:
    """Keys of the batch's units (temp table ``units``) into temp table ``unit_keys``;
    returns (units, units newly keyed).

    Units already in temp table ``known`` (keyed in an earlier batch, or loaded from the
    unit-key cache) are not hashed again: units recur month after month, and HMAC in Python
    is the one step of a build that does not run in parallel. One join finds both the known
    keys and the units still to hash (an anti join and then a semi join cost 1.6× its CPU
    with ten million units known, as a release starting from the cache has).
    """
    con.execute("CREATE OR REPLACE TEMP TABLE unit_keys AS SELECT u.unit_id, k.rkey, k.rkey2 "
                "FROM units AS u LEFT JOIN known AS k USING (unit_id)")
    new = con.execute("SELECT unit_id, unit_id::VARCHAR AS t FROM unit_keys WHERE rkey IS NULL"
                      ).to_arrow_reader(_KEY_BATCH).read_all()
    if new.num_rows:
        con.execute("DELETE FROM unit_keys WHERE rkey IS NULL")
    for start in range(0, new.num_rows, _KEY_BATCH):
        chunk = new.slice(start, _KEY_BATCH)
        rk, rk2 = keyer.keys(chunk.column(1).cast(pa.binary()).to_pylist())
        # k ≤ 2**15 (the fact stores key sums mod k as SMALLINT), so keys fit in int32.
        con.register("new_keys", pa.table({"unit_id": chunk.column(0),
                                           "rkey": pa.array(rk.astype(np.int32)),
                                           "rkey2": pa.array(rk2.astype(np.int32))}))
        con.execute("INSERT INTO known SELECT * FROM new_keys")
        con.execute("INSERT INTO unit_keys SELECT * FROM new_keys")
        con.unregister("new_keys")
    row = con.execute("SELECT count(*) FROM unit_keys").fetchone()
    return (int(row[0]) if row else 0), int(new.num_rows)


def _fact_columns(plan: _Plan) -> list[tuple[str, str]]:
    """(column, SQL type) of the cube's fact table, in order: codes (category and office codes
    as their codelist ENUM, OA codes as text), period, count, key sums, amount sums and
    maxima."""
    cube = plan.cube
    cols = [(name, enum if enum.startswith(CODELIST) else "VARCHAR")
            for name, enum in plan.codelists]
    cols += [(plan.period_col, "INTEGER"),
             (cube.physical.column(cube.count_measure.name).column, "BIGINT"),
             (cube.physical.record_key, "SMALLINT"), (cube.physical.magnitude_key, "SMALLINT")]
    for _, _, sum_col, max_col in plan.amounts:
        cols += [(sum_col, "BIGINT"), (max_col, "BIGINT")]
    return cols


def _fact_pass(con: duckdb.DuckDBPyConnection, plan: _Plan, source: str, several: bool,
               k: int, unit_type: str) -> None:
    """Append one batch's cells to the fact table (its units keyed in ``unit_keys``).

    A batch holds whole periods (so cells never span batches); only a batch of several is
    sorted, by period. The table comes out in period order — a one-period query reads few
    row groups — without a sort of everything (sorting the string codes would cost as much
    as the aggregation).
    """
    cube = plan.cube
    key_names = [name for name, _ in plan.keys]
    enums = dict(plan.codelists)
    row_cols = ", ".join(
        (f"TRY_CAST(({expr})::VARCHAR AS {enums[name]})"
         if enums.get(name, "").startswith(CODELIST) else expr) + f" AS {name}"
        for name, expr in plan.keys)
    row_cols += f", {plan.period_key} AS p"
    row_cols += "".join(f", {expr} AS _a{i}" for i, (_, expr, _, _) in enumerate(plan.amounts))
    aggs = ", ".join(key_names) + ", p, count(*) AS n, sum(rkey) AS s1, sum(rkey2) AS s2"
    aggs += "".join(f", sum(_a{i}) AS _s{i}, max(_a{i}) AS _m{i}"
                    for i in range(len(plan.amounts)))
    # Category and office codes (and the month) pass through their codelist's ENUM before
    # grouping, so one outside it becomes NULL (found by _bad_cells), and are stored as that
    # ENUM. Cast per record, not per cell: grouping on one-byte ENUMs instead of text saves
    # more than the extra casts cost (measured at scale 0.05, Universal Credit's 2.2M
    # records into 1.4M cells: 2.6 s of CPU instead of 3.1 s). Not OA codes: cast per
    # record to the ~235k-member OA ENUM the same pass cost 3.7 s. They are stored as text as
    # given, and _bad_cells finds unknown ones with one anti join to dim_geography, a tenth
    # of casting even every cell (0.04 s against 0.4 s of CPU for Universal Credit's cells).
    out = ", ".join((f"g.{name}" if enum.startswith(CODELIST) else f"g.{name}::VARCHAR")
                    + f" AS {name}" for name, enum in plan.codelists)
    out += f", ({plan.period_out})::INTEGER AS {plan.period_col}"
    out += f", g.n::BIGINT AS {cube.physical.column(cube.count_measure.name).column}"
    out += f", (g.s1 % {k})::SMALLINT AS {cube.physical.record_key}"
    out += f", (g.s2 % {k})::SMALLINT AS {cube.physical.magnitude_key}"
    out += "".join(f", g._s{i}::BIGINT AS {sum_col}, g._m{i}::BIGINT AS {max_col}"
                   for i, (_, _, sum_col, max_col) in enumerate(plan.amounts))
    select = (f"SELECT {out} FROM (SELECT {aggs} FROM (SELECT unit_id::{unit_type} AS unit_id, "
              f"{row_cols} FROM ({source})) r JOIN unit_keys USING (unit_id) GROUP BY ALL) g"
              + (" ORDER BY g.p" if several else ""))
    con.execute(f"INSERT INTO {plan.fact} {select}")


def _bad_cells(con: duckdb.DuckDBPyConnection, plan: _Plan,
               carried: Collection[int] = frozenset()) -> int:
    """Validation, on the cells: a NULL code (one outside its codelist, or a bad amount), a
    period that is not a month, an OA code not in dim_geography (OA codes are stored as
    given, see _fact_pass). One scan of small columns and one anti join: cheap.

    Only the cells this build wrote are checked: the rows of ``carried`` periods come from
    the previous release, checked when it was built against the same codelists and the same
    geography (a release is copied only when both are unchanged). Checking them again made
    every release pay a scan of the whole history — the OA anti join over every cell of
    every month — for three new months."""
    period = f"f.{plan.period_col}"
    kept = ", ".join(str(int(p)) for p in sorted(carried))
    written = f"({period} IS NULL OR {period} NOT IN ({kept}))" if carried else "true"
    bad = " OR ".join([f"{period} IS NULL", *(f"f.{c} IS NULL" for c, _ in plan.codelists)])
    row = con.execute(f"SELECT count(*) FROM {plan.fact} AS f WHERE {written} AND ({bad})"
                      ).fetchone()
    n = int(row[0]) if row else 0
    for column, enum in plan.codelists:
        if not enum.startswith(CODELIST):  # only OA codes are stored as text
            row = con.execute(f"SELECT count(*) FROM {plan.fact} AS f ANTI JOIN dim_geography "
                              f"AS d ON d.oa_code = f.{column} WHERE {written}").fetchone()
            n += int(row[0]) if row else 0
    return n


def _period_groups(plan: _Plan, files: Sequence[Path], file_months: dict[Path, set[str]]
                   ) -> dict[int, list[Path]] | None:
    """Files by the one period they hold (-1: no valid month at all; its rows are bad), or
    None when a file holds several periods (then the cube is built in one pass)."""
    groups: dict[int, list[Path]] = {}
    for f in files:
        periods = {p for p in map(plan.period_of, file_months.get(f, set())) if p is not None}
        if len(periods) > 1:
            return None
        groups.setdefault(periods.pop() if periods else -1, []).append(f)
    return groups


@dataclass(frozen=True)
class _Step:
    """One step of a cube's fact table, in period order: build a batch from a source relation
    (``several``: it holds more than one period), or keep the ``carried`` periods the copy
    of the previous release holds (nothing to do)."""

    source: str = ""
    several: bool = False
    carried: tuple[int, ...] = ()


def _steps(groups: Mapping[int, Sequence[Path]], carry: set[int]) -> list[_Step]:
    """The steps building a cube period by period.

    Consecutive built periods share a batch until it holds about :data:`_BATCH_ROWS`
    records: each batch rebuilds the join of records to unit keys, which only pays off when
    batches are big enough for their smaller hash tables to matter — and a batch's records
    are what a build holds in memory at once, so memory follows the biggest period, not the
    history. Consecutive carried periods are one step.
    """
    steps: list[tuple[list[Path], bool, list[int]]] = []  # (files, several, carried)
    rows = _BATCH_ROWS
    for period in sorted(groups):
        if period in carry:
            if steps and steps[-1][2]:
                steps[-1][2].append(period)
            else:
                steps.append(([], False, [period]))
            rows = _BATCH_ROWS
            continue
        if rows >= _BATCH_ROWS or period == -1:
            steps.append(([], False, []))
            rows = 0
        elif steps[-1][0]:
            steps[-1] = (steps[-1][0], True, [])
        steps[-1][0].extend(groups[period])
        rows += sum(_file_rows(f) for f in groups[period])
    return [_Step(carried=tuple(c)) if c else _Step(_source_sql(f, located=False), several)
            for f, several, c in steps]


def _file_rows(path: Path) -> int:
    """Records in a file: exact for Parquet (from its footer), a size-based guess for CSV."""
    if path.suffix.lower() == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return path.stat().st_size // 60


def _name(path: Path, input_dir: Path) -> str:
    """A file's name for messages: relative to the input folder (``microdata/pip/….parquet``)."""
    try:
        return str(path.relative_to(input_dir))
    except ValueError:
        return path.name


def _where(file: str, row: int, input_dir: Path) -> str:
    path = Path(file)
    return f"{_name(path, input_dir)} {'line' if path.suffix.lower() == '.csv' else 'row'} {row}"


def _check_columns(con: duckdb.DuckDBPyConnection, cube: Cube, files: Sequence[Path],
                   input_dir: Path) -> None:
    require_columns(cube, ((_name(f, input_dir), _file_columns(con, f)) for f in files))


def require_columns(cube: Cube, headers: Iterable[tuple[str, Collection[str]]]) -> None:
    """Every file of a cube holds every required column (checked per file: a union of files
    would silently fill a column one file lacks with NULLs). ``headers``: each file's name as
    reported and its columns, however they were read (DuckDB here, Spark in cube/spark)."""
    need = required_columns(cube)
    problems = []
    for name, have in headers:
        missing = [c for c in need if c not in have]
        if missing:
            problems.append(f"{name}: missing column(s) {', '.join(missing)}")
    if problems:
        raise InputDataError(
            f"{cube.name}: microdata is missing required column(s); every file needs "
            f"{', '.join(need)}", problems=problems[:MAX_PROBLEMS], parameter="microdata")


def _locate_problems(con: duckdb.DuckDBPyConnection, plan: _Plan, files: Sequence[Path],
                     input_dir: Path) -> tuple[list[str], int]:
    """The slow path: temp table ``bad`` (_file, _row) and up to MAX_PROBLEMS messages."""
    with _SLOW_PATH:  # the setting below is global to the database, not per cursor
        return _locate_problems_locked(con, plan, files, input_dir)


_SLOW_PATH = threading.Lock()


def _locate_problems_locked(con: duckdb.DuckDBPyConnection, plan: _Plan,
                            files: Sequence[Path], input_dir: Path) -> tuple[list[str], int]:
    con.execute("SET preserve_insertion_order = true")  # CSV line numbers follow file order
    con.execute("CREATE OR REPLACE TEMP VIEW located AS "
                + _source_sql(files, located=True))
    any_bad = " OR ".join(f"({c.bad})" for c in plan.checks)
    con.execute(f"CREATE OR REPLACE TEMP TABLE bad AS SELECT _file, _row FROM located "
                f"WHERE {any_bad}")
    problems: list[str] = []
    for c in plan.checks:
        if len(problems) >= MAX_PROBLEMS:
            break
        rows = con.execute(
            f"SELECT _file, _row, {c.column}::VARCHAR FROM located WHERE {c.bad} "
            f"ORDER BY _file, _row LIMIT {MAX_PROBLEMS - len(problems)}").fetchall()
        problems += [f"{_where(f, r, input_dir)}: {c.column}={v!r}: {c.what}"
                     for f, r, v in rows]
    if plan.cube.kind == "stock":
        # A unit counted twice in one month inflates counts: every row of the pair is bad.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE dup_rows AS SELECT _file, _row, unit_id::VARCHAR AS u, "
            f"month::VARCHAR AS m, count(*) OVER (PARTITION BY unit_id, {plan.month_key}) AS c "
            f"FROM located WHERE NOT ({any_bad}) QUALIFY c > 1")
        rows = con.execute(
            "SELECT _file, _row, u, m, c FROM dup_rows ORDER BY _file, _row "
            f"LIMIT {MAX_PROBLEMS}").fetchall()
        problems += [f"{_where(f, r, input_dir)}: unit_id={u!r}: unit appears {c} times in "
                     f"month {m}" for f, r, u, m, c in rows]
        con.execute("INSERT INTO bad SELECT _file, _row FROM dup_rows")
        con.execute("DROP TABLE dup_rows")
    row = con.execute("SELECT count(*) FROM (SELECT DISTINCT _file, _row FROM bad)").fetchone()
    con.execute("SET preserve_insertion_order = false")
    return problems[:MAX_PROBLEMS], int(row[0]) if row else 0


@dataclass(frozen=True)
class _CubeInputs:
    """What build() hands each cube's build: its files, their periods, what to carry."""

    files: list[Path]
    file_months: dict[Path, set[str]]
    #: Files by period, or None when a file holds several periods (built in one pass).
    groups: dict[int, list[Path]] | None
    #: Periods whose fact rows are kept from the previous release (the build's database is a
    #: byte copy of it, and this cube's fact and rollup tables were kept).
    carry: frozenset[int] = frozenset()


def _build_cube(con: duckdb.DuckDBPyConnection, model: Model, cube: Cube, inputs: _CubeInputs,
                options: BuildOptions, keyer: RecordKeyer, k: int, months: Sequence[int],
                input_dir: Path, stage: Callable[[str], None],
                cache: UnitKeyCache | None) -> CubeBuildReport:
    """One cube's fact table, period by period: for each batch of periods its units (with the
    duplicate check), their keys, and its cells appended. With carried periods the fact table
    is already there (the build started from a byte copy of the previous release): the rows
    of every other period are deleted and those periods appended. Bad input anywhere sends
    the whole cube down the slow path, which drops the table and builds it whole."""
    files = inputs.files
    rep = CubeBuildReport(files=len(files))
    fast = _source_sql(files, located=False)
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {fast}").fetchall()}
    unit_type = types["unit_id"]
    plan = _plan(model, cube, types, months)
    columns = _fact_columns(plan)
    carry = inputs.carry if inputs.groups is not None else frozenset()
    steps = (_steps(inputs.groups, set(carry)) if inputs.groups is not None
             else [_Step(fast, True)])

    def timed(name: str, started: float) -> None:
        rep.timings[name] = rep.timings.get(name, 0.0) + time.perf_counter() - started

    con.execute(f"CREATE TEMP TABLE known (unit_id {unit_type}, rkey INTEGER, rkey2 INTEGER)")
    if cache is not None:
        t = time.perf_counter()
        cache.load(con, cube.name, unit_type)
        timed("cache", t)

    def run_fast(steps: Sequence[_Step], keep: bool) -> bool:
        if keep:  # the copied fact: its rows of periods not carried go, the rest stay
            t = time.perf_counter()
            con.execute(f"DELETE FROM {plan.fact} WHERE {plan.period_col} NOT IN "
                        f"({', '.join(str(p) for p in sorted(carry))})")
            timed("carry", t)
        else:
            con.execute(f"CREATE TABLE {plan.fact} ("
                        + ", ".join(f"{c} {t}" for c, t in columns) + ")")
        rep.units = 0
        for step in steps:
            if step.carried:  # already in the copied fact
                continue
            stage(f"{cube.name}: units")
            t = time.perf_counter()
            bad_units = _unit_pass(con, plan, step.source, unit_type)
            timed("units", t)
            if bad_units:
                con.execute(f"DROP TABLE {plan.fact}")
                return False
            stage(f"{cube.name}: keys")
            t = time.perf_counter()
            units, keyed = _key_pass(con, keyer)
            rep.units += units
            rep.keyed += keyed
            timed("keys", t)
            stage(f"{cube.name}: facts")
            t = time.perf_counter()
            _fact_pass(con, plan, step.source, step.several, k, unit_type)
            timed("facts", t)
            con.execute("DROP TABLE unit_keys")
        t = time.perf_counter()
        bad_cells = _bad_cells(con, plan, carry if keep else frozenset())
        timed("check", t)
        if bad_cells:
            con.execute(f"DROP TABLE {plan.fact}")
        return not bad_cells

    try:
        clean = run_fast(steps, bool(carry))
        if clean:
            rep.carried = sorted(str(p) for p in carry)
        else:
            t = time.perf_counter()
            problems, n_bad = _locate_problems(con, plan, files, input_dir)
            rep.timings["problems"] = time.perf_counter() - t
            if not problems:  # the two paths share their checks; this is a bug if reached
                raise RuntimeError(f"{cube.name}: the fast path found bad input that the "
                                   "slow path cannot locate")
            if not options.skip_bad_rows:
                raise InputDataError(
                    f"{cube.name}: {n_bad} bad input row(s); nothing was built "
                    "(use --skip-bad-rows to build without them and get a report)",
                    problems=problems, parameter="microdata")
            rep.problems = problems
            rep.skipped = n_bad
            kept = ("SELECT * EXCLUDE (_file, _row) FROM located "
                    "ANTI JOIN bad USING (_file, _row)")
            if not run_fast([_Step(kept, True)], False):
                raise RuntimeError(f"{cube.name}: bad rows remain after skipping them")
            con.execute("DROP TABLE bad")
            con.execute("DROP VIEW located")
    except _READ_ERRORS as exc:
        raise InputDataError(f"{cube.name}: cannot read microdata: {exc}",
                             parameter="microdata") from None
    con.execute("DROP TABLE IF EXISTS units")
    if cache is not None and rep.keyed:
        t = time.perf_counter()
        cache.save(con, cube.name)
        timed("cache", t)
    con.execute("DROP TABLE known")
    count_col = cube.physical.column(cube.count_measure.name).column
    row = con.execute(f"SELECT coalesce(sum({count_col}), 0), count(*) FROM {plan.fact}"
                      ).fetchone()
    rep.records, rep.fact_rows = (int(row[0]) if row else 0), (int(row[1]) if row else 0)
    return rep


def build_rollups(con: duckdb.DuckDBPyConnection, cube: Cube,
                  carried: Sequence[str] = (), previous: frozenset[str] = frozenset()
                  ) -> list[dict[str, Any]]:
    """The cube's rollup tables (cube/rollups.py); what the metadata records of each (table,
    grain, rows). One transaction: each statement's commit otherwise costs more than the
    statement.

    Cheapest source first: a rollup whose grain a finer rollup holds (region × D from local
    authority × D: the local authority rollup keeps the region's columns) is aggregated from
    it — a few thousand rows instead of the fact. Local authority rollups, and region rollups
    no local authority rollup holds, come from one set of cells at local authority × every
    kept dimension (one pass over the fact). Only rollups summed over the geography (and all
    of them in a geography without local authorities) read the fact directly. A rollup keeps
    the period column, so when the database already holds every rollup of the cube (``previous``:
    the build started from a byte copy of the previous release) with the right rows of the
    ``carried`` periods, only the rows of the other periods are deleted and aggregated again;
    otherwise each table is dropped if there and built whole. Either way every column is an
    exact sum or maximum of the same cells, so the tables are identical to aggregating the
    fact.
    """
    period = fact_period_column(cube)
    rollups = declared_rollups(cube)
    order = {"la": 0, None: 2}
    built: dict[tuple[str | None, tuple[str, ...]], Rollup] = {}
    out: dict[str, dict[str, Any]] = {}
    la = [r for r in rollups if r.geography == "la"]
    base = "_rollup_base"
    levels = "_rollup_levels"
    periods = ", ".join(str(int(p)) for p in carried)
    # The cells every local authority rollup is regrouped from: local authority × every
    # dimension they keep (cube/rollups.py's cells_sql over the numbered geography rows).
    base_dims = tuple(sorted({d for r in la for d in r.dimensions}))
    base_sql = cells_sql(cube, "la", base_dims, period, levels) if la else None
    # Keep the copied rows only if every fresh SELECT can be limited to the other periods.
    keep = bool(carried) and all(r.table in previous for r in rollups) and all(
        _only_fresh(cube, sql, period, ()) is not None
        for sql in [*(rollup_sql(cube, r, period) for r in rollups),
                    *([base_sql] if base_sql else [])])
    # The periods aggregated again, named (an IN list lets the scans skip the row groups of
    # the carried periods by their min/max; NOT IN would read them all); and whether the
    # copy holds rows of other periods at all (revised or removed ones), found on the
    # first rollup: the fact's have been deleted already.
    fresh: list[int] = []
    stale = True
    if keep:
        fresh = [int(r[0]) for r in con.execute(
            f'SELECT DISTINCT "{period}" FROM {cube.physical.fact} WHERE "{period}" '
            f"NOT IN ({periods}) ORDER BY 1").fetchall()]
        stale = any(con.execute(f'SELECT 1 FROM {rollups[0].table} WHERE "{period}" NOT IN '
                                f"({periods}) LIMIT 1").fetchall()) if rollups else False
    fresh_only = f'(SELECT * FROM {{}} WHERE "{period}" IN ({_int_list(fresh)[1:-1] or "NULL"}))'

    def write(table: str, whole: str, fresh_sql: str | None) -> None:
        if keep:
            if stale:
                con.execute(f'DELETE FROM {table} WHERE "{period}" NOT IN ({periods})')
            if fresh:
                con.execute(f"INSERT INTO {table} {fresh_sql}")
        else:
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"CREATE TABLE {table} AS {whole}")

    con.execute("BEGIN")
    try:
        if la:
            # One join of the fact to the geography, at local authority × every dimension
            # the local authority rollups keep (of the periods not kept only, when the
            # copied rows are kept), grouped on a number per local authority
            # (cube/rollups.py's levels_sql) rather than its six text columns; each local
            # authority rollup is then a GROUP BY of this, joined to the authorities' names.
            con.execute(f"CREATE OR REPLACE TEMP TABLE {levels} AS {levels_sql(cube, 'la')}")
            assert base_sql is not None
            con.execute(f"CREATE OR REPLACE TEMP TABLE {base} AS "
                        f"{_only_fresh(cube, base_sql, period, fresh) if keep else base_sql}")
        for r in sorted(rollups, key=lambda r: order.get(r.geography, 1)):
            finer = built.get(("la", r.dimensions)) if r.geography == "region" else None
            if finer is not None:
                write(r.table, _rollup_from(cube, r, finer.table, period),
                      _rollup_from(cube, r, fresh_only.format(finer.table), period))
            elif r.geography == "la":
                sql = _la_rollup(cube, r, period, base, levels)  # base: only what is not kept
                write(r.table, sql, sql)
            elif r.geography == "region" and la and set(r.dimensions) <= set(base_dims):
                # A region rollup no local authority rollup holds (several dimensions drilled
                # together, declared in model.json): from the base cells too, a few hundred
                # thousand rows instead of the fact's millions (measured at scale 0.05: 0.04 s
                # instead of 0.3 s for Universal Credit's employment × gender × age band).
                named = (f"(SELECT c.*, l.* EXCLUDE ({GEO_ID}) FROM {base} AS c "
                         f"JOIN {levels} AS l USING ({GEO_ID}))")
                sql = _rollup_from(cube, r, named, period)
                write(r.table, sql, sql)
            else:
                sql = rollup_sql(cube, r, period)
                write(r.table, sql, _only_fresh(cube, sql, period, fresh) if keep else None)
            row = con.execute(f"SELECT count(*) FROM {r.table}").fetchone()
            built[(r.geography, r.dimensions)] = r
            out[r.table] = replace(r, rows=int(row[0]) if row else 0).to_json()
        con.execute(f"DROP TABLE IF EXISTS {base}")
        con.execute(f"DROP TABLE IF EXISTS {levels}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return [out[r.table] for r in rollups]


def _only_fresh(cube: Cube, sql: str, period: str, fresh: Sequence[int]) -> str | None:
    """A rollup SELECT (cube/rollups.py's select_sql) over the fact's ``fresh`` periods only
    (those not carried); None if it reads the fact some other way (then the rollup is built
    whole)."""
    whole = f"FROM {cube.physical.fact} AS f"
    if whole not in sql:
        return None
    periods = ", ".join(str(int(p)) for p in fresh) or "NULL"
    return sql.replace(whole, f'FROM (SELECT * FROM {cube.physical.fact} WHERE '
                              f'"{period}" IN ({periods})) AS f', 1)


def _la_rollup(cube: Cube, rollup: Rollup, period: str, base: str, levels: str) -> str:
    """A local authority rollup from the cells ``base`` (cube/rollups.py's cells_sql at local
    authority × at least its dimensions, over the geography rows ``levels``)."""
    return finish_sql(cube, rollup, period,
                      regroup_sql(cube, rollup.dimensions, period, base), levels)


def _rollup_from(cube: Cube, rollup: Rollup, finer: str, period: str) -> str:
    """``rollup`` from the finer table ``finer`` (local authority grain, holding at least its
    dimensions; a table name or a parenthesised SELECT): the columns and their order of
    cube/rollups.py's select_sql."""
    keep = [f'"{period}"']
    keep += [f'"{col}"' for _, col in geography_columns(cube, str(rollup.geography))]
    keep += [f'"{fact_key_column(cube, cube.dimension(d))}"' for d in rollup.dimensions]
    measures = [f'CAST(sum("{c}") AS BIGINT) AS "{c}"' for c in additive_columns(cube)]
    measures += [f'max("{c}") AS "{c}"' for c in cube.physical.max_columns.values()]
    group = ", ".join(keep)
    return (f"SELECT {', '.join(keep + measures)} FROM {finer} GROUP BY {group} "
            f"ORDER BY {group}")


def _file_months(con: duckdb.DuckDBPyConnection, files: list[Path]) -> dict[Path, set[str]]:
    """The distinct month values of each file (valid or not: bad ones are reported later).

    A Parquet file whose footer says every row group holds one and the same month, with no
    nulls, holds that month: read from the footer, which costs a tenth of scanning the
    column (measured: 0.016 s against 0.17 s for every file at scale 0.05 × 6 months). The
    other files are scanned."""
    out: dict[Path, set[str]] = {f: set() for f in files}
    scan = []
    for f in files:
        month = _footer_month(f) if f.suffix.lower() == ".parquet" else None
        if month is None:
            scan.append(f)
        else:
            out[f] = month
    if scan:
        out.update(_scan_months(con, scan))
    return out


def _footer_month(path: Path) -> set[str] | None:
    """{the month} of a Parquet file whose every row group's statistics say it holds that
    one string and no nulls; set() for a file without rows; None when the footer cannot
    tell (no statistics, several values, nulls, not a string), or cannot be read."""
    try:
        meta = pq.ParquetFile(path).metadata
        index = meta.schema.to_arrow_schema().get_field_index("month")
        if index < 0:
            return None
        found: set[str] = set()
        for r in range(meta.num_row_groups):
            group = meta.row_group(r)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if (stats is None or not stats.has_min_max or stats.null_count != 0
                    or not isinstance(stats.min, str) or stats.min != stats.max):
                return None
            found.add(stats.min)
    except (OSError, pa.ArrowException):
        return None  # the scan reports it
    return found if len(found) <= 1 else None


def _scan_months(con: duckdb.DuckDBPyConnection, files: list[Path]) -> dict[Path, set[str]]:
    parquet = [_literal(str(f)) for f in files if f.suffix.lower() == ".parquet"]
    csvs = [_literal(str(f)) for f in files if f.suffix.lower() == ".csv"]
    parts = []
    if parquet:
        parts.append(f"SELECT DISTINCT filename, month::VARCHAR FROM read_parquet("
                     f"[{', '.join(parquet)}], filename = true, union_by_name = true)")
    if csvs:
        parts.append(f"SELECT DISTINCT filename, month::VARCHAR FROM read_csv("
                     f"[{', '.join(csvs)}], header = true, all_varchar = true, "
                     "union_by_name = true, filename = true)")
    try:
        rows = con.execute(" UNION ALL ".join(parts)).fetchall()
    except _READ_ERRORS as exc:
        raise InputDataError(f"cannot read microdata: {exc}", parameter="microdata") from None
    out: dict[Path, set[str]] = {f: set() for f in files}
    by_name = {str(f): f for f in files}
    for name, month in rows:
        out[by_name.get(name, Path(name))].add("" if month is None else month)
    return out


def _no_file_cache(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off DuckDB's cache of input file bytes (DuckDB 1.3+; older versions have none).

    A build reads each input file in its own batch only (twice: unit and fact pass), so
    caching the bytes of every file read so far makes the buffer pool grow with the history
    (88 MB at scale 0.1 × 36 months; at national scale up to the whole input, 1 GB for 15
    months), where it crowds the batch's hash tables under the memory limit. The operating
    system's page cache serves the second pass anyway."""
    with contextlib.suppress(duckdb.CatalogException):
        con.execute("SET enable_external_file_cache = false")


def _checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write what is still in memory to the file, without trying FSST on it.

    The final checkpoint runs on one core while nothing else can (DuckDB refuses a CHECKPOINT
    beside any open transaction). What it compresses is mostly the rollup tables, whose text
    columns (codes and names of a few hundred areas) always end up dictionary-encoded, and the
    fact tables' last partial row groups. Trying FSST on each of them first cost 0.15-0.2 s of
    the 0.5 s checkpoint at scale 0.05, for the same encoding and the same file size (measured
    2 December 2026). Row groups the inserts already wrote keep their FSST-coded OA codes:
    turning FSST off for the whole build made the file 3% bigger and the build no faster."""
    with contextlib.suppress(duckdb.CatalogException):  # a DuckDB without the setting
        con.execute("SET disabled_compression_methods = 'fsst'")
    con.execute("CHECKPOINT")


def _job_order(by_size: Sequence[Cube]) -> list[Cube]:
    """The order cubes are handed to the two jobs: biggest first, so the big ones overlap and
    the small ones fill the gaps at the end — except that the third biggest goes second.

    Why: each cube starts with its unit pass (SQL, both cores) and then keys its units in
    Python, which holds the GIL. Started together, the two biggest cubes key at the same
    time and one core idles; started beside the biggest, the third's short key pass is over
    before the biggest one's begins, and the second biggest keys while the biggest one
    aggregates. Measured at scale 0.05 × 6 months, alternating, three runs of 4–7 builds
    each: median 6.67 s instead of 7.08, 7.01 instead of 7.52, 7.44 instead of 7.68."""
    order = list(by_size)
    if len(order) >= 3:
        order[1], order[2] = order[2], order[1]
    return order


def _run_concurrently(con: duckdb.DuckDBPyConnection,
                      jobs: Sequence[tuple[str, Callable[[duckdb.DuckDBPyConnection], Any]]]
                      ) -> dict[str, Any]:
    """Run jobs two at a time, each on its own cursor of ``con``; results by name.

    Why: keying units is Python (it holds the GIL) while DuckDB's SQL releases it, so one
    cube's keys are hashed while another cube's facts are aggregated. If a job fails, the
    others are interrupted and the first failure in ``jobs`` order is raised.
    """
    cursors = {name: con.cursor() for name, _ in jobs}
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    try:
        with ThreadPoolExecutor(max_workers=_CONCURRENT_CUBES) as pool:
            futures = {pool.submit(job, cursors[name]): name for name, job in jobs}

            def stop() -> None:
                for pending in futures:
                    pending.cancel()
                for cur in cursors.values():
                    cur.interrupt()

            try:
                for future in as_completed(futures):
                    name = futures[future]
                    if future.cancelled():  # never started: an earlier job failed
                        continue
                    exc = future.exception()
                    if exc is None:
                        results[name] = future.result()
                    else:
                        errors[name] = exc
                        stop()
            except BaseException:  # e.g. Ctrl-C: do not wait for the running jobs to finish
                stop()
                raise
    finally:
        for cur in cursors.values():
            cur.close()
    for name, _ in jobs:
        exc = errors.get(name)
        if exc is not None and not isinstance(exc, duckdb.InterruptException):
            raise exc
    if errors:  # only interruptions: not expected, but never swallow them
        raise next(iter(errors.values()))
    return results


def _remove_stale_temps(warehouse_dir: Path, release: str) -> None:
    """Delete temporary files of earlier builds of this release whose process is gone (killed
    before it could clean up); a build still running elsewhere keeps its file."""
    for path in warehouse_dir.glob(f".{release}.duckdb.tmp-*"):
        pid = path.name.rsplit("-", 1)[1].split(".")[0]
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        path.unlink(missing_ok=True)


def _kept_tables(con: duckdb.DuckDBPyConnection, cubes: Sequence[Cube],
                 inputs: Mapping[str, _CubeInputs], previous: Previous, jcp: bool) -> set[str]:
    """The tables of a byte copy of ``previous`` (open as ``con``) that the build keeps: the
    dimension tables it would write identically, and the fact and every rollup table of each
    cube with carried periods whose tables are all there. A cube without (new, built whole
    last time, a file holding several months, bad rows skipped) is rebuilt whole."""
    present = {str(r[0]) for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND "
        "database_name = current_database()").fetchall()}
    kept = dimension_tables(cubes, jcp) & present
    for c in cubes:
        rollups = {r.table for r in declared_rollups(c)}
        if (inputs[c.name].carry and inputs[c.name].groups is not None
                and {c.physical.fact, *rollups} <= present
                and rollups <= previous.rollups.get(c.name, frozenset())):
            kept |= {c.physical.fact, *rollups}
    return kept


def check_input(model: Model, input_dir: Path
                ) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The lookup files and the microdata files per cube under ``input_dir``, or the error
    naming what is missing. Cheap (it reads headers only), so the CLI calls it before asking
    for the record-key secret: a wrong folder is reported as a wrong folder, not as a
    missing secret."""
    if not input_dir.is_dir():
        raise ArgumentError(f"input directory not found: {input_dir}", parameter="input",
                            value=str(input_dir))
    lookups = find_lookups(input_dir / "geography")
    cube_files = {c.name: microdata_files(input_dir, c.name) for c in model.cubes.values()}
    if not any(cube_files.values()):
        raise InputDataError(f"no microdata found under {input_dir / 'microdata'}",
                             problems=[f"expected microdata/<cube>/*.parquet|csv for cubes "
                                       f"{', '.join(model.cubes)}"])
    return lookups, cube_files


def load_inputs(input_dir: Path, lookups: Mapping[str, Path],
                cube_files: Mapping[str, Sequence[Path]], cubes: Sequence[Cube],
                timings: dict[str, float]) -> GeographyLoad:
    """The first step of every build (DuckDB or Spark): the geography lookups, loaded and
    checked (timed in ``timings["geography"]``), and every microdata file's header checked
    for the cube's required columns — so a missing column names its file before any work."""
    t = time.perf_counter()
    geo = load_geography(lookups["oa_lookup"], lookups.get("region_lookup"),
                         lookups.get("constituency_lookup"))
    timings["geography"] = time.perf_counter() - t
    scratch = duckdb.connect()
    try:
        for c in cubes:
            _check_columns(scratch, c, cube_files[c.name], input_dir)
    finally:
        scratch.close()
    return geo


def build(model: Model, input_dir: Path, warehouse_dir: Path, secret: bytes,
          options: BuildOptions = BuildOptions(),
          progress: ProgressFn | None = None) -> BuildReport:
    """Build ``<warehouse_dir>/<release>.duckdb`` from ``input_dir``; returns a report.

    Raises :class:`InputDataError` (nothing written) when the input is bad and
    ``options.skip_bad_rows`` is false; with it, bad rows are left out and listed in
    ``<warehouse_dir>/<release>.build-report.json``.
    """
    started = time.perf_counter()
    lookups, cube_files = check_input(model, input_dir)
    cubes = [c for c in model.cubes.values() if cube_files[c.name]]
    steps = 2 + len(cubes)
    done = 0

    lock = threading.Lock()  # cubes are built two at a time

    def tick(what: str) -> None:
        nonlocal done
        with lock:
            done += 1
            if progress:
                progress(what, done, steps)

    def stage(what: str) -> None:  # a step within a cube: same count, new description
        with lock:
            if progress:
                progress(what, done, steps)

    timings: dict[str, float] = {}
    geo = load_inputs(input_dir, lookups, cube_files, cubes, timings)
    tick("geography")
    scratch = duckdb.connect()
    try:
        file_months = {c.name: _file_months(scratch, cube_files[c.name]) for c in cubes}
    finally:
        scratch.close()
    all_months = sorted({int(m[:4]) * 100 + int(m[5:7]) for fm in file_months.values()
                         for months in fm.values() for m in months if _MONTH_RE.fullmatch(m)})
    if not all_months:
        raise InputDataError("no valid month values (YYYY-MM) in the microdata")
    release = release_id(options, all_months)
    jcp = read_jcp_lookup(input_dir, lookups, cubes)
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    final = warehouse_dir / f"{release}.duckdb"
    tmp = warehouse_dir / f".{release}.duckdb.tmp-{os.getpid()}"
    _remove_stale_temps(warehouse_dir, release)
    report = BuildReport(warehouse=final, release=release, warnings=list(geo.warnings),
                         timings=timings)
    # Per cube and period, a keyed fingerprint of the files holding it: what decides whether
    # the previous release's facts of that period can be copied.
    t = time.perf_counter()
    groups = {c.name: _period_groups(_plan_periods(c), cube_files[c.name],
                                     file_months[c.name]) for c in cubes}
    digests = file_digests([f for c in cubes if groups[c.name] is not None
                            for f in cube_files[c.name]])
    period_inputs = {c.name: period_fingerprints(secret, g, digests,
                                                 input_dir / "microdata" / c.name)
                     for c in cubes if (g := groups[c.name]) is not None}
    geo_files = dict(lookups)
    jcp_file = input_dir / "geography" / "JCP_OFFICES.csv"
    if "jcp_offices" not in geo_files and (jcp is not None or jcp_file.exists()):
        # Whether or not a cube uses it now: a cube with offices arriving or leaving is a
        # cube rebuilt whole or dropped, not a different geography.
        geo_files["jcp_offices"] = jcp_file
    identity = {"model_digest": model_digest(model), "key_fingerprint": secret_fingerprint(secret),
                "geography_digest": geography_digest(geo_files)}
    timings["fingerprints"] = time.perf_counter() - t
    if options.key_cache is not None:
        check_cache_location(options.key_cache, [warehouse_dir])
    previous: Previous | None = None
    if options.full:
        report.reuse = "full build requested"
    else:
        ptable_digest = build_ptable(PTableParams.from_mapping(
            model.disclosure.get("ptable", {}))).digest
        previous, report.reuse = find_previous(
            warehouse_dir, final, {"format": WAREHOUSE_FORMAT, "model": model.name,
                                   "ptable_digest": ptable_digest, **identity})
    inputs: dict[str, _CubeInputs] = {}
    for c in cubes:
        carry: set[int] = set()
        if previous is not None:
            before = previous.period_inputs.get(c.name, {})
            now = period_inputs.get(c.name, {})
            carry = {int(p) for p, fp in now.items() if before.get(p) == fp}
        inputs[c.name] = _CubeInputs(cube_files[c.name], file_months[c.name],
                                     groups[c.name], frozenset(carry))
    spill = Path(tempfile.mkdtemp(prefix="statcube-build-"))
    con: duckdb.DuckDBPyConnection | None = None
    try:
        kept: set[str] = set()
        if previous is not None:
            # Start from a byte copy of the previous release (which is never opened for
            # writing): unchanged periods then cost nothing — not re-inserted, not
            # re-compressed, not rewritten by the checkpoint.
            t = time.perf_counter()
            shutil.copyfile(previous.path, tmp)
            timings["copy"] = time.perf_counter() - t
            report.previous = previous.release
            report.reuse = f"started from a byte copy of release {previous.release}"
        con = duckdb.connect(str(tmp))
        con.execute("SET enable_progress_bar = false")
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET memory_limit = {_literal(options.memory_limit)}")
        con.execute(f"SET temp_directory = {_literal(str(spill))}")
        _no_file_cache(con)
        if options.threads:
            con.execute(f"SET threads = {int(options.threads)}")
        t = time.perf_counter()
        if previous is not None:
            kept = _kept_tables(con, cubes, inputs, previous, jcp is not None)
            _clear_copy(con, kept)
            for c in cubes:
                if c.physical.fact not in kept:  # rebuilt whole
                    inputs[c.name] = replace(inputs[c.name], carry=frozenset())
        ptable, month_text, attribution = write_dimensions(
            con, model, cubes, geo.table, jcp, all_months, input_dir, report, keep=kept)
        del geo
        timings["dimensions"] = time.perf_counter() - t
        tick("dimensions")
        k = ptable.params.K if ptable.params.K else K_DEFAULT
        keyer = RecordKeyer(secret, k)
        cache = UnitKeyCache(options.key_cache, secret, k) if options.key_cache else None

        def one(cube: Cube, cur: duckdb.DuckDBPyConnection) -> CubeBuildReport:
            t = time.perf_counter()
            stage(f"{cube.name}: units")
            cur.execute("SET enable_progress_bar = false")
            rep = _build_cube(cur, model, cube, inputs[cube.name], options, keyer, k,
                              all_months, input_dir, stage, cache)
            if previous is not None:
                before = previous.period_inputs.get(cube.name, {})
                rep.revised = revised(before, period_inputs.get(cube.name, {}))
            timings[cube.name] = time.perf_counter() - t
            # The cube's rollups at once, on its own cursor: their many small statements
            # overlap the other cube's fact pass instead of running one by one at the end.
            t = time.perf_counter()
            stage(f"{cube.name}: rollups")
            rollups[cube.name] = build_rollups(cur, cube, rep.carried, frozenset(kept))
            with lock:
                timings["rollups"] = timings.get("rollups", 0.0) + time.perf_counter() - t
            tick(cube.name)
            return rep

        rollups: dict[str, list[dict[str, Any]]] = {}
        order = _job_order(sorted(cubes, key=lambda c: -sum(f.stat().st_size
                                                             for f in cube_files[c.name])))
        built = _run_concurrently(con, [(c.name, partial(one, c)) for c in order])
        report.cubes.update((c.name, built[c.name]) for c in cubes)
        _drop_enums(con)
        rollups = {c.name: rollups[c.name] for c in cubes}  # in model order
        # Fingerprints only of cubes built clean: a cube with skipped rows is rebuilt whole
        # next time, so its report is always complete.
        clean_inputs = {c: fp for c, fp in period_inputs.items()
                        if not report.cubes[c].problems}
        write_meta(con, model, release, ptable, month_text, sorted(report.cubes), attribution,
                   rollups=rollups, period_inputs=clean_inputs, **identity,
                   reused={"previous": report.previous,
                           "carried": {c: r.carried for c, r in report.cubes.items()},
                           "revised": report.revisions})
        t = time.perf_counter()
        _checkpoint(con)
        con.close()
        timings["checkpoint"] = time.perf_counter() - t
    except BaseException:
        if con is not None:
            con.close()
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    tmp.replace(final)
    report.seconds = time.perf_counter() - started
    if any(c.problems or c.revised for c in report.cubes.values()):
        report.report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n",
                                      encoding="utf-8")
    else:
        report.report_path.unlink(missing_ok=True)  # a stale report from an earlier build
    return report


def release_id(options: BuildOptions, all_months: Sequence[int]) -> str:
    """The release being built: the caller's, else the latest month in the data."""
    release = options.release or f"{all_months[-1] // 100:04d}-{all_months[-1] % 100:02d}"
    if not release.replace("-", "").replace("_", "").isalnum():
        raise ArgumentError("release ids may hold letters, digits, '-' and '_'",
                            parameter="release", value=release)
    return release


def read_jcp_lookup(input_dir: Path, lookups: dict[str, Path], cubes: Sequence[Cube]
                    ) -> pa.Table | None:
    """The Jobcentre Plus office lookup when a cube being built needs it (else None)."""
    jcp_path = lookups.get("jcp_offices")
    if jcp_path is None and (input_dir / "geography" / "JCP_OFFICES.csv").exists():
        jcp_path = input_dir / "geography" / "JCP_OFFICES.csv"
    if not any(_has_jcp(c) for c in cubes):
        return None
    if jcp_path is None:
        raise InputDataError("a cube uses Jobcentre Plus geography but no "
                             "JCP_OFFICES.csv was found under geography/")
    return _read_jcp(jcp_path)


def write_dimensions(con: duckdb.DuckDBPyConnection, model: Model, cubes: Sequence[Cube],
                     geography: pa.Table, jcp: pa.Table | None, all_months: Sequence[int],
                     input_dir: Path, report: BuildReport, keep: Collection[str] = ()
                     ) -> tuple[PTable, list[str], tuple[str, ...]]:
    """Every table of the warehouse but the facts, and the codelist types the facts use;
    returns (p-table, months as YYYY-MM, boundary attribution).

    One home for the dimension tables whichever engine aggregates the facts (DuckDB here,
    Spark in cube/spark/build.py), so warehouses from both are the same. ``keep``: tables
    already in the database (a copy of the previous release, see :func:`_clear_copy`) whose
    content this build would write identically — they and their codelist types are left as
    they are. The time dimensions and boundaries are always written.
    """
    if "dim_geography" not in keep:
        con.register("geo_arrow", geography)
        con.execute("CREATE TABLE dim_geography AS SELECT * FROM geo_arrow ORDER BY oa_code")
        con.unregister("geo_arrow")
    if jcp is not None and "dim_jcp" not in keep:
        con.register("jcp_arrow", jcp)
        con.execute("CREATE TABLE dim_jcp AS SELECT * FROM jcp_arrow ORDER BY office_code")
        con.unregister("jcp_arrow")
    con.register("m_arrow", _dim_month(all_months))
    con.execute("CREATE TABLE dim_month AS SELECT * FROM m_arrow")
    con.unregister("m_arrow")
    con.register("q_arrow", _dim_quarter(all_months))
    con.execute("CREATE TABLE dim_quarter AS SELECT * FROM q_arrow")
    con.unregister("q_arrow")
    for name in sorted({d for c in cubes for d in _category_dims(c)}):
        if f"dim_{name}" in keep:
            continue
        con.register("c_arrow", _dim_category(model, name))
        con.execute(f"CREATE TABLE dim_{name} AS SELECT * FROM c_arrow")
        con.unregister("c_arrow")
    ptable = build_ptable(PTableParams.from_mapping(model.disclosure.get("ptable", {})))
    if "sdc_ptable" not in keep:
        con.register("p_arrow", ptable.to_arrow())
        con.execute("CREATE TABLE sdc_ptable AS SELECT * FROM p_arrow ORDER BY pcv, ckey")
        con.unregister("p_arrow")
    month_text = [f"{m // 100:04d}-{m % 100:02d}" for m in all_months]
    attribution = _load_boundaries(con, input_dir, report)
    _create_enums(con, model, cubes, month_text, keep)
    return ptable, month_text, attribution


def dimension_tables(cubes: Sequence[Cube], jcp: bool) -> set[str]:
    """The tables :func:`write_dimensions` writes whose content depends only on what a
    previous release must share with this build to be reused (geography lookups, model,
    p-table): a copy of that release keeps them. Time dimensions, boundaries (their files
    are not fingerprinted) and the metadata are always rewritten."""
    return {"dim_geography", "sdc_ptable", *(["dim_jcp"] if jcp else []),
            *(f"dim_{d}" for c in cubes for d in _category_dims(c))}


def _clear_copy(con: duckdb.DuckDBPyConnection, keep: Collection[str]) -> None:
    """Empty a byte copy of the previous release of all but the tables in ``keep``: every other
    table and view (time dimensions, boundaries, metadata, facts and rollups of cubes rebuilt
    whole or gone) is dropped and written again as a full build writes it, and so is every
    type but the codelists of kept dimension tables (``codelist_<x>`` of ``dim_<x>``)."""
    for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                               "AND database_name = current_database()").fetchall():
        con.execute(f'DROP VIEW "{name}"')
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
                               "AND database_name = current_database()").fetchall():
        if name not in keep:
            con.execute(f'DROP TABLE "{name}"')
    for (name,) in con.execute("SELECT type_name FROM duckdb_types() WHERE NOT internal AND "
                               "database_name = current_database()").fetchall():
        if not (name.startswith(CODELIST) and f"dim_{name[len(CODELIST):]}" in keep):
            con.execute(f'DROP TYPE "{name}"')


def write_meta(con: duckdb.DuckDBPyConnection, model: Model, release: str, ptable: PTable,
               month_text: Sequence[str], cubes: Sequence[str], attribution: Sequence[str],
               **extra: Any) -> None:
    """``statcube_meta``: what readers need to know about the release (one home for its keys)."""
    meta: dict[str, Any] = {
        "format": WAREHOUSE_FORMAT,
        "release": release,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.name,
        "ptable_digest": ptable.digest,
        "ptable_params": {"D": ptable.params.D, "V": ptable.params.V,
                          "js": ptable.params.js, "K": ptable.params.K},
        "months": list(month_text),
        "cubes": list(cubes),
        "boundaries_attribution": list(attribution),
        **extra,
    }
    con.execute("CREATE TABLE statcube_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.executemany("INSERT INTO statcube_meta VALUES (?, ?)",
                    [(key, json.dumps(v)) for key, v in meta.items()])


def _load_boundaries(con: duckdb.DuckDBPyConnection, input_dir: Path, report: BuildReport
                     ) -> tuple[str, ...]:
    """``boundaries(level, code, name, geometry)`` from ``<input>/boundaries/*.geojson|
    *.topojson`` (optional: maps need it, queries do not). Codes matching no area and areas
    without geometry become build warnings; the files' attribution goes into the metadata."""
    from cube.boundaries import load_boundaries

    directory = input_dir / "boundaries"
    paths = sorted(p for p in directory.glob("*") if p.suffix.lower() in
                   {".geojson", ".topojson", ".json"}) if directory.is_dir() else []
    if not paths:
        return ()
    known: dict[str, dict[str, str]] = {}
    for level in ("country", "region", "la"):  # identifiers from this module, not input
        rows = con.execute(f"SELECT DISTINCT {level}_code, {level}_name FROM dim_geography"
                           ).fetchall()
        known[level] = {str(code): str(name) for code, name in rows}
    loaded = load_boundaries(paths, known)
    report.warnings.extend(loaded.warnings)
    con.register("b_arrow", loaded.table)
    con.execute("CREATE TABLE boundaries AS SELECT * FROM b_arrow ORDER BY level, code")
    con.unregister("b_arrow")
    return loaded.attribution

