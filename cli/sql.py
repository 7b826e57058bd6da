"""``sql-serve``: the PostgreSQL-protocol SQL API (package ``wire``), for BI tools.

``statcube serve --sql-port N`` starts the same server beside the HTTP API (a child
process), so one command serves both doors from the same settings.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.context import settings_of
from cli.parsing import command, nonempty
from cube.settings import Settings


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
