"""``sql-serve``: the PostgreSQL-protocol SQL API (package ``wire``), for BI tools.

``statcube serve --sql-port N`` starts the same server beside the HTTP API, so one command
serves both doors from the same settings. It runs as a child process (``statcube
sql-serve`` with the settings in its environment), not in gunicorn's master: the master
forks its workers, and the SQL server's event loop, thread pool and DuckDB connections must
not be in a process that forks. The child is in the same process group, so Ctrl-C reaches
both; when the HTTP server stops for any reason the child is stopped too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from cli.context import settings_of
from cli.parsing import command, nonempty
from cube.errors import ConfigError
from cube.settings import SETTINGS, Settings

#: How long ``serve --sql-port`` waits for the SQL server to listen (it loads the model and
#: opens the releases first).
START_TIMEOUT = 120.0


def sql_settings(args: argparse.Namespace) -> Settings:
    return settings_of(args).with_(warehouse=args.warehouse, releases=args.releases,
                                   api_keys=args.api_keys, sql_host=args.host,
                                   sql_port=args.port, sql_tls_cert=args.tls_cert,
                                   sql_tls_key=args.tls_key)


def run_sql(settings: Settings) -> int:
    from wire.run import serve

    def ready(url: str) -> None:
        print(f"statcube is serving the SQL API on {url}  (psql '{url}'; Ctrl-C stops it)",
              flush=True)

    return serve(settings, on_ready=ready)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``Settings.from_env`` give back ``settings`` (an unset
    setting is an empty variable, so nothing inherited can change it)."""
    return {s.env: "" if getattr(settings, s.name) is None else str(getattr(settings, s.name))
            for s in SETTINGS}


def serve_beside(settings: Settings, run: Callable[[], int]) -> int:
    """Start ``statcube sql-serve`` with the same settings in a child process, then ``run``
    (the HTTP server) here; stop the child when ``run`` returns or raises (gunicorn ends
    with SystemExit). A SQL server that cannot start (port taken, bad certificate) is an
    error before the HTTP server starts."""
    env = {**os.environ, **settings_env(settings)}
    child = subprocess.Popen([sys.executable, "-m", "cli", "sql-serve"], env=env,
                             stdout=subprocess.PIPE, text=True)
    owner = os.getpid()
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], START_TIMEOUT)
        line = child.stdout.readline() if ready else ""
        if "serving the SQL API" not in line:
            if ready:  # end of output: the child is exiting (its error is on stderr)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(30)
            if child.poll() is None:
                raise ConfigError(f"the SQL API did not start within {START_TIMEOUT:.0f} s")
            raise ConfigError("the SQL API could not start (its error is above); the HTTP "
                              "server was not started")
        print(line, end="", flush=True)
        relay = threading.Thread(target=_relay, args=(child.stdout,), daemon=True)
        relay.start()
        return run()
    finally:
        # gunicorn's workers are forks of this process and leave through here too (their
        # SystemExit): only the process that started the child stops it
        if os.getpid() == owner:
            _stop(child)


def _relay(stream: IO[str]) -> None:
    """Whatever else the SQL server prints goes to this process's stdout (keeps the pipe
    from filling)."""
    for line in stream:
        print(line, end="", flush=True)


def _stop(child: subprocess.Popen[str]) -> None:
    """SIGTERM (the SQL server closes its listener and pool), then SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):  # gunicorn's master may have reaped it
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def cmd_sql_serve(args: argparse.Namespace) -> int:
    return run_sql(sql_settings(args))


def register(sub: Any) -> None:
    s = command(sub, "sql-serve", help="serve the cubes as PostgreSQL tables (wire protocol) "
                                       "for BI tools, psql and pandas",
                example="statcube sql-serve --releases data/releases.toml --port 5433")
    s.add_argument("--warehouse", type=nonempty,
                   help="DuckDB file or SQLAlchemy URL (env STATCUBE_WAREHOUSE)")
    s.add_argument("--releases", type=nonempty,
                   help="release calendar file (env STATCUBE_RELEASES)")
    s.add_argument("--api-keys", type=nonempty, help="API keys file (env STATCUBE_API_KEYS)")
    s.add_argument("--host", type=nonempty,
                   help="listen address (env STATCUBE_SQL_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (env STATCUBE_SQL_PORT, default 5433; 0: any)")
    s.add_argument("--tls-cert", type=nonempty, help="PEM certificate (env STATCUBE_SQL_TLS_CERT)")
    s.add_argument("--tls-key", type=nonempty, help="PEM key (env STATCUBE_SQL_TLS_KEY)")
    s.set_defaults(func=cmd_sql_serve)
