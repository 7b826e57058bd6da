"""The ``statcube`` command line as a user meets it: the same answers as the HTTP API, usage
mistakes on one line, and no traceback for ordinary failures (a closed pipe, a full disk, a
missing driver).

Pipes, exit statuses and missing packages are tested on real processes (``python -m cli``
and the installed ``statcube`` script); usage errors in-process through the same ``main``.
Nothing is mocked: a missing psycopg is simulated by an import hook that refuses to import
it, a full disk by Linux's ``/dev/full`` or by an OSError(ENOSPC) raised where pyarrow
writes a file — what the operating system would raise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from flask import Flask

from cli.main import main, parser
from cli.parsing import subcommands
from cube.settings import SETTINGS, Settings
from server import create_app
from server.app import service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
STATCUBE = Path(sys.executable).with_name("statcube")  # the installed console script
# A query with withheld means (small MSOA cells): the CSV must show them as '..'.
WITHHELD = ["benefit_cap", "-d", "geography:msoa"]
WITHHELD_URL = "/cube/benefit_cap/aggregate?drilldown=geography:msoa"
CALENDAR = """
[[release]]
id = "r-old"
published = "2020-01-14T09:30"
last_period = "2026-09"

[[release]]
id = "r-next"
published = "2099-02-10T09:30"
last_period = "2026-11"
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env | extra


def run(args: list[str], cwd: Path, *, stdin: str | None = None, **env: str
        ) -> subprocess.CompletedProcess[bytes]:
    """``python -m cli ARGS`` as a separate process, in a clean environment."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, timeout=300, check=False)


def _err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode("utf-8")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no data/releases.toml) for in-process runs."""
    monkeypatch.chdir(tmp_path)
    for var in [s.env for s in SETTINGS]:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding a release calendar, as ``statcube demo`` leaves one."""
    d = tmp_path_factory.mktemp("datadir")
    (d / "releases.toml").write_text(CALENDAR, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def api(warehouse: Path, demo_dir: Path) -> Iterator[Flask]:
    """The HTTP API over the same warehouse and the same data directory (so the same rule
    finds the same calendar)."""
    app = create_app(Settings(model=str(ROOT / "model.json"), warehouse=str(warehouse),
                              data_dir=str(demo_dir)))
    yield app
    service(app).releases.close()


# --- the parser ----------------------------------------------------------------------------------


def _walk(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for sub in subcommands(p).values():
        yield from _walk(sub)


@pytest.mark.unit
def test_every_option_has_help_and_every_command_ends_with_an_example() -> None:
    top = parser()
    commands = subcommands(top)
    assert {"aggregate", "members", "sql", "sdc-report", "export", "load-pg", "settings",
            "generate", "build", "demo", "serve"} <= set(commands)
    for p in _walk(top):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help"
        assert p.formatter_class is argparse.RawDescriptionHelpFormatter, p.prog
        assert p.epilog and p.epilog.startswith("example:\n  "), p.prog
        assert "statcube" in p.epilog, p.prog
        assert p.format_help().rstrip().endswith(p.epilog.splitlines()[-1].strip()), p.prog
    # Every example is a valid command line for its own subcommand.
    for name, p in commands.items():
        assert p.epilog is not None
        words = shlex.split(p.epilog.splitlines()[-1])
        words = words[words.index("statcube") + 1:]
        assert words[0] == name
        args, extra = top.parse_known_args(words)
        assert args.command == name and extra == []


# --- usage mistakes: one line, exit 2, naming the value ------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    ([], "statcube: name a command: aggregate, build"),
    (["agregate", "pip"], "unknown command 'agregate'; did you mean 'aggregate'"),
    (["aggregate", "pip", "--pagesiz", "3"], "'--pagesiz' '3'; --pagesiz: did you mean "
                                             "'--pagesize'"),
    (["aggregate", "pip", "--warehouse", ""], "statcube aggregate: argument --warehouse: "
                                              "must not be empty"),
    (["aggregate", "pip", "--format", "xml"], "argument --format: invalid choice 'xml'; "
                                              "choose from json, csv"),
    (["members", "pip", "time", "--depth", "x"], "argument --depth: invalid int value: 'x'"),
    (["generate", "--scale", "2"], "scale must be between 0.0005 and 1.0 (scale: '2.0')"),
    (["generate", "--months", "0"], "months must be between 1 and 240 (months: '0')"),
    (["generate", "--start", "2026-13"], "month must look like YYYY-MM (start: '2026-13')"),
    (["export", "--warehouse", " "], "argument --warehouse: must not be empty"),
])
def test_usage_mistakes_are_one_line(argv: list[str], expected: str, home: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.rstrip("\n")
    assert "\n" not in err and err.startswith("error: ")
    assert expected in err
    assert not (home / "data").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["aggregate", "pipp"], "error: unknown cube 'pipp'; did you mean 'pip'?"),
    (["aggregate", "pip", "-d", "geography:region", "--top", "0:claimants"],
     "error: top N must be between 1 and 10000 (top: '0:claimants')"),
    (["aggregate", "pip", "-d", "geography:region", "--pagesize", "-1"],
     "error: pagesize must be between 1 and 1000000 (pagesize: '-1')"),
    (["aggregate", "pip", "-d", "geograpy"], "did you mean 'geography'?"),
    (["members", "pip", "time", "--level", "mnth"], "did you mean 'month'?"),
    (["aggregate", "pip", "--release", "nope"], "error: unknown release 'nope'"),
])
def test_query_mistakes_name_the_value_and_suggest(args: list[str], expected: str,
                                                   warehouse: Path, home: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err.rstrip("\n")
    assert "\n" not in err and expected in err


def test_build_checks_its_input_before_asking_for_a_secret(tmp_path: Path) -> None:
    proc = run(["build", "--input", "nowhere"], cwd=tmp_path)
    assert proc.returncode == 2
    assert _err(proc) == "error: input directory not found: nowhere\n"
    (tmp_path / "empty" / "geography").mkdir(parents=True)
    proc = run(["build", "--input", "empty"], cwd=tmp_path)
    assert proc.returncode == 2 and "secret" not in _err(proc)
    assert "Traceback" not in _err(proc)


# --- the same answers as the API -----------------------------------------------------------------


@pytest.mark.parametrize("header", ["names", "labels", "none"])
def test_cli_csv_is_byte_identical_to_the_api_csv(warehouse: Path, demo_dir: Path,
                                                  api: Flask, tmp_path: Path,
                                                  header: str) -> None:
    proc = run(["aggregate", *WITHHELD, "--format", "csv", "--header", header,
                "--warehouse", str(warehouse)], cwd=tmp_path, STATCUBE_DATA_DIR=str(demo_dir))
    assert proc.returncode == 0, _err(proc)
    http = api.test_client().get(f"{WITHHELD_URL}&format=csv&header={header}")
    assert http.status_code == 200
    assert proc.stdout == http.get_data()
    assert b",..\r\n" in proc.stdout  # withheld means, the ONS way, CRLF line ends
    assert proc.stdout.count(b"\n") == proc.stdout.count(b"\r\n")

    proc = run(["members", "housing_benefit", "geography", "--level", "la", "--format", "csv",
                "--header", header, "--warehouse", str(warehouse)], cwd=tmp_path,
               STATCUBE_DATA_DIR=str(demo_dir))
    assert proc.returncode == 0, _err(proc)
    http = api.test_client().get(
        f"/cube/housing_benefit/members/geography?level=la&format=csv&header={header}")
    assert proc.stdout == http.get_data()


def test_cli_and_api_answer_the_same_release_and_period(warehouse: Path, demo_dir: Path,
                                                        api: Flask, tmp_path: Path) -> None:
    """The demo's calendar in DATA_DIR applies to both: the latest *published* release
    (r-old, to 2026-09), not the newest month in the warehouse (2026-11, still embargoed)."""
    proc = run(["aggregate", "pip", "-d", "geography:country", "--warehouse", str(warehouse)],
               cwd=tmp_path, STATCUBE_DATA_DIR=str(demo_dir))
    assert proc.returncode == 0, _err(proc)
    cli_body = json.loads(proc.stdout)
    api_body = orjson.loads(api.test_client().get(
        "/cube/pip/aggregate?drilldown=geography:country").get_data())
    assert cli_body["period"] == api_body["period"] == "2026-09"
    assert cli_body["release"] == api_body["release"] == "r-old"
    assert cli_body["cells"] == api_body["cells"] and cli_body["summary"] == api_body["summary"]
    assert _err(proc) == ("answer: release r-old (published 2020-01-14 09:30 London time; "
                          f"calendar {demo_dir / 'releases.toml'}), period 2026-09\n")

    # Members: the embargoed months do not exist for the CLI either.
    proc = run(["members", "pip", "time", "--level", "month", "--warehouse", str(warehouse)],
               cwd=tmp_path, STATCUBE_DATA_DIR=str(demo_dir))
    months = [m["time.month"] for m in json.loads(proc.stdout)["data"]]
    assert months == [6, 7, 8, 9]

    # A release under embargo does not exist for the CLI, as for a guest of the API ...
    proc = run(["aggregate", "pip", "--release", "r-next", "--warehouse", str(warehouse)],
               cwd=tmp_path, STATCUBE_DATA_DIR=str(demo_dir))
    assert proc.returncode == 2 and "unknown release 'r-next'" in _err(proc)
    assert "r-next" not in _err(proc).split("valid:")[-1]
    # ... unless asked for with --prerelease, as a prerelease key may; and said so.
    proc = run(["aggregate", "pip", "--release", "r-next", "--prerelease", "--warehouse",
                str(warehouse)], cwd=tmp_path, STATCUBE_DATA_DIR=str(demo_dir))
    assert proc.returncode == 0, _err(proc)
    assert json.loads(proc.stdout)["period"] == "2026-11"
    assert "release r-next (UNDER EMBARGO until 2099-02-10 09:30 London time" in _err(proc)


def test_a_calendar_from_the_environment_and_no_calendar(warehouse: Path, demo_dir: Path,
                                                         tmp_path: Path) -> None:
    proc = run(["aggregate", "pip", "--warehouse", str(warehouse)], cwd=tmp_path,
               STATCUBE_RELEASES=str(demo_dir / "releases.toml"))
    assert json.loads(proc.stdout)["period"] == "2026-09"
    proc = run(["sql", "pip", "--warehouse", str(warehouse)], cwd=tmp_path)
    assert proc.returncode == 0
    assert _err(proc) == ("answer: release 2026-11 (the warehouse's own release; no release "
                          "calendar), period 2026-11\n")


# --- ordinary failures: no traceback -------------------------------------------------------------


def test_a_closed_pipe_ends_the_command_quietly(warehouse: Path, tmp_path: Path) -> None:
    """``statcube aggregate … | head -1`` with the installed script: the reader goes away
    after one line; statcube stops without a word (status 141, as after SIGPIPE)."""
    argv = [str(STATCUBE), "aggregate", "housing_benefit", "-d", "geography:oa", "-d",
            "tenure", "--pagesize", "100000", "--format", "csv", "--warehouse", str(warehouse)]
    whole = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, check=True)
    assert len(whole.stdout) > 256 << 10  # more than a pipe holds (64 KiB): the writer blocks
    shell = subprocess.run(["bash", "-c", shlex.join(argv) + " | head -1; "
                            "echo \"status=${PIPESTATUS[0]}\""],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True)
    first, status = shell.stdout.splitlines()
    assert first == whole.stdout.decode().splitlines()[0]
    assert status == "status=141"
    assert shell.stderr.startswith("answer: release") and shell.stderr.count("\n") == 1

    # The same for JSON, written in one piece.
    with subprocess.Popen([*argv[:-4], "--warehouse", str(warehouse)], cwd=tmp_path,
                          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"{\n"
        proc.stdout.close()
        assert proc.wait(timeout=120) == 141
        assert b"Traceback" not in proc.stderr.read()


def test_a_full_disk_under_stdout_is_one_line(warehouse: Path, tmp_path: Path) -> None:
    with Path("/dev/full").open("wb") as full:  # every write: ENOSPC
        proc = subprocess.run([sys.executable, "-m", "cli", "aggregate", *WITHHELD,
                               "--warehouse", str(warehouse)], cwd=tmp_path, env=_env(),
                              stdout=full, stderr=subprocess.PIPE, check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[-1] == (
        "error: no space left on device writing standard output: what was written is "
        "incomplete; free some space and run the command again")


ENOSPC_AT_PARQUET_WRITE = """
import errno, os, sys
import pyarrow.parquet as pq
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
pq.ParquetWriter.write_table = full
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_export_that_fills_the_disk_is_one_line_and_leaves_nothing_visible(
        warehouse: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", ENOSPC_AT_PARQUET_WRITE, "export",
                           "--warehouse", str(warehouse), "--cube", "benefit_cap",
                           "--out", "out"], cwd=tmp_path, env=_env(), capture_output=True,
                          check=False)
    assert proc.returncode == 2
    assert _err(proc) == (
        "error: no space left on device: nothing half-written is visible (output is written "
        "to a temporary name and renamed when complete); free some space and run the same "
        "command again\n")
    visible = [p for p in (tmp_path / "out").rglob("*")
               if not any(part.startswith(".") for part in p.relative_to(tmp_path).parts)
               and p.is_file()]
    assert visible == []


def test_a_path_the_system_refuses_is_one_line(home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (home / "a-file").write_text("not a folder", encoding="utf-8")
    assert main(["generate", "--scale", "0.001", "--months", "1",
                 "--out", str(home / "a-file" / "out")]) == 2
    assert capsys.readouterr().err == f"error: Not a directory: {home / 'a-file' / 'out'}.tmp\n"


BLOCK_PSYCOPG = """
import sys
class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoPsycopg())
sys.modules.pop("psycopg", None)
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [
    ["load-pg", "{warehouse}", "postgresql://statcube:hunter2@127.0.0.1/statcube"],
    ["aggregate", "pip", "--warehouse", "postgresql://statcube:hunter2@127.0.0.1/statcube"],
    ["members", "pip", "time", "--warehouse", "postgresql+psycopg://u:hunter2@127.0.0.1/db"],
])
def test_without_psycopg_postgresql_answers_one_line_naming_the_extra(
        args: list[str], warehouse: Path, tmp_path: Path) -> None:
    argv = [a.format(warehouse=warehouse) for a in args]
    proc = subprocess.run([sys.executable, "-c", BLOCK_PSYCOPG, *argv], cwd=tmp_path,
                          env=_env(), capture_output=True, check=False)
    assert proc.returncode == 2
    assert _err(proc) == ("error: PostgreSQL needs the psycopg driver, which is not "
                          "installed: pip install 'statcube[postgres]'\n")


# --- settings ------------------------------------------------------------------------------------


def test_settings_prints_the_values_in_force_and_hides_secrets(warehouse: Path,
                                                              demo_dir: Path,
                                                              tmp_path: Path) -> None:
    secret, pepper = "key-secret-0123456789abcdef", "pepper-0123456789abcdef"
    proc = run(["--data-dir", str(demo_dir), "settings"], cwd=tmp_path,
               STATCUBE_PORT="9001", STATCUBE_KEY_SECRET=secret,
               STATCUBE_API_KEY_PEPPER=pepper,
               STATCUBE_WAREHOUSE="postgresql://statcube:hunter2@db.example/statcube")
    assert proc.returncode == 0, _err(proc)
    out = proc.stdout.decode()
    assert secret not in out and pepper not in out and "hunter2" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["variable", "value", "source", "meaning"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert set(rows) == {s.env for s in SETTINGS}
    assert rows["STATCUBE_PORT"] == ["9001", "env"]
    assert rows["STATCUBE_KEY_SECRET"] == ["set", "env"]
    assert rows["STATCUBE_API_KEY_PEPPER"] == ["set", "env"]
    assert rows["STATCUBE_KEY_FILE"] == ["unset", "default"]
    assert rows["STATCUBE_WAREHOUSE"] == ["postgresql://statcube:***@db.example/statcube", "env"]
    assert rows["STATCUBE_DATA_DIR"] == [str(demo_dir), "option"]
    assert rows["STATCUBE_RELEASES"][0] == str(demo_dir / "releases.toml")
    assert rows["STATCUBE_THREADS"] == ["4", "default"]

    # Nothing set: the newest warehouse in the data directory is the one in force.
    (tmp_path / "data" / "warehouse").mkdir(parents=True)
    (tmp_path / "data" / "warehouse" / "2026-11.duckdb").symlink_to(warehouse)
    proc = run(["settings"], cwd=tmp_path)
    rows = {line.split()[0]: line.split()[1:3] for line in proc.stdout.decode().splitlines()}
    assert rows["STATCUBE_WAREHOUSE"][0] == str(Path("data") / "warehouse" / "2026-11.duckdb")
    assert rows["STATCUBE_KEY_SECRET"] == ["unset", "default"]
    assert rows["STATCUBE_RELEASES"] == ["unset", "default"]


@pytest.mark.unit
def test_the_readme_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in subcommands(parser()):
        assert f"statcube {name}" in readme, name
