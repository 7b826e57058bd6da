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

#: Fixed-point scale of the magnitude parameters: fractions are whole 1/100000ths, so the
#: flex function runs in integers and numpy and SQL agree to the penny.
MAGNITUDE_SCALE = 100_000

#: The magnitude parameters (model.json ``info.disclosure.magnitude``) and their defaults.
MAGNITUDE_DEFAULTS: Mapping[str, float] = {
    "p_small": 0.25, "p_large": 0.05, "flex_point": 5, "q": 2, "dominance_p": 10,
    "dominance_mu": 1,
}


@dataclass(frozen=True)
class Protection:
    """Model-wide protection parameters (model.json ``info.disclosure``).

    Magnitudes (``info.disclosure.magnitude``; see cube/disclosure/protect.py): the noise of
    an amount total is a flex-function share of the cell's largest contribution x1 — about
    ``p_small`` of it in a cell that is little more than its largest contribution, falling
    towards ``p_large`` as the cell grows to many times x1 (``flex_point`` largest
    contributions is where the two halves meet; ``q`` the steepness). A cell the
    ``dominance_p`` % rule marks sensitive gets at least ``dominance_p`` % of x1 and
    ``dominance_mu`` more steps of noise, so it never publishes its true total.
    """

    ptable: PTable
    mean_threshold: int = 10
    p_small: float = 0.25
    p_large: float = 0.05
    flex_point: int = 5
    q: int = 2
    dominance_p: int = 10
    dominance_mu: int = 1

    @property
    def k(self) -> int:
        return self.ptable.params.K

    def fixed(self, fraction: float) -> int:
        """A fraction in whole 1/MAGNITUDE_SCALE units (validated to be exact)."""
        return round(fraction * MAGNITUDE_SCALE)

    def report_parameters(self) -> dict[str, Any]:
        """The parameters as disclosure reports and export metadata print them."""
        params = self.ptable.params
        return {"D": params.D, "V": params.V, "js": params.js,
                "mean_threshold": self.mean_threshold,
                "magnitude": {"p_small": self.p_small, "p_large": self.p_large,
                              "flex_point": self.flex_point, "q": self.q,
                              "dominance_p": self.dominance_p,
                              "dominance_mu": self.dominance_mu}}

    @classmethod
    def from_model(cls, model: Model) -> Protection:
        d: Mapping[str, Any] = model.disclosure
        unknown_keys = set(d) - {"ptable", "mean_threshold", "magnitude"}
        if unknown_keys:
            hint = " (delta became info.disclosure.magnitude)" if "delta" in unknown_keys else ""
            raise ConfigError(
                f"unknown info.disclosure keys: {', '.join(sorted(unknown_keys))}{hint}")
        params = PTableParams.from_mapping(d.get("ptable", {}))
        threshold = d.get("mean_threshold", 10)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError("info.disclosure.mean_threshold must be a whole number >= 1")
        mag = _magnitude(d.get("magnitude", {}))
        return cls(build_ptable(params), threshold, **mag)


def _magnitude(raw: object) -> dict[str, Any]:
    """Validated ``info.disclosure.magnitude`` with defaults filled in."""
    where = "info.disclosure.magnitude"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object")
    unknown = set(raw) - set(MAGNITUDE_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown {where} keys: {', '.join(sorted(map(str, unknown)))}",
                          hint="valid: " + ", ".join(MAGNITUDE_DEFAULTS))
    out: dict[str, Any] = {}
    for key, default in MAGNITUDE_DEFAULTS.items():
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{key} must be a number, got {value!r}",
                              parameter=key, value=repr(value))
        out[key] = value
    for key in ("p_small", "p_large"):
        f = float(out[key])
        if not 0 < f <= 1 or abs(f * MAGNITUDE_SCALE - round(f * MAGNITUDE_SCALE)) > 1e-6:
            raise ConfigError(f"{where}.{key}={f}: need 0 < {key} <= 1, in whole "
                              f"1/{MAGNITUDE_SCALE}ths", parameter=key, value=str(f))
        out[key] = f
    if out["p_large"] > out["p_small"]:
        raise ConfigError(f"{where}: p_large must not exceed p_small (the flex function "
                          "falls as cells grow)", parameter="p_large", value=str(out["p_large"]))
    for key, lo, hi in (("flex_point", 1, 100), ("q", 1, 4), ("dominance_p", 1, 100),
                        ("dominance_mu", 1, 3)):
        v = out[key]
        if not (float(v).is_integer() and lo <= v <= hi):
            raise ConfigError(f"{where}.{key} must be a whole number from {lo} to {hi}, got "
                              f"{v!r}", parameter=key, value=repr(v))
        out[key] = int(v)
    return out


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
