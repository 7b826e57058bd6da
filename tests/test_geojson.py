"""GeoJSON output: /aggregate?format=geojson over the Flask test client, against the JSON API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from shapely.geometry import shape

from cube.settings import Settings
from server.app import create_app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
HB = "/cube/housing_benefit/aggregate"


@pytest.fixture(scope="module")
def client(warehouse: Path) -> Iterator[FlaskClient]:
    app: Flask = create_app(Settings(model=str(ROOT / "model.json"), warehouse=str(warehouse),
                                     rate_limit_guest="100000/minute"))
    yield app.test_client()


@pytest.mark.parametrize("level", ["country", "region", "la"])
@pytest.mark.parametrize("query", ["aggregates=claimants|weekly_award_mean",
                                   "cut=tenure:private&aggregates=weekly_award_sum"])
def test_geojson_features_carry_the_json_api_values(client: FlaskClient, level: str,
                                                    query: str) -> None:
    url = f"{HB}?drilldown=geography:{level}&{query}"
    geo = client.get(url + "&format=geojson")
    assert geo.status_code == 200
    assert geo.headers["Content-Type"] == "application/geo+json"
    fc = json.loads(geo.data)
    cells = client.get(url).get_json()["cells"]
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == len(cells) > 0
    by_code = {c[f"geography.{level}_code"]: c for c in cells}
    for f in fc["features"]:
        assert f["type"] == "Feature"
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert shape(f["geometry"]).is_valid
        props = f["properties"]
        cell = by_code[props["code"]]
        assert props["name"] == cell[f"geography.{level}_name"]
        for key, value in cell.items():
            if not key.startswith("geography."):
                assert props[key] == value, (props["code"], key)
    # Accept header works too.
    again = client.get(url, headers={"Accept": "application/geo+json"})
    assert json.loads(again.data)["features"] == fc["features"]


def test_geojson_without_boundaries_or_with_other_drilldowns_is_a_clear_400(
        client: FlaskClient) -> None:
    resp = client.get(f"{HB}?drilldown=geography:msoa&format=geojson")
    body = resp.get_json()
    assert resp.status_code == 400
    assert "no boundaries" in body["message"] and "la" in body["hint"]
    resp = client.get(f"{HB}?drilldown=geography:la|tenure&format=geojson")
    assert resp.status_code == 400
    assert "geography only" in resp.get_json()["message"]
    resp = client.get(f"{HB}?drilldown=tenure&format=geojson")
    assert resp.status_code == 400


def test_map_page_is_served_with_its_configuration(client: FlaskClient) -> None:
    resp = client.get("/map")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    config = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert config["levels"] == ["country", "la", "region"]
    assert "protect confidentiality" in html
    for asset in ("/static/map.js", "/static/map.css"):
        with client.get(asset) as served:
            assert served.status_code == 200 and len(served.data) > 500
    # No external scripts or styles: everything the page needs is served here.
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
