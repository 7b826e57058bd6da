"""``statcube serve``: gunicorn running ``create_app(settings)`` in each worker.

Workers default to one per CPU core, each with ``threads`` threads (gthread). The app is not
preloaded: every worker builds its own app after the fork, so each holds its own read-only
DuckDB connection (DuckDB allows many read-only processes on one file). Before starting, the
master builds the app once and closes it, so a bad setting, calendar or keys file fails at
once with a clear message instead of in every worker.

Workers always boot: the warehouse is opened lazily and retried (cube/releases.py), so a
worker that dies (OOM, kill, timeout) while the warehouse is missing or the database is down
is replaced by one that starts and answers 503 — before, the replacement failed to boot,
gunicorn stopped the master, and an outage of the data became an outage of the service.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from cube.settings import Settings


def worker_count(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else (os.cpu_count() or 1)


def check(settings: Settings) -> None:
    """Build the app once in the master (then close it) to fail fast on bad configuration
    (model, calendar, keys, settings, a bad database URL). A warehouse that is missing or a
    database that is down is not configuration: the server starts anyway, answers 503 until
    it is there, and says so here once."""
    from cube.errors import EngineUnavailableError
    from server.app import create_app, service

    app = create_app(settings)
    releases = service(app).releases
    try:
        releases.ready()
    except EngineUnavailableError as exc:
        logging.getLogger("statcube.server").warning(
            "starting without the warehouse (data requests answer 503 until it is "
            "available): %s", exc)
    finally:
        releases.close()


def close_worker(_server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit``: close the worker's warehouses (and their per-thread
    cursors) before the interpreter exits, rather than leaving them to its shutdown."""
    from server.app import service

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "statcube" in app.extensions:
        service(app).releases.close()


class StatcubeServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, on_ready: Callable[[str], None] | None = None
                 ) -> None:
        self.settings = settings
        self.on_ready = on_ready
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        threads = max(1, s.threads)
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": worker_count(s),
            "threads": threads,
            "worker_class": "server.workers.StatcubeThreadWorker" if threads > 1
            else "server.workers.StatcubeSyncWorker",  # gunicorn's, with JSON errors
            "preload_app": False,
            "timeout": 120,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "proc_name": "statcube",
        }
        options["worker_exit"] = close_worker
        if self.on_ready is not None:
            ready = self.on_ready

            def when_ready(server: Any) -> None:
                host, port = server.LISTENERS[0].sock.getsockname()[:2]
                ready(f"http://{host}:{port}")

            options["when_ready"] = when_ready
        if "control_socket_disable" in self.cfg.settings:  # gunicorn ≥ 25.1: one shared
            options["control_socket_disable"] = True        # socket path would clash
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from server.app import create_app

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s [%(process)d] %(name)s %(message)s")
        return create_app(self.settings)


def serve(settings: Settings, on_ready: Callable[[str], None] | None = None) -> int:
    check(settings)
    StatcubeServer(settings, on_ready).run()
    return 0
