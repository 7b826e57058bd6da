"""Shared fixtures: one small synthetic GB dataset and one warehouse per test session.

Everything is real: the generator writes files, the build writes a DuckDB warehouse, and
queries run on it. Session scope keeps the suite fast; tests must not modify these files
(use ``tmp_path`` and their own builds for that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cube.build import BuildOptions, BuildReport, build
from cube.model import Model, load_model
from cube.synthetic import GenerateOptions, generate
from cube.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = b"statcube-test-secret-not-for-production"
#: Small but realistic: ~2.4k OAs, 35 LAs, 6 months of every cube.
TEST_OPTIONS = GenerateOptions(scale=0.01, seed=7, start="2026-06", months=6)


@pytest.fixture(scope="session")
def model() -> Model:
    return load_model(ROOT / "model.json")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "gb"
    generate(out, TEST_OPTIONS)
    return out


@pytest.fixture(scope="session")
def built(model: Model, synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> BuildReport:
    out = tmp_path_factory.mktemp("warehouse")
    return build(model, synthetic_dir, out, TEST_SECRET, BuildOptions())


@pytest.fixture(scope="session")
def warehouse(built: BuildReport) -> Path:
    return built.warehouse


@pytest.fixture(scope="session")
def workspace(model: Model, warehouse: Path) -> Iterator[Workspace]:
    ws = Workspace.open(model, warehouse)
    yield ws
    ws.close()


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass secrets explicitly; an operator's environment must not leak in."""
    for var in ("STATCUBE_KEY_SECRET", "STATCUBE_KEY_FILE"):
        if var in os.environ:
            monkeypatch.delenv(var)
