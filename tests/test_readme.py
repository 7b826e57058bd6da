"""The README's examples run, against what ``statcube demo`` makes.

A newcomer walks the README with the demo's data, so every example block in README.md that
is marked ``<!-- example: NAME [key=value …] -->`` is executed here against the demo's data
and its output compared, in shape, with the block that follows it (Datasette's habit: docs
checked by tests, so an example cannot drift from the code):

- ``sh`` blocks run in bash in the demo directory (``statcube …`` is the installed CLI;
  ``curl 'http://127.0.0.1:8000/…'`` goes to a real server: the demo's own);
- ``console`` blocks are transcripts: ``$ command`` lines, each followed by its output;
- ``python`` blocks are executed in a fresh namespace (output: what they print, else the value
  of their last expression);
- ``toml`` blocks with ``file=PATH`` must appear in that file of the demo directory.

Options of a marker: ``cwd=DIR`` (relative to the demo directory), ``needs=NAME`` (run that
example first: the export before the examples that read it).

Numbers depend on the demo's random record-key secret, so they are compared by kind only;
codes, periods, labels, column names, keys, nesting and row counts must be what the README
shows. ``…`` elides: in JSON an element ``…`` (or ``"…"``) means "more items", a key
``"…": "…"`` "more keys"; a line ``…`` in CSV or text means "more rows".

The demo itself is run once per session (``statcube demo`` in a temporary directory: it
generates, builds, writes data/releases.toml and serves), exactly as a newcomer runs it.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cube.releases import Calendar

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
#: The host and port the README's curl examples name; rewritten to the demo's server.
README_BASE = "http://127.0.0.1:8000"
#: The release the README's examples were written against, and the moment they were written
#: at: the demo runs with its clock fixed there (STATCUBE_CLOCK), so the examples stay true
#: after 2027-02 is published on 9 February 2027.
README_RELEASE = "2026-11"
README_CLOCK = "2026-12-02T12:00:00+00:00"

MARKER = re.compile(r"<!--\s*example:\s*(?P<name>[\w-]+)(?P<opts>[^>]*?)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
ELLIPSIS = "…"


# --- reading the README ----------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    name: str
    line: int
    lang: str
    code: str
    output: str | None
    output_lang: str
    opts: dict[str, str] = field(default_factory=dict)


def _block(lines: list[str], start: int) -> tuple[str, str, int]:
    """The fenced block opening at ``lines[start]``: (language, text, index after it)."""
    m = FENCE.match(lines[start])
    assert m, f"README line {start + 1}: expected a ``` block after an example marker"
    indent = len(m["indent"])
    body: list[str] = []
    i = start + 1
    while not FENCE.match(lines[i]) or FENCE.match(lines[i])["lang"]:  # type: ignore[index]
        body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
        i += 1
    return m["lang"], "\n".join(body), i + 1


def _next_nonblank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def readme_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    out: list[Example] = []
    for i, line in enumerate(lines):
        m = MARKER.fullmatch(line.strip())  # a marker is a line of its own
        if not m:
            continue
        opts = dict(kv.split("=", 1) for kv in m["opts"].split())
        lang, code, after = _block(lines, _next_nonblank(lines, i + 1))
        output, output_lang = None, ""
        j = _next_nonblank(lines, after)
        if lang != "console" and j < len(lines) and FENCE.match(lines[j]):
            output_lang, output, _ = _block(lines, j)
        out.append(Example(m["name"], i + 1, lang, code, output, output_lang or "text", opts))
    return out


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))
BY_NAME = {e.name: e for e in EXAMPLES}


def test_the_readme_marks_its_examples() -> None:
    """Names are unique, and the sections a newcomer walks all have examples."""
    names = [e.name for e in EXAMPLES]
    assert len(names) == len(set(names)), f"duplicate example names: {names}"
    assert len(EXAMPLES) >= 20
    assert {e.lang for e in EXAMPLES} >= {"sh", "python", "console"}
    for e in EXAMPLES:
        assert "needs" not in e.opts or e.opts["needs"] in BY_NAME, e.name


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """Command 2 of "Two commands" is, character for character, the command .ci/run runs."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1]
    lang, block, _ = _block(section.splitlines(), _next_nonblank(section.splitlines(), 1))
    commands = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lang == "sh" and len(commands) == 2, block
    assert commands[0] == "python3 -m pip install -e . && statcube demo"
    ci = [ln for ln in CI_RUN.read_text(encoding="utf-8").splitlines()
          if "pytest" in ln and not ln.lstrip().startswith("#")]
    assert ci == [commands[1]], "README's test command and .ci/run's differ"


# --- the demo, once per session --------------------------------------------------------------

@dataclass
class Demo:
    root: Path
    base_url: str
    env: dict[str, str]
    done: dict[str, Any] = field(default_factory=dict)  # example name -> namespace or output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _statcube_env() -> dict[str, str]:
    """The caller's environment without statcube settings (a newcomer has none), with the
    test interpreter's scripts (``statcube``) first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    env["STATCUBE_CLOCK"] = README_CLOCK
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``statcube demo`` run as a newcomer runs it, in a directory holding model.json (as the
    checkout does): it generates GB at scale 0.01, builds, writes data/releases.toml and
    serves on the port it is given."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copy(ROOT / "model.json", root / "model.json")
    env = _statcube_env()
    statcube = shutil.which("statcube", path=env["PATH"])
    assert statcube, "the statcube command is not installed"
    proc = subprocess.Popen([statcube, "demo", "--port", str(_free_port()), "--workers", "1"],
                            cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:  # the demo prints where it serves once it is ready
            m = re.search(r"serving the Slicer API on (http://\S+)", line)
            if m:
                url = m[1]
                break
        assert url, f"statcube demo stopped without serving (exit {proc.poll()})"
        calendar = Calendar.load(root / "data" / "releases.toml")
        latest = calendar.latest(datetime.fromisoformat(README_CLOCK)).id
        assert latest == README_RELEASE, (
            f"the demo's latest published release is now {latest}: the README's examples "
            f"show release {README_RELEASE}; update their periods and this constant")
        yield Demo(root, url, env)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        os.killpg(proc.pid, signal.SIGTERM)  # the demo's own gunicorn master and worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- running examples ------------------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    stdout: str
    stderr: str
    status: int
    value: Any = None  # python: the namespace


def _shell(demo: Demo, command: str, cwd: Path) -> Ran:
    command = command.replace(README_BASE, demo.base_url)
    p = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=demo.env,
                       capture_output=True, text=True, timeout=120)
    return Ran(p.stdout, p.stderr, p.returncode)


def _python(code: str, cwd: Path) -> tuple[str, dict[str, Any]]:
    """Execute ``code`` as a reader would paste it: a fresh namespace, ``cwd`` as working
    directory; the output is what it printed, else the value of its last expression."""
    tree = ast.parse(code)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
    else:
        last = None
    ns: dict[str, Any] = {"__name__": "__readme__"}
    buf = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(buf):
        exec(compile(tree, "README.md", "exec"), ns)
        value = eval(compile(ast.Expression(last.value), "README.md", "eval"), ns) \
            if last is not None else None
    if value is not None and not buf.getvalue():
        return json.dumps(value, default=str), ns
    return buf.getvalue(), ns


def run_example(demo: Demo, name: str) -> Any:
    """Run an example once per session (and what it needs first); check its output."""
    if name in demo.done:
        return demo.done[name]
    ex = BY_NAME[name]
    if "needs" in ex.opts:
        run_example(demo, ex.opts["needs"])
    cwd = demo.root / ex.opts.get("cwd", ".")
    where = f"README.md line {ex.line}, example {name!r}"
    result: Any = None
    if ex.lang == "sh":
        ran = _shell(demo, ex.code, cwd)
        compare_command(ex.output, ex.output_lang, ran, where)
    elif ex.lang == "console":
        for command, expected in transcript(ex.code):
            ran = _shell(demo, command, cwd)
            compare_command(expected, "text", ran, f"{where}, $ {command}")
    elif ex.lang == "python":
        printed, result = _python(ex.code, cwd)
        if ex.output is not None:
            compare(ex.output, ex.output_lang, printed, where)
    elif ex.lang == "toml":
        shown = _squash(ex.code)
        assert shown in _squash((cwd / ex.opts["file"]).read_text(encoding="utf-8")), where
    else:
        raise AssertionError(f"{where}: no runner for ```{ex.lang} blocks")
    demo.done[name] = result
    return result


def transcript(text: str) -> list[tuple[str, str]]:
    """``$ command`` lines, each with the output lines that follow it."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
    assert pairs, "a console example without a $ command"
    return [(c, "\n".join(out).strip("\n")) for c, out in pairs]


def compare_command(expected: str | None, lang: str, ran: Ran, where: str) -> None:
    """A command's output is its stdout; an error (``error: …`` shown) is the one stderr line
    that starts with ``error:``, with exit status 2. Other stderr (progress, notes) is not
    compared: it is for people, and may change."""
    if expected is not None and expected.startswith("error:"):
        assert ran.status == 2, f"{where}: exit status {ran.status}, not 2\n{ran.stderr}"
        errors = [ln for ln in ran.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, f"{where}: expected one error line on stderr:\n{ran.stderr}"
        compare(expected, "text", errors[0], where)
        return
    assert ran.status == 0, f"{where}: exit status {ran.status}\n{ran.stderr[-2000:]}"
    if expected is not None and ran.stdout.strip():
        compare(expected, lang, ran.stdout, where)


# --- comparing shapes ------------------------------------------------------------------------

#: Numbers that are structure, not data: they must be exactly what the README shows.
EXACT_NUMBERS = {"total_cell_count", "total_member_count", "page", "page_size", "depth",
                 "level_depth", "api_version", "position", "D", "V", "js", "delta",
                 "mean_threshold"}
#: Strings that carry data-dependent numbers (compared with numbers masked) or are random.
MASKED_STRINGS = {"message", "value"}
RANDOM_STRINGS = {"request_id"}


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _exact_number(key: str) -> bool:
    return key in EXACT_NUMBERS or key.endswith(("_order", ".year", ".quarter", ".month"))


def loads_abbreviated(text: str) -> Any:
    """JSON as the README abbreviates it: ``…anything…`` outside strings is an element
    ``"…"`` (more items; as a key, more keys)."""
    out: list[str] = []
    i, in_string = 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c == ELLIPSIS:
            end = text.find(ELLIPSIS, i + 1)
            stop = min((k for k in (text.find(",", i), text.find("]", i), text.find("}", i))
                        if k >= 0), default=len(text))
            i = end if 0 <= end < stop else stop - 1
            out.append(f'"{ELLIPSIS}"')
        else:
            out.append(c)
        i += 1
    return json.loads("".join(out))


def compare_json(shown: Any, real: Any, path: str = "$", key: str = "") -> None:
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{path}: an object in the README, {real!r} in fact"
        keys = [k for k in shown if k != ELLIPSIS]
        missing = [k for k in keys if k not in real]
        assert not missing, f"{path}: keys {missing} shown but not returned ({list(real)})"
        if ELLIPSIS not in shown:
            extra = [k for k in real if k not in shown]
            assert not extra, f"{path}: keys {extra} returned but not shown (add \"…\": \"…\")"
        for k in keys:
            compare_json(shown[k], real[k], f"{path}.{k}", k)
    elif isinstance(shown, list):
        assert isinstance(real, list), f"{path}: a list in the README, {real!r} in fact"
        if ELLIPSIS in shown:
            cut = shown.index(ELLIPSIS)
            head, tail = shown[:cut], [x for x in shown[cut:] if x != ELLIPSIS]
            assert len(real) >= len(head) + len(tail), f"{path}: fewer items than shown"
        else:
            head, tail = shown, []
            assert len(real) == len(shown), \
                f"{path}: {len(shown)} items shown, {len(real)} returned"
        for n, item in enumerate(head):
            compare_json(item, real[n], f"{path}[{n}]", key)
        for n, item in enumerate(tail, start=len(real) - len(tail)):
            compare_json(item, real[n], f"{path}[{n}]", key)
    elif _is_number(shown) or shown is None:
        # a number may be withheld (null) in fact, and a withheld one published
        assert real is None or _is_number(real), f"{path}: {shown!r} shown, {real!r} in fact"
        if _exact_number(key) and shown is not None:
            assert real == shown, f"{path}: {shown!r} shown, {real!r} in fact"
    elif isinstance(shown, bool):
        assert isinstance(real, bool), f"{path}: {shown!r} shown, {real!r} in fact"
    elif isinstance(shown, str):
        assert isinstance(real, str), f"{path}: {shown!r} shown, {real!r} in fact"
        if key in RANDOM_STRINGS:
            return
        if key in MASKED_STRINGS:
            assert mask(shown) == mask(real), f"{path}: {shown!r} shown, {real!r} in fact"
        else:
            assert real == shown, f"{path}: {shown!r} shown, {real!r} in fact"


#: A number as printed (1,234 / 0.5 / 71.4% / -3), or a withheld value (None, NaN, null, ..),
#: not part of a code (E00000003), a period (2026-08) or a name.
NUMBER = re.compile(r"(?<![\w.\-])(?:-?\d[\d,]*(?:\.\d+)?%?|None|NaN|NULL|null|\.\.)(?![\w\-])")


def mask(text: str) -> str:
    return NUMBER.sub("#", text)


def _squash(text: str) -> str:
    """Layout-insensitive text: runs of spaces and of table rules collapse (column widths
    follow the numbers)."""
    text = re.sub(r"[─═]+", "─", text)
    return "\n".join(" ".join(ln.split()) for ln in text.strip().splitlines() if ln.strip())


def compare_text(shown: str, real: str, where: str) -> None:
    """Line by line with numbers masked; lines may come in another order (the order of
    cells ranked by value can change with the noise), and a line ``…`` stands for more."""
    shown_lines = _squash(mask(shown)).splitlines()
    real_lines = _squash(mask(real)).splitlines()
    elided = ELLIPSIS in shown_lines or "# …" in shown_lines
    shown_lines = [ln for ln in shown_lines if ln not in (ELLIPSIS, "# …")]
    missing = [ln for ln in shown_lines if ln not in real_lines]
    assert not missing, f"{where}: lines shown but not printed:\n" + "\n".join(missing) + \
        "\n--- printed:\n" + real
    if not elided:
        assert len(real_lines) == len(shown_lines), \
            f"{where}: {len(shown_lines)} lines shown, {len(real_lines)} printed:\n{real}"


def compare_csv(shown: str, real: str, where: str) -> None:
    shown_rows = list(csv.reader(io.StringIO(shown.strip())))
    real_rows = list(csv.reader(io.StringIO(real.strip())))
    elided = [ELLIPSIS] in shown_rows
    shown_rows = [r for r in shown_rows if r != [ELLIPSIS]]
    assert real_rows[0] == shown_rows[0], f"{where}: header {real_rows[0]}"
    if elided:
        assert len(real_rows) >= len(shown_rows), f"{where}: fewer rows than shown"
    else:
        assert len(real_rows) == len(shown_rows), \
            f"{where}: {len(shown_rows) - 1} rows shown, {len(real_rows) - 1} returned"
    for n, (s, r) in enumerate(zip(shown_rows, real_rows, strict=False)):
        assert len(r) == len(s), f"{where}: row {n}: {len(s)} columns shown, {len(r)} returned"
        for a, b in zip(s, r, strict=True):
            if mask(a) == "#":
                assert mask(b) == "#", f"{where}: row {n}: a number shown, {b!r} returned"
            else:
                assert a == b, f"{where}: row {n}: {a!r} shown, {b!r} returned"


def compare(shown: str, lang: str, real: str, where: str) -> None:
    if lang == "json":
        try:
            value = json.loads(real)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{where}: not JSON: {real[:500]!r}") from exc
        try:
            compare_json(loads_abbreviated(shown), value)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
    elif lang == "csv":
        compare_csv(shown, real, where)
    else:
        compare_text(shown, real, where)


# --- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [e.name for e in EXAMPLES])
def test_readme_example_runs_as_shown(demo: Demo, name: str) -> None:
    run_example(demo, name)


def test_the_same_cell_in_the_export_and_the_api(demo: Demo) -> None:
    """The README's "Same cell, same value": an OA that exists, by its full path; the export's
    row equals the Python API's summary and the HTTP API's."""
    ns = run_example(demo, "same-cell")
    row, api = ns["row"], ns["api"]
    assert row is not None, "the README's OA and period match no row of the export"
    assert api["claimants"] > 0, "the README's cut matches no data"
    assert tuple(row) == tuple(api[k] for k in ("claimants", "weekly_award_sum",
                                                "weekly_award_mean",
                                                "weekly_award_sum_withheld",
                                                "weekly_award_mean_withheld"))
    cut = re.search(r'cut="([^"]+)"', BY_NAME["same-cell"].code)
    assert cut
    url = (f"{demo.base_url}/cube/housing_benefit/aggregate?"
           + urllib.parse.urlencode({"cut": cut[1]}))
    with urllib.request.urlopen(url, timeout=60) as resp:
        http = json.load(resp)
    assert http["summary"] == api


@pytest.mark.parametrize(("lang", "shown", "real"), [
    # a code that the data does not have (the old "same cell" example's path)
    ("json", '{"cells": [{"la": "E06000001", "n": 3}, …]}',
     '{"cells": [{"la": "E08000001", "n": 3}]}'),
    # a key shown that is not returned, and one returned that is not shown
    ("json", '{"summary": {"claimants": 1}}', '{"summary": {"people": 1}}'),
    ("json", '{"summary": {"claimants": 1}}', '{"summary": {"claimants": 1, "extra": 2}}'),
    # nesting, and a row count the README states
    ("json", '{"cell": [{"path": ["E92000001"]}]}', '{"cell": {"path": ["E92000001"]}}'),
    ("json", '{"total_cell_count": 9}', '{"total_cell_count": 11}'),
    ("json", '{"period": "2026-11"}', '{"period": "2026-08"}'),
    # CSV: header, column count, rows
    ("csv", "a,b\nE1,3\n", "a,c\nE1,3\n"),
    ("csv", "a,b\nE1,3\n", "a,b\nE1,3,4\n"),
    ("csv", "a,b\nE1,3\n", "a,b\nE1,3\nE2,4\n"),
    ("csv", "a,b\nE1,3\n", "a,b\nE1,x\n"),
    # text: a period or label that is not printed, a line too many
    ("text", "2026-11 Westford 12", "2026-08 Westford 12"),
    ("text", "(0 rows)", "(0 rows)\n(1 row)"),
])
def test_the_checker_catches_drift(lang: str, shown: str, real: str) -> None:
    """What the README shows and what the code prints differ in something other than numbers:
    the comparison fails (the README's old examples would have)."""
    with pytest.raises(AssertionError):
        compare(shown, lang, real, "drift")


@pytest.mark.parametrize(("lang", "shown", "real"), [
    ("json", '{"n": 15, "mean": 90.61, "ok": false, "cells": [1, …]}',
     '{"n": 7, "mean": null, "ok": true, "cells": [1, 2, 3]}'),
    ("json", '{"message": "this table has 6,949 cells", "request_id": "424f"}',
     '{"message": "this table has 8,151 cells", "request_id": "0673"}'),
    ("csv", "a,b\nE1,25.58\nE2,..\n…\n", "a,b\nE1,..\nE2,4.5\nE3,1\n"),
    ("text", "│ 2025-04 │ Westford │  910 │", "│ 2025-04 │ Westford │ 1207 │"),
])
def test_the_checker_lets_numbers_vary(lang: str, shown: str, real: str) -> None:
    """Numbers depend on the record-key secret (and a mean may be withheld or not): they are
    compared by kind, so the examples hold for any demo."""
    compare(shown, lang, real, "numbers")
