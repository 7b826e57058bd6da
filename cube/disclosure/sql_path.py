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

from cube.disclosure.protect import withheld_column
from cube.disclosure.rules import MAGNITUDE_SCALE, Protection
from cube.query import Query
from cube.sql import RK, RK2, N, StageOutput, ValueStage, max_col, sum_col

PTABLE = "sdc_ptable"


def _floor_div(a: Any, b: Any) -> ColumnElement[Any]:
    """⌊a / b⌋ for non-negative integers, identically on DuckDB and PostgreSQL.

    Through a double: IEEE division is correctly rounded, so the floor is exact while the
    dividend stays below 2**53 (about 90 trillion pounds in pence).
    """
    return sa.cast(sa.func.floor(sa.cast(a, sa.Double) / b), sa.BigInteger)


def _sign(x: Any) -> ColumnElement[Any]:
    """sign(x) as an integer (PostgreSQL's sign() of an integer is a double)."""
    return sa.case((x > 0, 1), (x < 0, -1), else_=0)


def published_sum(p: Protection, n: Any, n_hat: Any, s: Any, x1: Any, v: Any, ckey2: Any
                  ) -> ColumnElement[Any]:
    """Ŝ in pence, as protect.published_sums computes it (see protect.py's docstring)."""
    scale = MAGNITUDE_SCALE
    fpx = p.flex_point * x1
    w = _floor_div(scale * fpx, sa.func.greatest(fpx + s, 1))
    wq: ColumnElement[Any] = w
    for _ in range(p.q - 1):
        wq = _floor_div(wq * w, scale)
    lo, hi = p.fixed(p.p_large), p.fixed(p.p_small)
    flex = lo + _floor_div((hi - lo) * wq, scale)
    dom = 100 * sa.func.greatest(s - 2 * x1, 0) < p.dominance_p * x1
    m = sa.case((dom, sa.func.greatest(flex, p.dominance_p * (scale // 100))), else_=flex)
    steps = sa.func.abs(v) + sa.case((dom, p.dominance_mu), else_=0)
    raw_mag = _floor_div(x1 * steps * m + scale // 2, scale)
    mag = sa.case((dom, sa.func.greatest(raw_mag, 1)), else_=raw_mag)
    vc = n_hat - n
    safe_n = sa.func.greatest(n, 1)
    mean = _floor_div(2 * s + safe_n, 2 * safe_n)
    parity = sa.case((ckey2 % 2 == 0, 1), else_=-1)
    dom_sign = sa.case((vc != 0, _sign(vc)), (v != 0, _sign(v)), else_=parity)
    sign = sa.case((dom, dom_sign), else_=_sign(v))
    return sa.case((n_hat == 0, 0),
                   else_=sa.func.greatest(0, s + vc * mean + sign * mag))


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
        withheld = n_hat < p.mean_threshold
        values: dict[str, ColumnElement[Any]] = {}
        extra: list[Any] = []
        for a in query.aggregates:
            if a.measure.kind == "count":
                values[a.name] = n_hat
                continue
            m = a.measure.name
            s_hat = published_sum(
                p, n, n_hat, sa.func.coalesce(sub.c[sum_col(m)], 0),
                sa.func.coalesce(sub.c[max_col(m)], 0),
                sa.cast(sa.func.coalesce(p2.c.pvalue, 0), sa.BigInteger), sub.c[RK2])
            value = s_hat if a.function == "sum" else _floor_div(2 * s_hat + n_hat, 2 * n_hat)
            values[a.name] = sa.case((withheld, sa.null()),
                                     else_=sa.cast(value, sa.Double) / 100.0)
            extra.append(withheld.label(withheld_column(a.name)))
        # A cell published as zero is dropped like an empty one: showing a 0 row would
        # reveal that 1 or 2 records are there.
        return StageOutput(frm, values, extra, keep=n_hat > 0)

    return stage
