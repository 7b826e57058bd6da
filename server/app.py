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
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from cube.model import Model, default_model_path, load_model
from cube.releases import open_releases
from cube.settings import Settings
from server import describe, errors, health, limits, openapi, routes, statxplore
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
    releases = open_releases(settings, model, lazy=True)  # a worker boots without it
    version = describe.statcube_version()
    svc = Service(settings, model, releases, keys, clock or settings.now, version)

    app = Flask("statcube", static_folder=str(Path(__file__).parent / "static"),
                static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    # "//" in a path is a 404, not a 308 whose Location werkzeug builds from the Host header
    app.url_map.merge_slashes = False
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
    _install_build_pinning(app, svc)
    health.register(app, svc)
    routes.register(app, svc, openapi.document(version))
    statxplore.register(app, svc)  # DWP Stat-Xplore's Open Data API under /webapi/rest/v1
    app.wsgi_app = RetryAfterOnlyWhenRetrying(app.wsgi_app)  # type: ignore[method-assign]
    return app


class RetryAfterOnlyWhenRetrying:
    """WSGI middleware: ``Retry-After`` only on 429 and 503 (RFC 9110 §10.2.3).

    flask-limiter adds it to every response it counts — 200, 403, 404 — from its own
    after-request hook, which runs after the app's; a client honouring it would wait for
    nothing. Filtering at the WSGI boundary catches every source."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not status.startswith(("429", "503")):
                headers = [(k, v) for k, v in headers if k.lower() != "retry-after"]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _install_build_pinning(app: Flask, svc: Service) -> None:
    """One request, one build: each request first brings the warehouses up to date (a
    replaced file is reopened, a returned one opened) and then sees the same build from its
    ETag to its last query (:meth:`cube.releases.ReleaseSet.pin`)."""

    @app.before_request
    def _pin() -> None:
        svc.releases.pin()

    @app.teardown_request
    def _unpin(_exc: BaseException | None) -> None:
        svc.releases.unpin()


#: Query parameters whose values are never logged (a key sent in the URL by mistake).
SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029]")


def escape_log(text: str) -> str:
    """``text`` with control characters (and the backslash) as ``\\xNN`` escapes, so a
    path cannot write a line break — a forged access-log line — into the log."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", text)


def logged_target(path: str, query: bytes) -> str:
    """The request target as the access log shows it: the decoded path escaped, and the raw
    query string with the values of key-like parameters replaced by ``[redacted]``."""
    out = escape_log(path)
    if query:
        parts = []
        for part in query.decode("latin-1").split("&"):
            name = part.split("=", 1)[0]
            if unquote_plus(name).strip().lower() in SECRET_PARAMS:
                part = f"{name}=[redacted]"
            parts.append(part)
        out += "?" + escape_log("&".join(parts))
    return out


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
        access_log.info("%s %s %s %d %.1fms role=%s key=%s", rid, escape_log(request.method),
                        logged_target(request.path, request.query_string), resp.status_code,
                        (time.perf_counter() - started) * 1000, who.role.value,
                        who.key_id or "-")
        return resp


def service(app: Flask) -> Service:
    """The app's :class:`Service` (for tests and operators' tooling)."""
    svc = app.extensions["statcube"]
    assert isinstance(svc, Service)
    return svc
