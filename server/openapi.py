"""The OpenAPI 3.1 document served at ``/openapi.json``.

Built (in ``create_app``, never at import time) from the same tables the server parses with:
parameters from :data:`server.params.PARAMS`/:data:`~server.params.ENDPOINT_PARAMS`, formats
from :data:`server.formats.MEDIA_TYPES`, the error body from server/errors.py. A test runs
schemathesis against it, so the document and the server cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server import statxplore
from server.formats import MEDIA_TYPES
from server.params import AGGREGATE_FORMATS, ENDPOINT_PARAMS, MEMBERS_FORMATS, PARAMS, formats_for

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_VALUE = {"type": ["string", "number", "integer", "boolean", "null"]}
_OBJ = {"type": "object"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "The one error body of every failure.",
        "required": ["error", "message", "parameter", "value", "hint", "request_id"],
        "properties": {"error": _STR, "message": _STR, "parameter": _NSTR, "value": _NSTR,
                       "hint": _NSTR, "request_id": _STR,
                       "position": {"type": "integer", "minimum": 0}},
        "additionalProperties": False,
    },
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"enum": ["live", "ready"]}}},
    "Version": {"type": "object", "required": ["version", "server_version", "api_version"],
                "properties": {"version": _STR, "server_version": _STR, "api_version": _INT,
                               "product": _STR}},
    "Release": {"type": "object", "required": ["id", "published", "last_period",
                                               "is_published"],
                "properties": {"id": _STR, "published": {"type": "string",
                                                         "format": "date-time"},
                               "last_period": _STR, "is_published": {"type": "boolean"}}},
    "Info": {"type": "object",
             "required": ["label", "api_version", "authentication", "limits", "releases",
                          "default_release", "formats"],
             "properties": {"label": _STR, "description": _STR, "api_version": _INT,
                            "statcube_version": _STR, "timezone": _STR,
                            "cubes_version": _STR, "json_record_limit": _INT,
                            "first_weekday": _INT,
                            "authentication": _OBJ, "limits": _OBJ,
                            "formats": _arr(_STR), "releases": _arr(_ref("Release")),
                            "default_release": _NSTR, "disclosure": _STR}},
    "CubeSummary": {"type": "object", "required": ["name", "label"],
                    "properties": {"name": _STR, "label": _STR, "description": _STR,
                                   "category": _NSTR, "info": _OBJ}},
    "CubeModel": {"type": "object",
                  "required": ["name", "label", "dimensions", "aggregates", "measures",
                               "release"],
                  "properties": {"name": _STR, "label": _STR, "description": _STR,
                                 "info": _OBJ, "dimensions": _arr(_OBJ),
                                 "measures": _arr(_OBJ), "aggregates": _arr(_OBJ),
                                 "features": _OBJ, "release": _STR, "details": _arr(_OBJ),
                                 "key": {"type": "null"}, "category": _NSTR,
                                 "latest_period": _NSTR}},
    "Disclosure": {"type": "object",
                   "required": ["method", "ptable", "parameters", "withheld_values", "notes"],
                   "properties": {"method": _STR, "ptable": _STR, "parameters": _OBJ,
                                  "withheld_values": _INT, "notes": _arr(_STR),
                                  "sums_of_published_cells": {
                                      "type": "object",
                                      "description": "present when values are custom groups: "
                                                     "sums of published predefined cells",
                                      "required": ["values", "cells_added"],
                                      "properties": {"values": _INT, "cells_added": _INT}}}},
    "Aggregate": {
        "type": "object",
        "description": "The Cubes 1.1 /aggregate shape, plus period, release and disclosure.",
        "required": ["summary", "cells", "total_cell_count", "aggregates", "cell", "levels",
                     "attributes", "has_split", "remainder", "disclosure", "release"],
        "properties": {
            "summary": {"type": "object", "additionalProperties": _VALUE},
            "cells": _arr({"type": "object", "additionalProperties": _VALUE}),
            "total_cell_count": {"type": "integer", "minimum": 0},
            "aggregates": _arr(_STR), "cell": _arr(_OBJ),
            "levels": {"type": "object", "additionalProperties": _arr(_STR)},
            "attributes": _arr(_STR), "has_split": {"type": "boolean"}, "remainder": _OBJ,
            "page": {"type": "integer", "minimum": 0},
            "page_size": {"type": "integer", "minimum": 1}, "period": _STR,
            "disclosure": _ref("Disclosure"), "release": _STR,
        },
    },
    "Members": {"type": "object",
                "required": ["dimension", "hierarchy", "depth", "level", "data", "release"],
                "properties": {"dimension": _STR, "hierarchy": _STR, "depth": _INT,
                               "level": _STR,
                               "data": _arr({"type": "object", "additionalProperties": _VALUE}),
                               "total_member_count": {"type": ["integer", "null"]},
                               "release": _STR}},
    "Cell": {"type": "object", "required": ["cube", "cuts", "release"],
             "properties": {"cube": _STR, "cuts": _arr(_OBJ), "release": _STR}},
    "Report": {"type": "object", "description": "One result per named query.",
               "additionalProperties": {"anyOf": [_ref("Aggregate"), _ref("Members"),
                                                  _ref("Cell")]}},
    "ReportRequest": {"type": "object", "required": ["queries"],
                      "properties": {"cut": _STR, "queries": {
                          "type": "object", "additionalProperties": {
                              "type": "object",
                              "properties": {"query": {"enum": ["aggregate", "members",
                                                                "cell"]}}}}}},
}

_ERRORS = {
    "400": "Bad request: a parameter does not parse or names nothing in the model.",
    "401": "The API key is not valid.",
    "404": "Unknown cube, dimension or release.",
    "429": "Rate limit exceeded (see X-RateLimit-* and Retry-After).",
    "500": "Internal error (generic message and a request id).",
    "503": "The warehouse is unavailable (engine_unavailable); retry after Retry-After "
           "seconds: the service recovers by itself.",
    "504": "A statement ran longer than the statement time limit (query_timeout): cut, "
           "drill or page less.",
}
_RATE_HEADERS = {h: {"description": d, "schema": {"type": "integer"}} for h, d in (
    ("X-RateLimit-Limit", "Requests allowed in the window."),
    ("X-RateLimit-Remaining", "Requests left in the window."),
    ("X-RateLimit-Reset", "When the window resets (Unix time)."))}


#: What a download may be: datapackage.json, Parquet parts, SHA256SUMS (server/downloads.py).
_FILES = {"application/json": {"schema": _OBJ},
          "application/vnd.apache.parquet": {"schema": {
              "type": "string", "contentMediaType": "application/vnd.apache.parquet"}},
          "text/plain": {"schema": _STR},
          "application/octet-stream": {"schema": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _unavailable() -> dict[str, Any]:
    """503: the warehouse is unavailable (missing, being replaced, database down); the
    service recovers by itself — retry after ``Retry-After`` seconds."""
    out = _error(_ERRORS["503"])
    out["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                      "schema": {"type": "integer"}}}
    return out


def _param(name: str, endpoint: str) -> dict[str, Any]:
    p = PARAMS[name]
    schema = dict(p.schema)
    if name == "format":
        schema["enum"] = list(formats_for(endpoint))
    out: dict[str, Any] = {"name": name, "in": "query", "required": False,
                           "description": p.help}
    if p.repeatable:
        out.update(schema=_arr(schema), style="form", explode=True)
        if p.example is not None:
            out["example"] = [p.example]
    else:
        out["schema"] = schema
        if p.example is not None:
            out["example"] = _typed(schema, p.example)
    return out


def _typed(schema: dict[str, Any], example: str) -> Any:
    if schema.get("type") == "integer":
        return int(example)
    if schema.get("type") == "boolean":
        return example == "true"
    return example


def _params(endpoint: str) -> list[dict[str, Any]]:
    out = []
    for name in ENDPOINT_PARAMS[endpoint]:
        out.append(_param(name, endpoint))
        for alias in PARAMS[name].aliases:
            a = _param(name, endpoint)
            a.update(name=alias, deprecated=True, description=f"Alias of {name}.")
            out.append(a)
    return out


def _path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}, "example": example}


_CUBE = _path_param("cube", "Cube name (see /cubes).", "housing_benefit")


def _op(endpoint: str, summary: str, schema: str | dict[str, Any] | None, *,
        formats: Sequence[str] = ("json",), path_params: Sequence[dict[str, Any]] = (),
        errors: Sequence[str] = (), cacheable: bool = True, description: str = ""
        ) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if schema is not None:
        content: dict[str, Any] = {}
        for f in formats:
            media = MEDIA_TYPES[f].split(";")[0]
            if f == "json":
                content[media] = {"schema": _ref(schema) if isinstance(schema, str)
                                  else schema}
            elif f == "csv":
                content[media] = {"schema": {"type": "string"}}
            else:
                content[media] = {"schema": {"type": "string",
                                             "contentMediaType": media}}
        headers = dict(_RATE_HEADERS)
        if cacheable:
            headers["ETag"] = {"description": "Strong entity tag of (release, normalised "
                                              "query, format).", "schema": _STR}
        responses["200"] = {"description": "OK", "headers": headers, "content": content}
    if cacheable:
        responses["304"] = {"description": "Not modified (If-None-Match matched the ETag)."}
    for code in sorted({*_ERRORS, *errors}):
        if code == "503":
            responses[code] = _unavailable()
            continue
        responses[code] = _error(_ERRORS.get(code) or {
            "403": "Forbidden: a disclosure-control rule refuses the query, or record-level "
                   "data was asked for.",
            "413": "The table exceeds the caller's size limit (page it).",
        }[code])
    op: dict[str, Any] = {"operationId": endpoint, "summary": summary,
                          "parameters": [*path_params, *_params(endpoint)],
                          "responses": responses}
    if description:
        op["description"] = description
    return op


def document(version: str) -> dict[str, Any]:
    dim = _path_param("dimension", "Dimension name (see the cube model).", "geography")
    fact = _path_param("fact_id", "Any id: record-level data is never served.", "1")
    aggregate = _op("aggregate", "Aggregate (protected cells)", "Aggregate",
                    formats=AGGREGATE_FORMATS, path_params=[_CUBE],
                    errors=("403", "413"),
                    description="Slice (cut) and break down (drilldown) a cube. Every value "
                                "is protected by the cell key method; amount totals and means "
                                "of fewer than 10 are withheld: null with "
                                "`<aggregate>_withheld: true` (CSV: `..`). A custom group "
                                "(set, range or negated cut, split, cross-hierarchy cut) is "
                                "the sum of the published values of its predefined cells.")
    report_get = _op("report", "Several named queries at once", "Report", path_params=[_CUBE],
                     errors=("403", "413"))
    report_post = dict(report_get, operationId="report_post", requestBody={
        "required": True, "content": {"application/json": {"schema": _ref("ReportRequest")}}})
    report_post["parameters"] = [p for p in report_get["parameters"] if p["name"] != "queries"]
    facts = _op("facts", "Refused: record-level data is never published", None,
                path_params=[_CUBE], errors=("403",), cacheable=False)
    return {
        "openapi": "3.1.0",
        "info": {"title": "statcube Slicer API", "version": version,
                 "description": "OLAP queries over UK benefit statistics, protected by "
                                "statistical disclosure control (cell key method).",
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "servers": [{"url": "/"}],
        "security": [{}, {"ApiKeyHeader": []}, {"Bearer": []}],
        "paths": {
            "/version": {"get": _op("version", "Server and API version", "Version",
                                    cacheable=False)},
            "/info": {"get": _op("info", "Server information, your role, limits and "
                                 "releases", "Info", cacheable=False)},
            "/cubes": {"get": _op("cubes", "Cubes of a release", _arr(_ref("CubeSummary")))},
            "/cube/{cube}/model": {"get": _op("model", "Logical model of a cube", "CubeModel",
                                              path_params=[_CUBE])},
            "/cube/{cube}/aggregate": {"get": aggregate},
            "/cube/{cube}/members/{dimension}": {"get": _op(
                "members", "Members of a dimension level", "Members", formats=MEMBERS_FORMATS,
                path_params=[_CUBE, dim], errors=("413",))},
            "/cube/{cube}/cell": {"get": _op("cell", "Keys and labels of a cut", "Cell",
                                             path_params=[_CUBE])},
            "/cube/{cube}/report": {"get": report_get, "post": report_post},
            "/cube/{cube}/facts": {"get": facts},
            "/cube/{cube}/fact/{fact_id}": {"get": dict(facts, operationId="fact",
                                                        parameters=[_CUBE, fact])},
            "/fact/{fact_id}": {"get": dict(facts, operationId="fact_short",
                                            parameters=[fact])},
            "/exports": {"get": {"operationId": "exports",
                                 "summary": "Catalogue of published Parquet cube exports",
                                 "parameters": _params("exports"),
                                 "responses": {"200": {"description": "OK", "content": {
                                     "application/json": {"schema": _OBJ}}},
                                     **{c: _error(_ERRORS[c]) for c in ("400", "401", "429")}}}},
            "/exports/{release}/{cube}/{grain}/{name}": {"get": {
                "operationId": "export_file",
                "summary": "Download one file of an export (Range, ETag, Last-Modified)",
                "parameters": [_path_param("release", "Release id.", "2026-11"), _CUBE,
                               _path_param("grain", "Export grain.", "la_all"),
                               _path_param("name", "File path within the export.",
                                           "datapackage.json")],
                "responses": {"200": {"description": "The file", "content": _FILES},
                    "206": {"description": "One range of the file (a single satisfiable "
                                           "byte range; an invalid Range or several ranges "
                                           "get the whole file)", "content": _FILES},
                    "304": {"description": "Not modified"},
                    "416": _error("The one requested range is outside the file "
                                  "(Content-Range: bytes */size)."),
                    **{c: _error(_ERRORS[c]) for c in ("400", "401", "404", "429")}}}},
            "/map": {"get": {"operationId": "map", "summary": "Choropleth map page (HTML)",
                             "responses": {"200": {"description": "OK", "content": {
                                 "text/html": {"schema": {"type": "string"}}}},
                                 **{c: _error(_ERRORS[c]) for c in ("400", "401", "429")
                                    if c in _ERRORS}}}},
            "/health/live": {"get": {
                "operationId": "health_live",
                "summary": "Liveness: 200 whenever the server process answers (touches no "
                           "warehouse)",
                "parameters": [],
                "responses": {"200": {"description": "Alive", "content": {
                    "application/json": {"schema": _ref("Health")}}},
                    "400": _error(_ERRORS["400"])}}},
            "/health/ready": {"get": {
                "operationId": "health_ready",
                "summary": "Readiness: 200 when every warehouse is open and answers, else "
                           "503 engine_unavailable with Retry-After",
                "parameters": [],
                "responses": {"200": {"description": "Ready", "content": {
                    "application/json": {"schema": _ref("Health")}}},
                    "400": _error(_ERRORS["400"]),
                    "503": _unavailable()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                      "responses": {"200": {"description": "OK", "content": {
                                          "application/json": {"schema": _OBJ}}}}}},
            **statxplore.openapi_paths(_error),  # DWP Stat-Xplore's Open Data API
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "APIKey"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
