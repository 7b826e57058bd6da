"""Table-size limits per role and rate limits per key or IP.

Size: each role may receive at most ``max_cells_<role>`` cells (or member rows) in one
response. A larger table is refused with 413 naming the limit and how to page — never cut
short. To avoid protecting a huge table only to refuse it, an unpaged aggregate is first asked
of the gate as its first page of ``limit`` cells (paging is LIMIT/OFFSET over the same
deterministic order, and the gate reports the total); if the total fits, that page *is* the
whole table and is presented as the unpaged result.

Rate: flask-limiter counts requests per API key (``key:<id>``) or, without a valid key, per
client IP, with the role's ``rate_limit_<role>`` setting; it adds ``X-RateLimit-*`` headers and
raises 429, which the error handlers turn into the one error shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from flask import Flask, request
from flask_limiter import Limiter

from cube.disclosure.gate import ProtectedResult
from cube.errors import ArgumentError, TooLargeError
from cube.grammar import PointCut, RangeCut, parse_cuts
from cube.query import Query
from cube.settings import Settings
from cube.workspace import CubeBrowser
from server.auth import KeyStore, Principal, Role
from server.ratestore import storage_uri

#: Characters of one request's cut (every cut parameter joined), or of one report query's.
MAX_CUT_CHARS = 20_000
#: Members one cut may name (points, elements of sets, ends of ranges). A set of 125,000
#: members took 17 s (500,000 hit the worker timeout); 2,000 LSOA or LA codes take well
#: under a second. Wider selections are drilldowns under a parent cut.
MAX_CUT_MEMBERS = 2_000


def max_cells(settings: Settings, role: Role) -> int:
    return int(getattr(settings, f"max_cells_{role.value}"))


def rate_limit(settings: Settings, role: Role) -> str:
    return str(getattr(settings, f"rate_limit_{role.value}"))


def too_large(what: str, count: int, limit: int, principal: Principal, paged: bool
              ) -> TooLargeError:
    more = "" if principal.role is not Role.GUEST else "; registered users have a larger limit"
    asked = f"a page of {count:,} {what} is" if paged else f"this table has {count:,} {what},"
    return TooLargeError(
        f"{asked} more than the limit of {limit:,} {what} per response for the "
        f"{principal.role.value} role{more}",
        parameter="pagesize", value=str(count),
        hint=f"page through it with pagesize={limit} (or less) and page=0, 1, …, or cut or "
             f"drill less",
    )


def check_pagesize(query_pagesize: int | None, limit: int, what: str, principal: Principal
                   ) -> None:
    if query_pagesize is not None and query_pagesize > limit:
        raise too_large(what, query_pagesize, limit, principal, paged=True)


def check_size(size: int, limit: int, what: str, principal: Principal) -> None:
    if size > limit:
        raise too_large(what, size, limit, principal, paged=False)


def aggregate_within(browser: CubeBrowser, query: Query, limit: int, principal: Principal
                     ) -> ProtectedResult:
    """The gate's result for ``query``, or 413 if it holds more than ``limit`` cells."""
    if query.pagesize is not None:
        check_pagesize(query.pagesize, limit, "cells", principal)
        return browser.aggregate_query(query)
    first_page = dataclasses.replace(query, page=0, pagesize=limit)
    result = browser.aggregate_query(first_page)
    check_size(result.total_cell_count, limit, "cells", principal)
    return dataclasses.replace(result, query=query)


def check_cut(text: str, parameter: str = "cut") -> None:
    """Refuse an over-long cut before it is parsed into SQL (400 naming the parameter and
    the limit). Cheap: a length, then a parse of at most :data:`MAX_CUT_CHARS` characters."""
    if len(text) > MAX_CUT_CHARS:
        raise ArgumentError(
            f"{parameter} is {len(text):,} characters long, more than the limit of "
            f"{MAX_CUT_CHARS:,}", parameter=parameter, value=text[:100] + "…",
            hint="cut by a parent member and drill down instead of listing members")
    members = 0
    for cut in parse_cuts(text, parameter=parameter):
        members += 1 if isinstance(cut, PointCut) else 2 if isinstance(cut, RangeCut) \
            else len(cut.paths)
    if members > MAX_CUT_MEMBERS:
        raise ArgumentError(
            f"{parameter} names {members:,} members, more than the limit of "
            f"{MAX_CUT_MEMBERS:,}", parameter=parameter,
            value=text[:100] + ("…" if len(text) > 100 else ""),
            hint="cut by a parent member and drill down instead of listing members")


def client_ip() -> str:
    return request.remote_addr or "unknown"


def make_limiter(app: Flask, settings: Settings, keys: KeyStore) -> Limiter:
    """flask-limiter over the app: per key or IP, with the caller's role's limit."""

    def who() -> Principal:
        return keys.role_for_limits(request.headers)

    def key_func() -> str:
        return who().rate_key or f"ip:{client_ip()}"

    def limit_for() -> Callable[[], str]:
        return lambda: rate_limit(settings, who().role)

    return Limiter(
        key_func,
        app=app,
        application_limits=[limit_for()],  # one budget across all endpoints
        # probes of orchestrators are never limited (a 429 would read as "not ready")
        application_limits_exempt_when=lambda: request.method == "OPTIONS"
        or request.path in ("/health/live", "/health/ready"),
        headers_enabled=True,
        storage_uri=storage_uri(settings.rate_limit_storage),
        strategy="fixed-window",
        key_prefix="statcube",
    )
