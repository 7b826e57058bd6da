"""The national benchmark (bench/bench_national.py) runs end to end at a tiny scale, so it
cannot rot between the rare national runs: every phase in its own process, two releases, the
second carrying the first's unchanged partitions over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_national

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
