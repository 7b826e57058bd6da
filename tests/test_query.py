"""Query resolution: Cubes 1.0 hierarchy behaviours, errors, and the rules for stocks.

Pure tests over the real model.json: no warehouse, no engine (``latest_period`` is given as
the workspace would give it).
"""

from __future__ import annotations

from typing import Any

import pytest

from cube.errors import (
    ArgumentError,
    GrammarError,
    HierarchyError,
    NonAdditiveError,
    NoSuchAggregateError,
    NoSuchAttributeError,
    NoSuchCubeError,
    NoSuchDimensionError,
    NoSuchHierarchyError,
    NoSuchLevelError,
    StatcubeError,
)
from cube.model import Model
from cube.query import Query, Request, period_limit_for

pytestmark = pytest.mark.unit

LATEST = (2026, 11)


def q(model: Model, cube: str = "sanctions", **kw: Any) -> Query:
    return Query.from_request(model.cube(cube), Request.make(cube, **kw), LATEST)


def levels(query: Query) -> dict[str, list[str]]:
    return {d.dimension.name: [lv.name for lv in d.levels] for d in query.drilldown}


def drill(query: Query) -> dict[str, tuple[str, str]]:
    return {d.dimension.name: (d.hierarchy.name, d.level.name) for d in query.drilldown}


# --- implicit drilldown ---------------------------------------------------------------------


@pytest.mark.parametrize(("cut", "expected"), [
    ("", ("ons", "country")),
    ("geography:E92000001", ("ons", "region")),
    ("geography:E92000001,E12000007", ("ons", "la")),
    ("geography:E92000001,E12000007,E09000001", ("ons", "msoa")),
    # the drilldown follows the hierarchy of the point cut when it names none
    ("geography@constituency:E92000001,E12000007", ("constituency", "pcon")),
    # an inverted point cut stays at its own level: "all regions but London"
    ("!geography:E92000001,E12000007", ("ons", "region")),
    # range and set cuts keep the drill depth (Cubes 1.0: only point cuts move it)
    ("geography:E92000001,E12000001-E92000001,E12000003", ("ons", "country")),
    ("geography:E92000001,E12000001;E92000001,E12000002", ("ons", "country")),
    # the deepest point cut wins
    ("geography:E92000001|geography:E92000001,E12000007", ("ons", "la")),
])
def test_implicit_next_level_after_the_deepest_point_cut(model: Model, cut: str,
                                                         expected: tuple[str, str]) -> None:
    query = q(model, cut=cut, drilldown="geography")
    assert drill(query)["geography"] == expected
    assert levels(query)["geography"][-1] == expected[1]


def test_drilled_cells_carry_every_level_up_to_the_drilled_one(model: Model) -> None:
    query = q(model, drilldown="geography:la|jcp")
    assert levels(query) == {"geography": ["country", "region", "la"], "jcp": ["group"]}
    assert [a.ref for a in query.cell_attributes] == [
        "geography.country_code", "geography.country_name", "geography.region_code",
        "geography.region_name", "geography.la_code", "geography.la_name",
        "jcp.group_code", "jcp.group_name"]


def test_drilldown_separators_and_repetition_are_equivalent(model: Model) -> None:
    a = q(model, drilldown="geography:region|benefit")
    b = q(model, drilldown="geography:region,benefit")
    c = q(model, drilldown=["geography:region", "benefit"])
    assert drill(a) == drill(b) == drill(c)


def test_explicit_level_needs_no_cut_and_ignores_cut_hierarchy(model: Model) -> None:
    query = q(model, cut="geography@constituency:E92000001", drilldown="geography@ons:la")
    assert drill(query)["geography"] == ("ons", "la")


def test_flat_dimension_drills_to_its_only_level(model: Model) -> None:
    assert drill(q(model, drilldown="outcome"))["outcome"] == ("default", "outcome")


# --- hierarchy errors -----------------------------------------------------------------------


def test_hierarchy_mismatch_is_an_error(model: Model) -> None:
    with pytest.raises(HierarchyError) as e:
        q(model, cut="geography@constituency:E92000001", drilldown="geography@ons")
    assert e.value.parameter == "drilldown"
    assert "constituency" in e.value.message and "ons" in e.value.message


def test_point_cuts_on_two_hierarchies_make_the_next_level_ambiguous(model: Model) -> None:
    with pytest.raises(HierarchyError):
        q(model, cut="geography@constituency:E92000001|geography@ons:E92000001",
          drilldown="geography")


def test_drilling_past_the_last_level_is_an_error(model: Model) -> None:
    with pytest.raises(HierarchyError) as e:
        q(model, cut="jcp:G1,D1,ABC", drilldown="jcp")
    assert "below its last level 'office'" in e.value.message
    with pytest.raises(HierarchyError):
        q(model, cut="outcome:adverse", drilldown="outcome")


def test_cut_path_longer_than_the_hierarchy_is_an_error(model: Model) -> None:
    with pytest.raises(HierarchyError) as e:
        q(model, cut="jcp:G1,D1,ABC,X")
    assert e.value.parameter == "cut"
    assert "4 elements" in e.value.message and "only 3 levels" in e.value.message
    with pytest.raises(HierarchyError) as e:
        q(model, split="benefit:jsa,x")
    assert e.value.parameter == "split"


def test_level_of_another_hierarchy_names_that_hierarchy(model: Model) -> None:
    with pytest.raises(HierarchyError) as e:
        q(model, drilldown="geography:pcon")
    assert "geography@constituency" in e.value.message
    assert e.value.hint == "write geography@constituency:pcon"


@pytest.mark.parametrize(("kw", "error", "parameter", "hint"), [
    ({"cube": "santions"}, NoSuchCubeError, "cube", "'sanctions'"),
    ({"drilldown": "geografy"}, NoSuchDimensionError, "drilldown", "'geography'"),
    ({"cut": "geografy:E92000001"}, NoSuchDimensionError, "cut", "'geography'"),
    ({"split": "outcom:adverse"}, NoSuchDimensionError, "split", "'outcome'"),
    ({"drilldown": "geography@constituancy"}, NoSuchHierarchyError, "drilldown",
     "'constituency'"),
    ({"cut": "geography@onss:E92000001"}, NoSuchHierarchyError, "cut", "'ons'"),
    ({"drilldown": "geography:regoin"}, NoSuchLevelError, "drilldown", "'region'"),
    ({"aggregates": "decision"}, NoSuchAggregateError, "aggregates", "'decisions'"),
    ({"having": "decision>3"}, NoSuchAggregateError, "having", "'decisions'"),
    ({"top": "3:decison"}, NoSuchAggregateError, "top", "'decisions'"),
    ({"drilldown": "geography:region", "order": "geography.region_nme"},
     NoSuchAttributeError, "order", "'geography.region_name'"),
])
def test_unknown_names_are_distinct_errors_naming_the_parameter_with_a_close_match(
        model: Model, kw: dict[str, Any], error: type[StatcubeError], parameter: str,
        hint: str) -> None:
    kw = dict(kw)
    cube = kw.pop("cube", "sanctions")
    with pytest.raises(error) as e:
        if cube not in model.cubes:
            model.cube(cube)
        q(model, cube, **kw)
    assert type(e.value) is error
    assert e.value.status in (400, 404)
    assert e.value.parameter == parameter
    assert e.value.hint is not None and hint in e.value.hint
    assert e.value.to_dict()["error"] == error.type


def test_error_types_are_all_distinct() -> None:
    kinds = [NoSuchCubeError, NoSuchDimensionError, NoSuchHierarchyError, NoSuchLevelError,
             NoSuchAggregateError, HierarchyError, NonAdditiveError]
    assert len({k.type for k in kinds}) == len(kinds)


def test_same_dimension_drilled_twice_is_an_error(model: Model) -> None:
    with pytest.raises(ArgumentError):
        q(model, drilldown="geography:region|geography:la")


# --- stocks and flows -----------------------------------------------------------------------


def test_stock_without_time_cut_is_pinned_to_the_latest_month(model: Model) -> None:
    query = q(model, "housing_benefit", drilldown="geography:region")
    assert query.default_period == "2026-11"
    (pin,) = [c for c in query.cuts if c.dimension.name == "time"]
    assert pin.paths == ((2026, 4, 11),) and pin.source is None


def test_stock_drilled_to_month_or_cut_to_one_month_is_not_pinned(model: Model) -> None:
    assert q(model, "pip", drilldown="time:month").default_period is None
    assert q(model, "pip", drilldown="time@ym:month", cut="time@ym:2026").default_period is None
    one = q(model, "pip", cut="time@ym:2026,9", drilldown="gender")
    assert one.default_period is None
    assert [c.paths for c in one.cuts] == [((2026, 9),)]


@pytest.mark.parametrize("kw", [
    {"drilldown": "time:year"},
    {"drilldown": "time@yq:quarter"},
    {"drilldown": "time"},  # implicit level: year
    {"cut": "time:2026", "drilldown": "gender"},
    {"cut": "time:2026,4"},
    {"cut": "time@ym:2026,9-2026,11"},
    {"cut": "time@ym:2026,9;2026,10"},
    {"cut": "!time@ym:2026,9"},
    {"cut": "time@ym:2026,9", "drilldown": "time"},  # point cut at month → drill past month
])
def test_adding_a_stock_across_months_is_refused(model: Model, kw: dict[str, Any]) -> None:
    with pytest.raises((NonAdditiveError, HierarchyError)) as e:
        q(model, "universal_credit", **kw)
    if isinstance(e.value, NonAdditiveError):
        assert "'people' is a stock" in e.value.message
        assert e.value.status == 400


def test_non_additive_error_explains_what_to_do(model: Model) -> None:
    with pytest.raises(NonAdditiveError) as e:
        q(model, "housing_benefit", drilldown="time:year")
    msg = e.value.message
    assert "'claimants', 'weekly_award_sum' and 'weekly_award_mean' are stocks" in msg
    assert "drill time down to month" in msg
    with pytest.raises(NonAdditiveError) as e:
        q(model, "housing_benefit", cut="time:2026")
    assert "time:2026,4,11" in e.value.message and e.value.parameter == "cut"


def test_flows_add_over_time(model: Model) -> None:
    query = q(model, "sanctions", drilldown="time:year", cut="time:2026")
    assert query.default_period is None and drill(query)["time"] == ("yqm", "year")
    nino = q(model, "nino_registrations", drilldown="time")
    assert drill(nino)["time"] == ("yq", "year")


def test_period_limit_for_months_and_quarters(model: Model) -> None:
    assert period_limit_for(model.cube("pip"), (2026, 8)) == 202608
    # a quarter is visible only once its last month is
    assert period_limit_for(model.cube("nino_registrations"), (2026, 8)) == 20262
    assert period_limit_for(model.cube("nino_registrations"), (2026, 9)) == 20263
    assert period_limit_for(model.cube("nino_registrations"), (2026, 2)) == 20254
    assert period_limit_for(model.cube("pip"), None) is None


# --- other parameters -----------------------------------------------------------------------


def test_high_cardinality_levels_need_paging_or_member_cuts(model: Model) -> None:
    with pytest.raises(ArgumentError) as e:
        q(model, drilldown="geography:lsoa")
    assert e.value.parameter == "drilldown" and "high cardinality" in e.value.message
    assert q(model, drilldown="geography:lsoa", pagesize=100).pagesize == 100
    q(model, drilldown="geography:lsoa",
      cut="geography:E92000001,E12000001,E06000001,E02000001,E01000001")
    # a set cut only names members if every path reaches the level
    with pytest.raises(ArgumentError):
        q(model, drilldown="geography:lsoa",
          cut="geography:E92000001,E12000001,E06000001,E02000001,E01000001;E92000001")
    with pytest.raises(ArgumentError):  # OA is high too, and a range names no members
        q(model, drilldown="geography@constituency:oa",
          cut="geography@constituency:E92000001,E12000001,E14000001,E00000001-"
              "E92000001,E12000001,E14000001,E00000009")


@pytest.mark.parametrize(("page", "pagesize", "ok"), [
    (None, "10", (0, 10)), ("2", "10", (2, 10)), ("-1", "10", None), ("1", "0", None),
    ("x", "10", None), ("1", None, None), (None, "1000001", None),
])
def test_paging_parameters(model: Model, page: str | None, pagesize: str | None,
                           ok: tuple[int, int] | None) -> None:
    if ok is None:
        with pytest.raises(ArgumentError):
            q(model, drilldown="benefit", page=page, pagesize=pagesize)
    else:
        query = q(model, drilldown="benefit", page=page, pagesize=pagesize)
        assert (query.page, query.pagesize) == ok


def test_order_resolves_attributes_dimensions_and_aggregates(model: Model) -> None:
    query = q(model, drilldown="geography:region", order=["decisions:desc", "geography",
                                                          "geography.region_name"])
    items = [(o.ref, o.descending, o.aggregate is not None) for o in query.order]
    assert items == [("decisions", True, True), ("geography", False, False),
                     ("geography.region_name", False, False)]
    assert query.order[1].attribute is not None
    assert query.order[1].attribute.ref == "geography.region_code"
    with pytest.raises(NoSuchAttributeError):  # not a drilled attribute
        q(model, drilldown="geography:region", order="geography.la_name")


def test_having_and_top_grammar(model: Model) -> None:
    query = q(model, drilldown="geography:la", having="decisions>=10|decisions!=12",
              top="2:decisions:geography")
    assert [(f.op, f.value) for f in query.filters] == [(">=", 10.0), ("!=", 12.0)]
    assert query.top is not None and query.top.n == 2 and query.top.per is not None
    with pytest.raises(GrammarError) as e:
        q(model, drilldown="geography:la", having="decisions>=10|decisions>x")
    assert e.value.parameter == "having" and e.value.position == 14
    with pytest.raises(ArgumentError):
        q(model, drilldown="geography:la", top="0:decisions")
    with pytest.raises(ArgumentError):  # per a dimension drilled at its first level
        q(model, drilldown="geography:country", top="1:decisions:geography")


def test_queries_are_immutable_and_comparable(model: Model) -> None:
    a = q(model, cut="benefit:jsa", drilldown="geography:region")
    b = q(model, cut="benefit:jsa", drilldown="geography:region")
    assert a == b
    with pytest.raises(AttributeError):
        a.page = 3  # type: ignore[misc]
