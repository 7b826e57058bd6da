"""The HTTP layer through Flask's test client, on the session warehouse (months 2026-06 …
2026-11) with the test calendar (releases 2026-08 and 2026-11 published, 2027-02 not) and a
fixed "now" of 21 November 2026.

Shapes are checked field by field; values are checked against the core (the same query
through ``CubeBrowser.aggregate`` on the same release view), which proves they come from the
disclosure gate and nowhere else.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_server_support import (
    EMBARGOED_LABELS,
    EMBARGOED_MONTHS,
    KEYS,
    PEPPER,
    ROOT,
    check_error,
    internal_keys,
    make_app,
    write_config,
)

from cube.disclosure.gate import Gate
from cube.errors import EngineUnavailableError
from cube.model import Model
from cube.settings import Settings
from cube.workspace import Workspace
from server import create_app, statxplore
from server.app import service
from server.params import ENDPOINT_PARAMS, PARAMS

pytestmark = pytest.mark.integration

GUEST: dict[str, str] = {}
REGISTERED = {"APIKey": KEYS["registered"]}
PRERELEASE = {"APIKey": KEYS["prerelease"]}
ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
HB = "/cube/housing_benefit"


@pytest.fixture(scope="module")
def app(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = make_app(warehouse, tmp_path_factory.mktemp("server"))
    yield app
    service(app).releases.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def any_app(any_warehouse: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The same app over the session warehouse on each serving engine (``--warehouse`` a
    DuckDB file or a PostgreSQL URL): what the API answers must not depend on it."""
    app = make_app(any_warehouse, tmp_path_factory.mktemp("server-any"))
    yield app
    service(app).releases.close()


@pytest.fixture
def any_client(any_app: Flask) -> FlaskClient:
    return any_app.test_client()


@pytest.fixture(scope="module")
def small_app(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """Guests limited to 20 cells, registered users to 60; CORS for one origin."""
    app = make_app(warehouse, tmp_path_factory.mktemp("small"), max_cells_guest=20,
                   max_cells_registered=60, cors_origins="https://maps.example.org")
    yield app
    service(app).releases.close()


@pytest.fixture(scope="module")
def rate_app(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """Guests get 4 requests a minute per IP, registered keys 6."""
    app = make_app(warehouse, tmp_path_factory.mktemp("rate"), rate_limit_guest="4/minute",
                   rate_limit_registered="6/minute")
    yield app
    service(app).releases.close()


@pytest.fixture(scope="module")
def published_view(any_workspace: Workspace) -> Workspace:
    """What guests see by default: release 2026-11, data to August 2026 (on the serving
    engine of ``any_client``)."""
    return any_workspace.view((2026, 8))


def get_json(client: FlaskClient, url: str, headers: dict[str, str] | None = None,
             status: int = 200) -> Any:
    resp = client.get(url, headers=headers or {})
    assert resp.status_code == status, (url, resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/json"
    body = orjson.loads(resp.get_data())
    assert internal_keys(body) == []
    if status >= 400:
        check_error(body)
    return body


# --- /version, /info, /cubes, /model ----------------------------------------------------------

def test_version(client: FlaskClient) -> None:
    body = get_json(client, "/version")
    assert set(body) == {"version", "server_version", "api_version", "product"}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
    assert body["server_version"] == body["version"]
    assert body["api_version"] == 2
    assert body["product"] == "statcube"


def test_info_for_each_role(client: FlaskClient) -> None:
    guest = get_json(client, "/info")
    assert set(guest) == {"label", "description", "api_version", "statcube_version", "timezone",
                          "authentication", "limits", "formats", "releases", "default_release",
                          "disclosure", "cubes_version", "json_record_limit", "first_weekday"}
    # Cubes' keys: its version, its row cap (here: refused above it, never cut), Monday
    assert (guest["cubes_version"], guest["json_record_limit"], guest["first_weekday"]) == (
        "1.1", 5000, 0)
    assert guest["authentication"] == {"type": "api_key",
                                       "headers": ["APIKey", "Authorization: Bearer"],
                                       "role": "guest", "key_id": None}
    assert guest["limits"] == {"max_cells": 5000, "rate_limit": "100000/minute"}
    assert guest["formats"] == ["json", "csv", "arrow", "parquet"]
    assert guest["timezone"] == "Europe/London"
    assert guest["default_release"] == "2026-11"
    assert guest["releases"] == [
        {"id": "2026-11", "published": "2026-11-10T09:30:00+00:00", "last_period": "2026-08",
         "is_published": True},
        {"id": "2026-08", "published": "2026-08-11T09:30:00+01:00", "last_period": "2026-06",
         "is_published": True},
    ]
    reg = get_json(client, "/info", REGISTERED)
    assert reg["authentication"]["role"] == "registered"
    assert reg["authentication"]["key_id"] == "registered-user"
    assert reg["limits"]["max_cells"] == 100000 == reg["json_record_limit"]
    assert [r["id"] for r in reg["releases"]] == ["2026-11", "2026-08"]
    pre = get_json(client, "/info", PRERELEASE)
    assert pre["releases"][0] == {"id": "2027-02", "published": "2027-02-09T09:30:00+00:00",
                                  "last_period": "2026-11", "is_published": False}
    assert pre["default_release"] == "2026-11"  # prerelease sees the future only when asking
    assert get_json(client, "/info", ADMIN)["authentication"]["role"] == "admin"


def test_cubes(client: FlaskClient, model: Model) -> None:
    body = get_json(client, "/cubes")
    assert [c["name"] for c in body] == list(model.cubes)
    hb = body[0]
    assert set(hb) == {"name", "label", "description", "category", "info"}
    assert hb["label"] == model.cubes["housing_benefit"].label
    assert hb["info"] == {"kind": "stock", "unit": "person", "grain": "month",
                          "disclosure": {"group_cut_min_level": {"geography": "la"},
                                         "max_category_dims_at_oa": 1}}


def test_cube_model(client: FlaskClient, model: Model) -> None:
    body = get_json(client, f"{HB}/model")
    cube = model.cubes["housing_benefit"]
    assert set(body) == {"name", "label", "description", "info", "dimensions", "measures",
                         "aggregates", "features", "release", "latest_period", "details",
                         "key", "category"}
    assert body["details"] == [] and body["key"] is None
    assert body["release"] == "2026-11"
    assert body["latest_period"] == "2026-08"  # not 2026-11: embargo
    assert [d["name"] for d in body["dimensions"]] == [d.name for d in cube.dimensions]
    geo = body["dimensions"][0]
    assert set(geo) == {"name", "label", "description", "role", "is_flat", "has_details",
                        "default_hierarchy_name", "levels", "hierarchies", "info"}
    assert geo["default_hierarchy_name"] == "ons"
    assert [h["name"] for h in geo["hierarchies"]] == ["ons", "constituency"]
    region = next(lv for lv in geo["levels"] if lv["name"] == "region")
    assert set(region) == {"name", "label", "description", "key", "label_attribute",
                           "order_attribute", "cardinality", "role", "attributes"}
    assert region["key"] == "region_code" and region["label_attribute"] == "region_name"
    assert region["attributes"][0] == {"name": "region_code", "label": region["attributes"][0][
        "label"], "ref": "geography.region_code"}
    # CubesViewer keys its columns by ref; a mean is stated as Cubes computes it
    assert body["aggregates"] == [
        {"name": "claimants", "ref": "claimants", "label": "Claimants", "function": "sum",
         "measure": "claimants_count", "nonadditive": "time",
         "info": {"statistic": "sum", "measure": "claimants_count"}},
        {"name": "weekly_award_sum", "ref": "weekly_award_sum",
         "label": cube.aggregate("weekly_award_sum").label, "function": "sum",
         "measure": "weekly_award", "nonadditive": "time",
         "info": {"statistic": "sum", "measure": "weekly_award"}},
        {"name": "weekly_award_mean", "ref": "weekly_award_mean",
         "label": cube.aggregate("weekly_award_mean").label, "function": None,
         "measure": None, "expression": "weekly_award_sum / claimants", "nonadditive": "time",
         "info": {"statistic": "mean", "measure": "weekly_award"}}]
    assert [(m["name"], m["ref"]) for m in body["measures"]] == [
        ("claimants_count", "claimants_count"), ("weekly_award", "weekly_award")]
    assert body["features"]["actions"] == ["aggregate", "members", "cell", "report"]
    # the model describes the logical model only: no tables, columns or key columns
    text = orjson.dumps(body).decode()
    for internal in ("fact_housing_benefit", "dim_geography", "rkey", "record_key", "mappings"):
        assert internal not in text
    nino = get_json(client, "/cube/nino_registrations/model")
    assert nino["latest_period"] == "2026-Q2"


# --- /aggregate ----------------------------------------------------------------------------------

AGGREGATE_KEYS = {"summary", "cells", "total_cell_count", "aggregates", "cell", "levels",
                  "attributes", "has_split", "remainder", "disclosure", "release"}


def test_aggregate_shape_field_by_field(any_client: FlaskClient, published_view: Workspace) -> None:
    body = get_json(any_client, f"{HB}/aggregate?cut=geography:E92000001&drilldown=geography")
    core = published_view.cube("housing_benefit").aggregate(
        cut="geography:E92000001", drilldown="geography:region").to_json()
    assert set(body) == AGGREGATE_KEYS | {"period"}
    assert body["release"] == "2026-11"
    assert body["period"] == "2026-08"  # a stock without a time cut: the latest visible month
    assert body["aggregates"] == ["claimants", "weekly_award_sum", "weekly_award_mean"]
    assert body["attributes"] == ["geography.country_code", "geography.country_name",
                                  "geography.region_code", "geography.region_name"]
    assert body["levels"] == {"geography": ["country", "region"]}
    assert body["cell"] == [{"type": "point", "dimension": "geography", "hierarchy": "ons",
                             "invert": False, "hidden": False, "level_depth": 1,
                             "path": ["E92000001"]}]
    assert body["has_split"] is False and body["remainder"] == {}
    assert body["total_cell_count"] == 9 == len(body["cells"])
    assert body["cells"] == core["cells"] and body["summary"] == core["summary"]
    for c in body["cells"]:
        assert set(c) == set(body["attributes"]) | set(body["aggregates"]) | {
            "weekly_award_sum_withheld", "weekly_award_mean_withheld"}
        assert c["geography.country_code"] == "E92000001"
        assert isinstance(c["claimants"], int) and c["claimants"] >= 3
    assert set(body["summary"]) == {"claimants", "weekly_award_sum", "weekly_award_mean",
                                    "weekly_award_sum_withheld", "weekly_award_mean_withheld"}
    d = body["disclosure"]
    assert set(d) == {"method", "ptable", "parameters", "withheld_values", "notes"}
    assert d["method"].startswith("cell key method")
    assert set(d["parameters"]) == {"D", "V", "js", "magnitude", "mean_threshold"}
    assert d["withheld_values"] == 0 and len(d["notes"]) == 5


def test_drilldown_forms_are_equivalent(client: FlaskClient) -> None:
    base = f"{HB}/aggregate?cut=geography:E92000001"
    urls = [f"{base}&drilldown=geography:region|tenure",
            f"{base}&drilldown=geography:region,tenure",
            f"{base}&drilldown=geography:region&drilldown=tenure",
            f"{base}&drilldown=geography@ons:region&drilldown=tenure:tenure"]
    bodies = [get_json(client, u) for u in urls]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["levels"] == {"geography": ["country", "region"], "tenure": ["tenure"]}
    etags = {client.get(u).headers["ETag"] for u in urls}
    assert len(etags) == 1  # normalised query, one ETag


def test_aggregates_order_paging(any_client: FlaskClient, published_view: Workspace) -> None:
    url = f"{HB}/aggregate?drilldown=geography:la&aggregates=claimants&order=claimants:desc"
    full = get_json(any_client, url)
    assert full["aggregates"] == ["claimants"]
    values = [c["claimants"] for c in full["cells"]]
    assert values == sorted(values, reverse=True)
    assert set(full["cells"][0]) == {*full["attributes"], "claimants"}
    page = get_json(any_client, url + "&page=1&pagesize=10")
    assert page["page"] == 1 and page["page_size"] == 10
    assert page["total_cell_count"] == full["total_cell_count"] == 35
    assert page["cells"] == full["cells"][10:20]
    alias = get_json(any_client, url + "&page=1&page_size=10")
    assert alias == page
    both = get_json(any_client, url + "&pagesize=10&page_size=10", status=400)
    assert both["parameter"] == "pagesize"
    core = published_view.cube("housing_benefit").aggregate(
        drilldown="geography:la", aggregates="claimants", order="claimants:desc", page=1,
        pagesize=10).to_json()
    assert page["cells"] == core["cells"]


def test_split_having_top(client: FlaskClient) -> None:
    body = get_json(client, f"{HB}/aggregate?drilldown=geography:region&split="
                            "geography:E92000001,E12000007")
    assert body["has_split"] is True
    assert {c["__within_split__"] for c in body["cells"]} == {True, False}
    london = [c for c in body["cells"] if c["geography.region_code"] == "E12000007"]
    assert london and all(c["__within_split__"] for c in london)
    having = get_json(client, f"{HB}/aggregate?drilldown=geography:region&having=claimants>1000")
    assert having["cells"] and all(c["claimants"] > 1000 for c in having["cells"])
    top = get_json(client, f"{HB}/aggregate?drilldown=geography:la&top=3:claimants")
    assert len(top["cells"]) == 3
    every = get_json(client, f"{HB}/aggregate?drilldown=geography:la")
    assert sorted(c["claimants"] for c in top["cells"]) == sorted(
        c["claimants"] for c in every["cells"])[-3:]


def test_prettyprint(client: FlaskClient) -> None:
    plain = client.get(f"{HB}/aggregate?drilldown=tenure").get_data()
    pretty = client.get(f"{HB}/aggregate?drilldown=tenure&prettyprint=true").get_data()
    assert b"\n  " in pretty and b"\n  " not in plain
    assert orjson.loads(plain) == orjson.loads(pretty)
    get_json(client, f"{HB}/aggregate?prettyprint=maybe", status=400)


# --- formats --------------------------------------------------------------------------------------

WITHHELD_URL = "/cube/benefit_cap/aggregate?drilldown=geography:msoa"


def test_csv_parses_back_to_the_json_cells(any_client: FlaskClient) -> None:
    body = get_json(any_client, WITHHELD_URL)
    assert body["disclosure"]["withheld_values"] > 0  # the test needs withheld means
    resp = any_client.get(WITHHELD_URL + "&format=csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    raw = resp.get_data()
    assert b"\x00" not in raw
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    columns = body["attributes"] + body["aggregates"]
    assert rows[0] == columns
    assert len(rows) - 1 == len(body["cells"])
    for row, cell in zip(rows[1:], body["cells"], strict=True):
        for col, text in zip(columns, row, strict=True):
            value = cell[col]
            if col in body["aggregates"] and (value is None or cell.get(f"{col}_withheld")):
                assert text == ".."
            elif isinstance(value, float):
                assert float(text) == value and text == repr(value)
            else:
                assert text == str(value)
    assert any(r[-1] == ".." for r in rows[1:])


def test_csv_header_options_and_accept(client: FlaskClient, model: Model) -> None:
    url = f"{HB}/aggregate?drilldown=tenure&format=csv"
    labels = next(csv.reader(io.StringIO(client.get(url + "&header=labels").get_data(
        as_text=True))))
    cube = model.cubes["housing_benefit"]
    tenure = cube.dimension("tenure").levels[0]
    assert labels == [a.label for a in tenure.attributes] + [a.label for a in cube.aggregates]
    names = client.get(url).get_data(as_text=True).splitlines()
    none = client.get(url + "&header=none").get_data(as_text=True).splitlines()
    assert none == names[1:]
    accepted = client.get(f"{HB}/aggregate?drilldown=tenure", headers={"Accept": "text/csv"})
    assert accepted.mimetype == "text/csv"
    assert accepted.get_data(as_text=True).splitlines() == names
    browser = client.get(f"{HB}/aggregate?drilldown=tenure",
                         headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.mimetype == "application/json"
    get_json(client, url.replace("csv", "xml"), status=400)
    get_json(client, f"{HB}/model?format=csv", status=400)  # model is JSON only
    assert get_json(client, f"{HB}/model?format=json")["name"] == "housing_benefit"
    assert get_json(client, "/version?format=parquet", status=400)["parameter"] == "format"


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_arrow_and_parquet(any_client: FlaskClient, fmt: str) -> None:
    body = get_json(any_client, WITHHELD_URL)
    resp = any_client.get(WITHHELD_URL + f"&format={fmt}")
    assert resp.status_code == 200
    data = resp.get_data()
    if fmt == "arrow":
        assert resp.mimetype == "application/vnd.apache.arrow.stream"
        table = pa.ipc.open_stream(data).read_all()
    else:
        assert resp.mimetype == "application/vnd.apache.parquet"
        table = pq.read_table(pa.BufferReader(data))
    assert table.to_pylist() == body["cells"]
    meta = orjson.loads(table.schema.metadata[b"statcube"])
    assert {k: v for k, v in body.items() if k != "cells"} == meta
    accepted = any_client.get(WITHHELD_URL, headers={"Accept": resp.mimetype})
    assert accepted.get_data() == data


# --- members, cell, report, facts ----------------------------------------------------------------

def test_members_fields_order_json_lines(client: FlaskClient) -> None:
    """What Cubes' remote client sends for members: format=json_lines, fields=, order=."""
    full = get_json(client, f"{HB}/members/geography?depth=2")["data"]
    picked = get_json(client, f"{HB}/members/geography?depth=2"
                              "&fields=geography.region_code,region_name")["data"]
    assert picked == [{"geography.region_code": m["geography.region_code"],
                       "geography.region_name": m["geography.region_name"]} for m in full]
    desc = get_json(client, f"{HB}/members/geography?depth=2&order=region_name:desc")["data"]
    assert [m["geography.region_name"] for m in desc] == sorted(
        (m["geography.region_name"] for m in full), reverse=True)
    paged = get_json(client, f"{HB}/members/geography?depth=2&order=geography.region_name:desc"
                             "&pagesize=3&page=1")["data"]
    assert paged == desc[3:6]  # ordered in SQL, before paging
    resp = client.get(f"{HB}/members/geography?depth=2&format=json_lines")
    assert resp.status_code == 200 and resp.mimetype == "application/x-json-lines"
    assert [orjson.loads(line) for line in resp.get_data().splitlines()] == full
    for bad, parameter in (("fields=geography.la_name", "fields"), ("order=nope", "order"),
                           ("order=region_name:sideways", "order")):
        err = get_json(client, f"{HB}/members/geography?depth=2&{bad}", status=400)
        assert err["parameter"] == parameter
    facts = client.get(f"{HB}/facts?format=json_lines")
    assert facts.status_code == 403  # JSON Lines or not, records are never served
    agg = get_json(client, f"{HB}/aggregate?format=json_lines", status=400)
    assert agg["parameter"] == "format"


@pytest.mark.parametrize("path", ["/version", "/info", "/cubes", f"{HB}/model",
                                  f"{HB}/aggregate?aggregates=claimants",
                                  f"{HB}/members/tenure", f"{HB}/cell?cut=tenure:private",
                                  f"{HB}/report?queries=%7B%22queries%22%3A%7B%22a%22%3A%7B%7D%7D%7D"])
def test_lang_on_every_endpoint(client: FlaskClient, path: str) -> None:
    """A Cubes workspace with a locale sends lang= everywhere; the warehouse holds English
    labels only, so every language gets them (as Cubes falls back to the default)."""
    sep = "&" if "?" in path else "?"
    english = client.get(path)
    for lang in ("cy", "en-GB"):
        resp = client.get(f"{path}{sep}lang={lang}")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        if path not in ("/info",):
            assert resp.get_data() == english.get_data()
    err = get_json(client, f"{path}{sep}lang=cy%3Cscript%3E", status=400)
    assert (err["parameter"], err["value"]) == ("lang", "cy<script>")


def test_levels_name_the_hierarchy_and_the_split(client: FlaskClient) -> None:
    body = get_json(client, f"{HB}/aggregate?drilldown=geography@constituency:region|tenure"
                            "&split=geography:E92000001&aggregates=claimants")
    assert body["levels"] == {"geography@constituency": ["country", "region"],
                              "tenure": ["tenure"], "__within_split__": ["__within_split__"]}


def test_members(any_client: FlaskClient, published_view: Workspace) -> None:
    body = get_json(any_client, f"{HB}/members/geography?depth=2")
    assert set(body) == {"dimension", "hierarchy", "depth", "level", "data", "release"}
    assert (body["dimension"], body["hierarchy"], body["depth"], body["level"]) == (
        "geography", "ons", 2, "region")
    assert len(body["data"]) == 11
    assert set(body["data"][0]) == {"geography.country_code", "geography.country_name",
                                    "geography.region_code", "geography.region_name"}
    by_level = get_json(any_client, f"{HB}/members/geography?level=region")
    assert by_level == body
    pcon = get_json(any_client, f"{HB}/members/geography?hierarchy=constituency&level=pcon"
                            "&cut=geography@constituency:E92000001")
    assert pcon["hierarchy"] == "constituency" and pcon["level"] == "pcon"
    assert all(m["geography.country_code"] == "E92000001" for m in pcon["data"])
    paged = get_json(any_client, f"{HB}/members/geography?level=lsoa&page=2&pagesize=5")
    assert set(paged) == {"dimension", "hierarchy", "depth", "level", "data", "release",
                          "total_member_count"}
    assert len(paged["data"]) == 5 and paged["total_member_count"] > 100
    high = get_json(any_client, f"{HB}/members/geography?level=oa", status=400)
    assert high["parameter"] == "pagesize"
    csv_text = any_client.get(f"{HB}/members/geography?depth=2&format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows == [{k: str(v) for k, v in m.items()} for m in body["data"]]
    months = get_json(any_client, f"{HB}/members/time?depth=3")["data"]
    assert [m["time.month_label"] for m in months] == ["Jun 2026", "Jul 2026", "Aug 2026"]
    core = published_view.cube("housing_benefit").members("time", depth=3)
    assert core.members.to_pylist() == months
    get_json(any_client, f"{HB}/members/nope", status=404)
    get_json(any_client, f"{HB}/members/geography?hierarchy=nope", status=400)


def test_cell(any_client: FlaskClient) -> None:
    body = get_json(any_client, f"{HB}/cell?cut=geography:E92000001,E12000007|tenure:social;"
                            "private|time:2026,2,6-2026,3,8")
    assert set(body) == {"cube", "cuts", "release"} and body["cube"] == "housing_benefit"
    geo, tenure, time = body["cuts"]
    # Cubes' shapes: a point's details are its path, one dict per level with every attribute
    assert geo == {"type": "point", "dimension": "geography", "hierarchy": "ons",
                   "invert": False, "hidden": False, "path": ["E92000001", "E12000007"],
                   "level_depth": 2,
                   "details": [{"geography.country_code": "E92000001",
                                "geography.country_name": "England",
                                "_key": "E92000001", "_label": "England"},
                               {"geography.region_code": "E12000007",
                                "geography.region_name": "London",
                                "_key": "E12000007", "_label": "London"}]}
    assert tenure["type"] == "set" and tenure["paths"] == [["social"], ["private"]]
    # a set's details: one path per member, null where no member has it ('social')
    assert tenure["details"][0] is None
    assert tenure["details"][1] == [{"tenure.tenure_code": "private",
                                     "tenure.tenure_name": "Private rented",
                                     "tenure.tenure_order": 3, "_key": "private",
                                     "_label": "Private rented"}]
    assert time["type"] == "range" and time["from"] == ["2026", "2", "6"]
    assert time["to"] == ["2026", "3", "8"] and time["level_depth"] == 3
    # a range's details are {from, to}; integer keys stay integers
    assert set(time["details"]) == {"from", "to"}
    assert time["details"]["to"][2] == {"time.month": 8, "time.month_label": "Aug 2026",
                                        "_key": 8, "_label": "Aug 2026"}
    assert time["details"]["from"][0] == {"time.year": 2026, "_key": 2026, "_label": 2026}
    only = get_json(any_client, f"{HB}/cell?cut=geography:E92000001|tenure:social"
                            "&dimension=tenure")
    assert [c["dimension"] for c in only["cuts"]] == ["tenure"]
    empty = get_json(any_client, f"{HB}/cell")
    assert empty["cuts"] == []


REPORT = {"queries": {
    "regions": {"query": "aggregate", "drilldown": "geography:region",
                "aggregates": ["claimants"]},
    "tenure_in_london": {"drilldown": ["tenure"], "cut": "geography:E92000001,E12000007"},
    "months": {"query": "members", "dimension": "time", "depth": 3},
    "where": {"query": "cell", "cut": "geography:E92000001"},
}}


def test_report_post_and_get(client: FlaskClient) -> None:
    resp = client.post(f"{HB}/report", data=orjson.dumps(REPORT),  # keeps the key order
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = orjson.loads(resp.get_data())
    assert list(body) == ["regions", "tenure_in_london", "months", "where"]
    regions = get_json(client, f"{HB}/aggregate?drilldown=geography:region&aggregates=claimants")
    assert body["regions"] == regions
    assert body["tenure_in_london"]["cell"][0]["path"] == ["E92000001", "E12000007"]
    assert set(body["months"]) == {"dimension", "hierarchy", "depth", "level", "data",
                                   "release"}
    assert body["where"]["cuts"][0]["details"][0]["_label"] == "England"
    via_get = client.get(f"{HB}/report", query_string={"queries": orjson.dumps(
        REPORT).decode()})
    assert orjson.loads(via_get.get_data()) == body
    assert via_get.headers["ETag"] == resp.headers["ETag"]
    shared = client.post(f"{HB}/report?cut=geography:E92000001,E12000007",
                         json={"queries": {"t": {"drilldown": "tenure"}}})
    assert orjson.loads(shared.get_data())["t"] == body["tenure_in_london"]


@pytest.mark.parametrize(("body", "status", "parameter"), [
    ({"queries": {"a": {"drilldown": "nope"}}}, 404, "queries.a.drilldown"),
    ({"queries": {"a": {"query": "members"}}}, 400, "queries.a.dimension"),
    ({"queries": {"a": {"query": "facts"}}}, 403, None),
    ({"queries": {"a": {"query": "values"}}}, 400, "queries.a.query"),
    ({"queries": {"a": {"colour": "red"}}}, 400, "queries.a.colour"),
    ({"queries": {}}, 400, "queries"),
    ({"nothing": 1}, 400, "queries"),
    ([1, 2], 400, "queries"),
])
def test_report_errors(client: FlaskClient, body: Any, status: int,
                       parameter: str | None) -> None:
    resp = client.post(f"{HB}/report", json=body)
    assert resp.status_code == status
    err = orjson.loads(resp.get_data())
    check_error(err)
    assert err["parameter"] == parameter


def test_report_needs_a_body(client: FlaskClient) -> None:
    assert get_json(client, f"{HB}/report", status=400)["parameter"] == "queries"
    resp = client.post(f"{HB}/report", data=b"{not json", content_type="application/json")
    assert resp.status_code == 400
    check_error(orjson.loads(resp.get_data()), "bad_argument")


@pytest.mark.parametrize("url", [f"{HB}/facts", f"{HB}/fact/1", "/fact/123",
                                 "/cube/anything/facts?cut=x"])
def test_facts_are_refused(client: FlaskClient, url: str) -> None:
    body = get_json(client, url, status=403)
    assert body["error"] == "forbidden"
    assert "record-level data is never published" in body["message"]


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "status", "error", "parameter"), [
    ("/nope", 404, "not_found", None),
    ("/cube/nope/aggregate", 404, "unknown_cube", "cube"),
    (f"{HB}/aggregate?drilldown=nope", 404, "unknown_dimension", "drilldown"),
    (f"{HB}/aggregate?cut=geography:E92000001|", 400, "syntax_error", "cut"),
    (f"{HB}/aggregate?aggregates=nope", 400, "unknown_aggregate", "aggregates"),
    (f"{HB}/aggregate?measures=claimants", 400, "bad_argument", "measures"),
    (f"{HB}/aggregate?colour=red", 400, "bad_argument", "colour"),
    (f"{HB}/aggregate?page=x&pagesize=2", 400, "bad_argument", "page"),
    (f"{HB}/aggregate?page=1", 400, "bad_argument", "page"),
    (f"{HB}/aggregate?pagesize=0", 400, "bad_argument", "pagesize"),
    (f"{HB}/aggregate?format=json&format=csv", 400, "bad_argument", "format"),
    (f"{HB}/aggregate?drilldown=time:year", 400, "non_additive", "drilldown"),
    (f"{HB}/aggregate?drilldown=geography:oa", 400, "bad_argument", "drilldown"),
    (f"{HB}/aggregate?cut=geography:E92000001,E12000007,E09000001&pagesize=5"
     "&drilldown=geography:oa|tenure|age_band", 403, "disclosure_rule", "drilldown"),
    (f"{HB}/aggregate?release=1999-01", 404, "not_found", "release"),
    ("/version?x=1", 400, "bad_argument", "x"),
])
def test_error_shape(client: FlaskClient, url: str, status: int, error: str,
                     parameter: str | None) -> None:
    body = get_json(client, url, status=status)
    assert body["error"] == error
    assert body["parameter"] == parameter
    if status == 400 and error == "syntax_error":
        assert isinstance(body["position"], int)


def test_measures_hint(client: FlaskClient) -> None:
    body = get_json(client, f"{HB}/aggregate?measures=claimants", status=400)
    assert "aggregates=" in body["hint"]


def test_405_lists_allowed_methods(client: FlaskClient) -> None:
    resp = client.post(f"{HB}/aggregate")
    assert resp.status_code == 405
    body = orjson.loads(resp.get_data())
    check_error(body, "method_not_allowed")
    assert "GET" in resp.headers["Allow"] and "GET" in body["hint"]


def test_unexpected_error_is_generic_500(client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internal detail /var/lib/warehouse")

    monkeypatch.setattr(Gate, "aggregate", boom)
    with caplog.at_level(logging.ERROR, logger="statcube.server"):
        body = get_json(client, f"{HB}/aggregate?drilldown=geography:region&aggregates="
                                "claimants&order=claimants", status=500)
    assert body["error"] == "internal_error"
    assert "secret" not in orjson.dumps(body).decode()
    assert "Traceback" not in orjson.dumps(body).decode()
    logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the trace stays in the server log


def test_engine_unavailable_is_generic_503(client: FlaskClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: Any, **__: Any) -> Any:
        raise EngineUnavailableError("cannot reach db at postgres://user:pw@host")

    monkeypatch.setattr(Gate, "aggregate", down)
    body = get_json(client, f"{HB}/aggregate?drilldown=geography:country&aggregates=claimants"
                            "&order=claimants:desc", status=503)
    assert body["error"] == "engine_unavailable" and "pw@host" not in body["message"]


# --- no internal values anywhere ------------------------------------------------------------

def test_no_internal_columns_in_any_response(any_client: FlaskClient) -> None:
    urls = [f"{HB}/aggregate?drilldown=geography:region|tenure",
            f"{HB}/aggregate?drilldown=geography:region&order=weekly_award_mean:desc",
            f"{HB}/aggregate?drilldown=geography:la&having=claimants>10&top=2:claimants:"
            "geography", f"{HB}/aggregate?split=geography:E92000001&drilldown=geography:country",
            WITHHELD_URL, f"{HB}/members/geography?depth=3", f"{HB}/model", "/info",
            f"{HB}/cell?cut=geography:E92000001"]
    for url in urls:
        get_json(any_client, url)  # asserts internal_keys(body) == []
    for fmt in ("arrow", "parquet"):
        data = any_client.get(f"{WITHHELD_URL}&format={fmt}").get_data()
        table = pa.ipc.open_stream(data).read_all() if fmt == "arrow" else pq.read_table(
            pa.BufferReader(data))
        assert not [c for c in table.column_names if c.startswith("__")]


def test_access_log_holds_no_values(client: FlaskClient,
                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="statcube.access"):
        client.get(f"{HB}/aggregate?drilldown=geography:region", headers=REGISTERED)
    lines = [r.getMessage() for r in caplog.records if r.name == "statcube.access"]
    assert len(lines) == 1
    assert re.fullmatch(r"[0-9a-f]{16} GET /cube/housing_benefit/aggregate\?drilldown="
                        r"geography:region 200 [0-9.]+ms role=registered key=registered-user",
                        lines[0]), lines[0]
    assert KEYS["registered"] not in lines[0]


# --- auth ----------------------------------------------------------------------------------------

def test_keys_file_holds_only_hashes(app: Flask) -> None:
    svc = service(app)
    text = Path(svc.settings.api_keys or "").read_text(encoding="utf-8")
    for key in KEYS.values():
        assert key not in text
    assert text.count("hmac-sha256:") == 3


@pytest.mark.parametrize(("headers", "role"), [
    ({}, "guest"),
    ({"APIKey": KEYS["registered"]}, "registered"),
    ({"Authorization": f"Bearer {KEYS['prerelease']}"}, "prerelease"),
    ({"authorization": f"bearer {KEYS['admin']}"}, "admin"),
    ({"APIKey": KEYS["admin"], "Authorization": f"Bearer {KEYS['admin']}"}, "admin"),
])
def test_roles(client: FlaskClient, headers: dict[str, str], role: str) -> None:
    assert get_json(client, "/info", headers)["authentication"]["role"] == role


@pytest.mark.parametrize("headers", [
    {"APIKey": "sc_wrong"},
    {"APIKey": KEYS["registered"] + "x"},
    {"Authorization": "Bearer sc_wrong"},
    {"Authorization": f"Basic {KEYS['registered']}"},
    {"Authorization": "Bearer "},
    {"APIKey": " "},
    {"APIKey": KEYS["registered"], "Authorization": f"Bearer {KEYS['admin']}"},
])
def test_bad_keys_are_401(client: FlaskClient, headers: dict[str, str]) -> None:
    for url in ("/info", f"{HB}/aggregate", f"{HB}/model"):
        body = get_json(client, url, headers, status=401)
        assert body["error"] == "unauthorized"


def test_key_comparison_is_constant_time(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    # server.auth calls hmac.compare_digest through the hmac module: patched there
    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = service(app).keys
    for key in (KEYS["registered"], KEYS["admin"], "sc_nobody"):
        calls.clear()
        keys.lookup(key)
        assert len(calls) == len(keys.entries) == 3  # every entry, whether it matches or not


# --- size limits and rate limits ------------------------------------------------------------

def test_guest_over_size_is_413_naming_the_limit(small_app: Flask) -> None:
    client = small_app.test_client()
    url = f"{HB}/aggregate?drilldown=geography:la&aggregates=claimants"
    body = get_json(client, url, status=413)
    assert body["error"] == "too_large"
    assert "limit of 20 cells" in body["message"] and "guest" in body["message"]
    assert "35 cells" in body["message"]
    assert "pagesize=20" in body["hint"]
    reg = get_json(client, url, REGISTERED)
    assert len(reg["cells"]) == reg["total_cell_count"] == 35  # whole, not truncated
    # the registered request cached the table: the cache must not bypass the guest limit
    assert get_json(client, url, status=413)["error"] == "too_large"
    page = get_json(client, url + "&page=1&pagesize=20")
    assert page["cells"] == reg["cells"][20:35]
    over = get_json(client, url + "&pagesize=21", status=413)
    assert "limit of 20 cells" in over["message"]
    members = get_json(client, f"{HB}/members/geography?level=la", status=413)
    assert "members" in members["message"]


def test_report_total_counts_against_the_limit(small_app: Flask) -> None:
    client = small_app.test_client()
    q = {"drilldown": "geography:region", "aggregates": "claimants"}  # 11 cells each
    ok = client.post(f"{HB}/report", json={"queries": {"a": q}}, headers=PRERELEASE)
    assert ok.status_code == 200
    resp = client.post(f"{HB}/report", json={"queries": {"a": q, "b": q}})
    assert resp.status_code == 413
    check_error(orjson.loads(resp.get_data()), "too_large")
    # a report a registered user computed (cached) is still too large for a guest
    two = {"queries": {"a": q, "b": q}}  # 11 + 11 cells
    assert client.post(f"{HB}/report", json=two, headers=REGISTERED).status_code == 200
    again = client.post(f"{HB}/report", json=two)
    assert again.status_code == 413, again.get_data(as_text=True)


def test_rate_limit_429_with_headers(rate_app: Flask) -> None:
    client = rate_app.test_client()
    statuses = []
    for _ in range(6):
        resp = client.get("/version", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        statuses.append(resp.status_code)
        assert resp.headers["X-RateLimit-Limit"] == "4"
        assert int(resp.headers["X-RateLimit-Remaining"]) >= 0
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
    assert statuses == [200, 200, 200, 200, 429, 429]
    body = orjson.loads(resp.get_data())
    check_error(body, "rate_limited")
    assert "4 per 1 minute" in body["message"]
    assert int(resp.headers["Retry-After"]) > 0
    # another client IP, and a keyed user, have their own budgets
    assert client.get("/version", environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 200
    keyed = client.get("/version", headers=REGISTERED,
                       environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert keyed.status_code == 200 and keyed.headers["X-RateLimit-Limit"] == "6"


def test_cors(small_app: Flask, client: FlaskClient) -> None:
    small = small_app.test_client()
    origin = {"Origin": "https://maps.example.org"}
    resp = small.get(f"{HB}/model", headers=origin, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://maps.example.org"
    assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
    pre = small.options(f"{HB}/aggregate", headers={
        **origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "APIKey"}, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert pre.status_code == 200
    assert "apikey" in pre.headers["Access-Control-Allow-Headers"].lower()
    other = small.get(f"{HB}/model", headers={"Origin": "https://evil.example"},
                      environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get(f"{HB}/model", headers=origin).headers


# --- releases and embargo ------------------------------------------------------------------------

def _all_responses(client: FlaskClient, headers: dict[str, str], release: str = ""
                   ) -> list[bytes]:
    """Every endpoint, with time in many shapes, for one role and (optionally) release."""

    def r(url: str) -> str:
        return url if not release else url + ("&" if "?" in url else "?") + f"release={release}"

    urls = ["/info", r("/cubes"), r(f"{HB}/model"), r("/cube/nino_registrations/model"),
            r(f"{HB}/members/time?depth=3"), r(f"{HB}/members/time?hierarchy=ym&level=month"),
            r(f"{HB}/members/time?depth=2"), r(f"{HB}/members/time?depth=1"),
            r(f"{HB}/aggregate?drilldown=time:month"),
            r(f"{HB}/aggregate?drilldown=time:month&cut=time:2026"),
            r(f"{HB}/aggregate?drilldown=geography:region"),
            r(f"{HB}/aggregate?cut=time:2026,4,11"),
            r(f"{HB}/aggregate?drilldown=time@ym:month&format=csv&header=labels"),
            r(f"{HB}/cell?cut=time:2026,4,11|time@ym:2026,10"),
            r("/cube/nino_registrations/aggregate?drilldown=time:quarter"),
            r("/cube/nino_registrations/members/time?depth=2"),
            r("/cube/sanctions/aggregate?drilldown=time@ym:month&format=arrow"),
            r("/cube/sanctions/aggregate?drilldown=time@ym:month&format=parquet"),
            f"{HB}/aggregate?drilldown=time:month&release=2027-02",
            f"{HB}/members/time?depth=3&release=2027-02"]
    out = []
    for url in urls:
        resp = client.get(url, headers=headers)
        assert resp.status_code in (200, 404), (url, resp.get_data(as_text=True))
        out.append(resp.get_data())
    report = client.post(r(f"{HB}/report"), headers=headers, json={"queries": {
        "m": {"query": "members", "dimension": "time", "depth": 3},
        "a": {"drilldown": "time:month"}, "c": {"query": "cell", "cut": "time:2026,4,10"}}})
    assert report.status_code == 200
    out.append(report.get_data())
    return out


@pytest.mark.parametrize("headers", [GUEST, REGISTERED], ids=["guest", "registered"])
def test_embargoed_periods_never_appear(any_client: FlaskClient, headers: dict[str, str]) -> None:
    for release, newest, hidden_too in (("", "Aug 2026", ()), ("2026-11", "Aug 2026", ()),
                                        ("2026-08", "Jun 2026", ("Jul 2026", "Aug 2026"))):
        bodies = _all_responses(any_client, headers, release)
        everything = b"".join(bodies).decode("utf-8", errors="replace")
        assert newest in everything  # the scan below is not vacuous
        for label in hidden_too:
            assert label not in everything
        for body in bodies:
            text = body.decode("utf-8", errors="replace")
            # the one place the future id may appear: the any_client's own value, echoed
            text = text.replace('"value":"2027-02"', "").replace("release '2027-02'", "")
            # release ids are publication months: "2026-11" names a release, not data
            for key in ("id", "release", "default_release"):
                text = text.replace(f'"{key}":"2026-11"', "")
            text = re.sub(r'"published":"[^"]*"', "", text)  # publication dates are public
            for hidden in (*EMBARGOED_LABELS, *EMBARGOED_MONTHS, "2027-02", "202609",
                           "202610", "202611", "2026-Q3", "2026-Q4"):
                assert hidden not in text, (release, hidden, text[:300])


def test_embargoed_release_is_reported_as_unknown(client: FlaskClient) -> None:
    future = get_json(client, f"{HB}/aggregate?release=2027-02", status=404)
    never = get_json(client, f"{HB}/aggregate?release=2031-02", status=404)
    for body, value in ((future, "2027-02"), (never, "2031-02")):
        assert body["error"] == "not_found" and body["parameter"] == "release"
        assert body["message"] == f"unknown release {value!r}"
        assert "2027-02" not in (body["hint"] or "")


def test_embargoed_month_looks_like_a_missing_month(any_client: FlaskClient) -> None:
    for month in ("2026,4,11", "2026,4,12"):  # embargoed vs not in the warehouse at all
        body = get_json(any_client, f"{HB}/aggregate?cut=time:{month}&drilldown=tenure")
        assert body["cells"] == [] and body["total_cell_count"] == 0
        assert body["summary"]["claimants"] == 0
    for month in ("2026,4,11", "2026,4,12"):  # both: no such member (Cubes: null)
        cell = get_json(any_client, f"{HB}/cell?cut=time:{month}")
        assert cell["cuts"][0]["details"] is None


def test_prerelease_sees_the_future_release(any_client: FlaskClient) -> None:
    for headers in (PRERELEASE, ADMIN):
        months = get_json(any_client, f"{HB}/members/time?depth=3&release=2027-02", headers)
        assert [m["time.month_label"] for m in months["data"]][-3:] == list(EMBARGOED_LABELS[:3])
        agg = get_json(any_client, f"{HB}/aggregate?drilldown=time:month&release=2027-02", headers)
        assert agg["release"] == "2027-02" and len(agg["cells"]) == 6
        cell = get_json(any_client, f"{HB}/cell?cut=time:2026,4,11&release=2027-02", headers)
        assert cell["cuts"][0]["details"][2] == {"time.month": 11, "time.month_label": "Nov 2026",
                                                 "_key": 11, "_label": "Nov 2026"}
        model = get_json(any_client, f"{HB}/model?release=2027-02", headers)
        assert model["latest_period"] == "2026-11"
    default = get_json(any_client, f"{HB}/aggregate?drilldown=time:month", PRERELEASE)
    assert default["release"] == "2026-11" and len(default["cells"]) == 3


def test_older_release_sees_less(any_client: FlaskClient) -> None:
    body = get_json(any_client, f"{HB}/members/time?depth=3&release=2026-08")
    assert [m["time.month_label"] for m in body["data"]] == ["Jun 2026"]
    assert get_json(any_client, f"{HB}/model?release=2026-08")["latest_period"] == "2026-06"


def test_publication_moment(warehouse: Path, tmp_path: Path) -> None:
    """The 2026-11 release appears at 09:30 London time on 10 November, not a minute before."""
    from datetime import datetime

    from cube.releases import LONDON

    for minute, expected in ((29, "2026-08"), (30, "2026-11")):
        cal, _ = write_config(tmp_path / str(minute), relative=False)
        app = create_app(Settings(model=str(ROOT / "model.json"), warehouse=str(warehouse),
                                  releases=str(cal)),
                         clock=lambda m=minute: datetime(2026, 11, 10, 9, m, tzinfo=LONDON))
        try:
            assert get_json(app.test_client(), "/info")["default_release"] == expected
        finally:
            service(app).releases.close()


# --- caching ----------------------------------------------------------------------------------

def test_etag_304_and_cache_control(client: FlaskClient) -> None:
    url = f"{HB}/aggregate?drilldown=geography:region"
    first = client.get(url)
    tag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert first.headers["Cache-Control"] == "public, no-cache"  # "latest" moves
    assert first.headers["Vary"] == "Accept, APIKey, Authorization"
    assert first.headers["X-Statcube-Release"] == "2026-11"
    again = client.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == tag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    # "*" matches any current representation (RFC 9110 §13.1.2): 304, as on downloads
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    explicit = client.get(url + "&release=2026-11")
    assert explicit.headers["Cache-Control"] == "public, max-age=86400"
    assert explicit.get_data() == first.get_data()
    future = client.get(url + "&release=2027-02", headers=PRERELEASE)
    assert future.headers["Cache-Control"] == "private, no-store"
    assert len({first.headers["ETag"], client.get(url + "&format=csv").headers["ETag"],
                client.get(url + "&prettyprint=1").headers["ETag"],
                client.get(url + "&release=2026-08").headers["ETag"]}) == 4
    err = client.get(f"{HB}/aggregate?drilldown=nope")
    assert err.headers["Cache-Control"] == "no-store" and "ETag" not in err.headers


def test_lru_serves_repeats_without_the_gate(app: Flask, client: FlaskClient,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{HB}/aggregate?drilldown=geography:region|tenure&order=claimants:desc"
    first = client.get(url)
    calls: list[int] = []
    real = Gate.aggregate

    def counting(self: Gate, *a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(Gate, "aggregate", counting)
    hits = service(app).cache.hits
    second = client.get(url)
    assert second.get_data() == first.get_data() and calls == []
    assert service(app).cache.hits == hits + 1
    client.get(url + "&aggregates=claimants")
    assert calls == [1]
    csv1 = client.get(url + "&format=csv").get_data()  # streamed, then cached
    assert client.get(url + "&format=csv").get_data() == csv1 and calls == [1, 1]


def test_cache_is_bounded(warehouse: Path, tmp_path: Path) -> None:
    app = make_app(warehouse, tmp_path, cache_bytes=80_000)
    try:
        c = app.test_client()
        for dim in ("tenure", "age_band", "family_type", "passported", "spare_room",
                    "geography:region", "geography:la"):
            assert c.get(f"{HB}/aggregate?drilldown={dim}").status_code == 200
        stats = service(app).cache.stats()
        assert 0 < stats["bytes"] <= 80_000
    finally:
        service(app).releases.close()


# --- OpenAPI -------------------------------------------------------------------------------------

def test_openapi_describes_every_route_and_parameter(app: Flask, client: FlaskClient) -> None:
    doc = get_json(client, "/openapi.json")
    assert doc["openapi"] == "3.1.0"
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule) for r in app.url_map.iter_rules()
              if r.endpoint != "static"}
    assert routes == set(doc["paths"])
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            endpoint = op["operationId"].removesuffix("_post")
            endpoint = {"fact": "facts", "fact_short": "facts"}.get(endpoint, endpoint)
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if endpoint in statxplore.QUERY_PARAMS:  # the Stat-Xplore API's own parameters
                assert names == set(statxplore.QUERY_PARAMS[endpoint]), (path, method)
                continue
            expected = set(ENDPOINT_PARAMS[endpoint]) | {
                a for n in ENDPOINT_PARAMS[endpoint] for a in PARAMS[n].aliases}
            if method == "post":
                expected.discard("queries")
            assert names == expected, (path, method)
            assert "200" in op["responses"] or "403" in op["responses"]
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}
    assert doc["paths"]["/cube/{cube}/aggregate"]["get"]["responses"]["200"]["content"].keys() \
        == {"application/json", "text/csv", "application/vnd.apache.arrow.stream",
            "application/vnd.apache.parquet", "application/geo+json"}


# --- the README documents the server -----------------------------------------------------

SERVER_SETTINGS = ("releases", "api_keys", "api_key_pepper", "max_cells_guest",
                   "max_cells_registered", "max_cells_prerelease", "max_cells_admin",
                   "rate_limit_guest", "rate_limit_registered", "rate_limit_prerelease",
                   "rate_limit_admin", "rate_limit_storage", "cache_bytes", "cache_max_age",
                   "cors_origins", "host", "port", "workers", "threads", "proxy_hops",
                   "statement_timeout_ms")


@pytest.mark.unit
def test_readme_documents_every_parameter_route_and_setting() -> None:
    from cube.settings import SETTINGS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("<!-- section: server -->"):
                     readme.index("<!-- section: exports -->")]
    for name, param in PARAMS.items():
        assert f"`{name}`" in section, name
        for alias in param.aliases:
            assert f"`{alias}`" in section, alias
    for route in ("/version", "/info", "/cubes", "/cube/<cube>/model", "/cube/<cube>/aggregate",
                  "/cube/<cube>/members/<dim>", "/cube/<cube>/cell", "/cube/<cube>/report",
                  "/cube/<cube>/facts", "/fact/<id>", "/openapi.json"):
        assert route in section, route
    config = readme[readme.index("<!-- section: config -->"):
                    readme.index("<!-- section: bench -->")]
    by_name = {s.name: s for s in SETTINGS}
    for name in SERVER_SETTINGS:
        s = by_name[name]
        default = "—" if s.default is None else f"`{s.default}`"
        assert f"| `{s.env}` | {default} |" in config, s.env


# --- key tool and gunicorn configuration ----------------------------------------------------

@pytest.mark.unit
def test_new_key_tool_writes_an_entry_that_authenticates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from server.auth import KeyStore, Role, main

    monkeypatch.setenv("STATCUBE_API_KEY_PEPPER", PEPPER)
    assert main(["new", "--id", "maps-team", "--role", "registered"]) == 0
    out, err = capsys.readouterr()
    key = err.split(": ")[-1].strip()
    assert key.startswith("sc_") and key not in out
    path = tmp_path / "keys.toml"
    path.write_text(out, encoding="utf-8")
    principal = KeyStore.load(path, PEPPER).authenticate({"APIKey": key})
    assert (principal.role, principal.key_id) == (Role.REGISTERED, "maps-team")
    monkeypatch.setenv("STATCUBE_API_KEY_PEPPER", "short")
    assert main(["new", "--id", "x", "--role", "admin"]) == 2


@pytest.mark.unit
@pytest.mark.parametrize(("text", "message"), [
    ('[[key]]\nid = "a"\nrole = "guest"\nhash = "hmac-sha256:' + "0" * 64 + '"\n', "guest"),
    ('[[key]]\nid = "a"\nrole = "boss"\nhash = "x"\n', "role must be"),
    ('[[key]]\nid = "a"\nrole = "admin"\nhash = "sha1:abc"\n', "hash must be"),
    ('[[key]]\nid = "a"\nrole = "admin"\n', "exactly id, role and hash"),
    ("[[key]\n", "does not parse"),
])
def test_bad_keys_files(tmp_path: Path, text: str, message: str) -> None:
    from cube.errors import ConfigError
    from server.auth import KeyStore

    path = tmp_path / "keys.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        KeyStore.load(path, PEPPER)
    with pytest.raises(ConfigError, match="pepper"):
        KeyStore.load(path, None)


@pytest.mark.unit
def test_gunicorn_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from server.run import StatcubeServer, worker_count

    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert worker_count(Settings()) == 6  # one per core by default
    assert worker_count(Settings(workers=3)) == 3
    cfg = StatcubeServer(Settings(host="127.0.0.1", port=0, workers=2, threads=4)).cfg
    assert cfg.bind == ["127.0.0.1:0"] and cfg.workers == 2 and cfg.threads == 4
    assert cfg.worker_class_str == "server.workers.StatcubeThreadWorker"  # gthread, JSON errors
    assert cfg.preload_app is False  # app per worker
    assert StatcubeServer(Settings(threads=1)).cfg.worker_class_str == \
        "server.workers.StatcubeSyncWorker"


def test_lang_cy_gives_welsh_labels_and_the_same_values(client: FlaskClient) -> None:
    """Cubes' ``lang=``: labels in Welsh where the warehouse keeps them (Welsh areas), English
    elsewhere; codes, values and cell counts never change; each language has its own ETag."""
    url = f"{HB}/aggregate?drilldown=geography:la&cut=geography:W92000004"
    english = get_json(client, url)
    welsh = client.get(url + "&lang=cy_GB")
    assert welsh.status_code == 200
    body = orjson.loads(welsh.get_data())
    assert len(body["cells"]) == len(english["cells"]) > 0
    changed = 0
    for cy, en in zip(body["cells"], english["cells"], strict=True):
        assert {k: v for k, v in cy.items() if not k.endswith("_name")} == \
            {k: v for k, v in en.items() if not k.endswith("_name")}
        changed += cy["geography.la_name"] != en["geography.la_name"]
    assert changed == len(body["cells"])  # every Welsh LA has a Welsh name
    assert welsh.headers["ETag"] != client.get(url).headers["ETag"]
    assert get_json(client, url + "&lang=en") == english  # the model's own language
    assert get_json(client, url + "&lang=fr")["cells"] == english["cells"]  # not offered
    members = get_json(client, f"{HB}/members/geography?level=la&cut=geography:W92000004"
                               "&lang=cy")["data"]
    assert {m["geography.la_name"] for m in members} == \
        {c["geography.la_name"] for c in body["cells"]}
    england = get_json(client, f"{HB}/aggregate?drilldown=geography:region&lang=cy")
    assert "North East" in {c["geography.region_name"] for c in england["cells"]}


def test_lang_cy_translates_cell_details_too(client: FlaskClient) -> None:
    """/cell (Cubes' cell details) follows ``lang=`` like aggregates and members."""
    las = get_json(client, f"{HB}/members/geography?level=la&cut=geography:W92000004")["data"]
    la = las[0]["geography.la_code"]
    url = f"{HB}/cell?cut=geography:W92000004,W92000004,{la}"
    english = get_json(client, url)["cuts"][0]["details"]
    welsh = get_json(client, url + "&lang=cy")["cuts"][0]["details"]
    assert [e["_key"] for e in welsh] == [e["_key"] for e in english]
    assert welsh[0]["_label"] == "Cymru" and welsh[2]["_label"] != english[2]["_label"]
    assert welsh[2]["geography.la_name"] == welsh[2]["_label"]
