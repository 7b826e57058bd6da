"""One error shape for every failure, from every source.

    {"error": type, "message": …, "parameter": …|null, "value": …|null, "hint": …|null,
     "request_id": …}            (+ "position" for syntax errors)

Sources: statcube's own errors (cube/errors.py, with their status), werkzeug's HTTP errors
(unknown route 404, 405, oversize body 413, rate limit 429 from flask-limiter) and anything
unexpected (500). Messages of public errors (4xx) pass through; non-public ones (5xx,
configuration, engine) are replaced by a generic sentence and logged server-side with the
request id and the traceback, which never reaches the client.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Request, Response, current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from cube.errors import StatcubeError
from server.formats import json_bytes

log = logging.getLogger("statcube.server")

GENERIC = {
    500: "internal error: the request could not be completed; quote the request id if you "
         "report it",
    503: "the warehouse is temporarily unavailable; try again shortly",
}
_HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "too_large",
               415: "unsupported_media_type", 416: "range_not_satisfiable",
               429: "rate_limited"}
REQUEST_ID = "statcube.request_id"
#: Seconds a client should wait after a 503 (a worker retries its warehouse every second).
RETRY_AFTER = 2


def request_id(req: Request | None = None) -> str:
    """The current request's id (made on first use, kept in the WSGI environ)."""
    env = (req or request).environ
    rid = env.get(REQUEST_ID)
    if rid is None:
        rid = env[REQUEST_ID] = uuid.uuid4().hex[:16]
    return str(rid)


def body(error: str, message: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"error": error, "message": message, "parameter": None,
                           "value": None, "hint": None}
    out.update(extra)
    out["request_id"] = request_id()
    return out


def response(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
             ) -> Response:
    resp = Response(json_bytes(payload), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def from_statcube(exc: StatcubeError) -> Response:
    if exc.public:  # 4xx, and 504 query_timeout (its message names only the limit)
        if exc.status >= 500:
            log.warning("request %s failed: %s: %s", request_id(), type(exc).__name__, exc)
        return response(exc.status, body(**_split(exc.to_dict())))
    log.error("request %s failed: %s: %s", request_id(), type(exc).__name__, exc)
    status = exc.status if exc.status >= 500 else 500
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return response(status, body(exc.type if status == 503 else "internal_error",
                                 GENERIC.get(status, GENERIC[500])), headers)


def _split(d: dict[str, Any]) -> dict[str, Any]:
    return {"error": d.pop("error"), "message": d.pop("message"), **d}


def from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        log.error("request %s failed with HTTP %s", request_id(), status)
        return response(status, body("internal_error", GENERIC[500]))
    kind = _HTTP_TYPES.get(status, "bad_request")
    headers: dict[str, str] = {}
    hint = None
    if status == 404:
        message = f"no such endpoint: {request.path}"
        hint = "see /openapi.json for the endpoints"
    elif status == 405:
        allowed = exc.valid_methods or []  # type: ignore[attr-defined]
        message = f"method {request.method} is not allowed here"
        hint = "allowed: " + ", ".join(allowed)
        headers["Allow"] = ", ".join(allowed)
    elif status == 429:
        message = f"rate limit exceeded: {exc.description}"
        hint = "wait for the window in X-RateLimit-Reset / Retry-After to pass, or use an API key"
    elif status == 416:
        length = getattr(exc, "length", None)
        message = "the requested range is not within the file"
        if length is not None:
            headers["Content-Range"] = f"bytes */{length}"
            hint = f"the file has {length:,} bytes"
    elif status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = "the request body is too large" + (
            f": the limit is {limit:,} bytes" if limit else "")
    else:
        message = exc.description or kind.replace("_", " ")
    resp = response(status, body(kind, message, hint=hint), headers)
    if status == 429 and exc.response is not None:  # keep flask-limiter's Retry-After
        for name in ("Retry-After",):
            if name in exc.response.headers:
                resp.headers[name] = exc.response.headers[name]
    return resp


def malformed_body(exc: Exception) -> Response:
    """A request body gunicorn could not parse while the app read it (a malformed chunked
    body: ``InvalidChunkSize`` was a 500 with a traceback in the log)."""
    log.warning("request %s: malformed request body: %s", request_id(), type(exc).__name__)
    return response(400, body("bad_request", "the request body is malformed (chunked "
                                             "encoding)"))


def unexpected(exc: Exception) -> Response:
    log.exception("request %s failed with an unexpected error", request_id())
    return response(500, body("internal_error", GENERIC[500]))


def install(app: Flask) -> None:
    app.register_error_handler(StatcubeError, from_statcube)
    app.register_error_handler(HTTPException, from_http)
    app.register_error_handler(ParseException, malformed_body)
    app.register_error_handler(Exception, unexpected)
