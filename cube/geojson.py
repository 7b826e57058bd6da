"""Protected aggregates by area as GeoJSON, for mapping front ends.

Takes a :class:`ProtectedResult` (already through the disclosure gate — this module never
sees raw values) drilled by geography alone, and joins each cell to its area's geometry
from the warehouse's ``boundaries`` table. A feature carries the area code and name, every
requested aggregate and its withheld flag. A level with no geometry is a clear 400.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from cube.disclosure.gate import ProtectedResult
from cube.disclosure.protect import has_withheld_flag, withheld_column
from cube.engine import Engine
from cube.errors import ArgumentError

BOUNDARIES = sa.table("boundaries", sa.column("level"), sa.column("code"), sa.column("name"),
                      sa.column("geometry"))


def levels_with_geometry(engine: Engine) -> set[str]:
    try:
        t = engine.execute(sa.select(BOUNDARIES.c.level).distinct())
    except Exception:  # a warehouse built without boundaries
        return set()
    return {str(v) for v in t.column("level").to_pylist()}


def feature_collection(result: ProtectedResult, engine: Engine) -> dict[str, Any]:
    q = result.query
    geo = [d for d in q.drilldown if d.dimension.geographic]
    others = [d for d in q.drilldown if not d.dimension.geographic]
    if not geo:
        raise ArgumentError("GeoJSON needs a drilldown on geography (e.g. "
                            "drilldown=geography:la)", parameter="format", value="geojson")
    if others:
        raise ArgumentError(
            "GeoJSON maps one value per area: drill down by geography only and cut the other "
            f"dimensions (drilled: {', '.join(d.dimension.name for d in others)})",
            parameter="drilldown", value=",".join(d.dimension.name for d in q.drilldown))
    drill = geo[0]
    level = drill.level
    available = levels_with_geometry(engine)
    if level.name not in available:
        raise ArgumentError(
            f"level {level.ref} has no boundaries in this warehouse",
            parameter="drilldown", value=f"{drill.dimension.name}:{level.name}",
            hint="levels with geometry: " + (", ".join(sorted(available)) or "none"))
    codes = [str(c) for c in result.cells.column(level.key.ref).to_pylist()]
    geoms: dict[str, str] = {}
    if codes:
        stmt = sa.select(BOUNDARIES.c.code, BOUNDARIES.c.geometry).where(
            BOUNDARIES.c.level == level.name, BOUNDARIES.c.code.in_(codes))
        t = engine.execute(stmt)
        geoms = dict(zip(t.column("code").to_pylist(), t.column("geometry").to_pylist(),
                         strict=True))
    aggs = [a.name for a in q.aggregates]
    flags = [withheld_column(a.name) for a in q.aggregates if has_withheld_flag(a)]
    features = []
    for cell in result.cells.to_pylist():
        code = str(cell[level.key.ref])
        if code not in geoms:
            continue
        props: dict[str, Any] = {"code": code, "name": cell.get(level.label_attribute.ref, code),
                                 "level": level.name}
        props |= {a: cell[a] for a in aggs}
        props |= {f: bool(cell[f]) for f in flags}
        features.append({"type": "Feature", "id": code, "properties": props,
                         "geometry": json.loads(geoms[code])})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": features,
                           "statcube": {"level": level.name, "aggregates": aggs,
                                        "summary": dict(result.summary),
                                        "disclosure": result.report.to_json()}}
    if q.default_period:
        out["statcube"]["period"] = q.default_period
    return out
