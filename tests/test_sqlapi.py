"""The SQL API with real clients: psql, psycopg (simple and extended protocol), SQLAlchemy's
PostgreSQL dialect with pandas. Every value a query returns is compared with the value the
Slicer API's code path (``CubeBrowser.aggregate``, the gate) gives for the same cell."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from cube.model import Model
from cube.releases import Calendar, ReleaseSet
from cube.settings import Settings
from cube.sqlapi.catalog import Catalog, Context
from cube.sqlapi.session import SqlService
from cube.sqlapi.surface import SqlError, cube_table
from server.auth import KeyStore, hash_key
from wire.run import tls_context
from wire.server import PgServer

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
PEPPER = "pepper-for-tests-0123456789"
KEY = "sc_test_key_registered"
CALENDAR = """
[[release]]
id = "2026-11"
published = "2026-11-10T09:30"
last_period = "2026-08"

[[release]]
id = "2027-02"
published = "2027-02-09T09:30"
last_period = "2026-11"
"""


class Live:
    def __init__(self, port: int, releases: ReleaseSet, pg: PgServer) -> None:
        self.port = port
        self.releases = releases
        self.pg = pg

    def url(self, user: str = "guest", password: str = "") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/statcube"

    def browser(self, cube: str, release: str = "2026-11"):  # type: ignore[no-untyped-def]
        r = next(r for r in self.releases.calendar.releases if r.id == release)
        return self.releases.browser(r, cube)


@pytest.fixture(scope="module")
def live(model: Model, warehouse: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("sqlapi")
    (d / "releases.toml").write_text(CALENDAR, encoding="utf-8")
    (d / "keys.toml").write_text(f'[[key]]\nid = "analyst"\nrole = "registered"\n'
                                 f'hash = "{hash_key(KEY, PEPPER.encode())}"\n')
    releases = ReleaseSet(model, Calendar.load(d / "releases.toml"), warehouse)
    keys = KeyStore.load(d / "keys.toml", PEPPER)
    service = SqlService(releases, lambda: NOW, "test")
    # TLS offered (not required): a self-signed certificate made now, loaded as sql-serve
    # loads STATCUBE_SQL_TLS_CERT/KEY
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    tls = tls_context(Settings(sql_tls_cert=str(d / "cert.pem"), sql_tls_key=str(d / "key.pem")))
    pg = PgServer(service, keys, lambda p: 5000 if p.role.value == "guest" else 100000,
                  tls=tls, threads=4)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(pg.start("127.0.0.1", 0))
        box["port"] = server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    yield Live(int(box["port"]), releases, pg)  # type: ignore[call-overload]
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    pg.pool.shutdown(wait=False)
    releases.close()


@pytest.mark.integration
def test_psql_lists_the_cubes_and_runs_a_grouped_query(live: Live) -> None:
    out = subprocess.run(["psql", live.url(), "-X", "-A", "-t", "-c", r"\dt"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "2026-11|housing_benefit|table" in out
    assert "2027-02" not in out  # under embargo: guests do not see the schema
    out = subprocess.run(
        ["psql", live.url(), "-X", "-A", "-t", "-F", ",", "-c",
         "SELECT region_code, MEASURE(claimants) FROM housing_benefit WHERE year = 2026 AND "
         "month = 8 GROUP BY region_code ORDER BY region_code"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    got = {line.split(",")[0]: int(line.split(",")[1]) for line in out.split()}
    api = live.browser("housing_benefit").aggregate(drilldown="geography:region",
                                                    cut="time:2026,3,8")
    assert got == {c["geography.region_code"]: c["claimants"] for c in api.cells.to_pylist()}


@pytest.mark.integration
def test_psql_shows_a_refusal_with_its_sqlstate(live: Live) -> None:
    r = subprocess.run(["psql", live.url(), "-X", "-v", "VERBOSITY=verbose", "-c",
                        "SELECT count(*) FROM pip"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "ERROR:  0A000: COUNT is not supported" in r.stderr
    assert "MEASURE(claimants)" in r.stderr


@pytest.mark.integration
def test_psycopg_values_equal_the_slicer_api(live: Live) -> None:
    b = live.browser("housing_benefit")
    with psycopg.connect(live.url()) as conn:
        rows = conn.execute(
            "SELECT tenure_name, SUM(claimants), MEASURE(weekly_award_mean) FROM housing_benefit "
            "WHERE year = %s AND month = %s AND region_code = %s GROUP BY tenure_name "
            "ORDER BY tenure_name", (2026, 8, "E12000007")).fetchall()
        api = b.aggregate(drilldown="tenure", cut="time:2026,3,8|geography:E92000001,E12000007",
                          order="tenure.tenure_name").cells.to_pylist()
        assert rows == [(c["tenure.tenure_name"], c["claimants"],
                         None if c["weekly_award_mean_withheld"] else c["weekly_award_mean"])
                        for c in api]
        # IN list: a custom group, published as the sum of protected cells (as on HTTP)
        (total,) = conn.execute(
            "SELECT MEASURE(claimants) FROM housing_benefit WHERE month = 8 AND region_code IN "
            "('E12000007', 'E12000008')").fetchone()  # type: ignore[misc]
        group = b.aggregate(cut="time:2026,3,8|geography:E92000001,E12000007;"
                                "E92000001,E12000008")
        assert total == group.summary["claimants"]
        # another schema is another release
        conn.execute('SET search_path TO "2026-11"')
        assert conn.execute("SHOW search_path").fetchone() == ('"2026-11"',)


@pytest.mark.integration
@pytest.mark.parametrize(("sql", "sqlstate", "words"), [
    ("SELECT people FROM universal_credit WHERE month BETWEEN 6 AND 8", "0A000", "stock"),
    ("SELECT * FROM pip", "0A000", "raw rows"),
    ("SELECT h.claimants FROM housing_benefit h JOIN pip p ON true", "0A000", "one cube table"),
    ("SELECT nonsense FROM pip", "42703", "does not exist"),
    ("SELECT claimants FROM no_such_cube", "42P01", "does not exist"),
    ("DELETE FROM pip", "25006", "read-only"),
    ("SELECT SUM(MEASURE(claimants)) FROM pip", "0A000", "aggregate of an aggregate"),
    ("SELECT claimants FROM (SELECT * FROM pip) AS t", "0A000", "subquer"),
])
def test_refused_sql_gets_a_sqlstate_and_names_the_supported_form(
        live: Live, sql: str, sqlstate: str, words: str) -> None:
    with psycopg.connect(live.url()) as conn, pytest.raises(psycopg.Error) as err:
        conn.execute(sql)
    assert err.value.sqlstate == sqlstate
    assert words in str(err.value)


@pytest.mark.integration
def test_api_keys_are_passwords(live: Live) -> None:
    with psycopg.connect(live.url("analyst", KEY)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # registered users see the same published releases (no embargo exemption)
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        assert "2026-11" in schemas and "2027-02" not in schemas
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(live.url("analyst", "not-a-key"))


@pytest.mark.integration
def test_sqlalchemy_and_pandas_read_sql(live: Live) -> None:
    engine = sa.create_engine(live.url().replace("postgresql://", "postgresql+psycopg://"))
    try:
        df = pd.read_sql("SELECT gender_name, MEASURE(claimants) AS claimants FROM pip "
                         "WHERE year = 2026 AND month = 8 GROUP BY gender_name "
                         "ORDER BY gender_name", engine)
        api = live.browser("pip").aggregate(drilldown="gender", cut="time:2026,3,8",
                                            order="gender.gender_name").cells.to_pylist()
        assert df.to_dict("records") == [{"gender_name": c["gender.gender_name"],
                                          "claimants": c["claimants"]} for c in api]
        assert "pip" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.integration
def test_sqlalchemy_inspector_reflects_columns_with_types_and_descriptions(
        live: Live, model: Model) -> None:
    engine = sa.create_engine(live.url().replace("postgresql://", "postgresql+psycopg://"))
    try:
        inspector = sa.inspect(engine)
        columns = inspector.get_columns("housing_benefit")
        table = cube_table(model.cubes["housing_benefit"])
        assert [c["name"] for c in columns] == [c.name for c in table.columns]
        types = {c["name"]: type(c["type"]) for c in columns}
        assert types["region_code"] is sa.TEXT and types["year"] is sa.BIGINT
        assert types["claimants"] is sa.BIGINT
        assert types["weekly_award_mean"] is sa.DOUBLE_PRECISION
        assert all(c["nullable"] and c["default"] is None for c in columns)  # withheld: NULL
        assert "protected" in str(next(c for c in columns if c["name"] == "claimants")["comment"])
        # a cube has no keys, indexes or sequences: empty answers, not errors
        assert inspector.get_pk_constraint("housing_benefit")["constrained_columns"] == []
        assert inspector.get_indexes("housing_benefit") == []
        assert inspector.get_foreign_keys("housing_benefit") == []
        # Table reflection (what notebooks and Superset do) builds the same columns
        reflected = sa.Table("housing_benefit", sa.MetaData(), autoload_with=engine)
        assert [c.name for c in reflected.columns] == [c.name for c in table.columns]
    finally:
        engine.dispose()


@pytest.mark.integration
def test_psql_describes_a_cube_table(live: Live) -> None:
    def psql(command: str) -> str:
        return subprocess.run(["psql", live.url(), "-X", "-A", "-t", "-c", command],
                              capture_output=True, text=True, timeout=60, check=True).stdout

    out = psql(r"\d pip")
    assert "gender_name|text|||" in out.splitlines()
    assert "claimants|bigint|||" in out.splitlines()
    assert "cell key method" in psql(r'\d+ "2026-11".pip')
    assert psql(r"\l").startswith("statcube|")


@pytest.mark.integration
def test_catalog_regular_expressions_match_anywhere_as_in_postgresql(live: Live) -> None:
    """``!~ '^pg_'`` is how JDBC and psql tell system schemas from user schemas; DuckDB's own
    ``~`` must match the whole string, which would list pg_catalog as a user schema."""
    with psycopg.connect(live.url()) as conn:
        user = {r[0] for r in conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' "
            "AND nspname <> 'information_schema'")}
        assert user == {"2026-11", "public"}
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname ~* 'HOUSING'"
                            ).fetchone() == (1,)


JDBC_JAR = Path("/usr/share/java/postgresql.jar")  # Debian libpostgresql-jdbc-java


@pytest.mark.integration
@pytest.mark.slow
def test_jdbc_database_metadata_browses_and_queries(live: Live, tmp_path: Path) -> None:
    """The PostgreSQL JDBC driver, as Tableau, Metabase and DBeaver use it: getSchemas,
    getTables, getColumns, then a grouped, filtered prepared statement (extended protocol)."""
    source = Path(__file__).parent / "fixtures" / "jdbc" / "Browse.java"
    subprocess.run(["javac", "-cp", str(JDBC_JAR), "-d", str(tmp_path), str(source)],
                   check=True, timeout=180, capture_output=True)
    sql = ("SELECT region_code, MEASURE(claimants) FROM housing_benefit WHERE year = ? "
           "AND month = ? AND tenure_code = ? GROUP BY region_code ORDER BY region_code")
    r = subprocess.run(["java", "-cp", f"{JDBC_JAR}:{tmp_path}", "Browse",
                        f"jdbc:postgresql://127.0.0.1:{live.port}/statcube", "guest", "",
                        "housing_benefit", sql, "2026", "8", "private"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert ["schema", "2026-11"] in lines and ["schema", "2027-02"] not in lines
    tables = {(x[1], x[2]) for x in lines if x[0] == "table"}
    assert tables == {("2026-11", t) for t in live.releases.cube_names(
        next(r for r in live.releases.calendar.releases if r.id == "2026-11"))}
    columns = {x[2]: (int(x[3]), x[4]) for x in lines if x[0] == "column"}
    # java.sql.Types: VARCHAR 12, BIGINT -5, DOUBLE 8
    assert columns["region_name"] == (12, "text") and columns["year"] == (-5, "int8")
    assert columns["claimants"] == (-5, "int8") and columns["weekly_award_mean"] == (8, "float8")
    got = {x[1]: int(x[2]) for x in lines if x[0] == "row"}
    api = live.browser("housing_benefit").aggregate(drilldown="geography:region",
                                                    cut="time:2026,3,8|tenure:private")
    assert got == {c["geography.region_code"]: c["claimants"] for c in api.cells.to_pylist()}
    assert len(got) > 5


@pytest.mark.integration
def test_psqlodbc_through_unixodbc_lists_and_queries(live: Live) -> None:
    """psqlODBC (Debian odbc-postgresql) through unixODBC, as Excel and Power BI use it:
    a DSN-less connection string naming the driver file, SQLTables, SQLColumns and a grouped,
    filtered query with parameters, whose values equal the Slicer API's."""
    import pyodbc

    driver = next(Path("/usr/lib").glob("*/odbc/psqlodbcw.so"))
    conn = pyodbc.connect(f"DRIVER={driver};SERVER=127.0.0.1;PORT={live.port};"
                          "DATABASE=statcube;UID=guest;PWD=;SSLMODE=disable", timeout=30)
    try:
        cur = conn.cursor()
        tables = {(t.table_schem, t.table_name) for t in cur.tables(tableType="TABLE")}
        assert ("2026-11", "pip") in tables and all(s == "2026-11" for s, _ in tables)
        columns = {c.column_name: c.data_type for c in cur.columns(table="universal_credit")}
        assert columns["people"] == pyodbc.SQL_BIGINT
        assert columns["region_name"] in (pyodbc.SQL_WLONGVARCHAR, pyodbc.SQL_WVARCHAR)
        rows = cur.execute(
            "SELECT la_code, MEASURE(people) FROM universal_credit WHERE year = ? AND month = ? "
            "AND region_code = ? GROUP BY la_code ORDER BY la_code", 2026, 8, "E12000007"
        ).fetchall()
        api = live.browser("universal_credit").aggregate(
            drilldown="geography:la", cut="time:2026,3,8|geography:E92000001,E12000007")
        assert [tuple(r) for r in rows] == sorted(
            (c["geography.la_code"], c["people"]) for c in api.cells.to_pylist())
        assert len(rows) > 1
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.slow
def test_serve_with_sql_port_serves_both_doors_and_stops_both(
        live: Live, warehouse: Path, tmp_path: Path) -> None:
    """``statcube serve --sql-port 0``: gunicorn's HTTP API and the SQL API from one command
    and one process group; stopping the server (SIGTERM to it alone) stops the SQL API too.
    A SQL port that is taken is one error line before any server starts."""
    (tmp_path / "releases.toml").write_text(CALENDAR, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATCUBE_")}
    env.update({"STATCUBE_MODEL": str(ROOT / "model.json"),
                "STATCUBE_WAREHOUSE": str(warehouse),
                "STATCUBE_RELEASES": str(tmp_path / "releases.toml"),
                "STATCUBE_CLOCK": NOW.isoformat()})
    cmd = [sys.executable, "-m", "cli", "serve", "--port", "0", "--workers", "1",
           "--sql-port", "0"]
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                                text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while len(urls) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving the (SQL|Slicer) API on (\S+)", line)
            if m:
                urls[m.group(1)] = m.group(2)
        assert set(urls) == {"SQL", "Slicer"}, (tmp_path / "serve.log").read_text()
        with urllib.request.urlopen(urls["Slicer"] + "/version", timeout=30) as resp:
            assert resp.status == 200
        with psycopg.connect(urls["SQL"], connect_timeout=30) as conn:
            got: dict[str, Any] = dict(conn.execute(
                "SELECT gender_name, MEASURE(claimants) FROM pip WHERE "
                "year = 2026 AND month = 8 GROUP BY gender_name").fetchall())
        api = live.browser("pip").aggregate(drilldown="gender", cut="time:2026,3,8")
        assert got == {c["gender.gender_name"]: c["claimants"] for c in api.cells.to_pylist()}
        os.kill(proc.pid, signal.SIGTERM)  # the HTTP server's master only
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the whole group is gone, the SQL child too
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("a process of the server's group outlived it")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(urls["SQL"], connect_timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    taken = subprocess.run([*cmd[:-1], str(live.port)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 2
    assert "address already in use" in taken.stderr and "Traceback" not in taken.stderr
    assert "Slicer" not in taken.stdout


@pytest.mark.integration
def test_catalog_sql_reaches_no_file_and_no_setting(live: Live, warehouse: Path) -> None:
    """Catalog statements are the client's own SQL on a DuckDB: it must not read the
    warehouse's raw rows or any other file, nor be reconfigured to."""
    with psycopg.connect(live.url(), autocommit=True) as conn:
        for sql in (f"SELECT * FROM read_text('{warehouse}')",
                    f"SELECT * FROM read_csv('{warehouse}')",
                    f"SELECT count(*) FROM glob('{warehouse.parent}/*')",
                    "SELECT * FROM pg_catalog.pg_class, read_text('/etc/hostname')"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            assert "disabled by configuration" in str(err.value)
            assert err.value.sqlstate == "0A000"
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM duckdb_settings() WHERE name = "
                         "'enable_external_access' AND value = 'true' AND "
                         "(SELECT set_config('x', 'y', false)) IS NULL")


@pytest.mark.integration
def test_cancel_interrupts_a_long_query_and_the_connection_goes_on(live: Live) -> None:
    """A cancel request (psycopg's ``conn.cancel()``, psql's Ctrl-C) interrupts the running
    DuckDB query itself — SQLSTATE 57014 within moments, not when the query would end —
    and the connection answers the next statement."""
    with psycopg.connect(live.url()) as conn:
        # cancel_safe: libpq's blocking PQcancel would hold the GIL this in-process server needs
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            # a catalog statement that would run for minutes (10 s limit), on one thread
            conn.execute("SELECT count(*) FROM range(1000000000000)")
        timer.join()
        assert err.value.sqlstate == "57014"
        assert time.monotonic() - start < 5
        conn.rollback()
        assert conn.execute("SELECT MEASURE(claimants) FROM pip WHERE year = 2026 AND month = 8"
                            ).fetchone() == (live.browser("pip").aggregate(
                                cut="time:2026,3,8").summary["claimants"],)


@pytest.mark.integration
def test_catalog_statement_time_is_limited(model: Model) -> None:
    """Catalog SQL is the client's own: a statement that would hold a pool thread for
    minutes is interrupted after CATALOG_SECONDS (here 0.5 s) with SQLSTATE 57014."""
    catalog = Catalog({"2026-11": [cube_table(c) for c in model.cubes.values()]})
    ctx = Context("guest", "statcube", "2026-11", ("2026-11",), "PostgreSQL 15.0", {})
    start = time.monotonic()
    with pytest.raises(SqlError) as err:
        catalog.run("SELECT count(*) FROM range(1000000000000)", ctx, seconds=0.5)
    assert err.value.sqlstate == "57014" and "statement timeout" in err.value.message
    assert time.monotonic() - start < 5
    assert catalog.run("SELECT count(*) FROM pg_class WHERE relname = 'pip'", ctx).rows == [(1,)]


@pytest.mark.integration
def test_tls_when_configured(live: Live) -> None:
    """With a certificate configured, sslmode=require connects over TLS; when TLS is
    required, a connection without it is refused with a FATAL error saying so."""
    with psycopg.connect(live.url() + "?sslmode=require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT MEASURE(claimants) FROM pip WHERE month = 8").fetchone()
    with psycopg.connect(live.url("analyst", KEY) + "?sslmode=require") as conn:
        assert conn.info.user == "analyst" and conn.pgconn.ssl_in_use
    live.pg.require_tls = True
    try:
        with pytest.raises(psycopg.OperationalError, match="requires TLS"):
            psycopg.connect(live.url() + "?sslmode=disable")
        with psycopg.connect(live.url() + "?sslmode=require") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        live.pg.require_tls = False


@pytest.mark.integration
@pytest.mark.slow
def test_fifty_connections_finish_with_no_error(live: Live) -> None:
    from bench.bench_sql import run

    result = run(live.url(), connections=50, queries=2)
    assert result["errors"] == 0
    assert result["queries"] == 100
