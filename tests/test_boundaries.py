"""Boundaries: the synthetic hex cartogram and the loader for real GeoJSON/TopoJSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely.geometry import shape

from cube.boundaries import (
    hex_cartogram,
    load_boundaries,
    synthetic_areas,
    write_geojson,
)
from cube.errors import InputDataError
from cube.synthetic import COUNTRIES, REGIONS, make_geography

pytestmark = pytest.mark.unit

REGION_INFO = {r[0]: (r[1], r[2]) for r in REGIONS}


def _las(scale: float) -> list[tuple[str, str, str]]:
    geo = make_geography(scale, 11)
    return [(c, n, REGIONS[r][0]) for c, n, r in
            zip(geo.la_codes, geo.la_names, geo.la_region.tolist(), strict=True)]


@pytest.mark.parametrize("scale", [0.002, 0.01, 0.2])
def test_cartogram_gives_every_area_one_polygon_without_overlaps(scale: float) -> None:
    las = _las(scale)
    areas = synthetic_areas(las, REGION_INFO, COUNTRIES)
    by_level = {lv: [a for a in areas if a.level == lv] for lv in ("la", "region", "country")}
    assert {a.code for a in by_level["la"]} == {c for c, _, _ in las}
    assert {a.code for a in by_level["region"]} == {r for _, _, r in las}
    assert {a.code for a in by_level["country"]} == {"E92000001", "W92000004", "S92000003"}
    shapes = [shape(a.geometry) for a in by_level["la"]]
    assert all(s.is_valid and s.area > 0 for s in shapes)
    for i, a in enumerate(shapes):  # hexagons may touch along edges but never overlap
        for b in shapes[i + 1:]:
            assert a.intersection(b).area < 1e-9
    # Regions are unions of their LAs, and sit roughly where they belong.
    assert all(shape(a.geometry).is_valid for a in areas)  # unions too, after rounding
    region = {a.code: shape(a.geometry) for a in by_level["region"]}
    assert region["S92000003"].centroid.y > region["E12000007"].centroid.y  # Scotland north
    assert region["W92000004"].centroid.x < region["E12000006"].centroid.x  # Wales west
    for code, _, reg in las:
        la = shape(next(a.geometry for a in by_level["la"] if a.code == code))
        assert region[reg].buffer(1e-6).contains(la)


def test_cartogram_is_deterministic() -> None:
    las = _las(0.01)
    assert hex_cartogram(las) == hex_cartogram(list(las))


def _known(las: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    return {"la": {c: n for c, n, _ in las}, "region": {k: v[0] for k, v in REGION_INFO.items()},
            "country": dict(COUNTRIES)}


def test_written_geojson_loads_back_completely(tmp_path: Path) -> None:
    las = _las(0.01)
    paths = write_geojson(synthetic_areas(las, REGION_INFO, COUNTRIES), tmp_path)
    load = load_boundaries(paths, _known(las))
    assert load.warnings == ()
    assert "Synthetic" in load.attribution[0]
    rows = load.table.to_pylist()
    assert {(r["level"], r["code"]) for r in rows} >= {("la", c) for c, _, _ in las}
    assert all(json.loads(r["geometry"])["type"] in ("Polygon", "MultiPolygon") for r in rows)


SQUARE = [[[-1.0, 51.0], [-0.9, 51.0], [-0.9, 51.1], [-1.0, 51.1], [-1.0, 51.0]]]


def test_real_style_geojson_reports_unmatched_codes_and_missing_areas(tmp_path: Path) -> None:
    las = _las(0.002)
    first, second = las[0][0], las[1][0]
    doc = {"type": "FeatureCollection",
           "attribution": "Source: Office for National Statistics licensed under the OGL v3.0",
           "features": [
               {"type": "Feature", "properties": {"LAD23CD": first, "LAD23NM": "x", "FID": 1},
                "geometry": {"type": "Polygon", "coordinates": SQUARE}},
               {"type": "Feature", "properties": {"LAD23CD": "E06999999", "LAD23NM": "y"},
                "geometry": {"type": "Polygon", "coordinates": SQUARE}},
               {"type": "Feature", "properties": {"LAD23CD": second}, "geometry": None},
           ]}
    path = tmp_path / "Local_Authority_Districts.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    load = load_boundaries([path], _known(las))
    assert [r["code"] for r in load.table.to_pylist()] == [first]
    text = " | ".join(load.warnings)
    assert "E06999999" in text and "match no area" in text
    assert f"{second} has no polygon geometry" in text
    assert "have no geometry" in text  # the other LAs of the geography
    assert load.attribution == ("Source: Office for National Statistics licensed under the "
                                "OGL v3.0",)


def test_topojson_with_areacd_properties_is_decoded(tmp_path: Path) -> None:
    las = _las(0.002)
    code = las[0][0]
    # One square as a quantised, delta-encoded arc.
    topo = {"type": "Topology",
            "transform": {"scale": [0.001, 0.001], "translate": [-1.0, 51.0]},
            "arcs": [[[0, 0], [100, 0], [0, 100], [-100, 0], [0, -100]]],
            "objects": {"lad": {"type": "GeometryCollection", "geometries": [
                {"type": "Polygon", "arcs": [[0]], "properties": {"areacd": code,
                                                                  "areanm": "Somewhere"}}]}}}
    path = tmp_path / "lad.topojson"
    path.write_text(json.dumps(topo), encoding="utf-8")
    load = load_boundaries([path], _known(las))
    geom = json.loads(load.table.to_pylist()[0]["geometry"])
    assert geom["type"] == "Polygon"
    assert geom["coordinates"][0][0] == [-1.0, 51.0]
    assert geom["coordinates"][0][2] == [-0.9, 51.1]
    assert shape(geom).area == pytest.approx(0.01)


def test_a_file_without_ons_codes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mystery.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": 3},
         "geometry": {"type": "Polygon", "coordinates": SQUARE}}]}), encoding="utf-8")
    with pytest.raises(InputDataError) as exc:
        load_boundaries([path], _known(_las(0.002)))
    assert "mystery.geojson: no feature has an ONS code property" in str(exc.value)
