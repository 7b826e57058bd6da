"""The cell key method as SQL: join the aggregated cells with the warehouse's ``sdc_ptable``.

Used by exports (the engine streams protected rows straight to Parquet) and by queries that
order, filter or rank on published values (which must happen before paging). The formulas
are those of protect.py, in the same integer-pence arithmetic, so both paths agree exactly.

Plugs into cube/sql.py's ``finish`` stage as a ValueStage; it never exposes the raw columns.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

from cube.disclosure.protect import RK, RK2, N, withheld_column
from cube.disclosure.rules import Protection
from cube.query import Query
from cube.sql import StageOutput, ValueStage

PTABLE = "sdc_ptable"


def _floor_div(a: Any, b: Any) -> ColumnElement[Any]:
    """⌊a / b⌋ for non-negative integers, identically on DuckDB and PostgreSQL.

    Through a double: IEEE division is correctly rounded, so the floor is exact while the
    dividend stays below 2**53 (about 90 trillion pounds in pence).
    """
    return sa.cast(sa.func.floor(sa.cast(a, sa.Double) / b), sa.BigInteger)


def protected_stage(p: Protection) -> ValueStage:
    """A ValueStage computing published values from the aggregation subquery.

    The p-table is joined once for counts and, only when the query asks for an amount
    aggregate, a second time (symmetric row, second cell key) for magnitudes.
    """

    def stage(query: Query, sub: sa.Subquery) -> StageOutput:
        ncat = p.ptable.params.ncat
        p1 = sa.table(PTABLE, sa.column("pcv"), sa.column("ckey"), sa.column("pvalue")).alias("p1")
        p2 = sa.table(PTABLE, sa.column("pcv"), sa.column("ckey"), sa.column("pvalue")).alias("p2")
        n = sub.c[N]
        frm = sub.outerjoin(p1, sa.and_(p1.c.pcv == sa.func.least(n, ncat),
                                        p1.c.ckey == sub.c[RK]))
        needs_sums = any(a.measure.kind == "amount" for a in query.aggregates)
        if needs_sums:
            frm = frm.outerjoin(p2, sa.and_(p2.c.pcv == ncat, p2.c.ckey == sub.c[RK2]))
        n_hat: ColumnElement[Any] = sa.cast(
            sa.case((n == 0, 0), else_=n + sa.func.coalesce(p1.c.pvalue, 0)), sa.BigInteger)
        values: dict[str, ColumnElement[Any]] = {}
        extra: list[Any] = []
        for a in query.aggregates:
            if a.measure.kind == "count":
                values[a.name] = n_hat
                continue
            m = a.measure.name
            s, xmax = sub.c[f"__{m}_sum"], sub.c[f"__{m}_max"]
            v = sa.func.coalesce(p2.c.pvalue, 0)
            mag = _floor_div(sa.func.coalesce(xmax, 0) * sa.func.abs(v) * p.delta_milli + 500,
                             1000)
            s_hat = sa.case((n_hat == 0, 0), else_=sa.func.greatest(
                0, sa.func.coalesce(s, 0) + sa.func.sign(v) * mag))
            if a.function == "sum":
                values[a.name] = sa.cast(s_hat, sa.Double) / 100.0
            else:
                withheld = n_hat < p.mean_threshold
                mean = _floor_div(2 * s_hat + n_hat, 2 * n_hat)
                values[a.name] = sa.case((withheld, sa.null()),
                                         else_=sa.cast(mean, sa.Double) / 100.0)
                extra.append(withheld.label(withheld_column(a.name)))
        # A cell published as zero is dropped like an empty one: showing a 0 row would
        # reveal that 1 or 2 records are there.
        return StageOutput(frm, values, extra, keep=n_hat > 0)

    return stage
