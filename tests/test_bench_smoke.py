"""The benchmarks still run: each one's main at its smallest settings over the test session's
warehouse, so a refactor of the code they drive cannot break them silently (two did).

Timing is not checked (the numbers come from full runs on a quiet machine); what is checked
is that every benchmark imports, runs its whole mix and prints its report. The Cubes peer
benchmark needs Python 3.7, Cubes 1.1 and PostgreSQL for a run, so here its mix is asked of
statcube (every request must be answered) and its report is built from made-up timings.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from test_server_support import make_app

from bench import bench_cubes, bench_magnitudes, bench_protect, bench_query, bench_server

pytestmark = pytest.mark.integration
BENCHES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "bench").glob(
    "bench_*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main) and module.__doc__


def test_bench_protect_and_bench_query_run(warehouse: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_protect.main(["--warehouse", str(warehouse), "--repeat", "1"]) == 0
    assert bench_query.main(["--warehouse", str(warehouse), "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "geometric mean of protected/raw" in out and "/hand ratios" in out


def test_bench_magnitudes_runs(warehouse: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_magnitudes", "--warehouse", str(warehouse)])
    bench_magnitudes.main()
    assert "magnitude protection" in capsys.readouterr().out


def test_bench_server_runs(warehouse: Path, tmp_path: Path) -> None:
    server = bench_server.start(warehouse, 1, 2, tmp_path / "server.log",
                                {"STATCUBE_CACHE_BYTES": "0"})
    try:
        rows = bench_server.run(server.url, clients=2, requests=4, seconds=0.5,
                                uncached_requests=4)
    finally:
        server.stop()
    assert [r["scenario"] for r in rows] == ["version", "cached", "revalidated", "uncached",
                                             "every_cube"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows), rows
    assert "| uncached |" in bench_server.table(rows)


def test_bench_server_against_a_revision_reports_ratios_of_medians() -> None:
    """--against: throughput as this/baseline, CPU per request as baseline/this (times
    less CPU now), each over the medians of the turns."""
    def rows(rps: float, cpu: float) -> list[dict[str, float | str]]:
        return [{"scenario": "uncached", "rps": rps, "cpu_ms": cpu}]
    runs = [("baseline", rows(50, 20)), ("this", rows(400, 4)), ("baseline", rows(70, 30)),
            ("this", rows(300, 5)), ("baseline", rows(60, 25)), ("this", rows(350, 4.5))]
    (r,) = bench_server.ratios(runs)
    assert (r["baseline_rps"], r["this_rps"], r["rps_ratio"]) == (60, 350, 5.83)
    assert (r["baseline_cpu_ms"], r["this_cpu_ms"], r["cpu_ratio"]) == (25, 4.5, 5.56)


def test_bench_server_against_names_a_revision_it_cannot_find(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="'no-such-ref': not a commit"):
        bench_server.checkout("no-such-ref", tmp_path)


def test_bench_cubes_mix_is_answered_by_statcube(warehouse: Path, tmp_path: Path) -> None:
    client = make_app(warehouse, tmp_path, cache_bytes=0).test_client()
    for name, path in bench_cubes.MIX:
        response = client.get(path)
        assert response.status_code == 200, (name, response.get_data(as_text=True)[:300])
    medians = {name: {"cubes": 10.0, "duckdb uncached": 2.0 + i % 3}
               for i, (name, _) in enumerate(bench_cubes.MIX)}
    text, means = bench_cubes.report({"medians_ms": medians}, "cubes", ["duckdb uncached"])
    assert len(text.splitlines()) == len(bench_cubes.MIX) + 3
    assert 0.2 < means["duckdb uncached"] < 0.4
