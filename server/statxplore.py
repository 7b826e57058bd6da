"""DWP Stat-Xplore's Open Data API under ``/webapi/rest/v1``: parse, call cube/statxplore.py,
format. Existing Stat-Xplore clients (``statxplorer``, ``dwpstat``, Python harvesters) work
against statcube by pointing their base URL here.

The same policy as the Slicer API, from the same objects: keys and roles (server/auth.py —
one key works on both APIs), table-size limits per role (server/limits.py, every Query run
through ``aggregate_within``, so through the one disclosure gate), the application-wide rate
limit (flask-limiter), and the release calendar with its embargo (``Service.calendar``).

Where this API differs from the Slicer API, it follows Stat-Xplore:

- a key that is not valid is **403** (the Slicer API says 401); no key at all is the guest
  role, as on the Slicer API (Stat-Xplore always wants a key; statcube's guests keep their
  guest limits here too);
- a request that names an unknown id or cannot be answered (too many cells, a stock added
  over months, a disclosure rule) is **422** with statcube's one error body; 429, 503 and the
  generic 500 keep their statuses;
- ``X-RateLimit`` (the limit) is added and ``X-RateLimit-Reset`` is in epoch
  **milliseconds** on every response under this prefix;
- ``Accept-Language: cy`` gives Welsh labels where the geography lookups carry them.

A release is chosen with ``?release=<id>`` (kept in every ``location`` and ``Link``) or the
``X-Statcube-Release`` request header (for clients whose URLs are fixed); default: the
latest published, as on the Slicer API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Flask, Request, Response, request, request_finished
from flask_limiter import Limiter

from cube import statxplore as sx
from cube.errors import ForbiddenError, StatcubeError, UnauthorizedError
from cube.releases import Release
from server import errors, limits
from server.auth import Principal, presented_key
from server.formats import json_bytes
from server.service import Service

PREFIX = "/webapi/rest/v1"
RELEASE_HEADER = "X-Statcube-Release"
#: Children per schema page; ``limit`` may ask for up to MAX_LIMIT.
PAGE = 1000
MAX_LIMIT = 10_000
LANGUAGE_NAMES = {"en": "English", "cy": "Cymraeg"}
#: Statuses kept as they are; every other 4xx becomes 422, as Stat-Xplore answers.
KEPT = (401, 403, 429)


def _principal(svc: Service, req: Request) -> Principal:
    """The caller: a valid key's role, the guest without a key, 403 for a bad key."""
    try:
        return svc.keys.authenticate(req.headers)
    except UnauthorizedError as exc:
        try:
            presented = presented_key(req.headers) is not None
        except UnauthorizedError:
            presented = True
        if not presented:
            raise
        raise ForbiddenError(exc.message, parameter=exc.parameter,
                             hint="check the key in the APIKey header") from None


def _args(req: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(req.args) - set(allowed))
    if unknown:
        raise sx.StatXploreError(f"unknown query parameter {unknown[0]!r}",
                                 parameter=unknown[0], value=req.args.get(unknown[0]),
                                 hint="allowed: " + (", ".join(allowed) or "none"))
    return {k: req.args.get(k, "") for k in allowed if k in req.args}


def _release(svc: Service, req: Request, principal: Principal, args: dict[str, str]
             ) -> Release:
    asked = args.get("release") or req.headers.get(RELEASE_HEADER) or None
    return svc.calendar.select(asked, svc.clock(), embargo_exempt=principal.role.embargo_exempt)


def _language(req: Request) -> str:
    return req.accept_languages.best_match(sx.LANGUAGES, default="en") or "en"


def _int(args: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = args.get(name)
    if text is None or text == "":
        return default
    try:
        n = int(text)
    except ValueError:
        raise sx.StatXploreError(f"{name} must be a whole number", parameter=name,
                                 value=text) from None
    if not lo <= n <= hi:
        raise sx.StatXploreError(f"{name} must be between {lo} and {hi}", parameter=name,
                                 value=text)
    return n


def _json(payload: Any, release: Release | None, lang: str | None = None,
          status: int = 200) -> Response:
    resp = Response(json_bytes(payload), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "private, no-cache"
    resp.headers["Vary"] = f"Accept-Language, APIKey, Authorization, {RELEASE_HEADER}"
    if release is not None:
        resp.headers[RELEASE_HEADER] = release.id
    if lang is not None:
        resp.headers["Content-Language"] = lang
    return resp


def _limiter(app: Flask) -> Limiter | None:
    found = app.extensions.get("limiter")
    return next(iter(found), None) if found else None


def register(app: Flask, svc: Service) -> None:
    """The blueprint, its error handler and the rate-limit headers of its responses."""
    bp = Blueprint("statxplore", __name__, url_prefix=PREFIX)

    @bp.get("/info")
    def info() -> Response:
        _principal(svc, request)
        _args(request, ())
        return _json({"languages": [{"locale": code, "label": LANGUAGE_NAMES[code],
                                     "default": code == "en"} for code in sx.LANGUAGES]},
                     None)

    @bp.get("/rate_limit")
    def rate_limit() -> Response:
        _principal(svc, request)
        _args(request, ())
        limiter = _limiter(app)
        current = limiter.current_limit if limiter is not None else None
        if current is None:
            return _json({"limit": None, "remaining": None, "reset": None}, None)
        return _json({"limit": current.limit.amount, "remaining": current.remaining,
                      "reset": int(current.reset_at) * 1000}, None)

    @bp.get("/schema", defaults={"ident": sx.ROOT})
    @bp.get("/schema/<path:ident>")
    def schema(ident: str) -> Response:
        principal = _principal(svc, request)
        args = _args(request, ("release", "offset", "limit"))
        release = _release(svc, request, principal, args)
        lang = _language(request)
        limit = _int(args, "limit", PAGE, 1, MAX_LIMIT)
        offset = _int(args, "offset", 0, 0, 10**9)
        cubes = svc.releases.cube_names(release)
        node = sx.node(svc.model, cubes, ident, lambda c: svc.releases.browser(release, c),
                       offset, limit, lang)
        keep = {"release": args["release"]} if args.get("release") else {}
        base = request.host_url.rstrip("/") + PREFIX + "/schema/"

        def location(i: str) -> str:
            return base + i + (("?" + urlencode(keep)) if keep else "")

        body = {**node.brief(), "location": location(node.id),
                "children": [{**c.brief(), "location": location(c.id)} for c in node.children]}
        resp = _json(body, release, lang)
        if node.total is not None and offset + limit < node.total:
            nxt = urlencode({**keep, "offset": offset + limit, "limit": limit})
            resp.headers["Link"] = f'<{base}{node.id}?{nxt}>; rel="next"'
        return resp

    @bp.post("/table", strict_slashes=False)
    def table() -> Response:
        principal = _principal(svc, request)
        args = _args(request, ("release",))
        release = _release(svc, request, principal, args)
        lang = _language(request)
        try:
            body = orjson.loads(request.get_data(cache=True) or b"null")
        except orjson.JSONDecodeError as exc:
            raise sx.StatXploreError(f"the table query is not valid JSON: {exc}",
                                     parameter="body") from None
        cubes = svc.releases.cube_names(release)
        plan, b = sx.plan_table(svc.model, cubes, body,
                                lambda c: svc.releases.browser(release, c), lang)
        max_cells = limits.max_cells(svc.settings, principal.role)
        result = sx.run_table(plan, b, lambda q: limits.aggregate_within(
            b, q, max_cells, principal), max_cells)
        return _json(table_json(body, result, lang, release), release, lang)

    @bp.errorhandler(StatcubeError)
    def error(exc: StatcubeError) -> Response:
        if not exc.public or exc.status >= 500 or exc.status in KEPT:
            return errors.from_statcube(exc)
        d = exc.to_dict()
        return errors.response(422, errors.body(d.pop("error"), d.pop("message"), **d))

    app.register_blueprint(bp)
    request_finished.connect(_rate_headers, app)


def _rate_headers(sender: Flask, response: Response, **_: Any) -> None:
    """Stat-Xplore's rate-limit headers on every response under the prefix: ``X-RateLimit``
    (the limit) and ``X-RateLimit-Reset`` in epoch milliseconds. flask-limiter writes its
    headers (reset in seconds) after every view and error handler; this runs after it."""
    if not request.path.startswith(PREFIX + "/"):
        return
    limit = response.headers.get("X-RateLimit-Limit")
    reset = response.headers.get("X-RateLimit-Reset")
    if limit is not None:
        response.headers["X-RateLimit"] = limit
    if reset is not None and reset.isdigit() and len(reset) <= 11:
        response.headers["X-RateLimit-Reset"] = str(int(reset) * 1000)


def table_json(query: Any, table: sx.Table, lang: str, release: Release) -> dict[str, Any]:
    """Stat-Xplore's table response."""
    plan = table.plan
    notes = {"statcube:release": f"Release {release.id}.",
             "statcube:disclosure": " ".join(table.notes)}
    if table.default_period:
        notes["statcube:period"] = (f"No date was asked for: the latest period, "
                                    f"{table.default_period}, is shown.")
    fields = []
    for fp in plan.fields:
        items = []
        for item in fp.items:
            if item.kind == "total":
                items.append({"type": "Total", "labels": [item.label(lang)],
                              "annotationKeys": []})
            else:
                items.append({"type": "RecodeItem", "labels": [item.label(lang)],
                              "uris": list(item.uris), "annotationKeys": []})
        fields.append({"uri": fp.field.id, "label": fp.field.label, "items": items,
                       "annotationKeys": []})
    return {
        "query": query,
        "database": {"id": f"str:database:{plan.cube.name}",
                     "uri": f"str:database:{plan.cube.name}", "label": plan.cube.label,
                     "annotationKeys": list(notes)},
        "measures": [{"uri": m.id, "label": m.label} for m in plan.measures],
        "fields": fields,
        "cubes": {m.id: {"values": sx.nest(table.values[m.id], plan.shape),
                         "precision": m.precision} for m in plan.measures},
        "annotationMap": notes,
    }


#: Query parameters of each operation (the OpenAPI document and its test use them).
QUERY_PARAMS: dict[str, tuple[str, ...]] = {
    "statxplore_info": (), "statxplore_rate_limit": (),
    "statxplore_schema_root": ("release", "offset", "limit"),
    "statxplore_schema": ("release", "offset", "limit"),
    "statxplore_table": ("release",)}
_QUERY_PARAM_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "release": ("A published release id (default: the latest published); or send the "
                "X-Statcube-Release header.", {"type": "string"}),
    "offset": ("First child of the page (a multiple of limit).",
               {"type": "integer", "minimum": 0}),
    "limit": ("Children per page (the next page is in the Link header).",
              {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
}


def openapi_paths(error: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """This API's paths for the OpenAPI document; ``error`` makes an error response."""
    obj = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    errs = {"403": "The API key is not valid.",
            "404": "No such endpoint.",
            "422": "Unknown id, malformed query, or a table that cannot be answered.",
            "413": "The request body is too large.",
            "429": "Rate limit exceeded.",
            "503": "The warehouse is unavailable."}

    def op(name: str, summary: str, extra: dict[str, Any] | None = None,
           codes: tuple[str, ...] = ("403", "422", "429", "503")) -> dict[str, Any]:
        params = [{"name": p, "in": "query", "required": False,
                   "description": _QUERY_PARAM_DOCS[p][0], "schema": _QUERY_PARAM_DOCS[p][1]}
                  for p in QUERY_PARAMS[name]]
        return {"operationId": name, "summary": summary, "tags": ["Stat-Xplore"],
                "parameters": params, "responses": {"200": obj, **{
                    c: error(errs[c]) for c in codes}}, **(extra or {})}

    ident = {"name": "ident", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "A Stat-Xplore id, unencoded", "example": "str:database:pip"}
    schema_op = op("statxplore_schema", "A schema node and (a page of) its children",
                   codes=("403", "404", "422", "429", "503"))
    schema_op["parameters"] = [ident, *schema_op["parameters"]]
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["database", "measures", "dimensions"],
        "properties": {"database": {"type": "string"},
                       "measures": {"type": "array", "items": {"type": "string"}},
                       "recodes": {"type": ["object", "null"]},
                       "dimensions": {"type": "array",
                                      "items": {"type": "array", "items": {"type": "string"}}}},
    }}}}}
    table_op = op("statxplore_table", "A table of protected values (Stat-Xplore's shape)",
                  body, codes=("403", "413", "422", "429", "503"))
    return {
        f"{PREFIX}/info": {"get": op("statxplore_info", "Label languages", codes=("403", "429"))},
        f"{PREFIX}/rate_limit": {"get": op("statxplore_rate_limit", "The caller's rate limit",
                                           codes=("403", "429"))},
        f"{PREFIX}/schema": {"get": op("statxplore_schema_root", "The root folder")},
        f"{PREFIX}/schema/{{ident}}": {"get": schema_op},
        f"{PREFIX}/table": {"post": table_op},
    }
