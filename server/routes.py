"""The Slicer API endpoints. Each handler: parse (Service.call) → one call into cube/ →
format (server/formats.py) → conditional, cached response (Service.respond).

Values reach a response only through ``CubeBrowser.aggregate_query`` (the disclosure gate,
wrapped in size limits by :func:`server.limits.aggregate_within`). Record-level endpoints
(``/facts``, ``/fact/<id>``) always answer 403.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from flask import Flask, Request, Response, request

from cube.disclosure.rules import check_query
from cube.errors import ArgumentError
from server import describe, downloads, execute, formats, limits, params
from server.cache import normalise
from server.service import Service


def report_body(req: Request, args: params.Args) -> Any:
    """A report's JSON: the ``queries`` parameter (GET) or the request body (GET or POST)."""
    text = args.one("queries")
    raw = req.get_data(cache=True)
    if text is not None and raw:
        raise ArgumentError("give the report in the body or in queries=, not both",
                            parameter="queries")
    if text is None and not raw:
        raise ArgumentError("a report needs its queries: POST a JSON body or GET with "
                            "queries=<json>", parameter="queries")
    try:
        return orjson.loads(text if text is not None else raw)
    except orjson.JSONDecodeError as exc:
        raise ArgumentError(f"the report is not valid JSON: {exc}", parameter="queries") \
            from None


def register(app: Flask, svc: Service, openapi: dict[str, Any]) -> None:
    @app.get("/version")
    def version() -> Response:
        _, args = svc.identify(request, "version")
        return svc.plain(args.flag("prettyprint"), describe.version(svc.version))

    @app.get("/info")
    def info() -> Response:
        principal, args = svc.identify(request, "info")
        payload = describe.info(svc.model, svc.version, principal, svc.calendar, svc.clock(), {
            "max_cells": limits.max_cells(svc.settings, principal.role),
            "rate_limit": limits.rate_limit(svc.settings, principal.role)})
        return svc.plain(args.flag("prettyprint"), payload, private=True)

    @app.get("/cubes")
    def cubes() -> Response:
        call = svc.call(request, "cubes")
        names = svc.releases.cube_names(call.release)
        return svc.respond(call, ["cubes"], lambda: formats.json_output(
            describe.cubes(svc.model, names), pretty=call.pretty))

    @app.get("/cube/<cube>/model")
    def model(cube: str) -> Response:
        call = svc.call(request, "model")
        browser = svc.browser(call, cube)
        return svc.respond(call, ["model", cube], lambda: formats.json_output(
            describe.cube_model(browser, call.release), pretty=call.pretty))

    @app.get("/cube/<cube>/aggregate")
    def aggregate(cube: str) -> Response:
        call = svc.call(request, "aggregate")
        browser = svc.browser(call, cube)
        query = browser.query(params.aggregate_request(cube, call.args))
        check_query(query)  # refuse before any ETag can match (the gate checks again)
        return svc.respond(call, ["aggregate", normalise(query)], lambda: formats.aggregate_output(
            execute.in_language(browser, limits.aggregate_within(
                browser, query, call.max_cells, call.principal), call.lang),
            call.release.id, call.fmt, call.header, call.pretty, browser.ws.engine),
            pagesize=query.pagesize)

    @app.get("/cube/<cube>/members/<dimension>")
    def members(cube: str, dimension: str) -> Response:
        call = svc.call(request, "members")
        browser = svc.browser(call, cube)
        browser.cube.dimension(dimension).hierarchy(call.args.one("hierarchy"))

        def produce() -> formats.Output:
            m = execute.members_within(browser, dimension, call.args, call.max_cells,
                                       call.principal, call.lang)
            payload = describe.members(m, browser, call.release, call.args.one("pagesize")
                                       is not None)
            return formats.members_output(payload, m.members, describe.member_labels(
                browser, dimension), call.fmt, call.header, call.pretty)

        return svc.respond(call, ["members", cube, dimension, sorted(call.args.values.items())],
                           produce, pagesize=call.args.integer("pagesize"), what="members")

    @app.get("/cube/<cube>/cell")
    def cell(cube: str) -> Response:
        call = svc.call(request, "cell")
        browser = svc.browser(call, cube)
        cut = call.args.joined_cut()
        dimension = call.args.one("dimension")
        return svc.respond(call, ["cell", cube, cut, dimension], lambda: formats.json_output(
            describe.cell(browser, cut, call.release, dimension, call.lang), pretty=call.pretty))

    @app.route("/cube/<cube>/report", methods=["GET", "POST"])
    def report(cube: str) -> Response:
        call = svc.call(request, "report")
        browser = svc.browser(call, cube)
        queries = params.report_queries(report_body(request, call.args), call.args.joined_cut())
        plan = execute.plan_report(browser, queries)
        return svc.respond(call, ["report", cube, [p.key for p in plan]], lambda: (
            formats.json_output(*execute.run_report(browser, plan, call.release,
                                                    call.max_cells, call.principal, call.lang),
                                pretty=call.pretty)))

    @app.get("/cube/<cube>/facts")
    @app.get("/cube/<cube>/fact/<fact_id>")
    @app.get("/fact/<fact_id>")
    def facts(**_: str) -> Response:
        raise params.facts_refused()

    @app.get("/exports")
    def exports() -> Response:
        principal, args = svc.identify(request, "exports")
        served = downloads.servable(svc.releases, svc.clock(), principal.role.embargo_exempt)
        return svc.plain(args.flag("prettyprint"), downloads.catalogue(
            Path(svc.settings.export_dir), served, request.url_root.rstrip("/") + "/exports"),
            private=True)

    @app.get("/exports/<release>/<cube>/<grain>/<path:name>")
    def export_file(release: str, cube: str, grain: str, name: str) -> Response:
        principal, _ = svc.identify(request, "export_file")
        served = downloads.servable(svc.releases, svc.clock(), principal.role.embargo_exempt)
        return downloads.send(Path(svc.settings.export_dir), served, release, cube, grain,
                              name, request)

    @app.get("/map")
    def map_page() -> Response:
        call = svc.call(request, "map")
        levels = svc.releases.map_levels(call.release)
        return Response(describe.map_page(levels), mimetype="text/html",
                        headers={"Cache-Control": "public, no-cache"})

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        params.read("openapi", request.args)
        resp = Response(formats.json_bytes(openapi), mimetype="application/json")
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp
