"""Protection parameters and the grammar limits that stop averaging attacks.

The cell key method makes each published cell consistent, but an attacker who can ask for
ad-hoc groups (a set, range or negated cut: "these 37 OAs", "all but this OA"; or a split,
whose "outside" is a complement) can difference or average many noisy totals. So custom
groups are only allowed at or above a configured level per dimension (default: local
authority for geography); below it, only point cuts and drilldowns, where every member is
its own, consistently perturbed cell. While a query looks below that level, custom groups
on *other* dimensions are refused too (each subset of tenures at one OA would be one more
noisy view of the same records). And at output-area level, only a limited number of
category dimensions may be cut or drilled at once, so cells do not become tiny. Each
refusal names its rule (``RULE_*``).

Pure functions over a Query; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cube.disclosure.ptable import PTable, PTableParams, build_ptable
from cube.errors import ConfigError, DisclosureRuleError
from cube.model import Dimension, Level, Model
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


#: Rule names, quoted in every refusal so a user (and a test) can tell them apart.
RULE_GROUP_LEVEL = "custom-group-level"
RULE_GROUP_FINE = "custom-group-fine-geography"
RULE_OA_CATEGORIES = "oa-category-limit"


def _at_or_above(dim: Dimension, level: Level, min_level: str) -> bool:
    """True if ``level`` is at or above ``min_level`` (coarser or equal).

    Levels of the default hierarchy are ranked by position. A level that is not in the
    default hierarchy (e.g. Westminster constituency) counts as coarse enough unless its
    cardinality is "high".
    """
    names = [lv.name for lv in dim.hierarchy().levels]
    if min_level in names and level.name in names:
        return names.index(level.name) <= names.index(min_level)
    return level.cardinality != "high"


def _deepest(cut: CutPart) -> Level:
    return cut.hierarchy.levels[cut.depth - 1]


def _forms_group(cut: CutPart, is_split: bool) -> bool:
    """A set, range or negated cut totals an ad-hoc group. So does every split: its cells
    are "inside" and "outside" the cut, and outside is the complement (a negated cut)."""
    return is_split or cut.is_group


def _fine_dimensions(query: Query) -> list[tuple[Dimension, Level, str]]:
    """Dimensions with a group level that this query reads below that level: (dimension,
    the deepest level it reaches through a point cut or a drilldown, the group level)."""
    cube = query.cube
    out = []
    for dim in cube.dimensions:
        min_level = cube.disclosure.group_cut_min_level.get(dim.name)
        if min_level is None:
            continue
        levels = [d.level for d in query.drilldown if d.dimension.name == dim.name]
        levels += [_deepest(c) for c in query.cuts
                   if c.dimension.name == dim.name and not c.is_group]
        fine = [lv for lv in levels if not _at_or_above(dim, lv, min_level)]
        if fine:
            out.append((dim, fine[0], min_level))
    return out


def _check_group_cut(query: Query, cut: CutPart, parameter: str, is_split: bool) -> None:
    if not _forms_group(cut, is_split):
        return
    dim = cut.dimension
    what = "split" if is_split else ("negated cut" if cut.invert else f"{cut.kind} cut")
    min_level = query.cube.disclosure.group_cut_min_level.get(dim.name)
    deepest = _deepest(cut)
    if min_level is not None and not _at_or_above(dim, deepest, min_level):
        raise DisclosureRuleError(
            f"refused by disclosure rule {RULE_GROUP_LEVEL!r}: a {what} on {dim.name} at "
            f"level {deepest.name!r} forms a custom group below {min_level!r}. Custom groups "
            f"of {dim.name} are only allowed at {min_level!r} level or above, because totals "
            f"over ad-hoc sets of small areas can be differenced or averaged to reveal "
            f"individuals. Use a point cut or drill down instead.",
            parameter=parameter, value=cut.to_string() or None,
            hint=f"rule {RULE_GROUP_LEVEL}: custom groups at or above {dim.name}:{min_level}",
        )
    for fine_dim, level, fine_min in _fine_dimensions(query):
        if fine_dim.name == dim.name:
            continue  # the cut's own dimension is covered above
        raise DisclosureRuleError(
            f"refused by disclosure rule {RULE_GROUP_FINE!r}: a {what} on {dim.name} forms a "
            f"custom group while {fine_dim.name} is at level {level.name!r}, below "
            f"{fine_min!r}. Every combination of members would be another noisy view of the "
            f"same small-area records, and averaging many of them removes the protection.",
            parameter=parameter, value=cut.to_string() or None,
            hint=f"rule {RULE_GROUP_FINE}: cut {dim.name} to single members, or use "
                 f"{fine_dim.name} at {fine_min!r} level or above",
        )


def check_query(query: Query) -> None:
    """Refuse queries the disclosure grammar limits forbid (raises DisclosureRuleError).

    Three rules, each named in its refusal:

    - ``custom-group-level``: a set, range or negated cut, or any split, on a dimension with
      a group level (geography: ``la``) only at or above that level;
    - ``custom-group-fine-geography``: while the query reads such a dimension below its
      group level (say, output areas), no custom group on *any* dimension (e.g.
      ``tenure:social;private`` at OA level): otherwise each subset of members is one more
      noisy view of the same few records;
    - ``oa-category-limit``: at the finest geographic level at most
      ``max_category_dims_at_oa`` category dimensions cut or drilled.
    """
    for c in query.cuts:
        _check_group_cut(query, c, "cut", is_split=False)
    for c in query.split:
        _check_group_cut(query, c, "split", is_split=True)
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
    categories = {d.dimension.name for d in query.drilldown if d.dimension.members}
    categories |= {c.dimension.name for c in (*query.cuts, *query.split) if c.dimension.members}
    limit = cube.disclosure.max_category_dims_at_oa
    if len(categories) > limit:
        raise DisclosureRuleError(
            f"refused by disclosure rule {RULE_OA_CATEGORIES!r}: at {finest.label.lower()} "
            f"level at most {limit} category dimension(s) may be cut or drilled at once (got "
            f"{len(categories)}: {', '.join(sorted(categories))}); cells that small would be "
            "mostly noise and invite differencing",
            parameter="drilldown", value=",".join(sorted(categories)),
            hint=f"rule {RULE_OA_CATEGORIES}: drill geography to a coarser level (e.g. lsoa "
                 "or msoa) or use fewer categories",
        )
