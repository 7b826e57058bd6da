"""gunicorn workers whose own errors use the one error shape.

Some requests never reach Flask: gunicorn refuses an over-long request line (414), too many or
too large headers (431), control bytes or a malformed request line or header (400), an
unsupported transfer coding (501) — and answered each with its own HTML page. These workers
override gunicorn's ``Worker.handle_error`` (called for anything raised while a request is
read or handled outside the app) to answer the same JSON body as every other error
(server/errors.py), with ``Cache-Control: no-store`` and ``Connection: close``. Messages are
fixed sentences: the request line or header that failed is never echoed back (it may be
4 KB of garbage, or control bytes). Anything not a parse error stays a generic 500.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from server.errors import GENERIC
from server.formats import json_bytes

log = logging.getLogger("statcube.server")

#: Parse errors of gunicorn → (status, reason, error type, message).
_PARSE: tuple[tuple[str, int, str, str, str], ...] = (
    ("LimitRequestLine", 414, "URI Too Long", "too_large",
     "the request line (method, path and query) is longer than the server accepts"),
    ("LimitRequestHeaders", 431, "Request Header Fields Too Large", "too_large",
     "the request has more or larger header fields than the server accepts"),
    ("UnsupportedTransferCoding", 501, "Not Implemented", "not_implemented",
     "the request's transfer coding is not supported"),
    ("ForbiddenProxyRequest", 403, "Forbidden", "forbidden",
     "proxy requests are not accepted from this address"),
    ("ExpectationFailed", 417, "Expectation Failed", "bad_request",
     "the request's Expect header cannot be met"),
    ("InvalidChunkSize", 400, "Bad Request", "bad_request",
     "the chunked request body is malformed"),
    ("ChunkMissingTerminator", 400, "Bad Request", "bad_request",
     "the chunked request body is malformed"),
    ("InvalidChunkExtension", 400, "Bad Request", "bad_request",
     "the chunked request body is malformed"),
    ("InvalidHeaderName", 400, "Bad Request", "bad_request",
     "a request header name is malformed"),
    ("InvalidHeader", 400, "Bad Request", "bad_request", "a request header is malformed"),
    ("ParseException", 400, "Bad Request", "bad_request",
     "the request is not valid HTTP/1.1 (request line, method, version or headers)"),
)


def classify(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, error type, message) for an exception gunicorn reports."""
    if isinstance(exc, http_errors.InvalidResponseHeader | http_errors.InvalidResponseHeaderName):
        return 500, "Internal Server Error", "internal_error", GENERIC[500]
    for name, status, reason, kind, message in _PARSE:
        cls = getattr(http_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status, reason, kind, message
    return 500, "Internal Server Error", "internal_error", GENERIC[500]


def error_response(status: int, reason: str, kind: str, message: str) -> tuple[bytes, str]:
    """The raw HTTP response of one error in the one shape, and its request id."""
    rid = uuid.uuid4().hex[:16]
    body = json_bytes({"error": kind, "message": message, "parameter": None, "value": None,
                       "hint": None, "request_id": rid})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nCache-Control: no-store\r\n"
            f"X-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body, rid


class JSONErrors:
    """Mixin over a gunicorn worker: its ``handle_error`` answers in the one error shape."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, reason, kind, message = classify(exc)
        data, rid = error_response(status, reason, kind, message)
        ip = (addr or ("", -1))[0]
        if status >= 500:
            log.error("request %s from ip=%s failed outside the app: %s", rid, ip,
                      type(exc).__name__, exc_info=exc)
        else:
            log.warning("request %s from ip=%s refused by the HTTP parser: %s %s", rid, ip,
                        status, type(exc).__name__)
        try:
            util.write_nonblock(client, data)
        except Exception:  # the client went away: nothing left to tell it
            log.debug("could not send the error of request %s", rid)


class StatcubeThreadWorker(JSONErrors, ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with JSON errors."""


class StatcubeSyncWorker(JSONErrors, SyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker with JSON errors."""
