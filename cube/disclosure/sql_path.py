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


def _magnitude_inputs(p: Protection, s: Any, x1: Any) -> dict[str, ColumnElement[Any]]:
    """Layer 2 of Ŝ: the dominance flag and the flex weight w (protect.py's docstring)."""
    scale = MAGNITUDE_SCALE
    fpx = p.flex_point * x1
    return {"dom": 100 * sa.func.greatest(s - 2 * x1, 0) < p.dominance_p * x1,
            "w": _floor_div(scale * fpx, sa.func.greatest(fpx + s, 1))}


def _magnitude_step(p: Protection, n: Any, s: Any, w: Any, dom: Any, v: Any, vc: Any,
                    ckey2: Any) -> dict[str, ColumnElement[Any]]:
    """Layer 3 of Ŝ: the share m of x1 per step, the number of steps, the sign, the mean."""
    scale = MAGNITUDE_SCALE
    wq: ColumnElement[Any] = w
    for _ in range(p.q - 1):
        wq = _floor_div(wq * w, scale)
    lo, hi = p.fixed(p.p_large), p.fixed(p.p_small)
    flex = lo + _floor_div((hi - lo) * wq, scale)
    parity = sa.case((ckey2 % 2 == 0, 1), else_=-1)
    dom_sign = sa.case((vc != 0, _sign(vc)), (v != 0, _sign(v)), else_=parity)
    safe_n = sa.func.greatest(n, 1)
    return {"share": sa.case((dom, sa.func.greatest(flex, p.dominance_p * (scale // 100))),
                             else_=flex),
            "steps": sa.func.abs(v) + sa.case((dom, p.dominance_mu), else_=0),
            "sign": sa.case((dom, dom_sign), else_=_sign(v)),
            "mean": _floor_div(2 * s + safe_n, 2 * safe_n)}


def _published_sum(n_hat: Any, vc: Any, s: Any, x1: Any, dom: Any, share: Any, steps: Any,
                   sign: Any, mean: Any) -> ColumnElement[Any]:
    """Layer 4: Ŝ in pence, as protect.published_sums computes it."""
    scale = MAGNITUDE_SCALE
    raw_mag = _floor_div(x1 * steps * share + scale // 2, scale)
    mag = sa.case((dom, sa.func.greatest(raw_mag, 1)), else_=raw_mag)
    return sa.case((n_hat == 0, 0), else_=sa.func.greatest(0, s + vc * mean + sign * mag))


_N_HAT, _V = "__n_hat", "__v2"


def _s_hat(measure: str) -> str:
    return f"__{measure}_s_hat"


def _col(measure: str, what: str) -> str:
    """An intermediate column of the magnitude layers (internal, never selected out)."""
    return f"__{measure}_{what}"


def protected_stage(p: Protection) -> ValueStage:
    """A ValueStage computing published values from the aggregation subquery.

    The p-table is joined once for counts and, only when the query asks for an amount
    aggregate, a second time (symmetric row, second cell key) for magnitudes.
    """

    def stage(query: Query, sub: sa.Subquery) -> StageOutput:
        # Layers of subqueries over the aggregation, each naming what the next one uses, so
        # every intermediate is computed once per cell (written as one expression, the
        # magnitude formula repeats its parts many times, and an ORDER BY or filter on a mean
        # repeats all of it): (1) join the p-table for n̂ and the magnitude step v; then,
        # with amounts, (2) the dominance flag and flex weight, (3) share, steps, sign and
        # mean, (4) Ŝ.
        ncat = p.ptable.params.ncat
        p1 = sa.table(PTABLE, sa.column("pcv"), sa.column("ckey"), sa.column("pvalue")).alias("p1")
        p2 = sa.table(PTABLE, sa.column("pcv"), sa.column("ckey"), sa.column("pvalue")).alias("p2")
        n = sub.c[N]
        frm = sub.outerjoin(p1, sa.and_(p1.c.pcv == sa.func.least(n, ncat),
                                        p1.c.ckey == sub.c[RK]))
        measures = list(dict.fromkeys(a.measure.name for a in query.aggregates
                                      if a.measure.kind == "amount"))
        cols: list[Any] = [
            *sub.c,
            sa.cast(sa.case((n == 0, 0), else_=n + sa.func.coalesce(p1.c.pvalue, 0)),
                    sa.BigInteger).label(_N_HAT)]
        if measures:
            frm = frm.outerjoin(p2, sa.and_(p2.c.pcv == ncat, p2.c.ckey == sub.c[RK2]))
            cols.append(sa.cast(sa.func.coalesce(p2.c.pvalue, 0), sa.BigInteger).label(_V))
        layer = sa.select(*cols).select_from(frm).subquery("published_counts")
        if measures:
            # Layers 2-4 of Ŝ, each computing named columns from the one before.
            c = layer.c
            inputs = []
            for m in measures:
                s_, x1 = sa.func.coalesce(c[sum_col(m)], 0), sa.func.coalesce(c[max_col(m)], 0)
                inputs += [s_.label(_col(m, "s")), x1.label(_col(m, "x1"))]
                inputs += [e.label(_col(m, k)) for k, e in _magnitude_inputs(p, s_, x1).items()]
            layer = sa.select(*c, *inputs).subquery("magnitude_inputs")
            c = layer.c
            vc = c[_N_HAT] - c[N]
            steps = [e.label(_col(m, k)) for m in measures for k, e in _magnitude_step(
                p, c[N], c[_col(m, "s")], c[_col(m, "w")], c[_col(m, "dom")], c[_V], vc,
                c[RK2]).items()]
            layer = sa.select(*c, *steps).subquery("magnitude_steps")
            c = layer.c
            vc = c[_N_HAT] - c[N]
            sums = [_published_sum(c[_N_HAT], vc, *(c[_col(m, k)] for k in (
                "s", "x1", "dom", "share", "steps", "sign", "mean"))).label(_s_hat(m))
                for m in measures]
            layer = sa.select(*c, *sums).subquery("published")
        n_hat = layer.c[_N_HAT]
        withheld = n_hat < p.mean_threshold
        values: dict[str, ColumnElement[Any]] = {}
        extra: list[Any] = []
        for a in query.aggregates:
            if a.measure.kind == "count":
                values[a.name] = n_hat
                continue
            s_hat = layer.c[_s_hat(a.measure.name)]
            value = s_hat if a.function == "sum" else _floor_div(2 * s_hat + n_hat, 2 * n_hat)
            values[a.name] = sa.case((withheld, sa.null()),
                                     else_=sa.cast(value, sa.Double) / 100.0)
            extra.append(withheld.label(withheld_column(a.name)))
        # A cell published as zero is dropped like an empty one: showing a 0 row would
        # reveal that 1 or 2 records are there.
        return StageOutput(layer, values, extra, keep=n_hat > 0, source=layer)

    return stage
