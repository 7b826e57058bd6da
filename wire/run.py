"""``statcube sql-serve``: the PostgreSQL-protocol SQL API over the release calendar.

One process: an asyncio loop for the connections and a thread pool for queries (DuckDB
releases the GIL while it works). The releases, the key store and the size limits are
those of the HTTP server, read from the same settings, so a key and its role mean the same
on both doors.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from cube.errors import ConfigError
from cube.model import load_model
from cube.releases import open_releases
from cube.settings import Settings
from cube.sqlapi.session import SqlService
from server.auth import KeyStore, Principal
from wire.server import PgServer

VERSION = "0.1.0"


def _model_path(settings: Settings) -> Path:
    from cube.model import default_model_path

    path = Path(settings.model)
    return default_model_path() if not path.exists() and settings.model == "model.json" \
        else path


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.sql_tls_cert and not settings.sql_tls_key:
        return None
    if not (settings.sql_tls_cert and settings.sql_tls_key):
        raise ConfigError("STATCUBE_SQL_TLS_CERT and STATCUBE_SQL_TLS_KEY go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.sql_tls_cert, settings.sql_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the SQL API's TLS certificate or key: {exc}") from None
    return ctx


def serve(settings: Settings, on_ready: Callable[[str], None] | None = None) -> int:
    """Run until interrupted (SIGINT/SIGTERM)."""
    model = load_model(_model_path(settings))
    releases = open_releases(settings, model)
    keys = KeyStore.load(settings.api_keys, settings.api_key_pepper) if settings.api_keys \
        else KeyStore.empty()
    tls = tls_context(settings)

    def max_cells(p: Principal) -> int:
        return int(getattr(settings, f"max_cells_{p.role.value}"))

    service = SqlService(releases, settings.now, VERSION)
    pg = PgServer(service, keys, max_cells, tls=tls, threads=max(1, settings.sql_threads))

    async def main() -> None:
        try:
            server = await pg.start(settings.sql_host, settings.sql_port)
        except OSError as exc:  # port taken, address not on this machine, privileged port
            raise ConfigError(f"the SQL API cannot listen: {exc.strerror or exc}") from None
        host, port = server.sockets[0].getsockname()[:2]
        if on_ready is not None:
            on_ready(f"postgresql://guest@{host}:{port}/statcube")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    try:
        asyncio.run(main())
    finally:
        pg.pool.shutdown(wait=False, cancel_futures=True)
        releases.close()
    return 0
