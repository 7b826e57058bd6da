"""Protection parameters, and the one grammar limit left on predefined cells.

Averaging attacks on ad-hoc groups ("these 37 OAs", "all but this OA", an LA ∩ a
constituency) are stopped by construction, not by refusal: such a group is never computed
from records but added up from protected predefined cells (groups.py). What remains here is
a limit on how fine a predefined cell may be: at output-area level only a few other
dimensions at once. The refusal names its rule (``RULE_OA_CATEGORIES``).

Pure functions over a Query; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cube.disclosure.ptable import PTable, PTableParams, build_ptable
from cube.errors import ConfigError, DisclosureRuleError
from cube.model import Level, Model
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
        whole_milli = abs(delta * 1000 - round(delta * 1000)) <= 1e-9
        if not delta > 0 or delta * params.D >= 1 or not whole_milli:
            raise ConfigError(
                f"info.disclosure.delta={delta}: need 0 < δ, δ·D < 1 (so protected sums stay "
                "non-negative) and δ in whole thousandths")
        threshold = int(d.get("mean_threshold", 10))
        if threshold < 1:
            raise ConfigError("info.disclosure.mean_threshold must be at least 1")
        return cls(build_ptable(params), delta, threshold)


#: Rule name, quoted in every refusal so a user (and a test) can tell it apart.
RULE_OA_CATEGORIES = "oa-category-limit"


def _deepest(cut: CutPart) -> Level:
    return cut.hierarchy.levels[cut.depth - 1]


def counted_dimensions(query: Query) -> set[str]:
    """The dimensions that count toward the output-area limit: every dimension cut or
    drilled that is neither geographic nor time — category codelists and Jobcentre Plus
    offices alike (an office is as fine a split of an OA's records as any category)."""
    dims = [d.dimension for d in query.drilldown]
    dims += [c.dimension for c in (*query.cuts, *query.split)]
    return {d.name for d in dims if not d.geographic and not d.is_time}


def check_query(query: Query) -> None:
    """Refuse queries the disclosure limits forbid (raises DisclosureRuleError).

    Custom groups (set, range and negated cuts, splits, intersections of hierarchies) are
    not refused here: the gate publishes each as a sum of protected predefined cells
    (groups.py), which reveals nothing the cells do not. One rule remains, about the
    predefined cells themselves, and the gate applies it to every query of predefined
    cells it runs — a user's, or the tiles of a custom group:

    - ``oa-category-limit``: at the finest geographic level at most
      ``max_category_dims_at_oa`` other dimensions (categories, Jobcentre Plus; not time)
      cut or drilled — cells that small would be mostly noise.
    """
    cube = query.cube
    geo = next((d for d in cube.dimensions if d.geographic), None)
    if geo is None:
        return
    finest = geo.hierarchy().levels[-1]
    at_oa = any(d.dimension.name == geo.name and d.level.name == finest.name
                for d in query.drilldown) or any(
        c.dimension.name == geo.name and _deepest(c).name == finest.name
        for c in (*query.cuts, *query.split))
    if not at_oa:
        return
    categories = counted_dimensions(query)
    limit = cube.disclosure.max_category_dims_at_oa
    if len(categories) > limit:
        raise DisclosureRuleError(
            f"refused by disclosure rule {RULE_OA_CATEGORIES!r}: at {finest.label.lower()} "
            f"level at most {limit} dimension(s) besides geography and time may be cut or "
            f"drilled at once (got {len(categories)}: {', '.join(sorted(categories))}); "
            "cells that small would be mostly noise",
            parameter="drilldown", value=",".join(sorted(categories)),
            hint=f"rule {RULE_OA_CATEGORIES}: drill geography to a coarser level (e.g. lsoa "
                 "or msoa) or use fewer categories",
        )
