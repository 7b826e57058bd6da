"""model.json validation: a broken model is refused with the JSON path of the problem.

An operator editing model.json gets one message that says where to look
(``$.cubes[0].aggregates[1].function: …``) instead of a KeyError deep in the server. And the
model must describe the warehouse the build writes: every mapped column exists, and nothing in
a fact or dimension table is left undescribed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cube.errors import ModelError
from cube.geography import WELSH_NAME_COLUMNS
from cube.labels import translation_columns
from cube.model import Model, load_model, parse_model
from cube.rollups import declared, fact_key_column, geography_columns
from cube.sql import fact_period_column

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return dict(json.loads((ROOT / "model.json").read_text(encoding="utf-8")))


def _dim_index(raw: dict[str, Any], name: str) -> int:
    return next(i for i, d in enumerate(raw["dimensions"]) if d["name"] == name)


def _cube_index(raw: dict[str, Any], name: str) -> int:
    return next(i for i, c in enumerate(raw["cubes"]) if c["name"] == name)


def _broken(raw: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> ModelError:
    model = copy.deepcopy(raw)
    change(model)
    with pytest.raises(ModelError) as info:
        parse_model(model)
    return info.value


def test_shipped_model_is_valid(model: Model) -> None:
    assert set(model.cubes) == {"housing_benefit", "universal_credit", "pip", "sanctions",
                                "benefit_cap", "nino_registrations"}


def test_unknown_dimension_in_a_cube(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["dimensions"][2] = "tenur"
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].dimensions[2]"
    assert str(err) == "$.cubes[0].dimensions[2]: unknown dimension 'tenur'"


def test_hierarchy_naming_a_missing_level(raw: dict[str, Any]) -> None:
    geo = _dim_index(raw, "geography")

    def change(m: dict[str, Any]) -> None:
        m["dimensions"][geo]["hierarchies"][1]["levels"][2] = "constituency"
    err = _broken(raw, change)
    assert err.path == f"$.dimensions[{geo}].hierarchies[1].levels[2]"
    assert "unknown level 'constituency'" in str(err)


def test_aggregate_with_an_unsupported_function(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["aggregates"][1]["function"] = "median"
    err = _broken(raw, change)
    assert str(err) == "$.cubes[0].aggregates[1].function: 'median' is not one of ['sum', 'avg']"


def test_count_measure_cannot_be_averaged(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["aggregates"][0]["function"] = "avg"
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].aggregates[0].function"


def test_measure_with_no_mapping(raw: dict[str, Any]) -> None:
    hb = _cube_index(raw, "housing_benefit")

    def change(m: dict[str, Any]) -> None:
        del m["cubes"][hb]["mappings"]["weekly_award"]
    err = _broken(raw, change)
    assert err.path == f"$.cubes[{hb}].mappings"
    assert "measure 'weekly_award' has no mapping" in str(err)


def test_measure_mapped_outside_the_fact_table(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["mappings"]["claimants"] = "dim_tenure.tenure_order"
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].mappings.claimants"


def test_attribute_with_no_mapping(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        del m["cubes"][0]["mappings"]["geography.la_name"]
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].mappings"
    assert "'geography.la_name' has no mapping" in str(err)


def test_mapping_key_that_names_nothing_is_a_typo(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["mappings"]["tenure.tenure_nmae"] = "dim_tenure.tenure_name"
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].mappings.tenure.tenure_nmae"
    assert "did you mean 'tenure.tenure_name'" in str(err)


def test_mapping_to_a_table_that_is_not_joined(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["joins"] = [j for j in m["cubes"][0]["joins"]
                                  if j["detail"] != "dim_tenure.tenure_code"]
    err = _broken(raw, change)
    assert err.path.startswith("$.cubes[0].mappings.tenure.")
    assert "'dim_tenure' is not joined" in str(err)


def test_join_master_must_be_the_fact_table(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["joins"][0]["master"] = "dim_month.month_id"
    assert _broken(raw, change).path == "$.cubes[0].joins[0].master"


def test_label_attribute_that_is_not_an_attribute(raw: dict[str, Any]) -> None:
    geo = _dim_index(raw, "geography")

    def change(m: dict[str, Any]) -> None:
        m["dimensions"][geo]["levels"][2]["label_attribute"] = "la_nmae"
    err = _broken(raw, change)
    assert err.path == f"$.dimensions[{geo}].levels[2].label_attribute"
    assert "'la_nmae' is not an attribute" in str(err)


def test_unknown_default_hierarchy(raw: dict[str, Any]) -> None:
    geo = _dim_index(raw, "geography")

    def change(m: dict[str, Any]) -> None:
        m["dimensions"][geo]["default_hierarchy_name"] = "census"
    assert _broken(raw, change).path == f"$.dimensions[{geo}].default_hierarchy_name"


def test_cube_without_a_time_dimension(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["dimensions"].remove("time")
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].dimensions"
    assert "role 'time'" in str(err)


def test_amount_measure_needs_a_max_column(raw: dict[str, Any]) -> None:
    def change(m: dict[str, Any]) -> None:
        del m["cubes"][0]["measures"][1]["info"]["max_column"]
    assert _broken(raw, change).path == "$.cubes[0].measures[1].info"


def test_codelist_member_without_a_label(raw: dict[str, Any]) -> None:
    tenure = _dim_index(raw, "tenure")

    def change(m: dict[str, Any]) -> None:
        del m["dimensions"][tenure]["info"]["members"][1]["label"]
    err = _broken(raw, change)
    assert err.path == f"$.dimensions[{tenure}].info.members[1]"
    assert "'label' is a required property" in str(err)


def test_wrong_shape_in_a_dimension_link_names_the_real_problem(raw: dict[str, Any]) -> None:
    """A oneOf (name or object) failure reports the object branch's error, not 'is not valid
    under any of the given schemas'."""
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["dimensions"][0] = {"name": "geography", "hierarchy": ["ons"]}
    err = _broken(raw, change)
    assert err.path == "$.cubes[0].dimensions[0]"
    assert "'hierarchy' was unexpected" in str(err)


def test_statcube_settings_outside_info_are_refused(raw: dict[str, Any]) -> None:
    """Cubes 1.1 forbids unknown top-level keys; statcube's own settings belong in ``info``."""
    def change(m: dict[str, Any]) -> None:
        m["cubes"][0]["disclosure"] = {}
    err = _broken(raw, change)
    assert err.path == "$.cubes[0]"
    assert "'disclosure' was unexpected" in str(err)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"name": "m",\n "cubes": [,]}\n', encoding="utf-8")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.path == "$"
    assert "model.json is not valid JSON" in str(info.value)
    assert "line 2, column 12" in str(info.value)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "nope.json")


# --- The model describes the built warehouse exactly -------------------------------------------


def test_mappings_and_joins_describe_the_warehouse_schema(model: Model, warehouse: Path) -> None:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        columns: dict[str, set[str]] = {}
        for table, column in con.execute(
                "SELECT table_name, column_name FROM information_schema.columns").fetchall():
            columns.setdefault(table, set()).add(column)
    finally:
        con.close()
    described: dict[str, set[str]] = {}
    for cube in model.cubes.values():
        phys = cube.physical
        used = [*phys.mappings.values(), *(j.master for j in phys.joins),
                *(j.detail for j in phys.joins)]
        for col in used:
            assert col.column in columns.get(col.table, set()), (
                f"{cube.name}: {col.table}.{col.column} is mapped or joined but not built")
            described.setdefault(col.table, set()).add(col.column)
        fact_extra = {phys.record_key, phys.magnitude_key, *phys.max_columns.values()}
        assert fact_extra <= columns[phys.fact], f"{cube.name}: key or max column missing"
        described.setdefault(phys.fact, set()).update(fact_extra)
    # Translated labels (la_name_cy beside la_name) are described by cube/labels.py's
    # convention, not by mappings: optional, so described if present.
    translated = translation_columns(model)
    for col in translated:
        if col.column in columns.get(col.table, set()):
            described.setdefault(col.table, set()).add(col.column)
    assert {c.column for c in translated if c.table == "dim_geography"} >= set(
        WELSH_NAME_COLUMNS.values()), "a Welsh name the labels convention does not find"
    model_tables = {t for t in columns if t.startswith(("fact_", "dim_"))}
    assert model_tables == set(described), "a fact or dimension table no cube describes"
    for table in model_tables:
        assert columns[table] == described[table], (
            f"{table}: columns not described by model.json: "
            f"{sorted(columns[table] - described[table])}")
    # Rollups (cube/rollups.py): the fact's period, key and measure columns at a coarser
    # grain, with the geography's columns down to the rollup's level.
    rollups = {r.table: (cube, r) for cube in model.cubes.values() for r in declared(cube)}
    assert set(columns) - model_tables == {"sdc_ptable", "statcube_meta", "boundaries",
                                           *rollups}
    for table, (cube, r) in rollups.items():
        phys = cube.physical
        measures = {phys.column(m.name).column for m in cube.measures} | {
            phys.record_key, phys.magnitude_key, *phys.max_columns.values()}
        geo = {col for _, col in geography_columns(cube, r.geography)} if r.geography else set()
        keys = {fact_key_column(cube, cube.dimension(d)) for d in r.dimensions}
        assert columns[table] == {fact_period_column(cube), *geo, *keys, *measures}, table


# --- what Cubes 1.1 needs of the same file ------------------------------------------------


def test_means_are_total_over_count_as_cubes_computes_them(model: Model) -> None:
    """A mean is Cubes' expression '<sum> / <count>': the published mean (total over count),
    never Cubes' avg (an average of fact rows). Public aggregate names are unchanged."""
    hb = model.cubes["housing_benefit"]
    mean = hb.aggregate("weekly_award_mean")
    assert (mean.function, mean.measure.name, mean.expression) == (
        "avg", "weekly_award", "weekly_award_sum / claimants")
    assert [a.name for a in hb.aggregates] == ["claimants", "weekly_award_sum",
                                               "weekly_award_mean"]
    for cube in model.cubes.values():  # Cubes' SQL browser: "Duplicate key …" otherwise
        assert not {a.name for a in cube.aggregates} & {m.name for m in cube.measures}


@pytest.mark.parametrize("expression", ["weekly_award_sum", "weekly_award_sum / nope",
                                        "claimants / weekly_award_sum",
                                        "weekly_award_sum / weekly_award_sum"])
def test_a_mean_divides_an_amount_total_by_the_count(raw: dict[str, Any], expression: str
                                                     ) -> None:
    hb = _cube_index(raw, "housing_benefit")

    def change(m: dict[str, Any]) -> None:
        m["cubes"][hb]["aggregates"][2]["expression"] = expression
    assert _broken(raw, change).path == f"$.cubes[{hb}].aggregates[2].expression"


def test_an_aggregate_is_a_function_or_an_expression_not_both(raw: dict[str, Any]) -> None:
    hb = _cube_index(raw, "housing_benefit")

    def change(m: dict[str, Any]) -> None:
        m["cubes"][hb]["aggregates"][2]["function"] = "avg"
    assert _broken(raw, change).path == f"$.cubes[{hb}].aggregates[2]"


def test_a_measure_named_like_an_aggregate_is_refused(raw: dict[str, Any]) -> None:
    hb = _cube_index(raw, "housing_benefit")

    def change(m: dict[str, Any]) -> None:
        cube = m["cubes"][hb]
        cube["measures"][0]["name"] = "claimants"
        cube["aggregates"][0]["measure"] = "claimants"
        cube["mappings"]["claimants"] = cube["mappings"].pop("claimants_count")
    err = _broken(raw, change)
    assert "share the name 'claimants'" in str(err)


def test_dimension_links_in_info_restrict_a_cube(model: Model, raw: dict[str, Any]) -> None:
    """NINo's time is year → quarter only; the link sits in info.dimension_links because
    Cubes 1.1 under Python 3 cannot copy a restricted dimension (odict_values)."""
    nino = _cube_index(raw, "nino_registrations")
    assert all(isinstance(d, str) for c in raw["cubes"] for d in c["dimensions"])
    time = model.cubes["nino_registrations"].dimension("time")
    assert [h.name for h in time.hierarchies] == ["yq"] and time.default_hierarchy_name == "yq"

    def unknown(m: dict[str, Any]) -> None:
        m["cubes"][nino]["info"]["dimension_links"]["time"]["hierarchies"] = ["weekly"]
    assert _broken(raw, unknown).path == \
        f"$.cubes[{nino}].info.dimension_links.time.hierarchies[0]"

    def both(m: dict[str, Any]) -> None:
        m["cubes"][nino]["dimensions"][1] = {"name": "time", "hierarchies": ["yq"]}
    assert "not both" in str(_broken(raw, both))

    def unlisted(m: dict[str, Any]) -> None:
        m["cubes"][nino]["info"]["dimension_links"]["tenure"] = {"hierarchies": ["x"]}
    assert _broken(raw, unlisted).path == f"$.cubes[{nino}].info.dimension_links.tenure"
