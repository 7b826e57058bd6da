"""Liveness and readiness probes for orchestrators: ``/health/live`` and ``/health/ready``.

``/health/live`` answers 200 whenever the worker process can answer at all — it touches no
warehouse, so a warehouse outage never gets a healthy worker restarted (a restart cannot fix
it and, before workers booted without their warehouse, turned an outage into a dead server).
``/health/ready`` answers 200 when every warehouse the release calendar needs is open and
answers a trivial statement, else 503 ``engine_unavailable`` with ``Retry-After``: take the
instance out of the load balancer, not out of service. Neither is rate limited (see
server/limits.py) nor cached.
"""

from __future__ import annotations

from flask import Flask, Response, request

from server.formats import json_bytes
from server.params import read
from server.service import Service

LIVE = "/health/live"
READY = "/health/ready"
PATHS = (LIVE, READY)


def _ok(status: str) -> Response:
    resp = Response(json_bytes({"status": status}), mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def register(app: Flask, svc: Service) -> None:
    @app.get(LIVE)
    def health_live() -> Response:
        read("health_live", request.args)
        return _ok("live")

    @app.get(READY)
    def health_ready() -> Response:
        read("health_ready", request.args)
        svc.releases.ready()  # EngineUnavailableError → 503 in the one error shape
        return _ok("ready")
