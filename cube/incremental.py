"""What lets a build reuse the previous release: input fingerprints, the previous release's
compatibility, and the unit-key cache.

A quarterly release adds three months to a history that is already built. The build
(cube/build.py) starts from a byte copy of the previous release in the same warehouse folder,
keeps the facts of every cube × period whose inputs are unchanged, and computes only new or
revised periods. For that it needs to know, without trusting file names or dates:

- *which release it may copy from* — the newest other ``<release>.duckdb`` whose metadata
  records the same warehouse format, model, p-table, record-key secret and geography lookups
  (:func:`find_previous` names the first that differs when it cannot reuse);
- *whether a period's inputs changed* — :func:`period_fingerprints`: per period and file, an
  HMAC under the record-key secret of the SHA-256 of each microdata file holding it. Keyed,
  because the fingerprints are stored in the warehouse (``statcube_meta.period_inputs``) and a
  plain hash of a microdata file would let anyone holding a guessed file confirm it;
- *the keys of units it has seen before* — :class:`UnitKeyCache`: HMAC keying is the one step
  of a build that runs in Python, and units recur month after month, so their keys are kept in
  a protected folder beside the secret (never in the warehouse or an export), in a file named
  by a fingerprint of the secret, so a rotated secret never reads keys made under the old one.

The secret itself is never written anywhere: only ``HMAC(secret, fixed label)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cube.errors import ArgumentError
from cube.model import Model

_CHUNK = 1 << 20


def secret_fingerprint(secret: bytes, label: str = "statcube secret fingerprint v1") -> str:
    """``HMAC(secret, label)`` as hex: equal for equal secrets, and says nothing about one."""
    return hmac.new(secret, label.encode("utf-8"), hashlib.sha256).hexdigest()


def model_digest(model: Model) -> str:
    """A digest of the parsed model (frozen dataclasses, so their repr is deterministic):
    codelists, measures, rollups and table names all shape the facts a release holds."""
    return hashlib.sha256(repr(model).encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hashlib releases the GIL on big updates, so files hash in
    parallel threads)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: Sequence[Path]) -> dict[Path, str]:
    """Digests of many files, two at a time (the machine's cores)."""
    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(unique, pool.map(file_digest, unique), strict=True))


def geography_digest(paths: Mapping[str, Path]) -> str:
    """One digest of the lookup files (OA, region, constituency, Jobcentre Plus): they decide
    which codes are valid and how output areas roll up to regions and local authorities."""
    h = hashlib.sha256()
    for name, path in sorted(paths.items()):
        h.update(f"{name}\t{file_digest(path)}\n".encode())
    return h.hexdigest()


def period_fingerprints(secret: bytes, groups: Mapping[int, Sequence[Path]],
                        digests: Mapping[Path, str], base: Path) -> dict[str, dict[str, str]]:
    """{period: {file name: HMAC(secret, name and SHA-256 of the file)}}; ``groups`` maps a
    period (month_id or quarter_id) to its files, named relative to ``base`` (so a moved
    input folder keeps its fingerprints). Per file, so that a quarter which only gained a
    month's file is told apart from one whose earlier file changed (a revision)."""
    out: dict[str, dict[str, str]] = {}
    for period, files in groups.items():
        if period < 0:
            continue
        out[str(period)] = {
            name: hmac.new(secret, f"statcube input file v1\n{name}\t{digests[f]}"
                           .encode(), hashlib.sha256).hexdigest()
            for f in sorted(files) for name in [_relative(f, base)]}
    return out


def revised(before: Mapping[str, Mapping[str, str]], now: Mapping[str, Mapping[str, str]]
            ) -> list[str]:
    """Periods of ``before`` whose files changed or went away in ``now`` (a period that only
    gained files — the rest of a quarter arriving — is new data, not a revision)."""
    return sorted(p for p, files in before.items() if p in now
                  and any(now[p].get(name) != fp for name, fp in files.items()))


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name


# --- The previous release --------------------------------------------------------------------

#: What a previous release must share with this build for its facts to be reused, in the order
#: checked, with the words a refusal uses.
COMPATIBILITY = (
    ("format", "warehouse format differs"),
    ("model", "model name differs"),
    ("model_digest", "model differs"),
    ("ptable_digest", "p-table differs"),
    ("key_fingerprint", "record-key secret differs"),
    ("geography_digest", "geography lookups differ"),
)


@dataclass(frozen=True)
class Previous:
    """The release a build copies unchanged periods from."""

    path: Path
    release: str
    #: {cube: {period: {file: fingerprint}}} as that release recorded them.
    period_inputs: Mapping[str, Mapping[str, Mapping[str, str]]]
    #: Rollup tables it holds, per cube.
    rollups: Mapping[str, frozenset[str]]


def find_previous(warehouse_dir: Path, building: Path, expected: Mapping[str, Any]
                  ) -> tuple[Previous | None, str]:
    """The newest other release in ``warehouse_dir`` (by modification time), if it is
    compatible; else None and why not (one sentence naming what differs)."""
    candidates = sorted((p for p in warehouse_dir.glob("*.duckdb")
                         if p.name != building.name and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if not candidates:
        return None, "no previous release in the warehouse folder"
    path = candidates[0]
    name = path.stem
    if path.with_name(path.name + ".wal").exists():
        # Its file alone is not the release readers see: a byte copy would lose the log.
        return None, f"previous release {name} not reused: it has a write-ahead log"
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            rows = con.execute("SELECT key, value FROM statcube_meta").fetchall()
        finally:
            con.close()
        meta = {str(k): json.loads(v) for k, v in rows}
    except (duckdb.Error, ValueError) as exc:
        return None, f"previous release {name} not reused: cannot read it ({type(exc).__name__})"
    for key, words in COMPATIBILITY:
        if meta.get(key) != expected.get(key):
            return None, f"previous release {name} not reused: its {words}"
    inputs = meta.get("period_inputs")
    if not isinstance(inputs, dict):
        return None, f"previous release {name} not reused: it records no period inputs"
    rollups = {str(c): frozenset(str(r["table"]) for r in rs)
               for c, rs in (meta.get("rollups") or {}).items()}
    return Previous(path, str(meta.get("release", name)), inputs, rollups), ""


# --- The unit-key cache ----------------------------------------------------------------------

def check_cache_location(cache_dir: Path, forbidden: Sequence[Path]) -> None:
    """Refuse a cache folder inside the warehouse or export folders: those are published or
    served, and unit keys must never be."""
    where = cache_dir.resolve()
    for place in forbidden:
        p = place.resolve()
        if where == p or p in where.parents:
            raise ArgumentError(f"the unit-key cache must not be inside {place}: keys are never "
                                "published; put it beside the secret (STATCUBE_KEY_CACHE)",
                                parameter="key_cache", value=str(cache_dir))


class UnitKeyCache:
    """unit_id → (rkey, rkey2) per cube, in ``<dir>/<cube>.<fingerprint>.parquet``.

    The folder is 0700 and the files 0600, written to a temporary name and renamed, so a
    reader never sees half a file; the fingerprint binds the file to the secret and K, and
    files of any other fingerprint (a rotated secret) are deleted when a new one is written.
    """

    def __init__(self, directory: Path, secret: bytes, k: int) -> None:
        self.directory = directory
        self.fingerprint = secret_fingerprint(secret, f"statcube unit-key cache v1 K={k}")[:32]

    def path(self, cube: str) -> Path:
        return self.directory / f"{cube}.{self.fingerprint}.parquet"

    def load(self, con: duckdb.DuckDBPyConnection, cube: str, unit_type: str) -> int:
        """Fill temp table ``known`` from the cache when it holds keys of ``unit_type`` ids
        (a cube whose ids changed type starts afresh: the key is of the id's text); returns
        how many keys were loaded."""
        path = self.path(cube)
        if not path.is_file():
            return 0
        lit = "'" + str(path).replace("'", "''") + "'"
        try:
            cols = con.execute(f"DESCRIBE SELECT * FROM read_parquet({lit})").fetchall()
            if [(c[0], c[1]) for c in cols] != [("unit_id", unit_type), ("rkey", "INTEGER"),
                                                ("rkey2", "INTEGER")]:
                return 0
            con.execute(f"INSERT INTO known SELECT * FROM read_parquet({lit})")
        except duckdb.Error:
            return 0  # an unreadable cache is no cache: the keys are recomputed
        row = con.execute("SELECT count(*) FROM known").fetchone()
        return int(row[0]) if row else 0

    def save(self, con: duckdb.DuckDBPyConnection, cube: str) -> None:
        """Write temp table ``known`` as the cube's cache, atomically, owner-only."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(stat.S_IRWXU)
        final = self.path(cube)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{id(con)}")
        lit = "'" + str(tmp).replace("'", "''") + "'"
        try:
            con.execute(f"COPY known TO {lit} (FORMAT parquet, COMPRESSION zstd)")
            tmp.chmod(stat.S_IRUSR | stat.S_IWUSR)
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        for other in self.directory.glob(f"{cube}.*.parquet"):
            if other != final:
                other.unlink(missing_ok=True)
