"""Resilience with PostgreSQL: ``statcube serve`` (real gunicorn, 2 workers) over a database
that is stopped and started again, with a worker killed while it is down (issue 13: the
replacement used to fail to boot, and gunicorn stopped the master).

The database is a throwaway PostgreSQL cluster of this module's own (``initdb`` in a temporary
directory, loopback only, stopped and removed at the end), so stopping it disturbs no other
test or user of the machine's cluster. As root, the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_resilience import until, workers
from test_server_support import PEPPER, ROOT, Server, check_error, start_server, write_config

from cube.model import Model
from cube.pg_load import load_pg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGG = "/cube/housing_benefit/aggregate?drilldown=geography:region&aggregates=claimants"
_fresh = itertools.count(1)


def fresh() -> str:
    """An aggregate no worker has cached (each page size is another query)."""
    return f"{AGG}&pagesize={next(_fresh)}"


@dataclass
class Cluster:
    bindir: Path
    data: Path
    port: int

    def ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        self.ctl("-w", "-l", str(self.data / "log"), "-o",
                 f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://statcube@127.0.0.1:{self.port}/statcube_test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    from pg import _free_port, _server_bin, _wait

    bindir = _server_bin()
    assert bindir is not None, "PostgreSQL server binaries are needed (apt-get install postgresql)"
    base = Path(tempfile.mkdtemp(prefix="statcube-pg-"))
    data = base / "data"
    data.mkdir()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "statcube", "--auth=trust",
              "--encoding=UTF8", "--locale=C"]
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        initdb = ["runuser", "-u", "postgres", "--", *initdb]
    done = subprocess.run(initdb, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    c = Cluster(bindir, data, _free_port())
    c.start()
    try:
        admin = f"postgresql+psycopg://statcube@127.0.0.1:{c.port}/postgres"
        _wait(admin)
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE statcube_test")
        engine.dispose()
        yield c
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--"] * (os.geteuid() == 0)
                       + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def live(cluster: Cluster, model: Model, warehouse: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from pg import with_search_path

    load_pg(model, warehouse, cluster.url, schema="wh")
    directory = tmp_path_factory.mktemp("resilience-pg")
    cal, keys = write_config(directory, relative=True)
    env = {"STATCUBE_MODEL": str(ROOT / "model.json"),
           "STATCUBE_WAREHOUSE": with_search_path(cluster.url, "wh"),
           "STATCUBE_RELEASES": str(cal), "STATCUBE_API_KEYS": str(keys),
           "STATCUBE_API_KEY_PEPPER": PEPPER, "STATCUBE_RATE_LIMIT_GUEST": "100000/minute"}
    server = start_server(["serve", "--port", "0", "--workers", "2", "--threads", "2"], env,
                          directory / "server.log")
    yield server
    server.stop()


def test_the_database_stops_and_starts_under_a_running_server(live: Server,
                                                               cluster: Cluster) -> None:
    assert [live.get(fresh())[0] for _ in range(6)] == [200] * 6
    cluster.stop()
    try:
        for path in (fresh(), "/health/ready"):
            code, headers, body = live.get(path)
            assert code == 503, body[:300]
            check_error(json.loads(body), "engine_unavailable")
            assert "statcube@" not in body.decode() and int(headers["Retry-After"]) > 0
        assert live.get("/health/live")[0] == 200
        until(lambda: len(workers(live)) == 2, 30)
        victim = min(workers(live))
        os.kill(victim, signal.SIGKILL)  # its replacement boots while the database is down
        until(lambda: victim not in workers(live) and len(workers(live)) == 2, 30)
        assert live.process.poll() is None
        assert live.get(fresh())[0] == 503
    finally:
        cluster.start()
    took = until(lambda: all(live.get(fresh())[0] == 200 for _ in range(8)), 10)
    assert took < 5  # recovers by itself, every worker, no restart
    assert live.get("/health/ready")[0] == 200
