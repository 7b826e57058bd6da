"""The one disclosure gate. Every public output — API responses, exports, maps, CLI — calls
:class:`Gate`; nothing else turns raw cells into something that may leave the process.

The gate: checks the grammar limits (rules.py); runs the query raw and perturbs the page
with numpy (protect.py), or — when the query orders, filters or ranks on values, which must
happen before paging — runs the protected SQL (sql_path.py); and wraps the outcome in a
:class:`ProtectedResult`, a type that refuses to hold any internal column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from cube import sql as compiler
from cube.disclosure.protect import protect_table, withheld_column
from cube.disclosure.rules import Protection, check_query
from cube.disclosure.sql_path import protected_stage
from cube.errors import ConfigError
from cube.model import Model
from cube.query import Query, describe_cuts, drilldown_levels

if TYPE_CHECKING:
    from cube.engine import Engine
    from cube.workspace import CubeBrowser

METHOD = "cell key method (ABS / ONS Census 2021)"


@dataclass(frozen=True)
class DisclosureReport:
    """What was done to the numbers, in words a user can read."""

    method: str
    ptable: str
    parameters: Mapping[str, Any]
    withheld: int
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "ptable": self.ptable, "parameters": dict(self.parameters),
                "withheld_values": self.withheld, "notes": list(self.notes)}


@dataclass(frozen=True)
class ProtectedResult:
    query: Query
    cells: pa.Table
    summary: Mapping[str, Any]
    total_cell_count: int
    report: DisclosureReport
    allowed: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        names = set(self.cells.column_names) | set(self.summary)
        internal = {n for n in names if n.startswith("__") and n != compiler.SPLIT}
        if internal or (self.allowed and not names <= self.allowed):
            raise AssertionError(f"protected result cannot carry columns {sorted(internal or names - self.allowed)}")

    @property
    def aggregate_names(self) -> list[str]:
        return [a.name for a in self.query.aggregates]

    @property
    def attributes(self) -> list[str]:
        return [a.ref for a in self.query.cell_attributes]

    def to_json(self) -> dict[str, Any]:
        """The Cubes 1.1 /aggregate shape, plus statcube's ``period`` and ``disclosure``."""
        q = self.query
        out: dict[str, Any] = {
            "summary": dict(self.summary),
            "cells": self.cells.to_pylist(),
            "total_cell_count": self.total_cell_count,
            "aggregates": self.aggregate_names,
            "cell": describe_cuts([c for c in q.cuts if c.source is not None]),
            "levels": dict(drilldown_levels(q)),
            "attributes": self.attributes,
            "has_split": bool(q.split),
            "remainder": {},
        }
        if q.pagesize is not None:
            out["page"] = q.page
            out["page_size"] = q.pagesize
        if q.default_period:
            out["period"] = q.default_period
        out["disclosure"] = self.report.to_json()
        return out


class Gate:
    def __init__(self, model: Model, protection: Protection) -> None:
        self.model = model
        self.protection = protection

    @classmethod
    def for_warehouse(cls, model: Model, engine: Engine, meta: Mapping[str, Any]) -> Gate:
        protection = Protection.from_model(model)
        built = meta.get("ptable_digest")
        if built is not None and built != protection.ptable.digest:
            raise ConfigError(
                "the warehouse was built with a different p-table than model.json describes "
                f"(warehouse {str(built)[:12]}…, model {protection.ptable.digest[:12]}…); "
                "rebuild the warehouse so the API and exports publish the same values")
        return cls(model, protection)

    @property
    def k(self) -> int:
        return self.protection.k

    def _report(self, withheld: int) -> DisclosureReport:
        p = self.protection
        params = p.ptable.params
        return DisclosureReport(
            method=METHOD,
            ptable=p.ptable.digest[:16],
            parameters={"D": params.D, "V": params.V, "js": params.js, "delta": p.delta,
                        "mean_threshold": p.mean_threshold},
            withheld=withheld,
            notes=(
                f"Counts are adjusted by up to ±{params.D} to protect confidentiality; "
                f"no count of 1 to {params.js} is published.",
                "Each figure is adjusted on its own, so totals may not equal the sum of "
                "their parts.",
                f"Means are withheld (null) where fewer than {p.mean_threshold} are counted.",
            ),
        )

    def aggregate(self, browser: CubeBrowser, query: Query) -> ProtectedResult:
        check_query(query)
        p = self.protection
        keep = [a.ref for a in query.cell_attributes] + (
            [compiler.SPLIT] if query.split else [])
        if query.needs_measure_values_in_sql:
            stmt = compiler.finish(query, p.k, protected_stage(p), keep_raw=False)
            cells = browser.ws.engine.execute(stmt)
            total = None
            if compiler.TOTAL in cells.column_names:
                total = cells.column(compiler.TOTAL)[0].as_py() if cells.num_rows else None
                cells = cells.drop_columns([compiler.TOTAL])
            summary_raw = browser.ws.engine.execute(compiler.summary(query, p.k))
            if total is None:
                total = cells.num_rows if query.pagesize is None else browser._count_cells(query)
        else:
            raw = browser._raw_aggregate(query)
            cells = protect_table(raw.cells, query.aggregates, p, keep)
            summary_raw = raw.summary
            total = raw.total_cell_count if raw.total_cell_count is not None else cells.num_rows
        summary_t = protect_table(summary_raw, query.aggregates, p, [])
        summary = {k: v[0] for k, v in summary_t.to_pydict().items()}
        withheld = sum(
            int(cells.column(withheld_column(a.name)).to_numpy(zero_copy_only=False).sum())
            for a in query.aggregates if a.function == "avg"
        ) if cells.num_rows else 0
        allowed = frozenset(keep) | {a.name for a in query.aggregates} | {
            withheld_column(a.name) for a in query.aggregates if a.function == "avg"}
        return ProtectedResult(query, cells, summary, int(total), self._report(withheld),
                               allowed)

    def stream(self, browser: CubeBrowser, query: Query, batch_rows: int = 100_000
               ) -> pa.RecordBatchReader:
        """Protected cells as a record-batch stream (exports): the SQL path, same rules.

        The stream carries only attribute, aggregate and withheld-flag columns.
        """
        check_query(query)
        p = self.protection
        stmt = compiler.finish(query, p.k, protected_stage(p), keep_raw=False)
        reader = browser.ws.engine.stream(stmt, batch_rows)
        internal = [n for n in reader.schema.names if n.startswith("__")]
        if internal:
            raise AssertionError(f"protected stream cannot carry {internal}")
        return reader

