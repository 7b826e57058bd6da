"""PostgreSQL for the test suite: a real server, never a mock, never a skip.

conftest.py registers this module (``pytest_plugins``), so every test can ask for its
fixtures; tests that run on both serving engines ask conftest's ``any_workspace`` instead.

Where the server comes from, in order:
1. ``STATCUBE_TEST_PG_URL`` (what .ci/run exports after starting the cluster);
2. else, as root with Debian's ``postgresql`` package installed: start its cluster
   (``pg_ctlcluster``) and create the ``statcube`` role and ``statcube_test`` database;
3. else, as another user with the server binaries installed: a throwaway cluster
   (``initdb`` in a temporary directory, Unix socket only), stopped at the end;
4. else the fixture fails and says how to provide one.

Each test session loads the session warehouse into its own schema (``statcube load-pg`` code
path, :func:`cube.pg_load.load_pg`) and drops it afterwards, so concurrent runs do not meet.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from cube.model import Model
from cube.pg_load import load_pg
from cube.pg_load import pg_url as to_pg_url
from cube.workspace import Workspace

ENV = "STATCUBE_TEST_PG_URL"
ROLE = "statcube"
DATABASE = "statcube_test"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _wait(url: str, seconds: float = 30) -> None:
    engine = sa.create_engine(to_pg_url(url))
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                return
            except sa.exc.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL at {url} did not answer: {exc}") from None
                time.sleep(0.3)
    finally:
        engine.dispose()


def _debian_cluster() -> str | None:
    """Start the Debian cluster as root and make the test role and database."""
    if os.geteuid() != 0 or shutil.which("pg_lsclusters") is None:
        return None
    lines = _run("pg_lsclusters", "--no-header").stdout.split("\n")
    clusters = [line.split() for line in lines if line.strip()]
    if not clusters:
        return None
    version, name, port, status = clusters[0][:4]
    if status != "online":
        started = _run("pg_ctlcluster", version, name, "start")
        if started.returncode != 0 and "already running" not in started.stderr:
            raise RuntimeError(f"pg_ctlcluster {version} {name} start failed: {started.stderr}")

    def psql(sql: str) -> str:
        out = _run("runuser", "-u", "postgres", "--", "psql", "-p", port, "-tAc", sql)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout.strip()

    # The password is for a local test role on 127.0.0.1 only.
    if psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'") != "1":
        psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'")
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    return f"postgresql+psycopg://{ROLE}:{ROLE}@127.0.0.1:{port}/{DATABASE}"


def _server_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLAlchemy URL of a database the tests may create schemas in."""
    url = os.environ.get(ENV)
    if url:
        _wait(url)
        yield url
        return
    try:
        url = _debian_cluster()
    except RuntimeError as exc:
        pytest.fail(f"could not start the local PostgreSQL cluster: {exc}")
    if url:
        _wait(url)
        yield url
        return
    bindir = _server_bin()
    if bindir is None or os.geteuid() == 0:
        pytest.fail(
            f"no PostgreSQL for the tests: set {ENV} (e.g. postgresql+psycopg://statcube:"
            f"statcube@127.0.0.1:5432/statcube_test) or install the server "
            "(apt-get install postgresql; .ci/run does this)")
    data = tmp_path_factory.mktemp("pgdata")
    sock = tmp_path_factory.mktemp("pgsock")
    port = _free_port()
    init = _run(str(bindir / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust",
                "--encoding=UTF8", "--locale=C")
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr}")
    start = _run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
                 "-o", f"-p {port} -k {sock} -c listen_addresses=''", "start")
    if start.returncode != 0:
        pytest.fail(f"pg_ctl start failed: {start.stderr}")
    try:
        host = quote(str(sock), safe="")
        _wait(f"postgresql+psycopg://{ROLE}@/postgres?host={host}&port={port}")
        _run(str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U", ROLE, DATABASE)
        yield f"postgresql+psycopg://{ROLE}@/{DATABASE}?host={host}&port={port}"
    finally:
        _run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")


def with_search_path(url: str, schema: str) -> str:
    """``url`` with the schema first on the search path (psycopg ``options``)."""
    u = to_pg_url(url)
    return u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


@pytest.fixture(scope="session")
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh, empty schema for this session; dropped at the end."""
    schema = f"t_{os.getpid()}_{secrets.token_hex(3)}"
    engine = sa.create_engine(to_pg_url(pg_url))
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture(scope="session")
def pg_warehouse(model: Model, warehouse: Path, pg_url: str, pg_schema: str) -> str:
    """The session warehouse copied into PostgreSQL; the URL to open it with."""
    load_pg(model, warehouse, pg_url, schema=pg_schema)
    return with_search_path(pg_url, pg_schema)


@pytest.fixture(scope="session")
def pg_workspace(model: Model, pg_warehouse: str) -> Iterator[Workspace]:
    ws = Workspace.open(model, pg_warehouse)
    yield ws
    ws.close()
