"""Protection parameters and the grammar limits that stop averaging attacks.

The cell key method makes each published cell consistent, but an attacker who can ask for
ad-hoc groups (a set, range or negated cut: "these 37 OAs", "all but this OA") can difference
or average many noisy totals. So custom groups are only allowed at or above a configured
level per dimension (default: local authority for geography); below it, only point cuts and
drilldowns, where every member is its own, consistently perturbed cell. And at output-area
level, only a limited number of category dimensions may be cut or drilled at once, so cells
do not become tiny.

Pure functions over a Query; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cube.disclosure.ptable import PTable, PTableParams, build_ptable
from cube.errors import ConfigError, DisclosureRuleError
from cube.model import Cube, Dimension, Level, Model
from cube.query import CutPart, Query


@dataclass(frozen=True)
class Protection:
    """Model-wide protection parameters (model.json ``info.disclosure``)."""

    ptable: PTable
    delta: float = 0.3
    mean_threshold: int = 10

    @property
    def k(self) -> int:
        return self.ptable.params.K

    @property
    def delta_milli(self) -> int:
        """δ in thousandths: magnitude noise is computed in integers so SQL and numpy agree."""
        return round(self.delta * 1000)

    @classmethod
    def from_model(cls, model: Model) -> Protection:
        d: Mapping[str, Any] = model.disclosure
        unknown_keys = set(d) - {"ptable", "delta", "mean_threshold"}
        if unknown_keys:
            raise ConfigError(f"unknown info.disclosure keys: {', '.join(sorted(unknown_keys))}")
        params = PTableParams.from_mapping(d.get("ptable", {}))
        delta = float(d.get("delta", 0.3))
        if not 0 < delta or delta * params.D >= 1 or abs(delta * 1000 - round(delta * 1000)) > 1e-9:
            raise ConfigError(
                f"info.disclosure.delta={delta}: need 0 < δ, δ·D < 1 (so protected sums stay "
                "non-negative) and δ in whole thousandths")
        threshold = int(d.get("mean_threshold", 10))
        if threshold < 1:
            raise ConfigError("info.disclosure.mean_threshold must be at least 1")
        return cls(build_ptable(params), delta, threshold)


def _rank(dim: Dimension, level: Level, min_level: str) -> bool:
    """True if ``level`` is at or above ``min_level`` (coarser or equal).

    Levels of the default hierarchy are ranked by position. A level that is not in the
    default hierarchy (e.g. Westminster constituency) counts as coarse enough unless its
    cardinality is "high".
    """
    default = dim.hierarchy()
    names = [lv.name for lv in default.levels]
    if min_level not in names:
        return level.cardinality != "high"
    if level.name in names:
        return names.index(level.name) <= names.index(min_level)
    return level.cardinality != "high"


def _check_group_cut(cube: Cube, cut: CutPart, parameter: str) -> None:
    min_level = cube.disclosure.group_cut_min_level.get(cut.dimension.name)
    if min_level is None or not cut.is_group:
        return
    deepest = cut.hierarchy.levels[cut.depth - 1]
    if not _rank(cut.dimension, deepest, min_level):
        what = "negated" if cut.invert else cut.kind
        raise DisclosureRuleError(
            f"a {what} cut on {cut.dimension.name} at level {deepest.name!r} forms a custom "
            f"group below {min_level!r}; such groups are only allowed at {min_level!r} level "
            f"or above, because totals over ad-hoc sets of small areas can be differenced to "
            f"reveal individuals. Use a point cut or drill down instead.",
            parameter=parameter, value=cut.to_string(),
            hint=f"rule: custom groups at or above {cut.dimension.name}:{min_level}",
        )


def check_query(query: Query) -> None:
    """Refuse queries the disclosure grammar limits forbid (raises DisclosureRuleError)."""
    cube = query.cube
    for c in query.cuts:
        _check_group_cut(cube, c, "cut")
    for c in query.split:
        _check_group_cut(cube, c, "split")
    geo = next((d for d in cube.dimensions if d.geographic), None)
    if geo is None:
        return
    finest = geo.hierarchy().levels[-1]
    at_oa = any(d.dimension.name == geo.name and d.level.name == finest.name
                for d in query.drilldown) or any(
        c.dimension.name == geo.name and c.hierarchy.levels[c.depth - 1].name == finest.name
        for c in query.cuts)
    if not at_oa:
        return
    categories = {d.dimension.name for d in query.drilldown if d.dimension.members}
    categories |= {c.dimension.name for c in query.cuts if c.dimension.members}
    limit = cube.disclosure.max_category_dims_at_oa
    if len(categories) > limit:
        raise DisclosureRuleError(
            f"at {finest.label.lower()} level at most {limit} category dimension(s) may be cut "
            f"or drilled at once (got {len(categories)}: {', '.join(sorted(categories))}); "
            "cells that small would be mostly noise and invite differencing",
            parameter="drilldown", value=",".join(sorted(categories)),
            hint="drill geography to a coarser level (e.g. lsoa or msoa) or use fewer categories",
        )
