"""One error hierarchy for all of statcube.

Every error a user can cause is a subclass of :class:`StatcubeError` carrying an HTTP
``status``, a machine-readable ``type`` and, where known, the offending ``parameter`` and a
``hint``. The HTTP layer, the CLI and the exporter all render these the same way.

Safety rule: a class whose ``public`` is True has a message written for clients (it may name
the offending value the client sent, never a raw count, key or internal path). Errors with
``public = False`` are replaced by a generic message and a request id before they leave the
server; their text is for logs only.

This module imports nothing from statcube.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from typing import Any, ClassVar


class StatcubeError(Exception):
    """Base class. Not raised directly."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    public: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.value = value
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        """The canonical error body (JSON). Only call for ``public`` errors."""
        body: dict[str, Any] = {"error": self.type, "message": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        if self.value is not None:
            body["value"] = self.value
        if self.hint is not None:
            body["hint"] = self.hint
        return body


# --- 4xx: the user's input; messages are safe for clients ---------------------------------


class UserError(StatcubeError):
    """Bad input. Message is safe for clients."""

    status = 400
    type = "bad_request"
    public = True


class GrammarError(UserError):
    """A cut, drilldown, order or aggregates string does not parse.

    ``position`` is the 0-based character offset of the problem in the raw string.
    """

    type = "syntax_error"

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: str | None = None,
        position: int | None = None,
        hint: str | None = None,
    ) -> None:
        if position is not None:
            message = f"{message} (at position {position})"
        super().__init__(message, parameter=parameter, value=value, hint=hint)
        self.position = position

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.position is not None:
            body["position"] = self.position
        return body


class NotFoundError(UserError):
    """A named object (cube, dimension, level, release, file) does not exist."""

    status = 404
    type = "not_found"


class NoSuchCubeError(NotFoundError):
    type = "unknown_cube"


class NoSuchDimensionError(NotFoundError):
    type = "unknown_dimension"


class NoSuchHierarchyError(UserError):
    type = "unknown_hierarchy"


class NoSuchLevelError(UserError):
    type = "unknown_level"


class NoSuchAggregateError(UserError):
    type = "unknown_aggregate"


class NoSuchAttributeError(UserError):
    type = "unknown_attribute"


class HierarchyError(UserError):
    """Drilling past the last level, mismatched hierarchies, a cut path too long."""

    type = "hierarchy_error"


class ArgumentError(UserError):
    """A parameter has the wrong type or range (page, pagesize, format, release…)."""

    type = "bad_argument"


class NonAdditiveError(UserError):
    """A query would add a stock (non-additive over time) across several periods."""

    type = "non_additive"


class DisclosureRuleError(UserError):
    """The query is refused by a disclosure-control grammar limit (averaging attacks)."""

    status = 403
    type = "disclosure_rule"


class ForbiddenError(UserError):
    """The caller's role may not see this."""

    status = 403
    type = "forbidden"


class UnauthorizedError(UserError):
    status = 401
    type = "unauthorized"


class TooLargeError(UserError):
    """A result would exceed a size limit: refused, never truncated."""

    status = 413
    type = "too_large"


class RateLimitedError(UserError):
    status = 429
    type = "rate_limited"


# --- input files (build/load); messages name file, line and value ------------------------


class InputDataError(UserError):
    """A lookup or microdata file is malformed. Messages name file, line and value.

    ``problems`` holds up to a bounded number of individual row problems for reports.
    """

    type = "input_error"

    def __init__(self, message: str, *, problems: Iterable[str] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.problems = tuple(problems)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        shown = "\n  ".join(self.problems[:20])
        more = len(self.problems) - 20
        tail = f"\n  … and {more} more" if more > 0 else ""
        return f"{self.message}\n  {shown}{tail}"


class ModelError(StatcubeError):
    """model.json is invalid. Message names the JSON path. For operators, not clients."""

    type = "model_error"
    status = 500

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class ConfigError(StatcubeError):
    """A setting is missing or invalid (e.g. no key secret). For operators."""

    type = "config_error"


# --- 5xx: never shown to clients verbatim -------------------------------------------------


class EngineUnavailableError(StatcubeError):
    """The SQL engine cannot be reached. Clients get a generic 503."""

    status = 503
    type = "engine_unavailable"


class QueryTimeoutError(StatcubeError):
    """One SQL statement ran longer than the statement time limit and was cancelled.

    Public: the message names only the limit, and tells the client what to change (a
    narrower cut, less drilling, paging) — retrying the same query would time out again,
    so the HTTP status is 504 and no ``Retry-After`` is sent."""

    status = 504
    type = "query_timeout"
    public = True


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for an unknown name, or None."""
    matches = get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not matches:
        return None
    return "did you mean " + " or ".join(repr(m) for m in matches) + "?"


def unknown(
    cls: type[UserError],
    kind: str,
    name: str,
    choices: Mapping[str, object] | Iterable[str],
    *,
    parameter: str | None = None,
    where: str = "",
) -> UserError:
    """Build a 'no such X' error listing close matches."""
    names = list(choices)
    where_text = f" in {where}" if where else ""
    return cls(
        f"unknown {kind} {name!r}{where_text}",
        parameter=parameter,
        value=name,
        hint=suggest(name, names) or ("valid: " + ", ".join(sorted(names)[:30])),
    )
