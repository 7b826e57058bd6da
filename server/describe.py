"""JSON descriptions the Slicer API returns besides aggregates: version, info, cube list,
cube model (the Cubes 1.1 shape), members, cell details.

Plain functions from cube/ objects to dicts. They describe the *logical* model only: no table
or column names, no record-key columns, and time only as far as the caller's release can see.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from cube import csvfile, labels
from cube import releases as rel
from cube.grammar import PointCut, RangeCut, SetCut, parse_cuts
from cube.model import Aggregate, Cube, Dimension, Level, Model
from cube.workspace import CubeBrowser, Members
from server.auth import Principal

API_VERSION = 2  # the Slicer API generation statcube speaks (Cubes 1.x)
CUBES_VERSION = "1.1"  # the Cubes release whose Slicer protocol statcube follows


def statcube_version() -> str:
    try:
        return metadata.version("statcube")
    except metadata.PackageNotFoundError:  # running from a checkout
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


def version(v: str) -> dict[str, Any]:
    return {"version": v, "server_version": v, "api_version": API_VERSION,
            "product": "statcube"}


def info(model: Model, v: str, principal: Principal, calendar: rel.Calendar, now: datetime,
         limits: Mapping[str, Any]) -> dict[str, Any]:
    visible = calendar.visible(now, embargo_exempt=principal.role.embargo_exempt)
    latest = calendar.published(now)
    return {
        "label": model.label,
        "description": model.description,
        "api_version": API_VERSION,
        "statcube_version": v,
        "cubes_version": CUBES_VERSION,
        # Cubes' row cap, here the size above which a table is refused (413), never cut
        "json_record_limit": limits["max_cells"],
        "timezone": "Europe/London",
        "first_weekday": 0,  # Monday, as Cubes numbers weekdays (ISO weeks)
        "authentication": {"type": "api_key", "headers": ["APIKey", "Authorization: Bearer"],
                           "role": principal.role.value, "key_id": principal.key_id},
        "limits": dict(limits),
        "formats": ["json", "csv", "arrow", "parquet"],
        "releases": [r.to_json(now) for r in reversed(visible)],
        "default_release": latest[-1].id if latest else None,
        "disclosure": ("Every figure is protected by the cell key method before it leaves the "
                       "server; record-level data is never published."),
    }


def cubes(model: Model, names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"name": c.name, "label": c.label, "description": c.description,
             "category": c.info.get("category"), "info": _cube_info(c)}
            for c in (model.cube(n) for n in names)]


def _cube_info(cube: Cube) -> dict[str, Any]:
    return {"kind": cube.kind, "unit": cube.unit, "grain": cube.grain,
            "disclosure": {"group_cut_min_level": dict(cube.disclosure.group_cut_min_level),
                           "max_category_dims_at_oa": cube.disclosure.max_category_dims_at_oa}}


def _level(level: Level) -> dict[str, Any]:
    return {"name": level.name, "label": level.label, "description": level.description,
            "key": level.key.name, "label_attribute": level.label_attribute.name,
            "order_attribute": level.order_attribute.name, "cardinality": level.cardinality,
            "role": level.role,
            "attributes": [{"name": a.name, "label": a.label, "ref": a.ref} for a in
                           level.attributes]}


def _dimension(dim: Dimension) -> dict[str, Any]:
    return {"name": dim.name, "label": dim.label, "description": dim.description,
            "role": dim.role, "is_flat": dim.is_flat, "has_details": False,
            "default_hierarchy_name": dim.default_hierarchy_name,
            "levels": [_level(lv) for lv in dim.levels],
            "hierarchies": [{"name": h.name, "label": h.label,
                             "levels": [lv.name for lv in h.levels]} for h in dim.hierarchies],
            "info": {"geographic": dim.geographic}}


def _aggregate(a: Aggregate) -> dict[str, Any]:
    """An aggregate as model.json (and so Cubes) states it: a mean is the expression
    ``"<sum> / <count>"`` with no function of its own. ``ref`` is what CubesViewer keys its
    columns by."""
    out: dict[str, Any] = {"name": a.name, "ref": a.name, "label": a.label,
                           "nonadditive": a.nonadditive,
                           "info": {"statistic": "mean" if a.function == "avg" else "sum",
                                    "measure": a.measure.name}}
    if a.expression is not None:
        out.update(function=None, measure=None, expression=a.expression)
    else:
        out.update(function=a.function, measure=a.measure.name)
    return out


def latest_period(browser: CubeBrowser) -> str | None:
    p = browser.latest_period
    if p is None:
        return None
    if browser.cube.grain == "quarter":
        return f"{p[0]:04d}-Q{(p[1] - 1) // 3 + 1}"
    return rel.format_period(p)


def cube_model(browser: CubeBrowser, release: rel.Release) -> dict[str, Any]:
    cube = browser.cube
    return {
        "name": cube.name, "label": cube.label, "description": cube.description,
        "info": _cube_info(cube),
        "dimensions": [_dimension(d) for d in cube.dimensions],
        "measures": [{"name": m.name, "ref": m.name, "label": m.label,
                      "nonadditive": m.nonadditive, "info": {"kind": m.kind, "unit": m.unit}}
                     for m in cube.measures],
        "aggregates": [_aggregate(a) for a in cube.aggregates],
        "details": [],  # Cubes' detail attributes: statcube publishes no record attributes
        "key": None,
        "category": cube.info.get("category"),
        "features": {"actions": ["aggregate", "members", "cell", "report"],
                     "aggregate_functions": sorted({a.function for a in cube.aggregates
                                                    if a.expression is None}),
                     "post_aggregate_functions": ["having", "top"]},
        "release": release.id,
        "latest_period": latest_period(browser),
    }


def members(result: Members, browser: CubeBrowser, release: rel.Release, paged: bool
            ) -> dict[str, Any]:
    """The members response without its ``data`` (formats add the rows)."""
    hier = browser.cube.dimension(result.dimension).hierarchy(result.hierarchy)
    out: dict[str, Any] = {"dimension": result.dimension, "hierarchy": result.hierarchy,
                           "depth": result.depth, "level": hier.levels[result.depth - 1].name}
    if paged:
        out["total_member_count"] = result.total_member_count
    out["release"] = release.id
    return out


def member_labels(browser: CubeBrowser, dimension: str) -> dict[str, str]:
    return csvfile.member_labels(browser.cube.dimension(dimension))


def cell(browser: CubeBrowser, cut: str, release: rel.Release, dimension: str | None = None,
         lang: str | None = None) -> dict[str, Any]:
    """The Cubes 1.1 /cell shape: each cut as a dict with the members of its path(s) in
    ``details`` — a point's path (a list, one dict per level), a set's list of paths, a
    range's ``{"from", "to"}``; a path no member has (or an embargoed one) is null.
    ``dimension`` keeps only the cuts on that dimension, as Cubes' ``cell_details`` does."""
    if dimension is not None:
        browser.cube.dimension(dimension)  # unknown: 404 with close matches
    details = rel.cell_details(browser, cut) if cut else []
    out = []
    for c, d in zip(parse_cuts(cut), details, strict=True):
        if dimension is not None and c.dimension != dimension:
            continue
        item: dict[str, Any] = {"type": d["type"], "dimension": d["dimension"],
                                "hierarchy": d["hierarchy"], "invert": d["invert"],
                                "hidden": False}
        paths = d["paths"]
        if lang is not None:  # labels in the language asked, where the warehouse has them
            levels = browser.cube.dimension(d["dimension"]).hierarchy(d["hierarchy"]).levels
            paths = [labels.localise_path(browser, levels, p, lang) for p in paths]
        if isinstance(c, PointCut):
            item.update(path=list(c.path), level_depth=len(c.path), details=paths[0])
        elif isinstance(c, SetCut):
            item.update(paths=[list(p) for p in c.paths],
                        level_depth=max(len(p) for p in c.paths), details=paths)
        elif isinstance(c, RangeCut):
            item.update(**{"from": None if c.from_path is None else list(c.from_path),
                           "to": None if c.to_path is None else list(c.to_path)},
                        level_depth=max(len(c.from_path or ()), len(c.to_path or ())),
                        details={"from": paths[0], "to": paths[1]})
        out.append(item)
    return {"cube": browser.cube.name, "cuts": out, "release": release.id}


def map_page(levels: Sequence[str]) -> bytes:
    """The map page with its configuration (levels that have boundaries) embedded as JSON.

    The JSON is escaped for a <script> element, so no value can close it.
    """
    import json
    from pathlib import Path

    html = (Path(__file__).parent / "static" / "map.html").read_text(encoding="utf-8")
    config = json.dumps({"levels": list(levels), "api_base": ""}).replace("<", "\\u003c")
    return html.replace("__STATCUBE_CONFIG__", config).encode("utf-8")

