"""The national benchmark (bench/bench_national.py) runs end to end at a tiny scale, so it
cannot rot between the rare national runs: every phase in its own process, two releases, the
second carrying the first's unchanged partitions over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_national
from cube.synthetic import GenerateOptions, generate

pytestmark = pytest.mark.integration


def test_bench_national_runs_end_to_end(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert bench_national.main(["--scale", "0.0005", "--months", "2", "--new-months", "1",
                                "--cube", "sanctions", "--data", str(tmp_path / "data"),
                                "--json", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert list(results) == ["generate", "build-history", "export-history", "build-release",
                             "export-release"]
    for r in results.values():
        assert r["wall"] > 0 and r["cpu"] > 0 and r["peak_rss"] > 0 and r["bytes"] > 0
    assert results["generate"]["months"] == ["2026-09", "2026-10", "2026-11"]
    assert results["build-history"]["report"]["release"] == "2026-10"
    assert results["build-release"]["report"]["release"] == "2026-11"
    history, release = results["export-history"], results["export-release"]
    assert history["carried"] == 0 and history["partitions"] == 2 * history["grains"]
    assert release["partitions"] == 3 * release["grains"]
    assert release["carried"] == history["partitions"]  # both old months, every grain
    assert not history["problems"] and not release["problems"]
    text = capsys.readouterr().out
    assert "projection to 120 months" in text and "exports verified: checksums: met" in text


def test_more_months_write_the_same_files_for_the_months_shared(tmp_path: Path) -> None:
    """What an incremental release's inputs rely on: the history's month files do not change
    when months are added."""
    short = generate(tmp_path / "short", GenerateOptions(scale=0.0005, start="2026-09",
                                                         months=2))
    long = generate(tmp_path / "long", GenerateOptions(scale=0.0005, start="2026-09",
                                                       months=3))
    assert long["months"][:2] == short["months"]
    for cube_dir in sorted((tmp_path / "short" / "microdata").iterdir()):
        for f in sorted(cube_dir.iterdir()):
            twin = tmp_path / "long" / "microdata" / cube_dir.name / f.name
            assert twin.read_bytes() == f.read_bytes(), f
    assert (tmp_path / "long" / "microdata" / "pip" / "2026-11.parquet").exists()
