"""``statcube generate`` and ``statcube build`` as a user runs them.

Most tests start the real command in a subprocess (``python -m cli``, the same ``main``
the ``statcube`` console script calls), with the environment a user would set. A user mistake
must end with exit status 2 and an ``error:`` message naming the problem — never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SECRET = "cli-test-secret-0123456789abcdef"


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=clean | env,
                          capture_output=True, text=True, timeout=300, check=False)


def _words(text: str) -> str:
    """Text with whitespace runs collapsed: the console wraps long lines at its width."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    proc = _run(["generate", "--scale", "0.002", "--months", "2", "--start", "2026-01",
                 "--seed", "3", "--out", "in"], cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "wrote synthetic GB data to in:" in _words(proc.stderr)
    assert "2 months (2026-01 to 2026-02)" in _words(proc.stderr)
    return work / "in"


def test_generate_writes_lookups_and_microdata(generated: Path) -> None:
    assert (generated / "geography" / "OA21_LSOA21_MSOA21_LAD22_GB_LU.csv").is_file()
    assert (generated / "metadata.json").is_file()
    assert len(list((generated / "microdata").glob("*/*.parquet"))) == 6 * 2


def test_build_with_the_secret_from_the_environment(generated: Path, tmp_path: Path) -> None:
    proc = _run(["build", "--input", str(generated), "--out", "wh"], cwd=tmp_path,
                STATCUBE_KEY_SECRET=SECRET)
    assert proc.returncode == 0, proc.stderr
    assert "built wh/2026-02.duckdb (release 2026-02) from 6 cubes" in _words(proc.stderr)
    warehouse = tmp_path / "wh" / "2026-02.duckdb"
    # The secret is configuration: it is in no output.
    assert SECRET.encode() not in warehouse.read_bytes()
    assert SECRET not in proc.stdout + proc.stderr


def test_build_without_a_secret_refuses(generated: Path, tmp_path: Path) -> None:
    proc = _run(["build", "--input", str(generated), "--out", "wh"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = _words(proc.stderr)
    assert message.startswith("error: no record-key secret: set STATCUBE_KEY_SECRET or "
                              "STATCUBE_KEY_FILE")
    assert not (tmp_path / "wh").exists()


def test_build_with_a_key_file(generated: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "secret"
    key.write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("STATCUBE_KEY_FILE", str(key))
    assert main(["build", "--input", str(generated), "--out", str(tmp_path / "wh"),
                 "--release", "test-1"]) == 0
    assert (tmp_path / "wh" / "test-1.duckdb").is_file()
    assert "release test-1" in _words(capsys.readouterr().err)


def test_build_refuses_bad_input_naming_file_row_and_value(generated: Path,
                                                           tmp_path: Path) -> None:
    inp = tmp_path / "in"
    subprocess.run(["cp", "-r", str(generated), str(inp)], check=True)
    path = inp / "microdata" / "pip" / "2026-02.parquet"
    t = pq.read_table(path)
    mobility = t.column("mobility").cast(pa.string()).to_pylist()
    mobility[9] = "high"
    t = t.set_column(t.column_names.index("mobility"), "mobility", pa.array(mobility))
    pq.write_table(t, path)
    proc = _run(["build", "--input", str(inp), "--out", "wh"], cwd=tmp_path,
                STATCUBE_KEY_SECRET=SECRET)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = _words(proc.stderr)
    assert message.startswith("error: pip: 1 bad input row(s); nothing was built (use "
                              "--skip-bad-rows to build without them and get a report)")
    assert ("microdata/pip/2026-02.parquet row 10: mobility='high': unknown mobility award "
            "code") in message
    assert not list((tmp_path / "wh").glob("*"))



def test_build_can_skip_bad_rows(generated: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in"
    subprocess.run(["cp", "-r", str(generated), str(inp)], check=True)
    path = inp / "microdata" / "universal_credit" / "2026-01.parquet"
    t = pq.read_table(path)
    pq.write_table(pa.concat_tables([t, t.slice(0, 3)]), path)  # three units counted twice
    monkeypatch.setenv("STATCUBE_KEY_SECRET", SECRET)
    assert main(["build", "--input", str(inp), "--out", str(tmp_path / "wh"),
                 "--skip-bad-rows"]) == 0
    assert "skipped 6 bad rows, see build report" in _words(capsys.readouterr().err)
    assert sorted(p.name for p in (tmp_path / "wh").iterdir()) == [
        "2026-02.build-report.json", "2026-02.duckdb"]


def test_build_of_a_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STATCUBE_KEY_SECRET", SECRET)
    nowhere = tmp_path / "nowhere"
    assert main(["build", "--input", str(nowhere)]) == 2
    assert _words(capsys.readouterr().err) == f"error: input directory not found: {nowhere}"


def test_generate_rejects_a_bad_scale(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--scale", "2", "--out", str(tmp_path / "x")]) == 2
    assert _words(capsys.readouterr().err) == ("error: scale must be between 0.0005 and 1.0 "
                                               "(scale: '2.0')")
    assert not (tmp_path / "x").exists()
