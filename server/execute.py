"""The calls into cube/ that endpoints make beyond one aggregate: members with size limits,
and reports (several named queries answered in one response).

A report is planned first — every query resolved and checked, so an error names
``queries.<name>.<parameter>`` and nothing runs — then run with the caller's size limit
applied to the report's total. Aggregates still come only from the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cube import labels
from cube.disclosure.gate import ProtectedResult
from cube.disclosure.rules import check_query
from cube.errors import ArgumentError, StatcubeError
from cube.query import Query
from cube.releases import Release
from cube.workspace import CubeBrowser, Members
from server import describe, limits
from server.auth import Principal
from server.cache import normalise
from server.formats import aggregate_json
from server.params import Args, ReportQuery, aggregate_request


def in_language(browser: CubeBrowser, result: ProtectedResult, lang: str | None
                ) -> ProtectedResult:
    """The result with its cells' labels in ``lang`` (cube/labels.py), or as it is."""
    if lang is None:
        return result
    levels = [lvl for d in result.query.drilldown for lvl in d.levels]
    return replace(result, cells=labels.localise_table(browser, levels, result.cells, lang))


def members_within(browser: CubeBrowser, dimension: str, args: Args, limit: int,
                   principal: Principal, lang: str | None = None) -> Members:
    pagesize = args.integer("pagesize")
    limits.check_pagesize(pagesize, limit, "members", principal)
    result = browser.members(dimension, hierarchy=args.one("hierarchy"),
                             level=args.one("level"), depth=args.integer("depth"),
                             cut=args.joined_cut() or None, page=args.integer("page"),
                             pagesize=pagesize, fields=args.many("fields"),
                             order=args.many("order"))
    limits.check_size(result.members.num_rows, limit, "members", principal)
    if lang is not None:
        dim = browser.cube.dimension(dimension)
        result = replace(result, members=labels.localise_table(
            browser, dim.hierarchy(result.hierarchy).levels, result.members, lang))
    return result


@dataclass(frozen=True)
class Planned:
    name: str
    type: str
    args: Args
    query: Query | None = None

    @property
    def key(self) -> Any:
        if self.query is not None:
            return [self.name, self.type, normalise(self.query)]
        return [self.name, self.type, sorted(self.args.values.items())]


def plan_report(browser: CubeBrowser, queries: list[ReportQuery]) -> list[Planned]:
    out = []
    for q in queries:
        try:
            for name in ("cut", "split"):  # bounded work: refused before any SQL
                if q.args.many(name):
                    limits.check_cut(q.args.joined_cut(name), name)
            if q.type == "aggregate":
                query = browser.query(aggregate_request(browser.cube.name, q.args))
                check_query(query)
                out.append(Planned(q.name, q.type, q.args, query))
                continue
            if q.type == "members":
                dim = q.args.one("dimension")
                if not dim:
                    raise ArgumentError("a members query needs a dimension",
                                        parameter="dimension")
                browser.cube.dimension(dim)
            out.append(Planned(q.name, q.type, q.args))
        except StatcubeError as exc:
            exc.parameter = f"queries.{q.name}" + (f".{exc.parameter}" if exc.parameter else "")
            raise
    return out


def run_report(browser: CubeBrowser, plan: list[Planned], release: Release, limit: int,
               principal: Principal, lang: str | None = None) -> tuple[dict[str, Any], int]:
    """The report's results by name, and the cells and member rows it holds in total."""
    out: dict[str, Any] = {}
    total = 0
    for p in plan:
        if p.query is not None:
            result = in_language(browser, limits.aggregate_within(browser, p.query, limit,
                                                                  principal), lang)
            total += result.cells.num_rows
            out[p.name] = aggregate_json(result, release.id)
        elif p.type == "members":
            dim = p.args.one("dimension") or ""
            m = members_within(browser, dim, p.args, limit, principal, lang)
            total += m.members.num_rows
            out[p.name] = {**describe.members(m, browser, release, p.args.one("pagesize")
                                              is not None), "data": m.members.to_pylist()}
        else:
            out[p.name] = describe.cell(browser, p.args.joined_cut(), release,
                                        p.args.one("dimension"), lang)
        limits.check_size(total, limit, "cells", principal)
    return out, total
