"""Helpers shared by the server tests (no tests here): a release calendar and an API keys file
for the session warehouse (months 2026-06 … 2026-11), response walkers, and a real server
process on a free loopback port.

The calendar mirrors the demo's shape on the test data: two published quarterly releases and a
future one, so the newest three months are under embargo.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from cube.releases import LONDON
from cube.settings import Settings
from server.app import create_app
from server.auth import hash_key

ROOT = Path(__file__).resolve().parent.parent
PEPPER = "test-pepper-not-for-production-0123"
KEYS = {"registered": "sc_test_registered_key_0000000000000000000000",
        "prerelease": "sc_test_prerelease_key_0000000000000000000000",
        "admin": "sc_test_admin_key_00000000000000000000000000000"}
#: The unit tests' "now": Saturday 21 November 2026, noon in London.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=LONDON)
#: Months only the future release holds.
EMBARGOED_MONTHS = ("2026-09", "2026-10", "2026-11")
EMBARGOED_LABELS = ("Sep 2026", "Oct 2026", "Nov 2026", "2026 Q4")


def calendar_toml(published: Mapping[str, datetime] | None = None) -> str:
    """2026-08 (to June) and 2026-11 (to August) published, 2027-02 (to November) not."""
    pub = dict(published or {
        "2026-08": datetime(2026, 8, 11, 9, 30),
        "2026-11": datetime(2026, 11, 10, 9, 30),
        "2027-02": datetime(2027, 2, 9, 9, 30),
    })
    last = {"2026-08": "2026-06", "2026-11": "2026-08", "2027-02": "2026-11"}
    out = []
    for rid, when in pub.items():
        stamp = when.astimezone(LONDON).replace(tzinfo=None) if when.tzinfo else when
        out.append(f'[[release]]\nid = "{rid}"\npublished = "{stamp.isoformat()}"\n'
                   f'last_period = "{last[rid]}"\n')
    return "\n".join(out)


def relative_calendar_toml() -> str:
    """The same calendar relative to the real clock (for server processes)."""
    now = datetime.now(UTC)
    return calendar_toml({"2026-08": now - timedelta(days=100),
                          "2026-11": now - timedelta(days=10),
                          "2027-02": now + timedelta(days=80)})


def keys_toml() -> str:
    return "\n".join(f'[[key]]\nid = "{role}-user"\nrole = "{role}"\n'
                     f'hash = "{hash_key(key, PEPPER.encode())}"\n' for role, key in KEYS.items())


def write_config(directory: Path, *, relative: bool) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cal = directory / "releases.toml"
    cal.write_text(relative_calendar_toml() if relative else calendar_toml(), encoding="utf-8")
    keys = directory / "keys.toml"
    keys.write_text(keys_toml(), encoding="utf-8")
    return cal, keys


def make_app(warehouse: Path | str, config: Path, **overrides: Any) -> Flask:
    """A test app over ``warehouse`` with the test calendar, keys and clock; rate limits out
    of the way unless ``overrides`` set them."""
    cal, keys = write_config(config, relative=False)
    values: dict[str, Any] = dict(
        model=str(ROOT / "model.json"), warehouse=str(warehouse), releases=str(cal),
        api_keys=str(keys), api_key_pepper=PEPPER, rate_limit_guest="100000/minute",
        rate_limit_registered="100000/minute", rate_limit_prerelease="100000/minute",
        rate_limit_admin="100000/minute")
    values.update(overrides)
    return create_app(Settings(**values), clock=lambda: NOW)


def walk(value: Any) -> Iterator[tuple[str | None, Any]]:
    """Every (key, value) pair in a JSON document, depth first."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield None, v
            yield from walk(v)


INTERNAL_KEY = re.compile(r"^(__(?!within_split__).*|n|rk|rk2|ckey|pcv|pvalue|x_max|"
                          r".*_(sum|max)_raw)$")


def internal_keys(document: Any) -> list[str]:
    """Keys that name an internal (unprotected) quantity; must always be empty."""
    return [k for k, _ in walk(document) if isinstance(k, str) and INTERNAL_KEY.match(k)]


ERROR_KEYS = {"error", "message", "parameter", "value", "hint", "request_id"}


def check_error(body: Mapping[str, Any], error: str | None = None) -> None:
    """The one error shape, field by field."""
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {"position"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    for k in ("parameter", "value", "hint"):
        assert body[k] is None or isinstance(body[k], str)
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    if "position" in body:
        assert isinstance(body["position"], int) and body["position"] >= 0
    if error is not None:
        assert body["error"] == error, body


# --- a real server process ---------------------------------------------------------------------

@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log: Path
    drain: threading.Thread | None = None
    output: list[str] = field(default_factory=list)

    def get(self, path: str, headers: Mapping[str, str] | None = None,
            data: bytes | None = None, method: str | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers=dict(headers or {}),
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group we started
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.drain is not None:
            self.drain.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_server(args: list[str], env: Mapping[str, str], log: Path, timeout: float = 60
                 ) -> Server:
    """``python -m cli <args>`` in its own process group; returns once it answers."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    full_env = {**inherited, **env, "PYTHONPATH": str(ROOT) + os.pathsep +
                os.environ.get("PYTHONPATH", "")}
    with log.open("w", encoding="utf-8") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT,
                                env=full_env, stdout=subprocess.PIPE, stderr=out, text=True,
                                start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        m = re.search(r"serving the Slicer API on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        raise RuntimeError(f"server did not start: {log.read_text(encoding='utf-8')[-3000:]}")
    output: list[str] = []
    drain = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    drain.start()  # keeps the pipe drained, and keeps what the server printed
    server = Server(url, proc, log, drain, output)
    while time.monotonic() < deadline:
        try:
            if server.get("/version")[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not answer /version")
