"""Drive Cubes 1.1's own remote client (``SlicerStore`` / ``SlicerBrowser``) against a
running statcube, under Python 3.7 with the ``cubes==1.1`` package.

Run by tests/test_cubes_conformance.py in its own Cubes virtual environment:

    python remote_client.py http://127.0.0.1:PORT

Prints one JSON object: ``{"steps": [{"step", "ok", "result" | "error"}...],
"patches": [...]}``. Every call the client offers is made; the pytest side decides which
must succeed (all but the record-level ones statcube refuses on purpose).

Cubes 1.1's client has bugs of its own that stop it before it sends anything. The patches
below fix those in the *client*, each named and explained; nothing on statcube's side is
touched. This file runs under Python 3.7 and imports nothing from statcube.
"""

import json
import sys
import traceback

import cubes
import cubes.server.browser as remote_browser
import cubes.server.store as remote_store
from cubes import Cell, PointCut, RangeCut, SetCut, Workspace
from cubes.cells import string_from_cuts

PATCHES = []


def patch(name, why):
    PATCHES.append({"name": name, "why": why})


def apply_client_patches():
    # 1. string_from_cuts is used by SlicerBrowser but never imported into its module.
    remote_browser.string_from_cuts = string_from_cuts
    patch("string_from_cuts import",
          "cubes/server/browser.py calls string_from_cuts() without importing it: every "
          "call with a cut raises NameError before a request is sent")

    # 2. SlicerBrowser.is_builtin_function(name, aggregate) is called with one argument by
    #    AggregationBrowser.prepare_aggregates/prepare_order.
    remote_browser.SlicerBrowser.is_builtin_function = lambda self, name, *rest: True
    patch("is_builtin_function signature",
          "SlicerBrowser defines is_builtin_function(self, name, aggregate) but the base "
          "browser calls it with the function name only: TypeError on every aggregate")

    # 3. SlicerModelProvider has no has_cube(); Namespace.find_cube asks every provider.
    def has_cube(self, name):
        return name in [c["name"] for c in self.store.request("cubes")]
    remote_store.SlicerModelProvider.has_cube = has_cube
    patch("SlicerModelProvider.has_cube",
          "Workspace.cube() asks the provider has_cube(name), which the Slicer provider "
          "lacks: AttributeError before the model is requested")

    # 3b. Workspace.cube() passes namespace= to provider.cube(), whose Slicer version
    #     takes (name, locale) only.
    original_cube = remote_store.SlicerModelProvider.cube

    def cube(self, name, locale=None, namespace=None):
        return original_cube(self, name, locale)
    remote_store.SlicerModelProvider.cube = cube
    patch("SlicerModelProvider.cube namespace",
          "Workspace.cube() calls provider.cube(name, locale=, namespace=); the Slicer "
          "provider's cube() has no namespace argument: TypeError")

    # 3c. SlicerModelProvider.cube() calls create_cube()/create_dimension() and
    #     Cube.add_dimension(), the Cubes 1.0 names; 1.1 has Cube.from_metadata(),
    #     Dimension.from_metadata() and Cube._add_dimension().
    remote_store.create_cube = cubes.Cube.from_metadata
    remote_store.create_dimension = cubes.Dimension.from_metadata
    cubes.Cube.add_dimension = cubes.Cube._add_dimension
    patch("create_cube / create_dimension / add_dimension",
          "the Slicer provider still calls Cubes 1.0 functions that 1.1 renamed to "
          "Cube.from_metadata, Dimension.from_metadata and Cube._add_dimension: NameError")

    # 4. Workspace.add_slicer() registers the store, which already imports the Slicer
    #    model provider, then imports it again: the namespace then holds every cube twice
    #    ("Duplicate cube"). connect() registers the store alone.
    patch("provider registered twice",
          "Workspace.add_slicer() imports the slicer model provider a second time after "
          "register_store() did: list_cubes() fails with 'Duplicate cube'; connect() calls "
          "register_store() only")

    # 5. SlicerStore.request() puts a second slash in front of absolute actions
    #    ("/cube/x/members/y" -> "URL//cube/..."); strip it.
    original = remote_store.SlicerStore.request

    def request(self, action, params=None, is_lines=False):
        return original(self, action.lstrip("/"), params, is_lines)
    remote_store.SlicerStore.request = request
    patch("double slash in members/fact URLs",
          "SlicerBrowser builds '/cube/<c>/members/<d>' and SlicerStore prefixes 'URL/', "
          "giving 'URL//cube/…', which no router matches")


def connect(url, locale=None):
    ws = Workspace()
    ws.register_store("default", "slicer", url=url)
    return ws


def main(url):
    apply_client_patches()
    steps = []

    def step(name, fn):
        try:
            result = fn()
            steps.append({"step": name, "ok": True, "result": result})
        except Exception as exc:  # the pytest side reports which step failed and why
            error = type(exc).__name__ + ": " + str(exc)[:500]
            steps.append({"step": name, "ok": False, "error": error,
                "traceback": traceback.format_exc()[-1500:]})

    ws = connect(url)
    store = ws.get_store("default")
    step("version", lambda: store.request("version"))
    step("info", lambda: store.request("info"))
    step("list_cubes", lambda: [c["name"] for c in ws.list_cubes()])

    names = [c["name"] for c in store.request("cubes")]
    for name in names:
        step("cube:" + name, lambda name=name: sorted(ws.cube(name).to_dict()))
    for name in names:
        def localized(name=name):
            # a workspace with a locale sends lang= with every model request
            cy = connect(url).cube(name, locale="cy")
            return [d.name for d in cy.dimensions]
        step("cube_lang_cy:" + name, localized)

    hb = ws.cube("housing_benefit")
    b = ws.browser(hb)
    geo = hb.dimension("geography")
    england = Cell(hb, [PointCut("geography", ["E92000001"])])

    def agg(**kw):
        r = b.aggregate(**kw)
        return {"summary": r.summary, "cells": list(r.cells), "levels": r.levels,
                "aggregates": r.aggregates}

    step("aggregate_all", lambda: agg())
    step("aggregate_cut_drill", lambda: agg(cell=england, drilldown=["geography"]))
    step("aggregate_named", lambda: agg(cell=england, drilldown=[("geography", None, "region")],
                                        aggregates=["claimants", "weekly_award_mean"]))
    step("aggregate_hierarchy", lambda: agg(
        drilldown=[("geography", "constituency", "region")], aggregates=["claimants"]))
    step("aggregate_order_page", lambda: agg(
        drilldown=["tenure"], aggregates=["claimants"], order=[("claimants", "desc")],
        page=0, page_size=2))
    step("aggregate_split", lambda: agg(
        drilldown=["tenure"], aggregates=["claimants"],
        split=Cell(hb, [PointCut("geography", ["E92000001"])])))
    step("aggregate_set_range", lambda: agg(
        cell=Cell(hb, [SetCut("tenure", [["private"], ["other"]]),
                       RangeCut("time", [2026, 5], [2026, 8], hierarchy="ym")]),
        drilldown=[("time", "ym", "month")], aggregates=["claimants"]))
    step("members", lambda: list(b.members(None, "tenure")))
    step("members_level", lambda: list(b.members(england, geo, depth=2)))
    step("members_hierarchy", lambda: list(b.members(
        england, geo, depth=2, hierarchy="constituency")))
    step("members_attributes", lambda: list(b.members(
        england, geo, depth=2, attributes=["geography.region_name"])))
    step("members_order", lambda: list(b.members(
        england, geo, depth=2, order=[("geography.region_name", "desc")])))
    step("members_paged", lambda: list(b.members(None, "time", page=0, page_size=3)))
    step("cell_details", lambda: b.cell_details(Cell(hb, [
        PointCut("geography", ["E92000001", "E12000007"]),
        SetCut("tenure", [["private"], ["nope"]]),
        RangeCut("time", [2026, 6], [2026, 8], hierarchy="ym")])))
    step("cell_details_dimension", lambda: b.cell_details(england, dimension="geography"))
    step("features", lambda: b.features())
    # record-level calls: statcube refuses them (403) on purpose
    step("facts", lambda: list(b.facts(england)))
    step("fact", lambda: b.fact(1))

    print(json.dumps({"cubes_version": cubes.__version__, "patches": PATCHES,
                      "steps": steps}, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
