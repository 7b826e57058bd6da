"""One SQL client's session: who it is, which release it reads, and where a statement goes.

A session sees the releases its role may see (the calendar's embargo rule, as on HTTP):
each is a schema named by its release id, holding one table per cube; the latest published
(or, for pre-release roles, the latest visible) is the default ``search_path``.
``SET search_path TO "2026-11"`` switches release. Statements go:

- ``BEGIN``/``COMMIT``/``ROLLBACK``, ``SET``, ``RESET``, ``SHOW``, ``DISCARD`` — answered here
  (transactions are no-ops: everything is read-only);
- a ``SELECT`` naming a cube table — cube/sqlapi/surface.py, through the gate;
- any other ``SELECT`` — the catalog (cube/sqlapi/catalog.py);
- anything that writes — refused with SQLSTATE 25006.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlglot
from sqlglot import exp

from cube.releases import Release, ReleaseSet
from cube.sqlapi.catalog import _TABLES as CATALOG_TABLES
from cube.sqlapi.catalog import Catalog, Context, Running
from cube.sqlapi.surface import CubeTable, ResultSet, SqlError, answer, cube_table, plan
from cube.workspace import CubeBrowser

PG_VERSION = "15.0"


@dataclass(frozen=True)
class Caller:
    """Who is asking: the role (from the API key), whether it may see embargoed releases,
    and its table-size limit (the HTTP ``max_cells_<role>`` setting)."""

    role: str
    embargo_exempt: bool
    max_cells: int
    user: str = "guest"


class SqlService:
    """What every session shares: the releases, cube tables and catalogs (one per set of
    visible releases, so guests' catalogs never name an embargoed release)."""

    def __init__(self, releases: ReleaseSet, clock: Callable[[], datetime], version: str
                 ) -> None:
        self.releases = releases
        self.clock = clock
        self.version = version
        self._tables = {name: cube_table(c) for name, c in releases.model.cubes.items()}
        self._catalogs: dict[tuple[str, ...], Catalog] = {}
        self._lock = threading.Lock()

    def visible(self, caller: Caller) -> tuple[Release, ...]:
        return self.releases.calendar.visible(self.clock(), embargo_exempt=caller.embargo_exempt)

    def default_release(self, caller: Caller) -> Release:
        return self.releases.calendar.select(None, self.clock(),
                                             embargo_exempt=caller.embargo_exempt)

    def tables(self, release: Release) -> list[CubeTable]:
        return [self._tables[n] for n in self.releases.cube_names(release)]

    def catalog(self, releases: Sequence[Release]) -> Catalog:
        key = tuple(r.id for r in releases)
        with self._lock:
            found = self._catalogs.get(key)
            if found is None:
                found = self._catalogs[key] = Catalog({r.id: self.tables(r)
                                                       for r in reversed(releases)})
            return found


@dataclass
class Session:
    service: SqlService
    caller: Caller
    database: str = "statcube"
    settings: dict[str, str] = field(default_factory=dict)
    #: what a cancel request interrupts (the statement's DuckDB connection)
    running: Running = field(default_factory=Running)

    def __post_init__(self) -> None:
        defaults = {"server_version": PG_VERSION, "server_encoding": "UTF8",
                    "client_encoding": "UTF8", "datestyle": "ISO, MDY",
                    "timezone": "UTC", "integer_datetimes": "on",
                    "standard_conforming_strings": "on", "application_name": "",
                    "transaction_isolation": "read committed", "default_transaction_read_only":
                    "on", "transaction_read_only": "on", "extra_float_digits": "1",
                    "max_identifier_length": "63", "lc_collate": "C.UTF-8",
                    "search_path": _quote_ident(self.service.default_release(self.caller).id),
                    "is_superuser": "off", "session_authorization": self.caller.user,
                    "statement_timeout": "0", "intervalstyle": "postgres",
                    "bytea_output": "hex"}
        for k, v in defaults.items():
            self.settings.setdefault(k, v)

    # --- releases and tables ---------------------------------------------------------------

    def _releases(self) -> dict[str, Release]:
        return {r.id: r for r in self.service.visible(self.caller)}

    def search_path(self) -> tuple[str, ...]:
        return tuple(_unquote(p.strip()) for p in self.settings["search_path"].split(",")
                     if p.strip())

    def current_release(self) -> Release | None:
        visible = self._releases()
        return next((visible[s] for s in self.search_path() if s in visible), None)

    def context(self) -> Context:
        current = self.current_release()
        return Context(user=self.caller.user, database=self.database,
                       schema=current.id if current else "public",
                       search_path=self.search_path(),
                       version=f"PostgreSQL {PG_VERSION} (statcube {self.service.version} SQL "
                               "API over protected cubes) on x86_64-pc-linux-gnu",
                       settings=self.settings)

    # --- statements --------------------------------------------------------------------------

    def execute(self, text: str) -> list[ResultSet]:
        """Run every statement of ``text`` (parameters already substituted)."""
        statements = split_statements(text)
        if not statements:
            return [ResultSet((), (), [], tag="EMPTY")]
        return [self.statement(s) for s in statements]

    def statement(self, sql: str) -> ResultSet:
        m = re.match(r"\s*\(*\s*(\w+)", sql)
        word = m.group(1).upper() if m else ""
        if word in ("BEGIN", "START"):
            return ResultSet((), (), [], tag="BEGIN")
        if word in ("COMMIT", "END"):
            return ResultSet((), (), [], tag="COMMIT")
        if word in ("ROLLBACK", "ABORT"):
            return ResultSet((), (), [], tag="ROLLBACK")
        if word == "SET":
            return self._set(sql)
        if word == "RESET":
            return ResultSet((), (), [], tag="RESET")
        if word == "SHOW":
            return self._show(sql)
        if word in ("DISCARD", "DEALLOCATE", "CLOSE", "LISTEN", "UNLISTEN"):
            tag = {"DISCARD": "DISCARD ALL", "CLOSE": "CLOSE CURSOR"}.get(word, word)
            return ResultSet((), (), [], tag=tag)
        if word in ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "TRUNCATE",
                    "GRANT", "REVOKE", "MERGE", "VACUUM", "ANALYZE", "CALL", "DO", "LOCK"):
            raise SqlError(f"cannot execute {word} in a read-only transaction: statcube's SQL "
                           "API only reads protected aggregates", "25006")
        if word in ("SELECT", "WITH", "VALUES", "TABLE"):
            return self._select(sql)
        raise SqlError(f'syntax error at or near "{word.lower()}": statcube\'s SQL API runs '
                       "SELECT, SET, SHOW and transaction statements", "42601")

    def _set(self, sql: str) -> ResultSet:
        m = re.match(r"(?is)\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(?:(TIME\s+ZONE)\s+(.+?)|"
                     r"([\w.]+)\s*(?:=|\bTO\b)\s*(.+?))\s*;?\s*$", sql)
        if m is None:
            return ResultSet((), (), [], tag="SET")  # SET SESSION CHARACTERISTICS … : no-op
        name = "timezone" if m.group(1) else m.group(3).lower()
        value = (m.group(2) or m.group(4)).strip()
        if name == "search_path":
            parts = [p.strip() for p in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", value)]
            value = ", ".join(_quote_ident(_unquote(p.strip("'"))) for p in parts if p)
        else:
            value = value.strip("'")
        self.settings[name] = value
        return ResultSet((), (), [], tag="SET")

    def _show(self, sql: str) -> ResultSet:
        m = re.match(r"(?is)\s*SHOW\s+(.+?)\s*;?\s*$", sql)
        name = re.sub(r"\s+", " ", m.group(1)).lower() if m else ""
        if name == "all":
            rows: list[tuple[Any, ...]] = [(k, v, "") for k, v in sorted(self.settings.items())]
            return ResultSet(("name", "setting", "description"), ("text",) * 3, rows)
        key = {"transaction isolation level": "transaction_isolation",
               "time zone": "timezone"}.get(name, name)
        if key not in self.settings:
            raise SqlError(f'unrecognized configuration parameter "{name}"', "42704")
        return ResultSet((key,), ("text",), [(self.settings[key],)], tag="SHOW")

    def _select(self, sql: str) -> ResultSet:
        try:
            tree = sqlglot.parse_one(sql, read="postgres")
        except sqlglot.errors.ParseError:
            tree = None
        if tree is not None:
            target = self._cube_target(tree)
            if target is not None:
                release, table = target
                if not isinstance(tree, exp.Select):
                    raise SqlError("statcube's SQL API answers one SELECT over one cube table "
                                   "(no UNION, INTERSECT or EXCEPT)", "0A000")
                p = plan(table, tree)
                browser = self.service.releases.browser(release, table.name)
                with self._interruptible(browser):
                    return answer(browser, p, self.caller.max_cells, self.caller.role)
        visible = self.service.visible(self.caller)
        return self.service.catalog(visible).run(sql, self.context(), self.running)

    def _interruptible(self, browser: CubeBrowser) -> AbstractContextManager[None]:
        """Register this thread's warehouse connection while the gate runs, so a cancel
        request interrupts the DuckDB query. The engine keeps one DuckDB cursor per thread
        (``Engine._cursor``); a PostgreSQL warehouse has none, and a cancel there only
        stops the session waiting (the query finishes in its pool thread)."""
        engine = browser.ws.engine
        cursor = getattr(engine, "_cursor", None)
        if engine.name != "duckdb" or not callable(cursor):
            return contextlib.nullcontext()
        return self.running.on(cursor())

    def _cube_target(self, tree: exp.Expr) -> tuple[Release, CubeTable] | None:
        """The (release, cube table) a statement reads, or None for a catalog statement."""
        visible = self._releases()
        current = self.current_release()
        found: list[tuple[Release, CubeTable]] = []
        unknown: list[str] = []
        for t in tree.find_all(exp.Table):
            schema, name = t.db, t.name
            if not name:
                continue
            if schema.lower() in ("pg_catalog", "information_schema") or (
                    not schema and name in CATALOG_TABLES):
                continue
            release = visible.get(schema) if schema else current
            if schema and release is None:
                raise SqlError(f'schema "{schema}" does not exist (releases you may read: '
                               + ", ".join(visible) + ")", "3F000")
            tables = {tb.name: tb for tb in self.service.tables(release)} if release else {}
            if name in tables and release is not None:
                found.append((release, tables[name]))
            else:
                unknown.append(f"{schema}.{name}" if schema else name)
        if unknown and not found and tree.find(exp.Table) is not None:
            names = sorted({tb.name for r in visible.values()
                            for tb in self.service.tables(r)})
            raise SqlError(f'relation "{unknown[0]}" does not exist', "42P01",
                           hint="tables (cubes): " + ", ".join(names))
        if len(found) + len(unknown) > 1 and found:
            raise SqlError("joins and subqueries are not supported by statcube's SQL API: "
                           "query one cube table at a time", "0A000")
        return found[0] if found else None


# --- text helpers -----------------------------------------------------------------------------

def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if len(name) >= 2 and name[0] == name[-1] == '"' \
        else name.lower() if re.fullmatch(r"[A-Za-z_][\w$]*", name) else name


def _quote_ident(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) or name.startswith("$"):
        return name
    return '"' + name.replace('"', '""') + '"'


def _scan(text: str) -> list[tuple[int, int, str]]:
    """Spans of ``text`` outside quotes and comments: (start, end, kind) with kind 'code',
    'str', 'ident' or 'comment'."""
    out: list[tuple[int, int, str]] = []
    i, n, start = 0, len(text), 0
    while i < n:
        ch = text[i]
        kind, end = None, i
        if ch == "'" or ch == '"':
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            kind, end = ("str" if ch == "'" else "ident"), j + 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            kind, end = "comment", (n if j < 0 else j)
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            kind, end = "comment", (n if j < 0 else j + 2)
        if kind is None:
            i += 1
            continue
        if start < i:
            out.append((start, i, "code"))
        out.append((i, min(end, n), kind))
        i = start = min(end, n)
    if start < n:
        out.append((start, n, "code"))
    return out


def split_statements(text: str) -> list[str]:
    """Statements of a simple query, split at semicolons outside quotes and comments."""
    parts: list[str] = []
    current = ""
    for a, b, kind in _scan(text):
        chunk = text[a:b]
        if kind == "comment":
            current += " "
            continue
        if kind != "code":
            current += chunk
            continue
        pieces = chunk.split(";")
        current += pieces[0]
        for p in pieces[1:]:
            parts.append(current)
            current = p
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


NUMERIC_OIDS = frozenset({20, 21, 23, 26, 700, 701, 1700})


def bind_parameters(text: str, values: Sequence[str | None], oids: Sequence[int]) -> str:
    """``$1``… replaced by literals (numbers bare when typed numeric, else quoted text)."""
    def literal(m: re.Match[str]) -> str:
        k = int(m.group(1)) - 1
        if not 0 <= k < len(values):
            raise SqlError(f"there is no parameter ${k + 1}", "42P02")
        v = values[k]
        if v is None:
            return "NULL"
        oid = oids[k] if k < len(oids) else 0
        if oid in NUMERIC_OIDS and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", v):
            return v if not v.startswith("-") else f"({v})"
        if oid == 16:
            return "true" if v.lower() in ("t", "true", "1", "on", "yes") else "false"
        return "'" + v.replace("'", "''") + "'"

    out = []
    for a, b, kind in _scan(text):
        chunk = text[a:b]
        out.append(re.sub(r"\$(\d+)", literal, chunk) if kind == "code" else chunk)
    return "".join(out)
