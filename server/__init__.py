"""statcube's HTTP layer: a thin Flask app over cube/ speaking the Cubes 1.1 Slicer API.

Map, in the order a request flows:

- ``app.py``      — ``create_app(settings)``: builds everything per process (no import-time state)
- ``auth.py``     — API keys (hashed, constant-time) → roles guest/registered/prerelease/admin
- ``params.py``   — every query parameter, declared once (parser, OpenAPI and README use it)
- ``service.py``  — per-request Call (who, which release, which format), ETag/304/LRU response
- ``routes.py``   — the endpoints, each parse → one cube/ call → format
- ``execute.py``  — members and reports with size limits
- ``limits.py``   — table-size limits per role (413, never truncation) and rate limits (429)
- ``formats.py``  — JSON, CSV (streamed), Arrow IPC, Parquet from protected results only
- ``describe.py`` — version, info, cube model, members and cell descriptions
- ``cache.py``    — strong ETags from (release, normalised query) and the LRU of bytes
- ``errors.py``   — the one error body for every failure
- ``openapi.py``  — the OpenAPI 3.1 document
- ``health.py``   — ``/health/live`` and ``/health/ready`` for orchestrators
- ``run.py``      — ``statcube serve``: gunicorn, one read-only warehouse connection per worker,
                    opened lazily and retried (workers boot without their warehouse)
- ``workers.py``  — gunicorn workers whose own errors (414, 431, 400) use the one JSON shape

Releases and embargo live in the core (cube/releases.py), not here: the server only asks for
the release a caller may see. Disclosure control lives in the core too (cube/disclosure/):
every value served comes from ``CubeBrowser.aggregate_query``.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``from server import create_app``, imported on use so that ``python -m server.auth``
    does not import its own module twice."""
    if name == "create_app":
        from server.app import create_app

        return create_app
    raise AttributeError(name)
