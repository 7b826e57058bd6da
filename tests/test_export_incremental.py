"""Incremental exports (cube/export.py, cube/disclosure/fingerprint.py): a new release's export
carries unchanged partitions of unchanged periods over from the previous release's export and
recomputes the rest — and its files are byte-identical to a fresh export of the same release.

Two releases come from real builds of subsets of the generator's per-month files (the same
secret, so unchanged months give the same facts), or from the release calendar's view of one
warehouse (a later release sees more periods of the same warehouse).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import TEST_SECRET
from test_export import files_of

from cli.main import main
from cube.build import BuildOptions, build
from cube.disclosure.fingerprint import dimension_digest, period_digests
from cube.export import (
    DATAPACKAGE,
    CubeDigests,
    ExportResult,
    cube_digests,
    export_grain,
    export_release,
    limit_memory,
    verify_export,
)
from cube.model import Model, parse_model
from cube.synthetic import GenerateOptions, generate
from cube.workspace import Workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CUBES = ("housing_benefit", "sanctions")
MONTHS = ("2026-06", "2026-07", "2026-08")
RAW_IN_TEXT = re.compile(r"__\w|\brk2?\b|\bckey\b|\bpcv\b|\bpvalue\b|\w_max\b")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("incr-synthetic") / "gb"
    generate(out, GenerateOptions(scale=0.002, seed=11, start=MONTHS[0], months=len(MONTHS),
                                  cubes=CUBES))
    return out


def inputs(synthetic: Path, directory: Path, months: tuple[str, ...],
           revise: str | None = None) -> Path:
    """An input folder holding ``months`` of the generated files (``revise``: that month's
    Housing Benefit file loses its last tenth of records, as a revision would)."""
    shutil.copytree(synthetic / "geography", directory / "geography")
    for cube in CUBES:
        target = directory / "microdata" / cube
        target.mkdir(parents=True)
        for month in months:
            source = synthetic / "microdata" / cube / f"{month}.parquet"
            if cube == "housing_benefit" and month == revise:
                table = pq.read_table(source)
                pq.write_table(table.slice(0, table.num_rows * 9 // 10), target / source.name)
            else:
                shutil.copyfile(source, target / source.name)
    return directory


def build_from(model: Model, synthetic: Path, tmp: Path, months: tuple[str, ...],
               revise: str | None = None) -> Path:
    src = inputs(synthetic, tmp / "input", months, revise)
    return build(model, src, tmp / "warehouse", TEST_SECRET, BuildOptions()).warehouse


@pytest.fixture(scope="module")
def first(model: Model, synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 2026-07: June and July."""
    return build_from(model, synthetic, tmp_path_factory.mktemp("first"), MONTHS[:2])


@pytest.fixture(scope="module")
def second(model: Model, synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 2026-08: June, July (unchanged) and August."""
    return build_from(model, synthetic, tmp_path_factory.mktemp("second"), MONTHS)


@pytest.fixture(scope="module")
def revised(model: Model, synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 2026-08 with June's Housing Benefit revised."""
    return build_from(model, synthetic, tmp_path_factory.mktemp("revised"), MONTHS,
                      revise="2026-06")


def export(model: Model, warehouse: Path, out: Path, **kwargs: Any) -> list[ExportResult]:
    ws = Workspace.open(model, warehouse)
    try:
        return export_release(ws, out, cubes=list(CUBES), **kwargs)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def fresh_second(model: Model, second: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    """A fresh (nothing carried) export of release 2026-08: the reference."""
    out = tmp_path_factory.mktemp("fresh-second")
    results = export(model, second, out)
    assert not any(r.carried_partitions for r in results)
    return out / "2026-08"


def test_digests_depend_on_the_facts_of_each_period_only(model: Model, first: Path,
                                                        second: Path, revised: Path) -> None:
    cube = model.cube("housing_benefit")
    digests = {}
    for name, warehouse in (("first", first), ("second", second), ("revised", revised)):
        ws = Workspace.open(model, warehouse)
        try:
            digests[name] = (period_digests(ws.engine, cube, [202606, 202607, 202608]),
                             dimension_digest(ws.engine, cube))
        finally:
            ws.close()
    (f, fdim), (s, sdim), (r, rdim) = digests["first"], digests["second"], digests["revised"]
    assert fdim == sdim == rdim and fdim is not None and len(fdim) == 64
    assert f[202606] == s[202606] and f[202607] == s[202607]  # another build, same months
    assert r[202606] != s[202606] and r[202607] == s[202607] and r[202608] == s[202608]
    assert f[202608] != s[202608]  # no rows is a digest too, not the digest of August


def test_the_next_release_carries_unchanged_partitions_byte_identically(
        model: Model, first: Path, second: Path, fresh_second: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exports"
    earlier = export(model, first, out)
    assert {r.partitions for r in earlier} == {2}
    assert not any(r.carried_partitions for r in earlier)
    base = ["--model", str(ROOT / "model.json"), "--data-dir", str(tmp_path / "no-calendar")]
    for cube in CUBES:
        argv = [*base, "export", "--warehouse", str(second), "--cube", cube, "--out", str(out)]
        assert main(argv) == 0
        err = " ".join(capsys.readouterr().err.split())
        grains = sum(1 for r in earlier if r.path.parent.name == cube)
        assert f"carried {2 * grains} of {3 * grains} partitions" in err  # June, July of each
    for result in earlier:
        rel = result.path.relative_to(out / "2026-07")
        now = out / "2026-08" / rel
        assert verify_export(now) == []
        assert files_of(now) == files_of(fresh_second / rel)  # byte-identical to a fresh export
        for month in MONTHS[:2]:  # carried as hard links (same filesystem): no bytes copied
            part = f"data/period={month}/part-0.parquet"
            assert (now / part).stat().st_ino == (result.path / part).stat().st_ino
        assert (now / "data/period=2026-08/part-0.parquet").stat().st_nlink == 1
    # Nothing raw in what carrying writes or records.
    for package in (out / "2026-08").rglob(DATAPACKAGE):
        text = package.read_text(encoding="utf-8")
        assert not RAW_IN_TEXT.search(text)
        prints = json.loads(text)["statcube"]["provenance"]["fingerprints"]
        assert sorted(prints) == list(MONTHS)
        assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in prints.values())
    for parquet in (out / "2026-08").rglob("*.parquet"):
        kv = pq.read_metadata(parquet).metadata or {}
        assert not any(RAW_IN_TEXT.search(v.decode()) for k, v in kv.items()
                       if k != b"ARROW:schema")


def test_a_revised_month_is_recomputed(model: Model, first: Path, revised: Path,
                                       tmp_path: Path) -> None:
    out = tmp_path / "exports"
    export(model, first, out)
    results = export(model, revised, out)
    fresh = export(model, revised, tmp_path / "fresh")
    for r, f in zip(results, fresh, strict=True):
        # June of Housing Benefit was revised: only July carries; sanctions: June and July.
        assert r.carried_partitions == (1 if r.path.parent.name == "housing_benefit" else 2)
        assert files_of(r.path) == files_of(f.path)
    june = "data/period=2026-06/part-0.parquet"
    hb_first = out / "2026-07" / "housing_benefit" / "oa"
    hb_now = out / "2026-08" / "housing_benefit" / "oa"
    assert (hb_first / june).read_bytes() != (hb_now / june).read_bytes()


def test_a_corrupt_previous_partition_is_recomputed(model: Model, first: Path, second: Path,
                                                    fresh_second: Path, tmp_path: Path
                                                    ) -> None:
    out = tmp_path / "exports"
    export(model, first, out)
    old = out / "2026-07" / "housing_benefit" / "oa" / "data/period=2026-06/part-0.parquet"
    data = bytearray(old.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other bytes: only the checksum sees it
    old.write_bytes(bytes(data))
    ws = Workspace.open(model, second)
    try:
        result = export_grain(ws, "housing_benefit", "oa", out)
    finally:
        ws.close()
    assert result.carried_partitions == 1  # July; June recomputed
    assert files_of(result.path) == files_of(fresh_second / "housing_benefit" / "oa")
    assert old.read_bytes() == bytes(data)  # the previous release is left as it is
    new = result.path / "data/period=2026-06/part-0.parquet"
    assert new.stat().st_ino != old.stat().st_ino


def _with(raw_model: dict[str, Any], change: Any) -> Model:
    raw = copy.deepcopy(raw_model)
    change(raw)
    return parse_model(raw)


def test_other_grain_levels_or_row_groups_carry_nothing(model: Model, first: Path,
                                                       second: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    ws = Workspace.open(model, first)
    try:
        export_grain(ws, "housing_benefit", "oa", out)
    finally:
        ws.close()
    ws = Workspace.open(model, second)
    try:  # other row groups: other bytes
        other = export_grain(ws, "housing_benefit", "oa", out, row_group_rows=1000,
                             release="rg")
        assert other.carried_partitions == 0
    finally:
        ws.close()
    raw = json.loads((ROOT / "model.json").read_text(encoding="utf-8"))

    def relevel(m: dict[str, Any]) -> None:  # a grain named "oa" that is LSOA × tenure
        hb = next(c for c in m["cubes"] if c["name"] == "housing_benefit")
        hb["info"]["exports"] = {"grains": [{"name": "oa", "levels": {
            "geography": "lsoa", "tenure": "tenure"}}]}

    ws = Workspace.open(_with(raw, relevel), second)
    try:
        relevelled = export_grain(ws, "housing_benefit", "oa", out)
        assert relevelled.carried_partitions == 0 and relevelled.partitions == 3
    finally:
        ws.close()


def test_another_ptable_carries_nothing(model: Model, synthetic: Path, first: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / "exports"
    export(model, first, out)
    raw = json.loads((ROOT / "model.json").read_text(encoding="utf-8"))

    def other_ptable(m: dict[str, Any]) -> None:
        m["info"].setdefault("disclosure", {}).setdefault("ptable", {})["D"] = 4

    other = _with(raw, other_ptable)
    warehouse = build_from(other, synthetic, tmp_path / "other", MONTHS)
    results = export(other, warehouse, out)
    assert results and not any(r.carried_partitions for r in results)


def test_no_carry_computes_everything(model: Model, first: Path, second: Path,
                                      fresh_second: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    export(model, first, out)
    results = export(model, second, out, carry=False)
    assert not any(r.carried_partitions for r in results)
    for r in results:
        assert files_of(r.path) == files_of(fresh_second / r.path.parent.name / r.path.name)


def test_the_memory_limit_is_checked_and_applied(model: Model, first: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--model", str(ROOT / "model.json"), "--data-dir", str(tmp_path / "none"),
            "export", "--warehouse", str(first), "--cube", "sanctions", "--grain", "la_all",
            "--out", str(tmp_path / "out")]
    assert main([*base, "--memory-limit", "lots"]) == 2
    err = capsys.readouterr().err
    assert "memory limit 'lots'" in err and "Traceback" not in err
    ws = Workspace.open(model, first)
    try:
        limit_memory(ws, "512MB")
        setting = ws.engine.scalar(sa.text("SELECT current_setting('memory_limit')"))
        assert str(setting).replace(" ", "") in {"512.0MB", "488.2MiB", "512MB"}, setting
    finally:
        ws.close()
    assert main([*base, "--memory-limit", "1GB"]) == 0


def test_later_release_of_one_warehouse_carries_every_earlier_partition(
        model: Model, second: Path, tmp_path: Path) -> None:
    """The release calendar's way: a later release sees more periods of the same warehouse."""
    ws = Workspace.open(model, second)
    try:
        earlier = export_release(ws.view((2026, 7)), tmp_path, cubes=["sanctions"],
                                 release="r1")
        later = export_release(ws, tmp_path, cubes=["sanctions"], release="r2")
    finally:
        ws.close()
    assert [r.carried_partitions for r in later] == [r.partitions for r in earlier]
    assert all(r.partitions == 3 for r in later)


def test_postgresql_computes_no_digest_and_carries_nothing(pg_workspace: Workspace,
                                                           tmp_path: Path) -> None:
    """PostgreSQL has no row hash equal to DuckDB's: no fingerprints, every partition
    computed (README, "Incremental exports")."""
    assert cube_digests(pg_workspace, "sanctions") == CubeDigests({}, None)
    first_release = export_grain(pg_workspace.view((2026, 7)), "sanctions", "la_all",
                                 tmp_path, release="p1")
    later = export_grain(pg_workspace, "sanctions", "la_all", tmp_path, release="p2")
    assert first_release.partitions == 2 and later.partitions == 6
    assert later.carried_partitions == 0
    package = json.loads((later.path / DATAPACKAGE).read_text(encoding="utf-8"))
    assert package["statcube"]["provenance"]["fingerprints"] == {}
