"""Incremental releases and the unit-key cache: a release built on top of the previous one must
be the release a full build makes, table for table.

A history is built from a subset of generated month files (symlinks in a private input folder),
then the next months are added — as a quarterly release does. Every comparison is against a
full build (``--full``) of the same inputs in another folder, never against the build's own
bookkeeping. Generated month files do not depend on how many months are generated (checked
here), so "the first months of a longer run" is a real earlier input.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TEST_SECRET
from test_build import _edit

import cube.build as build_module
from cube.build import BuildOptions, BuildReport, build
from cube.errors import ArgumentError, InputDataError
from cube.incremental import secret_fingerprint
from cube.model import Model
from cube.synthetic import GenerateOptions, generate

ROOT = Path(__file__).resolve().parent.parent
HB, SANCTIONS, NINO = "housing_benefit", "sanctions", "nino_registrations"
CUBES = (HB, SANCTIONS, NINO)  # a stock, a flow and a quarterly cube
MONTHS = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
OPTIONS = GenerateOptions(scale=0.002, seed=5, start="2026-01", months=5, cubes=CUBES)
#: Tables whose rows are compared; statcube_meta is compared key by key below.
IGNORED_META = {"built_at", "release", "reused"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("incr") / "gb"
    generate(out, OPTIONS)
    return out


def _inputs(generated: Path, to: Path, months: list[str], *, copy: tuple[str, ...] = ()
            ) -> Path:
    """An input folder holding ``months`` of the generated data: symlinks, except the months
    in ``copy`` (copied, so a test may revise them)."""
    (to / "microdata").mkdir(parents=True, exist_ok=True)
    if not (to / "geography").exists():
        (to / "geography").symlink_to(generated / "geography")
    for cube in CUBES:
        d = to / "microdata" / cube
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            f.unlink()
        for m in months:
            src = generated / "microdata" / cube / f"{m}.parquet"
            if m in copy:
                (d / src.name).write_bytes(src.read_bytes())
            else:
                (d / src.name).symlink_to(src)
    return to


def _build(model: Model, inp: Path, out: Path, release: str, secret: bytes = TEST_SECRET,
           **options: Any) -> BuildReport:
    return build(model, inp, out, secret, BuildOptions(release=release, **options))


def _same_warehouse(a: Path, b: Path) -> None:
    """Every table of ``a`` and ``b`` holds the same rows with the same column types, and
    their metadata agree but for when and from what they were built."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        tables = {db: {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [db]).fetchall()}
            for db in ("a", "b")}
        assert tables["a"] == tables["b"]
        for t in sorted(tables["a"] - {"statcube_meta"}):
            cols = [con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE "
                                "database_name = ? AND table_name = ? ORDER BY column_index",
                                [db, t]).fetchall() for db in ("a", "b")]
            assert cols[0] == cols[1], t
            for x, y in (("a", "b"), ("b", "a")):
                row = con.execute(f"SELECT count(*) FROM (SELECT * FROM {x}.{t} EXCEPT ALL "
                                  f"SELECT * FROM {y}.{t})").fetchone()
                assert row == (0,), f"{t}: rows of {x} missing from {y}"
        meta = [dict(con.execute(f"SELECT key, value FROM {db}.statcube_meta").fetchall())
                for db in ("a", "b")]
        assert {k: v for k, v in meta[0].items() if k not in IGNORED_META} == \
            {k: v for k, v in meta[1].items() if k not in IGNORED_META}
    finally:
        con.close()


def test_generated_months_do_not_depend_on_how_many_are_generated(
        generated: Path, tmp_path: Path) -> None:
    shorter = tmp_path / "gb"
    generate(shorter, GenerateOptions(scale=0.002, seed=5, start="2026-01", months=2,
                                      cubes=CUBES))
    for cube in (HB, SANCTIONS):
        for m in MONTHS[:2]:
            name = Path("microdata") / cube / f"{m}.parquet"
            assert (shorter / name).read_bytes() == (generated / name).read_bytes()


CASES = [  # (months already released, past months revised in the next release)
    (3, ()),
    (4, ("2026-02",)),
    (2, ("2026-01", "2026-02")),
]


@pytest.mark.parametrize(("history", "revised"), CASES, ids=[f"{h}+{r}" for h, r in CASES])
def test_incremental_release_equals_a_full_build(model: Model, generated: Path, tmp_path: Path,
                                                 history: int, revised: tuple[str, ...]) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:history], copy=revised)
    out = tmp_path / "wh"
    first = _build(model, inp, out, "r1")
    assert first.previous is None and first.reuse == "no previous release in the warehouse folder"
    for m in revised:  # a revision: one record of a past month moves to another tenure
        f = inp / "microdata" / HB / f"{m}.parquet"
        _edit(f, {0: {"tenure": "private"}, 1: {"tenure": "social_ha"}})
    for cube in CUBES:  # add the new months (the revised files stay as edited)
        for m in MONTHS[history:]:
            (inp / "microdata" / cube / f"{m}.parquet").symlink_to(
                generated / "microdata" / cube / f"{m}.parquet")
    incremental = _build(model, inp, out, "r2")
    full = _build(model, inp, tmp_path / "full", "r2", full=True)
    _same_warehouse(incremental.warehouse, full.warehouse)
    assert full.previous is None and full.reuse == "full build requested"
    assert incremental.previous == "r1"
    expected = sorted(str(int(m[:4]) * 100 + int(m[5:])) for m in MONTHS[:history]
                      if m not in revised)
    assert incremental.cubes[HB].carried == expected
    assert incremental.cubes[HB].revised == sorted(str(int(m[:4]) * 100 + int(m[5:]))
                                                   for m in revised)
    assert incremental.cubes[SANCTIONS].revised == []
    # A quarter that only gained months is new data, not a revision (and is rebuilt).
    assert incremental.cubes[NINO].revised == []
    assert incremental.cubes[SANCTIONS].carried == sorted(
        str(int(m[:4]) * 100 + int(m[5:])) for m in MONTHS[:history])
    # Carried months cost no keys: only units of built months are keyed.
    assert incremental.cubes[HB].keyed <= full.cubes[HB].keyed
    if expected:
        assert incremental.cubes[HB].keyed < full.cubes[HB].keyed
    if revised:
        report = json.loads((out / "r2.build-report.json").read_text(encoding="utf-8"))
        assert report["cubes"][HB]["revised"] == incremental.cubes[HB].revised
        assert report["previous"] == "r1"


def test_a_changed_secret_or_geography_is_never_reused(model: Model, generated: Path,
                                                       tmp_path: Path) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3])
    out = tmp_path / "wh"
    _build(model, inp, out, "r1")
    other = _build(model, inp, out, "r2", secret=b"another-secret-0123456789abcdef")
    assert other.previous is None
    assert other.reuse == "previous release r1 not reused: its record-key secret differs"
    assert all(not c.carried for c in other.cubes.values())
    (out / "r2.duckdb").unlink()
    # The geography changes: one region renamed in the lookup.
    (inp / "geography").unlink()
    (inp / "geography").mkdir()
    for f in (generated / "geography").iterdir():
        (inp / "geography" / f.name).write_bytes(f.read_bytes())
    lookup = inp / "geography" / "LAD22_RGN22_EN_LU.csv"
    lines = lookup.read_text(encoding="utf-8").splitlines()
    lookup.write_text("\n".join([lines[0], lines[1].replace(",", ",X", 1), *lines[2:]]) + "\n",
                      encoding="utf-8")
    moved = _build(model, inp, out, "r3")
    assert moved.previous is None
    assert moved.reuse == "previous release r1 not reused: its geography lookups differ"
    full = _build(model, inp, tmp_path / "full", "r3", full=True)
    _same_warehouse(moved.warehouse, full.warehouse)


def test_full_flag_rebuilds_everything(model: Model, generated: Path, tmp_path: Path) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:2])
    out = tmp_path / "wh"
    _build(model, inp, out, "r1")
    again = _build(model, inp, out, "r2", full=True)
    assert again.previous is None and again.reuse == "full build requested"
    assert all(not c.carried for c in again.cubes.values())
    reused = _build(model, inp, out, "r3")
    assert reused.previous == "r2"
    assert reused.cubes[HB].carried == ["202601", "202602"]
    assert reused.cubes[HB].units == 0  # nothing keyed, nothing aggregated


def test_a_build_held_to_a_small_memory_limit_is_the_same_warehouse(
        model: Model, generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory follows a month: with each month a batch of its own (as at national scale) a
    build whose DuckDB may hold 32 MB — a few times one month's cells here, far less than
    the build's default, so it evicts what earlier months left in its buffers — completes,
    for a whole history and for a release on top of it, and writes the same warehouses."""
    monkeypatch.setattr(build_module, "_BATCH_ROWS", 1)
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3])
    held = _build(model, inp, tmp_path / "held", "r1", memory_limit="32MB")
    assert all(not c.carried for c in held.cubes.values())
    _same_warehouse(held.warehouse, _build(model, inp, tmp_path / "free", "r1").warehouse)
    _inputs(generated, inp, MONTHS)
    release = _build(model, inp, tmp_path / "held", "r2", memory_limit="32MB")
    assert release.previous == "r1" and release.cubes[HB].carried == ["202601", "202602",
                                                                         "202603"]
    _same_warehouse(release.warehouse,
                    _build(model, inp, tmp_path / "full", "r2", full=True).warehouse)


def test_period_fingerprints_are_keyed(model: Model, generated: Path, tmp_path: Path) -> None:
    """The metadata never holds a plain hash of a microdata file: a fingerprint depends on the
    secret."""
    inp = _inputs(generated, tmp_path / "in", MONTHS[:1])
    a = _build(model, inp, tmp_path / "a", "r1")
    b = _build(model, inp, tmp_path / "b", "r1", secret=b"another-secret-0123456789abcdef")
    metas = []
    for rep in (a, b):
        con = duckdb.connect(str(rep.warehouse), read_only=True)
        metas.append(dict(con.execute("SELECT key, value FROM statcube_meta").fetchall()))
        con.close()
    fa, fb = (json.loads(m["period_inputs"]) for m in metas)
    assert set(fa[HB]) == {"202601"}
    assert fa[HB]["202601"] != fb[HB]["202601"]
    plain = hashlib.sha256((generated / "microdata" / HB / "2026-01.parquet").read_bytes())
    assert plain.hexdigest() not in json.dumps(metas)
    assert json.loads(metas[0]["key_fingerprint"]) == secret_fingerprint(TEST_SECRET)
    assert TEST_SECRET.decode() not in json.dumps(metas)


_KILLER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from cube.build import BuildOptions, build
from cube.model import load_model

def progress(what, done, steps):
    if what.endswith(": facts"):
        os.kill(os.getpid(), signal.SIGKILL)

build(load_model({model!r}), Path({inp!r}), Path({out!r}), {secret!r},
      BuildOptions(release="r2"), progress)
"""


def test_a_killed_incremental_build_leaves_the_previous_release(
        model: Model, generated: Path, tmp_path: Path) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3])
    out = tmp_path / "wh"
    first = _build(model, inp, out, "r1")
    before = hashlib.sha256(first.warehouse.read_bytes()).hexdigest()
    _inputs(generated, inp, MONTHS)
    proc = subprocess.run([sys.executable, "-c", _KILLER.format(
        root=str(ROOT), model=str(ROOT / "model.json"), inp=str(inp), out=str(out),
        secret=TEST_SECRET)], capture_output=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert hashlib.sha256(first.warehouse.read_bytes()).hexdigest() == before
    assert not (out / "r2.duckdb").exists()
    # The byte copy it was writing exists only under a temporary name (killed, it could not
    # clean up); the rerun removes it.
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name]
    rerun = _build(model, inp, out, "r2")
    assert rerun.previous == "r1" and rerun.cubes[HB].carried
    assert rerun.reuse == "started from a byte copy of release r1"
    assert sorted(p.name for p in out.iterdir()) == ["r1.duckdb", "r2.duckdb"]
    assert hashlib.sha256(first.warehouse.read_bytes()).hexdigest() == before
    _same_warehouse(rerun.warehouse, _build(model, inp, tmp_path / "full", "r2",
                                            full=True).warehouse)


def test_unit_key_cache(model: Model, generated: Path, tmp_path: Path) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3])
    cache = tmp_path / "secret.unitkeys"
    cold = _build(model, inp, tmp_path / "a", "r1", key_cache=cache)
    assert cold.cubes[HB].keyed > 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = sorted(cache.iterdir())
    assert [f.name.split(".")[0] for f in files] == sorted(CUBES)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # Warm: every unit's keys come from the cache, and the warehouse is the same.
    warm = _build(model, inp, tmp_path / "b", "r1", key_cache=cache, full=True)
    assert all(c.keyed == 0 for c in warm.cubes.values())
    assert all(c.units > 0 for c in warm.cubes.values())
    _same_warehouse(cold.warehouse, warm.warehouse)
    # A rotated secret never reads the old keys: they are recomputed and the old file goes.
    rotated = _build(model, inp, tmp_path / "c", "r1", key_cache=cache,
                     secret=b"rotated-secret-0123456789abcdef")
    assert rotated.cubes[HB].keyed == cold.cubes[HB].keyed
    assert not any(f.exists() for f in files)
    assert len(list(cache.iterdir())) == len(CUBES)
    # The cache is never inside the warehouse folder.
    with pytest.raises(ArgumentError, match="unit-key cache must not be inside"):
        _build(model, inp, tmp_path / "d", "r1", key_cache=tmp_path / "d" / "keys")
    for out in (tmp_path / "a", tmp_path / "b"):
        assert sorted(p.name for p in out.iterdir()) == ["r1.duckdb"]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=clean | env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_reports_reuse_and_revisions(generated: Path, tmp_path: Path) -> None:
    inp = _inputs(generated, tmp_path / "in", MONTHS[:2], copy=("2026-01",))
    key = tmp_path / "keys" / "secret"
    key.parent.mkdir()
    key.write_text("cli-incremental-secret-0123456789\n", encoding="utf-8")
    env = {"STATCUBE_KEY_FILE": str(key), "STATCUBE_EXPORT_DIR": str(tmp_path / "exports")}
    proc = _run(["build", "--input", str(inp), "--out", "wh", "--release", "r1"],
                cwd=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert "full build: no previous release in the warehouse folder" in proc.stderr
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "keys" / "secret.unitkeys")
                  .iterdir()) == sorted(CUBES)
    _edit(inp / "microdata" / HB / "2026-01.parquet", {0: {"tenure": "private"},
                                                       1: {"tenure": "social_ha"}})
    proc = _run(["build", "--input", str(inp), "--out", "wh", "--release", "r2"],
                cwd=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    words = " ".join(proc.stderr.split())
    assert "reused 4 unchanged cube-period(s) from release r1" in words
    assert ("revised: housing_benefit 202601 (inputs changed since release r1; rebuilt)"
            in words)
    report = json.loads((tmp_path / "wh" / "r2.build-report.json").read_text(encoding="utf-8"))
    assert report["cubes"][HB]["revised"] == ["202601"]
    proc = _run(["build", "--input", str(inp), "--out", "wh", "--release", "r3", "--full"],
                cwd=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert "full build: full build requested" in proc.stderr
    # A cache folder inside the warehouse or export folder is refused: one line, exit 2.
    for inside in (tmp_path / "wh" / "keys", tmp_path / "exports" / "keys"):
        proc = _run(["build", "--input", str(inp), "--out", "wh", "--release", "r4"],
                    cwd=tmp_path, STATCUBE_KEY_CACHE=str(inside), **env)
        assert proc.returncode == 2, proc.stderr
        assert "unit-key cache must not be inside" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not inside.exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_file(inp: Path, cube: str, months: list[str]) -> None:
    """Replace ``months`` of ``cube`` by one file holding them all."""
    d = inp / "microdata" / cube
    tables = [pq.read_table(d / f"{m}.parquet") for m in months]
    for m in months:
        (d / f"{m}.parquet").unlink()
    pq.write_table(pa.concat_tables(tables), d / f"{months[0]}-to-{months[-1]}.parquet")


def _remove(inp: Path, cube: str) -> None:
    for f in (inp / "microdata" / cube).iterdir():
        f.unlink()


SHAPES = {  # what happens to one cube between the two releases, and which cube
    "cube-new": SANCTIONS,  # absent from the previous release
    "cube-gone": SANCTIONS,  # in the previous release, absent from this one
    "file-of-two-months": HB,  # no fingerprints: built whole both times
    "bad-rows-skipped": SANCTIONS,  # no fingerprints in the previous release: built whole
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_release_starts_from_a_byte_copy_and_equals_a_full_build(
        model: Model, generated: Path, tmp_path: Path, shape: str) -> None:
    """Every kind of cube in one byte-copied release — carried with a revision (HB), carried
    quarterly (NINO), and one rebuilt whole or dropped — equals a full build, and the
    previous release's file is not changed by a byte."""
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3], copy=("2026-02",))
    skip = shape == "bad-rows-skipped"
    if shape == "cube-new":
        _remove(inp, SANCTIONS)
    if shape == "file-of-two-months":
        _one_file(inp, HB, MONTHS[:2])
    if skip:
        (inp / "microdata" / SANCTIONS / "2026-01.parquet").unlink()
        (inp / "microdata" / SANCTIONS / "2026-01.parquet").write_bytes(
            (generated / "microdata" / SANCTIONS / "2026-01.parquet").read_bytes())
        _edit(inp / "microdata" / SANCTIONS / "2026-01.parquet", {3: {"oa_code": "E00NOWHERE"}})
    out = tmp_path / "wh"
    first = _build(model, inp, out, "r1", skip_bad_rows=skip)
    assert first.previous is None
    before = _sha256(first.warehouse)
    # The release: two new months, a revised past month of housing benefit.
    if shape != "file-of-two-months":
        _edit(inp / "microdata" / HB / "2026-02.parquet", {0: {"tenure": "private"}})
    for cube in CUBES:
        have = {f.name for f in (inp / "microdata" / cube).iterdir()}
        for m in MONTHS[3:] if have else MONTHS:
            (inp / "microdata" / cube / f"{m}.parquet").symlink_to(
                generated / "microdata" / cube / f"{m}.parquet")
    if shape == "cube-gone":
        _remove(inp, SANCTIONS)
    release = _build(model, inp, out, "r2", skip_bad_rows=skip)
    assert _sha256(first.warehouse) == before
    assert release.previous == "r1"
    assert release.reuse == "started from a byte copy of release r1"
    assert "copy" in release.timings
    full = _build(model, inp, tmp_path / "full", "r2", full=True, skip_bad_rows=skip)
    _same_warehouse(release.warehouse, full.warehouse)
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".duckdb"
                  or ".tmp-" in p.name) == ["r1.duckdb", "r2.duckdb"]
    whole = SHAPES[shape]
    if shape != "cube-gone":
        assert release.cubes[whole].carried == []
        assert release.cubes[whole].fact_rows == full.cubes[whole].fact_rows
    else:
        assert SANCTIONS not in release.cubes
    if whole != HB:
        assert release.cubes[HB].carried == ["202601", "202603"]
        assert release.cubes[HB].revised == ["202602"]
    assert release.cubes[NINO].carried == ["20261"]  # the first quarter, complete before
    # Periods built again cost keys only for their units.
    assert release.cubes[NINO].keyed < full.cubes[NINO].keyed


def _blocks(path: Path) -> tuple[int, int]:
    """(total, used) blocks of a DuckDB file."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT total_blocks, used_blocks FROM pragma_database_size()"
                          ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_copied_release_does_not_grow_with_each_release(
        model: Model, generated: Path, tmp_path: Path) -> None:
    """Release after release, each revising a past month: the data a byte-copied release
    holds takes the blocks a full build's does, and the blocks freed by deleting and
    rewriting are reused by the next release instead of piling up."""
    inp = _inputs(generated, tmp_path / "in", MONTHS[:2], copy=tuple(MONTHS))
    out = tmp_path / "wh"
    _build(model, inp, out, "r2")
    totals = []
    for n in range(3, 6):
        _edit(inp / "microdata" / HB / f"{MONTHS[n - 3]}.parquet", {n: {"tenure": "private"}})
        for cube in CUBES:
            (inp / "microdata" / cube / f"{MONTHS[n - 1]}.parquet").write_bytes(
                (generated / "microdata" / cube / f"{MONTHS[n - 1]}.parquet").read_bytes())
        release = _build(model, inp, out, f"r{n}")
        assert release.previous == f"r{n - 1}" and release.cubes[HB].revised
        totals.append(_blocks(release.warehouse)[0])
    full = _build(model, inp, tmp_path / "full", "r5", full=True)
    _same_warehouse(release.warehouse, full.warehouse)
    used, whole = _blocks(release.warehouse)[1], _blocks(full.warehouse)[1]
    assert used <= 1.15 * whole, (used, whole)
    assert totals[-1] <= 1.1 * totals[0], totals


def test_a_previous_release_with_a_write_ahead_log_is_not_copied(
        model: Model, generated: Path, tmp_path: Path) -> None:
    """A release whose file alone is not what readers see (a log beside it) is never the
    start of a byte copy: the build is a full one, and says why."""
    inp = _inputs(generated, tmp_path / "in", MONTHS[:2])
    out = tmp_path / "wh"
    _build(model, inp, out, "r1")
    (out / "r1.duckdb.wal").write_bytes(b"")
    again = _build(model, inp, out, "r2")
    assert again.previous is None
    assert again.reuse == "previous release r1 not reused: it has a write-ahead log"
    assert all(not c.carried for c in again.cubes.values())


@pytest.mark.parametrize("where", ["new month", "revised month"])
def test_a_release_checks_the_cells_it_writes(model: Model, generated: Path, tmp_path: Path,
                                              where: str) -> None:
    """A release checks only the cells it writes, not the carried history again — so a bad
    row in a new or a revised month must still be found: refused without
    ``skip_bad_rows``, left out and reported with it, the release then equal to a full
    build of the same inputs."""
    inp = _inputs(generated, tmp_path / "in", MONTHS[:3], copy=("2026-02",))
    out = tmp_path / "wh"
    _build(model, inp, out, "r1")
    for cube in CUBES:
        (inp / "microdata" / cube / "2026-04.parquet").write_bytes(
            (generated / "microdata" / cube / "2026-04.parquet").read_bytes())
    month = "2026-04" if where == "new month" else "2026-02"
    _edit(inp / "microdata" / HB / f"{month}.parquet", {5: {"oa_code": "E00NOWHERE"}})
    with pytest.raises(InputDataError, match="bad input row"):
        _build(model, inp, out, "r2")
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".duckdb") == ["r1.duckdb"]
    release = _build(model, inp, out, "r2", skip_bad_rows=True)
    assert release.cubes[HB].skipped == 1
    assert release.cubes[HB].problems
    assert release.cubes[NINO].carried == ["20261"]  # the other cubes still carried
    full = _build(model, inp, tmp_path / "full", "r2", full=True, skip_bad_rows=True)
    _same_warehouse(release.warehouse, full.warehouse)
