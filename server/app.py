"""``create_app(settings)``: the Flask application factory.

Everything is built here, per process, from explicit settings: the model, the release
calendar and its read-only warehouse connections (cube/releases.py), the API key store, the
result cache, the rate limiter, CORS, error handlers, the OpenAPI document and the routes.
Nothing is built at import time; gunicorn calls the factory in each worker after forking, so
each worker holds its own read-only DuckDB connection.

``clock`` (a callable returning an aware datetime) decides what is published "now"; tests
inject one, the server uses the system clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from cube.model import Model, default_model_path, load_model
from cube.releases import open_releases
from cube.settings import Settings
from server import describe, errors, limits, openapi, routes, statxplore
from server.auth import KeyStore
from server.service import Service

log = logging.getLogger("statcube.server")
access_log = logging.getLogger("statcube.access")
MAX_BODY_BYTES = 1 << 20
EXPOSED_HEADERS = ["ETag", "X-Request-ID", "X-Statcube-Release", "X-RateLimit-Limit",
                   "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"]


def load_app_model(settings: Settings) -> Model:
    path = Path(settings.model)
    if not path.exists() and settings.model == "model.json":
        path = default_model_path()
    return load_model(path)


def load_keys(settings: Settings) -> KeyStore:
    if not settings.api_keys:
        return KeyStore.empty()
    return KeyStore.load(settings.api_keys, settings.api_key_pepper)


def create_app(settings: Settings | None = None, *,
               clock: Callable[[], datetime] | None = None) -> Flask:
    settings = settings if settings is not None else Settings.from_env()
    model = load_app_model(settings)
    keys = load_keys(settings)
    releases = open_releases(settings, model)
    version = describe.statcube_version()
    svc = Service(settings, model, releases, keys, clock or settings.now, version)

    app = Flask("statcube", static_folder=str(Path(__file__).parent / "static"),
                static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    app.extensions["statcube"] = svc
    if settings.proxy_hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,  # type: ignore[method-assign]
                                x_proto=settings.proxy_hops, x_host=settings.proxy_hops)
    if settings.cors_origins:
        origins: Any = "*" if settings.cors_origins.strip() == "*" else [
            o.strip() for o in settings.cors_origins.split(",") if o.strip()]
        CORS(app, origins=origins, methods=["GET", "POST", "OPTIONS"],
             allow_headers=["APIKey", "Authorization", "Content-Type", "If-None-Match"],
             expose_headers=EXPOSED_HEADERS, max_age=600)
    limits.make_limiter(app, settings, keys)
    errors.install(app)
    _install_request_log(app, keys)
    routes.register(app, svc, openapi.document(version))
    statxplore.register(app, svc)  # DWP Stat-Xplore's Open Data API under /webapi/rest/v1
    return app


def _install_request_log(app: Flask, keys: KeyStore) -> None:
    """A request id on every response, and one access-log line per request (no bodies, no
    values: method, path, status, time, role, key id)."""

    @app.before_request
    def _start() -> None:
        request.environ["statcube.started"] = time.perf_counter()
        errors.request_id()

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = errors.request_id()
        resp.headers["X-Request-ID"] = rid
        started = request.environ.get("statcube.started", time.perf_counter())
        who = keys.role_for_limits(request.headers)
        access_log.info("%s %s %s %d %.1fms role=%s key=%s", rid, request.method,
                        request.full_path.rstrip("?"), resp.status_code,
                        (time.perf_counter() - started) * 1000, who.role.value,
                        who.key_id or "-")
        return resp


def service(app: Flask) -> Service:
    """The app's :class:`Service` (for tests and operators' tooling)."""
    svc = app.extensions["statcube"]
    assert isinstance(svc, Service)
    return svc
