"""The Stat-Xplore Open Data API (/webapi/rest/v1) through Flask's test client, on the session
warehouse and the test calendar (releases 2026-08 and 2026-11 published, 2027-02 not).

Requests have the shapes the public clients send — the House of Commons Library's
``statxplorer`` (POST /table with recodes and totals, ``APIKey`` header), ``dwpstat`` (GET
/schema/<id> walks, /rate_limit read from the headers, POST to ``table/`` with several fields
in one dimension), Python harvesters (walking ``location`` URLs). Every value is checked
against the Slicer API's value for the same cell, for the same key and release: the two APIs
are two doors to one gate.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_server_support import KEYS, check_error, internal_keys, make_app

from cube.geography import WELSH_NAME_COLUMNS
from server.app import service

pytestmark = pytest.mark.integration

API = "/webapi/rest/v1"
REGISTERED = {"APIKey": KEYS["registered"]}
PRERELEASE = {"APIKey": KEYS["prerelease"]}
HB = "housing_benefit:fact_housing_benefit"
SAN = "sanctions:fact_sanctions"


@pytest.fixture(scope="module")
def app(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = make_app(warehouse, tmp_path_factory.mktemp("sx"))
    yield app
    service(app).releases.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, url: str, headers: dict[str, str] | None = None,
        status: int = 200) -> Any:
    resp = client.get(url, headers=REGISTERED if headers is None else headers)
    assert resp.status_code == status, (url, resp.get_data(as_text=True))
    assert resp.mimetype == "application/json"
    body = orjson.loads(resp.get_data())
    assert internal_keys(body) == []
    if status >= 400:
        check_error(body)
    return body


def table(client: FlaskClient, query: Any, headers: dict[str, str] | None = None,
          status: int = 200, url: str = f"{API}/table") -> Any:
    resp = client.post(url, headers=REGISTERED if headers is None else headers,
                       data=orjson.dumps(query), content_type="application/json")
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = orjson.loads(resp.get_data())
    assert internal_keys(body) == []
    if status >= 400:
        check_error(body)
    return body


def slicer(client: FlaskClient, cube: str, cut: str, aggregates: list[str],
           headers: dict[str, str] | None = None, release: str = "") -> dict[str, Any]:
    """The Slicer API's published value of one cell (its summary)."""
    url = f"/cube/{cube}/aggregate?aggregates={'|'.join(aggregates)}"
    if cut:
        url += f"&cut={cut}"
    if release:
        url += f"&release={release}"
    return dict(get(client, url, headers)["summary"])


def value(db: str, field: str, level: str, code: str) -> str:
    return f"str:value:{db}:{field}:{level}:{code}"


def flat(values: Any) -> list[Any]:
    if not isinstance(values, list):
        return [values]
    return [v for x in values for v in flat(x)]


# --- info, rate limits, keys ---------------------------------------------------------------

def test_info_lists_english_and_welsh(client: FlaskClient) -> None:
    body = get(client, f"{API}/info")
    assert [lang["locale"] for lang in body["languages"]] == ["en", "cy"]


def test_rate_limit_headers_on_every_response(client: FlaskClient) -> None:
    for resp in (client.get(f"{API}/rate_limit", headers=REGISTERED),
                 client.get(f"{API}/schema", headers=REGISTERED),
                 client.get(f"{API}/schema/str:database:nope", headers=REGISTERED),
                 client.post(f"{API}/table", headers=REGISTERED, json={})):
        assert resp.headers["X-RateLimit"] == "100000"
        assert int(resp.headers["X-RateLimit-Remaining"]) < 100000
        reset = int(resp.headers["X-RateLimit-Reset"])
        assert reset > 10**12 and reset % 1000 == 0  # epoch milliseconds, as dwpstat reads
    body = get(client, f"{API}/rate_limit")
    assert body["limit"] == 100000 and 0 < body["remaining"] < 100000
    assert body["reset"] > 10**12
    # The Slicer API keeps flask-limiter's seconds.
    assert int(client.get("/version").headers["X-RateLimit-Reset"]) < 10**11


def test_keys_as_on_the_slicer_api(client: FlaskClient) -> None:
    bad = get(client, f"{API}/schema", {"APIKey": "sc_not_a_key"}, status=403)
    assert bad["error"] == "forbidden" and bad["parameter"] == "APIKey"
    assert get(client, f"{API}/info", {"APIKey": "wrong"}, status=403)["error"] == "forbidden"
    # No key: the guest role, with the guest's limits (documented deviation).
    guest = get(client, f"{API}/schema", {})
    assert guest["id"] == "str:folder:root"


def test_guest_table_limit_is_422_naming_it(warehouse: Path, tmp_path: Path) -> None:
    small = make_app(warehouse, tmp_path, max_cells_guest=20).test_client()
    query = {"database": "str:database:housing_benefit",
             "measures": [f"str:count:{HB}"],
             "dimensions": [[f"str:field:{HB}:tenure"], [f"str:field:{HB}:age_band"]]}
    body = table(small, query, {}, status=422)
    assert body["error"] == "too_large" and "limit of 20 cells" in body["message"]
    assert table(small, query, REGISTERED)["cubes"]


def test_rate_limit_429_keeps_its_status(warehouse: Path, tmp_path: Path) -> None:
    limited = make_app(warehouse, tmp_path, rate_limit_registered="2/minute").test_client()
    statuses = [limited.get(f"{API}/info", headers=REGISTERED).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    resp = limited.get(f"{API}/info", headers=REGISTERED)
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert int(resp.headers["X-RateLimit-Reset"]) > 10**12


# --- schema ---------------------------------------------------------------------------------

def _path(location: str) -> str:
    return location.removeprefix("http://localhost")


def test_schema_walk_follows_locations(client: FlaskClient) -> None:
    """A harvester's walk: root → folders → databases → fields/measures → value sets."""
    seen: dict[str, str] = {}
    todo = [f"{API}/schema"]
    while todo:
        node = get(client, todo.pop())
        assert set(node) == {"id", "label", "location", "type", "children"}
        assert _path(node["location"]).endswith(node["id"])
        seen[node["id"]] = node["type"]
        for child in node["children"]:
            assert set(child) == {"id", "label", "location", "type"}
            seen[child["id"]] = child["type"]
            if child["type"] in ("FOLDER", "DATABASE", "FIELD", "MEASURE"):
                todo.append(_path(child["location"]))
    assert seen["str:database:pip"] == "DATABASE"
    assert seen[f"str:count:{HB}"] == "COUNT"
    assert seen[f"str:statfn:{HB}:weekly_award:MEAN"] == "STATFN"
    assert seen[f"str:statfn:{HB}:weekly_award:SUM"] == "STATFN"
    assert seen[f"str:field:{HB}:geography.constituency"] == "FIELD"
    assert seen[f"str:valueset:{HB}:geography:oa"] == "VALUESET"
    assert seen[f"str:valueset:{HB}:time:month"] == "VALUESET"
    node = get(client, f"{API}/schema/str:field:{HB}:geography")
    assert node["label"] == "Country - Region - Local authority - MSOA - LSOA - Output area"
    assert [c["label"] for c in node["children"]] == [
        "Country", "Region", "Local authority", "MSOA", "LSOA", "Output area"]


def test_schema_pages_with_link_next(client: FlaskClient) -> None:
    """Long child lists come a page at a time, the next page in a Link header; together the
    pages are the members the Slicer API lists."""
    url: str | None = f"{API}/schema/str:valueset:{HB}:geography:la?limit=7"
    codes: list[str] = []
    pages = 0
    while url:
        resp = client.get(url, headers=REGISTERED)
        assert resp.status_code == 200
        body = orjson.loads(resp.get_data())
        assert all(c["type"] == "VALUE" for c in body["children"])
        codes += [c["id"].rsplit(":", 1)[1] for c in body["children"]]
        link = resp.headers.get("Link")
        url = _path(link.split(">")[0].lstrip("<")) if link else None
        assert link is None or link.endswith('rel="next"')
        pages += 1
    members = get(client, "/cube/housing_benefit/members/geography?level=la")["data"]
    assert codes == [m["geography.la_code"] for m in members]
    assert pages == -(-len(codes) // 7) > 1
    one = get(client, f"{API}/schema/{value(HB, 'geography', 'la', codes[0])}")
    assert one["type"] == "VALUE" and one["label"] == members[0]["geography.la_name"]
    assert one["children"] == []


def test_schema_follows_the_release_and_its_embargo(client: FlaskClient) -> None:
    def months(headers: dict[str, str], query: str = "") -> list[str]:
        node = get(client, f"{API}/schema/str:valueset:{HB}:time:month{query}", headers)
        return [c["id"].rsplit(":", 1)[1] for c in node["children"]]

    assert months(REGISTERED) == ["202606", "202607", "202608"]
    assert months(REGISTERED, "?release=2026-08") == ["202606"]
    assert months({**REGISTERED, "X-Statcube-Release": "2026-08"}) == ["202606"]
    assert months(PRERELEASE, "?release=2027-02")[-1] == "202611"
    get(client, f"{API}/schema/str:valueset:{HB}:time:month?release=2027-02", status=422)
    node = get(client, f"{API}/schema/str:database:pip?release=2026-08")
    assert node["location"].endswith("str:database:pip?release=2026-08")
    get(client, f"{API}/schema/{value(HB, 'time', 'month', '202611')}", status=422)


@pytest.mark.parametrize(("ident", "parameter"), [
    ("str:database:nope", "id"), ("str:valueset:pip:fact_pip:geography:ward", "id"),
    ("str:field:pip:fact_wrong:geography", "id"), ("nonsense", "id"),
    (value(HB, "geography", "la", "E06999999"), "id"),
    (f"str:statfn:{HB}:weekly_award:MEDIAN", "id")])
def test_unknown_ids_are_422(client: FlaskClient, ident: str, parameter: str) -> None:
    body = get(client, f"{API}/schema/{ident}", status=422)
    assert body["parameter"] == parameter and body["value"] == ident


# --- tables -------------------------------------------------------------------------------

def _region(code: str) -> str:
    country = {"W": "W92000004", "S": "S92000003"}.get(code[0], "E92000001")
    return f"{country},{code}"


def test_table_with_recodes_totals_and_statfns_equals_the_slicer(client: FlaskClient) -> None:
    """statxplorer's shape: a recoded geography with a grouped item and a Total, an unrecoded
    category, two statfns beside the count; every value the Slicer API's for the cell."""
    geo = f"str:field:{HB}:geography"
    query: dict[str, Any] = {
        "database": "str:database:housing_benefit",
        "measures": [f"str:count:{HB}", f"str:statfn:{HB}:weekly_award:MEAN",
                     f"str:statfn:{HB}:weekly_award:SUM"],
        "recodes": {geo: {"map": [[value(HB, "geography", "region", "E12000007")],
                                  [value(HB, "geography", "region", "E12000001"),
                                   value(HB, "geography", "region", "E12000002")]],
                          "total": True}},
        "dimensions": [[geo], [f"str:field:{HB}:tenure"]],
    }
    body = table(client, query)
    assert body["query"] == query
    assert body["database"]["id"] == "str:database:housing_benefit"
    assert [m["uri"] for m in body["measures"]] == query["measures"]
    geo_items, tenure_items = (f["items"] for f in body["fields"])
    assert [i["type"] for i in geo_items] == ["RecodeItem", "RecodeItem", "Total"]
    assert geo_items[0]["labels"] == ["London"]
    assert geo_items[1]["labels"] == ["North East + North West"]
    assert geo_items[1]["uris"] == query["recodes"][geo]["map"][1]
    assert "uris" not in geo_items[2] and geo_items[2]["labels"] == ["Total"]
    tenures = [i["uris"][0].rsplit(":", 1)[1] for i in tenure_items]
    assert tenures == ["social_la", "social_ha", "private", "other"]
    geo_cuts = ["geography:" + _region("E12000007"),
                "geography:" + ";".join(_region(c) for c in ("E12000001", "E12000002")),
                "geography:" + ";".join(_region(c) for c in ("E12000007", "E12000001",
                                                            "E12000002"))]
    aggs = ["claimants", "weekly_award_mean", "weekly_award_sum"]
    for (gi, g), (ti, t) in itertools.product(enumerate(geo_cuts), enumerate(tenures)):
        want = slicer(client, "housing_benefit", f"{g}|tenure:{t}", aggs)
        for m, agg in zip(query["measures"], aggs, strict=True):
            assert body["cubes"][m]["values"][gi][ti] == want[agg], (g, t, agg)
    assert body["cubes"][query["measures"][0]]["precision"] == 0
    assert body["cubes"][query["measures"][1]]["precision"] == 2
    assert "statcube:period" in body["annotationMap"]  # a stock: the latest month


def test_values_flatten_in_the_documented_order(client: FlaskClient) -> None:
    """column, row, wafer; the last field varies fastest: a hand-built expectation."""
    tenure, age, month = (f"str:field:{HB}:{f}" for f in ("tenure", "age_band", "time"))
    query = {"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
             "recodes": {
                 tenure: {"map": [[value(HB, "tenure", "tenure", "private")],
                                  [value(HB, "tenure", "tenure", "social_la")]]},
                 age: {"map": [[value(HB, "age_band", "age_band", a)]
                               for a in ("16to24", "65plus", "25to34")]},
                 month: {"map": [[value(HB, "time", "month", m)] for m in ("202608", "202606")],
                         "total": False}},
             "dimensions": [[tenure], [age], [month]]}
    body = table(client, query)
    got = body["cubes"][f"str:count:{HB}"]["values"]

    def cell(t: str, a: str, m: str) -> Any:
        cut = f"tenure:{t}|age_band:{a}|time:2026,{(int(m) - 1) // 3 + 1},{int(m)}"
        return slicer(client, "housing_benefit", cut, ["claimants"])["claimants"]

    expected = [[[cell(t, a, m) for m in ("8", "6")] for a in ("16to24", "65plus", "25to34")]
                for t in ("private", "social_la")]
    assert got == expected
    assert len(flat(got)) == 2 * 3 * 2
    assert [f["uri"] for f in body["fields"]] == [tenure, age, month]
    assert [i["labels"][0] for i in body["fields"][2]["items"]] == ["Aug 2026", "Jun 2026"]


def test_wafer_and_several_fields_in_one_dimension(client: FlaskClient) -> None:
    """dwpstat's shape: POST to table/ with two fields in the column dimension and a wafer."""
    f = [f"str:field:{SAN}:{n}" for n in ("benefit", "outcome", "reason")]
    query = {"database": "str:database:sanctions", "measures": [f"str:count:{SAN}"],
             "dimensions": [[f[0], f[1]], [f[2]]]}
    body = table(client, query, url=f"{API}/table/")
    items = [[i["uris"][0].rsplit(":", 1)[1] for i in fld["items"]] for fld in body["fields"]]
    values = body["cubes"][f"str:count:{SAN}"]["values"]
    assert len(values) == len(items[0]) and len(values[0]) == len(items[1])
    assert len(values[0][0]) == len(items[2])
    for (i, b), (j, o), (k, r) in itertools.product(*(list(enumerate(x)) for x in items)):
        want = slicer(client, "sanctions", f"benefit:{b}|outcome:{o}|reason:{r}",
                      ["decisions"])
        assert values[i][j][k] == want["decisions"], (b, o, r)


def _members(client: FlaskClient, cube: str, query: str) -> list[dict[str, Any]]:
    return list(get(client, f"/cube/{cube}/members/geography?{query}")["data"])


def test_grouped_local_authorities_and_output_areas(client: FlaskClient) -> None:
    """Custom groups at LA level and of OAs: each the Slicer API's set cut (a sum of
    protected predefined cells), the Total their union."""
    las = _members(client, "sanctions", "level=la")[:3]
    la = las[0]
    oas = _members(client, "sanctions",
                   f"level=oa&pagesize=5&page=0&cut=geography:{la['geography.country_code']},"
                   f"{la['geography.region_code']},{la['geography.la_code']}")[:5]
    geo = f"str:field:{SAN}:geography"
    la_ids = [value(SAN, "geography", "la", m["geography.la_code"]) for m in las]
    oa_ids = [value(SAN, "geography", "oa", m["geography.oa_code"]) for m in oas]
    query = {"database": "str:database:sanctions",
             "measures": [f"str:count:{SAN}"],
             "recodes": {geo: {"map": [la_ids[:2], [la_ids[2]], oa_ids, [oa_ids[0]]],
                               "total": True}},
             "dimensions": [[geo]]}
    body = table(client, query)
    values = body["cubes"][f"str:count:{SAN}"]["values"]
    assert [i["type"] for i in body["fields"][0]["items"]] == ["RecodeItem"] * 4 + ["Total"]

    def path(m: dict[str, Any], oa: bool = False) -> str:
        p = f"{m['geography.country_code']},{m['geography.region_code']},{m['geography.la_code']}"
        if oa:
            p += f",{m['geography.msoa_code']},{m['geography.lsoa_code']},{m['geography.oa_code']}"
        return p

    cuts = [";".join(path(m) for m in las[:2]), path(las[2]),
            ";".join(path(m, True) for m in oas), path(oas[0], True),
            ";".join([*(path(m) for m in las), *(path(m, True) for m in oas)])]
    for got, cut in zip(values, cuts, strict=True):
        assert got == slicer(client, "sanctions", f"geography:{cut}", ["decisions"])[
            "decisions"], cut


def test_total_of_a_whole_field_is_the_predefined_total(client: FlaskClient) -> None:
    regions = _members(client, "pip", "level=region")
    geo = "str:field:pip:fact_pip:geography"
    query = {"database": "str:database:pip", "measures": ["str:count:pip:fact_pip"],
             "recodes": {geo: {"map": [[value("pip:fact_pip", "geography", "region",
                                              m["geography.region_code"])] for m in regions],
                               "total": True}},
             "dimensions": [[geo]]}
    values = table(client, query)["cubes"]["str:count:pip:fact_pip"]["values"]
    assert values[-1] == slicer(client, "pip", "", ["claimants"])["claimants"]
    assert values[:-1] == [slicer(client, "pip", f"geography:{_region(m['geography.region_code'])}",
                                  ["claimants"])["claimants"] for m in regions]


def test_release_is_selectable_and_embargoed_months_unknown(client: FlaskClient) -> None:
    month = f"str:field:{HB}:time"
    query: dict[str, Any] = {"database": "str:database:housing_benefit",
                             "measures": [f"str:count:{HB}"], "dimensions": [[month]]}
    latest = table(client, query)
    assert [i["labels"][0] for i in latest["fields"][0]["items"]] == [
        "Jun 2026", "Jul 2026", "Aug 2026"]
    older = client.post(f"{API}/table?release=2026-08", headers=REGISTERED, json=query)
    assert older.headers["X-Statcube-Release"] == "2026-08"
    june = orjson.loads(older.get_data())["cubes"][f"str:count:{HB}"]["values"]
    assert june == [slicer(client, "housing_benefit", "time:2026,2,6", ["claimants"],
                           release="2026-08")["claimants"]]
    query["recodes"] = {month: {"map": [[value(HB, "time", "month", "202610")]]}}
    body = table(client, query, status=422)
    assert body["value"] == value(HB, "time", "month", "202610")
    future = client.post(f"{API}/table?release=2027-02", headers=PRERELEASE, json=query)
    assert future.status_code == 200


@pytest.mark.parametrize(("query", "parameter"), [
    ({"database": "str:database:nope", "measures": [], "dimensions": []}, "database"),
    ({"database": "str:database:pip", "measures": [f"str:count:{HB}"],
      "dimensions": [["str:field:pip:fact_pip:gender"]]}, "measures[0]"),
    ({"database": "str:database:pip", "measures": ["str:count:pip:fact_pip"],
      "dimensions": [["str:field:pip:fact_pip:colour"]]}, "dimensions[0][0]"),
    ({"database": "str:database:housing_benefit",
      "measures": [f"str:statfn:{HB}:weekly_award:MEDIAN"],
      "dimensions": [[f"str:field:{HB}:tenure"]]}, "measures[0]"),
    ({"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
      "recodes": {f"str:field:{HB}:tenure": {"map": [[value(HB, "age_band", "age_band",
                                                           "65plus")]]}},
      "dimensions": [[f"str:field:{HB}:tenure"]]}, f"recodes.str:field:{HB}:tenure.map[0]"),
    ({"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
      "recodes": {f"str:field:{HB}:tenure": {"map": [[value(HB, "tenure", "tenure", "yurt")]]}},
      "dimensions": [[f"str:field:{HB}:tenure"]]}, f"recodes.str:field:{HB}:tenure.map[0]"),
    ({"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
      "recodes": {f"str:field:{HB}:tenure": {"map": [[value(HB, "tenure", "tenure", "other")]]}},
      "dimensions": [[f"str:field:{HB}:age_band"]]}, f"recodes.str:field:{HB}:tenure"),
    ({"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
      "dimensions": [[f"str:field:{HB}:geography"], [f"str:field:{HB}:geography.constituency"]]},
     "dimensions[1][0]"),
    ({"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
      "dimensions": [[f"str:field:{HB}:tenure"]], "format": "csv"}, "format"),
])
def test_bad_table_queries_are_422_naming_the_part(client: FlaskClient, query: Any,
                                                   parameter: str) -> None:
    body = table(client, query, status=422)
    assert body["parameter"] == parameter, body


def test_stock_total_over_months_is_refused(client: FlaskClient) -> None:
    month = f"str:field:{HB}:time"
    query = {"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
             "recodes": {month: {"map": [[value(HB, "time", "month", "202606")],
                                         [value(HB, "time", "month", "202607")]],
                                 "total": True}},
             "dimensions": [[month]]}
    assert table(client, query, status=422)["error"] == "non_additive"


def test_not_json_is_422(client: FlaskClient) -> None:
    resp = client.post(f"{API}/table", headers=REGISTERED, data=b"{nope",
                       content_type="application/json")
    assert resp.status_code == 422
    assert orjson.loads(resp.get_data())["parameter"] == "body"


def test_slicer_set_cut_of_every_region_is_the_total(client: FlaskClient) -> None:
    """Regression (found through this API): a custom group covering the whole dimension is
    tiled by the dimension itself; it was published as 0."""
    regions = _members(client, "pip", "level=region")
    cut = "geography:" + ";".join(_region(m["geography.region_code"]) for m in regions)
    assert slicer(client, "pip", cut, ["claimants"]) == slicer(client, "pip", "", ["claimants"])


def _names(warehouse: Path, level: str) -> dict[str, tuple[str, str | None]]:
    """Code → (English name, Welsh name or None) of a geography level, from the warehouse."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(f"SELECT DISTINCT {level}_code, {level}_name, {level}_name_cy "
                           "FROM dim_geography").fetchall()
    return {code: (en, cy) for code, en, cy in rows}


def _labels(client: FlaskClient, url: str, lang: str) -> tuple[dict[str, str], str]:
    resp = client.get(url, headers={**REGISTERED, "Accept-Language": lang})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    children = orjson.loads(resp.get_data())["children"]
    return ({c["id"].rsplit(":", 1)[1]: c["label"] for c in children},
            resp.headers["Content-Language"])


def test_accept_language_picks_the_label_language(client: FlaskClient,
                                                  warehouse: Path) -> None:
    """cy gives the lookups' Welsh names to Welsh areas and English names to the others
    (ONS names only Welsh areas in Welsh); en, or a language not offered, gives English."""
    url = f"{API}/schema/str:valueset:{HB}:geography:la?limit=1000"
    names = _names(warehouse, "la")
    en, en_lang = _labels(client, url, "en-GB,en;q=0.8")
    cy, cy_lang = _labels(client, url, "cy-GB,cy;q=0.9,en;q=0.5")
    fr, fr_lang = _labels(client, url, "fr")
    assert (en_lang, cy_lang, fr_lang) == ("en", "cy", "en")
    assert en == fr == {code: english for code, (english, _) in names.items()}
    welsh = {code for code in cy if code.startswith("W")}
    assert welsh and len(welsh) < len(cy)
    for code, label in cy.items():
        english, cymraeg = names[code]
        assert label == (cymraeg if code in welsh else english), code
        assert (label != english) == (code in welsh)  # the synthetic Welsh names all differ
    regions, _ = _labels(client, f"{API}/schema/str:valueset:{HB}:geography:region", "cy")
    assert regions["W92000004"] == "Cymru"
    assert regions["E12000007"] == "London" and regions["S92000003"] == "Scotland"
    code = sorted(welsh)[0]
    one = get(client, f"{API}/schema/{value(HB, 'geography', 'la', code)}",
              {**REGISTERED, "Accept-Language": "cy"})
    assert one["label"] == names[code][1]
    lsoas = _names(warehouse, "lsoa")
    page, _ = _labels(client, f"{API}/schema/str:valueset:{HB}:geography:lsoa?limit=5000", "cy")
    assert page and all(label == (lsoas[c][1] or lsoas[c][0]) for c, label in page.items())


def test_welsh_table_labels_and_the_same_values(client: FlaskClient, warehouse: Path) -> None:
    """A table in Welsh: predefined items of Welsh LAs in Welsh, English LAs in English, a
    group of both lists both names so, the Total is "Cyfanswm", an unrecoded geography field
    names Wales "Cymru"; every value is the English table's (language changes no number)."""
    names = _names(warehouse, "la")
    wales = sorted(c for c in names if c.startswith("W"))[:2]
    england = sorted(c for c in names if c.startswith("E"))[:1]
    geo, ids = f"str:field:{HB}:geography", {}
    for code in (*wales, *england):
        ids[code] = value(HB, "geography", "la", code)
    query = {"database": "str:database:housing_benefit", "measures": [f"str:count:{HB}"],
             "recodes": {geo: {"map": [[ids[wales[0]]], [ids[england[0]]],
                                       [ids[wales[1]], ids[england[0]]]], "total": True}},
             "dimensions": [[geo], [f"str:field:{HB}:tenure"]]}
    cy = table(client, query, {**REGISTERED, "Accept-Language": "cy"})
    en = table(client, query, {**REGISTERED, "Accept-Language": "en"})
    assert cy["cubes"] == en["cubes"] and cy["fields"][1] == en["fields"][1]
    labels = [item["labels"][0] for item in cy["fields"][0]["items"]]
    assert labels[0] == names[wales[0]][1] != names[wales[0]][0]
    assert labels[1] == names[england[0]][0]
    assert labels[2] == f"{names[wales[1]][1]} + {names[england[0]][0]}"
    assert labels[3] == "Cyfanswm"
    assert [i["labels"][0] for i in en["fields"][0]["items"]][:2] == [
        names[wales[0]][0], names[england[0]][0]]
    plain = {"database": "str:database:pip", "measures": ["str:count:pip:fact_pip"],
             "dimensions": [["str:field:pip:fact_pip:geography"]]}
    countries = {item["uris"][0].rsplit(":", 1)[1]: item["labels"][0] for item in
                 table(client, plain, {**REGISTERED, "Accept-Language": "cy"})["fields"][0][
                     "items"]}  # fmt: skip
    assert countries == {"E92000001": "England", "S92000003": "Scotland",
                         "W92000004": "Cymru"}


def test_a_warehouse_without_welsh_names_answers_cy_in_english(
        warehouse: Path, tmp_path: Path) -> None:
    """A warehouse built before the *_name_cy columns existed is still served: cy is
    accepted (Content-Language: cy) and every label is the English one."""
    old = tmp_path / "2026-11.duckdb"
    shutil.copy(warehouse, old)
    with duckdb.connect(str(old)) as con:
        for column in WELSH_NAME_COLUMNS.values():
            con.execute(f"ALTER TABLE dim_geography DROP COLUMN {column}")
    (tmp_path / "config").mkdir()
    app = make_app(old, tmp_path / "config")
    try:
        c = app.test_client()
        url = f"{API}/schema/str:valueset:{HB}:geography:la?limit=1000"
        cy, lang = _labels(c, url, "cy")
        en, _ = _labels(c, url, "en")
        assert lang == "cy" and cy == en
        regions, _ = _labels(c, f"{API}/schema/str:valueset:{HB}:geography:region", "cy")
        assert regions["W92000004"] == "Wales"
    finally:
        service(app).releases.close()
