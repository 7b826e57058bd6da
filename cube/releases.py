"""Releases and embargo: which data may be seen, by whom, from when.

Official statistics are published on pre-announced dates. A *release calendar* lists each
release: its id, its publication time (wall-clock Europe/London, as the calendar is announced)
and the last period (month) it contains; optionally the warehouse file built for it. Before
its publication time a release — and every period in it that no earlier release contains — is
invisible to everyone but the prerelease-access and admin roles: not in members, aggregates,
models, cell details, error messages ("unknown release", never "embargoed") or counts.

Visibility is enforced by the core, not by the HTTP layer: :class:`ReleaseSet` answers each
release with :meth:`cube.workspace.Workspace.view` limited to the release's last period, so
the SQL itself cannot reach a later period. Several releases may share one warehouse (the
demo: one build, quarterly views) or each may name its own file.

Calendar file (TOML, or JSON with the same keys under ``"releases"``)::

    [[release]]
    id = "2026-11"                 # letters, digits, '-' and '_'
    published = "2026-11-10T09:30" # Europe/London wall-clock unless an offset is given
    last_period = "2026-08"        # newest month in the release (YYYY-MM)
    warehouse = "data/warehouse/2026-11.duckdb"   # optional; default: the served warehouse

"Now" is always passed in (``now=``), never read here, so tests and previews can move time.
This module does no HTTP and holds no secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time as time_module
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cube.engine import database_url
from cube.errors import (
    ConfigError,
    EngineUnavailableError,
    NoSuchCubeError,
    NotFoundError,
    StatcubeError,
    unknown,
)
from cube.model import Model
from cube.settings import Settings
from cube.workspace import CubeBrowser, Workspace, resolve_warehouse

log = logging.getLogger("statcube.releases")
LONDON = ZoneInfo("Europe/London")
#: Publication time of the demo calendar's releases (London wall-clock).
PUBLICATION_TIME = time(9, 30)
#: Months of the demo calendar's releases (Stat-Xplore's quarterly cadence).
RELEASE_MONTHS = (2, 5, 8, 11)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

Period = tuple[int, int]


def parse_period(text: str, *, where: str = "last_period") -> Period:
    m = _MONTH.match(text)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ConfigError(f"{where}: expected a month like 2026-08, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def format_period(period: Period) -> str:
    return f"{period[0]:04d}-{period[1]:02d}"


def london(value: datetime | str) -> datetime:
    """An aware datetime; naive values and strings without an offset are London wall-clock."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.replace(tzinfo=LONDON) if dt.tzinfo is None else dt


@dataclass(frozen=True)
class Release:
    id: str
    published: datetime
    last_period: Period
    warehouse: str | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ConfigError(f"release id {self.id!r}: use letters, digits, '-' and '_'")
        if self.published.tzinfo is None:
            raise ConfigError(f"release {self.id}: publication time needs a time zone")

    def is_published(self, now: datetime) -> bool:
        return now >= self.published

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {"id": self.id,
                "published": self.published.astimezone(LONDON).isoformat(timespec="seconds"),
                "last_period": format_period(self.last_period),
                "is_published": self.is_published(now)}


@dataclass(frozen=True)
class Calendar:
    """Releases in publication order."""

    releases: tuple[Release, ...]

    def __post_init__(self) -> None:
        if not self.releases:
            raise ConfigError("the release calendar is empty")
        ids = [r.id for r in self.releases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"release calendar lists {', '.join(dupes)} more than once")
        ordered = tuple(sorted(self.releases, key=lambda r: (r.published, r.last_period)))
        object.__setattr__(self, "releases", ordered)

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Calendar:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read release calendar {p}: {exc.strerror}") from None
        try:
            raw: Any = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"release calendar {p} does not parse: {exc}") from None
        return cls.from_data(raw, where=str(p), base=p.parent)

    @classmethod
    def from_data(cls, raw: Any, *, where: str = "calendar", base: Path | None = None
                  ) -> Calendar:
        entries = raw.get("release", raw.get("releases")) if isinstance(raw, Mapping) else raw
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: expected a list of releases ([[release]] tables)")
        out = []
        for i, e in enumerate(entries):
            at = f"{where}: release {i + 1}"
            if not isinstance(e, Mapping) or not {"id", "published", "last_period"} <= set(e):
                raise ConfigError(f"{at} needs id, published and last_period")
            extra = set(e) - {"id", "published", "last_period", "warehouse"}
            if extra:
                raise ConfigError(f"{at}: unknown keys {', '.join(sorted(extra))}")
            try:
                published = london(e["published"])
            except (TypeError, ValueError):
                raise ConfigError(f"{at}: published must be a date-time like "
                                  f"2026-11-10T09:30, got {e['published']!r}") from None
            wh = e.get("warehouse")
            if wh is not None and base is not None and not Path(wh).is_absolute():
                wh = str(base / wh)
            out.append(Release(str(e["id"]), published,
                               parse_period(str(e["last_period"]), where=at), wh))
        return cls(tuple(out))

    @classmethod
    def single(cls, release_id: str, last_period: Period) -> Calendar:
        """No calendar configured: one release, published since forever."""
        return cls((Release(release_id or "current", datetime(1970, 1, 1, tzinfo=LONDON),
                            last_period),))

    def to_toml(self) -> str:
        lines = ["# statcube release calendar: publication times are Europe/London wall-clock.",
                 "# A release is invisible to guest and registered users until it is published.",
                 ""]
        for r in self.releases:
            local = r.published.astimezone(LONDON).replace(tzinfo=None)
            lines += ["[[release]]", f'id = "{r.id}"',
                      f'published = "{local.isoformat(timespec="minutes")}"',
                      f'last_period = "{format_period(r.last_period)}"']
            if r.warehouse:
                lines.append(f"warehouse = {json.dumps(r.warehouse)}")
            lines.append("")
        return "\n".join(lines)

    # --- visibility ------------------------------------------------------------------------

    def published(self, now: datetime) -> tuple[Release, ...]:
        return tuple(r for r in self.releases if r.is_published(now))

    def visible(self, now: datetime, *, embargo_exempt: bool) -> tuple[Release, ...]:
        return self.releases if embargo_exempt else self.published(now)

    def latest(self, now: datetime) -> Release:
        published = self.published(now)
        if not published:
            raise NotFoundError("no release has been published yet", parameter="release")
        return published[-1]

    def select(self, release_id: str | None, now: datetime, *, embargo_exempt: bool) -> Release:
        """The release asked for, or the latest published one.

        An unpublished release is reported exactly like one that does not exist (same type,
        status and wording; suggestions only from visible ids), so its existence is not
        disclosed."""
        if release_id is None or release_id == "":
            return self.latest(now)
        visible = self.visible(now, embargo_exempt=embargo_exempt)
        for r in visible:
            if r.id == release_id:
                return r
        raise unknown(NotFoundError, "release", release_id, [r.id for r in visible],
                      parameter="release")

    def next_publication(self, now: datetime) -> datetime | None:
        upcoming = [r.published for r in self.releases if not r.is_published(now)]
        return min(upcoming) if upcoming else None


# --- The demo calendar ---------------------------------------------------------------------

def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def quarterly_calendar(months: Iterable[str], *, lag_months: int = 3) -> Calendar:
    """Stat-Xplore's cadence: a release in each February, May, August and November, published
    on the second Tuesday at 09:30 London time, holding data up to ``lag_months`` before its
    publication month. Covers the data ``months`` (YYYY-MM): the first release is the first
    one with any data, the last is the first one holding the newest month."""
    ms = sorted(parse_period(m, where="month") for m in months)
    if not ms:
        raise ConfigError("no months to build a release calendar from")
    first, last = ms[0], ms[-1]
    releases = []
    y = first[0]
    while True:
        for pm in RELEASE_MONTHS:
            total = y * 12 + (pm - 1) - lag_months
            period = (total // 12, total % 12 + 1)
            if period < first:
                continue
            day = _nth_weekday(y, pm, 1, 2)  # weekday 1 = Tuesday
            published = datetime.combine(day, PUBLICATION_TIME, tzinfo=LONDON)
            releases.append(Release(f"{y:04d}-{pm:02d}", published, min(period, last)))
            if period >= last:
                return Calendar(tuple(releases))
        y += 1


# --- Workspaces per release ------------------------------------------------------------------

def warehouse_calendar(ws: Workspace) -> Calendar:
    """The calendar when none is configured: the warehouse is one release — its own id,
    published since forever, whose last period is the warehouse's newest month. The server
    and ``statcube export`` both use this, so they agree on what such a release holds."""
    months = ws.meta.get("months") or []
    if not months:
        raise ConfigError(f"warehouse {ws.engine.target} lists no months")
    return Calendar.single(ws.release, parse_period(str(months[-1]), where="months"))


def build_id(meta: Mapping[str, Any]) -> str:
    """Identifies one build of a warehouse: the SHA-256 of its ``statcube_meta`` (release,
    ``built_at``, model, p-table digest, months, cubes). Every build writes a new ``built_at``,
    so a rebuild — even of the same inputs — is a new build; loading a build into PostgreSQL
    copies ``statcube_meta`` as it is and keeps the id. Exports record it, and the download
    server serves an export only from the build it was made from."""
    text = json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Seconds between attempts to open a warehouse that could not be opened (per process).
RETRY_SECONDS = 1.0
#: Seconds between checks of a database warehouse's build (a file is checked per request).
DATABASE_CHECK_SECONDS = 2.0
#: Seconds a replaced build stays open for requests still reading it, then it is closed.
RETIRE_SECONDS = 120.0

Identity = tuple[int, int, int, int]


def warehouse_file(target: str) -> Path | None:
    """The DuckDB file a warehouse target names, or None for a database URL."""
    if target.startswith("duckdb:///"):
        return Path(target.removeprefix("duckdb:///"))
    return None if "://" in target else Path(target)


def file_identity(path: Path) -> Identity | None:
    """(device, inode, size, mtime) of a file — changes when it is replaced or rewritten —
    or None if it is not there. One ``stat``: cheap enough for every request."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class _Opened:
    """One open build of one warehouse, with its views and browsers (cached per build, so a
    new build never reuses a browser of the old one)."""

    workspace: Workspace
    identity: Identity | None
    build: str
    calendar: Calendar | None  # the warehouse's own calendar (when none is configured)
    checked: float
    views: dict[str, Workspace] = field(default_factory=dict)
    browsers: dict[tuple[str, str], CubeBrowser] = field(default_factory=dict)


@dataclass
class _Slot:
    """A warehouse target and what is open of it (None while it is unavailable)."""

    target: str
    file: Path | None
    opened: _Opened | None = None
    failed: Identity | None = None  # the file identity the last failed attempt saw
    next_try: float = 0.0
    problem: str = "not opened yet"


@dataclass(frozen=True)
class _State:
    """What one request sees: the open build of every warehouse, fixed for the request."""

    opened: Mapping[str, _Opened | None]
    problems: Mapping[str, str]


class ReleaseSet:
    """The calendar over its warehouses: one read-only engine per warehouse build, one
    embargo-limited :class:`Workspace` view per release, one :class:`CubeBrowser` per
    (release, cube) so each browser's latest period is looked up once.

    *Lazy* (the server, ``lazy=True``): nothing is opened at construction, so a worker always
    boots. :meth:`pin` (once per request) opens what is missing — at most once per
    :data:`RETRY_SECONDS` per failing target — and notices a replaced build: a DuckDB file
    whose identity (device, inode, size, mtime) changed is reopened and its build id
    (:func:`build_id`) read again; a database's build is re-read every
    :data:`DATABASE_CHECK_SECONDS`. A warehouse that is missing, unreadable or unreachable
    makes every data call raise :class:`EngineUnavailableError` (HTTP 503) until it returns,
    and then the service recovers by itself. Every process of a server checks the same file
    on each request, so all of them serve the new build from the first request after it is
    in place — never half of them (measured before: after a rebuild and one worker restart,
    two workers served two builds and one URL had two ETags).

    *Eager* (the CLI, the default): everything is opened at construction and a problem is
    raised at once (``ConfigError`` for a missing file, as before).

    A request sees one consistent build: :meth:`pin` fixes the state for the calling thread
    until :meth:`unpin`, so a swap in the middle of a request (between its ETag and its
    query) cannot mix two builds. Build it in each server process (after a fork), never at
    import time.
    """

    def __init__(self, model: Model, calendar: Calendar | None,
                 default_warehouse: str | Path | None, *, lazy: bool = False,
                 statement_timeout_ms: int | None = None, threads: int | None = None) -> None:
        self.model = model
        self._threads = threads
        self._calendar = calendar
        self._lazy = lazy
        self._timeout = statement_timeout_ms
        self._lock = threading.Lock()
        self._local = threading.local()
        self._retired: list[tuple[float, _Opened]] = []
        default = str(default_warehouse) if default_warehouse is not None else None
        self._target: dict[str, str] = {}
        if calendar is not None:
            for r in calendar.releases:
                target = r.warehouse or default
                if target is None:
                    raise ConfigError(f"release {r.id} names no warehouse and no default "
                                      "warehouse is configured")
                self._target[r.id] = str(target)
        elif default is None:
            raise ConfigError("no warehouse configured")
        targets = dict.fromkeys([*self._target.values(), *([default] if calendar is None
                                                           else [])])
        self._default = default
        self._slots = {t: _Slot(t, warehouse_file(t)) for t in targets if t is not None}
        for slot in self._slots.values():
            if slot.file is None:
                database_url(slot.target)  # a bad URL is configuration: fail at once
        if not lazy:
            try:
                for slot in self._slots.values():
                    self._open(slot, strict=True)
            except BaseException:
                self.close()
                raise

    @classmethod
    def open(cls, model: Model, warehouse: str | Path, calendar: Calendar | None = None, *,
             lazy: bool = False, statement_timeout_ms: int | None = None) -> ReleaseSet:
        """With no calendar, the warehouse is one release, published and complete."""
        return cls(model, calendar, warehouse, lazy=lazy,
                   statement_timeout_ms=statement_timeout_ms)

    # --- opening, checking, reopening ------------------------------------------------------

    def _open(self, slot: _Slot, *, strict: bool) -> None:
        """Open the slot's warehouse now; on failure raise (strict) or record why."""
        identity = file_identity(slot.file) if slot.file is not None else None
        try:
            if slot.file is not None and identity is None:
                raise ConfigError(f"warehouse not found: {slot.file}")
            ws = Workspace.open(self.model, slot.target, statement_timeout_ms=self._timeout,
                                threads=self._threads)
            try:
                own = warehouse_calendar(ws) if self._calendar is None else None
            except BaseException:
                ws.close()
                raise
        except StatcubeError as exc:
            if strict:
                raise
            self._drop(slot, f"{type(exc).__name__}: {exc}")
            slot.failed, slot.next_try = identity, _monotonic() + RETRY_SECONDS
            return
        old = slot.opened
        slot.opened = _Opened(ws, identity, build_id(ws.meta), own, _monotonic())
        slot.failed, slot.problem = None, ""
        if old is not None:
            self._retire(old)
            log.warning("warehouse %s replaced: serving build %s (was %s)", slot.target,
                        slot.opened.build[:12], old.build[:12])
        elif self._lazy:
            log.info("warehouse %s open: build %s", slot.target, slot.opened.build[:12])

    def _drop(self, slot: _Slot, problem: str) -> None:
        if slot.opened is not None:
            self._retire(slot.opened)
            slot.opened = None
        if problem != slot.problem:
            log.warning("warehouse %s unavailable: %s", slot.target, problem)
        slot.problem = problem

    def _retire(self, opened: _Opened) -> None:
        """Close a replaced build later: requests that began on it may still be reading."""
        now = _monotonic()
        self._retired.append((now, opened))
        while self._retired and now - self._retired[0][0] > RETIRE_SECONDS:
            self._retired.pop(0)[1].workspace.close()

    def _stale(self, slot: _Slot, now: float) -> bool:
        """Whether the slot must be (re)opened or dropped. Lock-free: one ``stat``."""
        if slot.file is not None:
            identity = file_identity(slot.file)
            if slot.opened is not None:
                return identity != slot.opened.identity
            return identity is not None and (identity != slot.failed or now >= slot.next_try)
        if slot.opened is None:
            return now >= slot.next_try
        return now - slot.opened.checked >= DATABASE_CHECK_SECONDS

    def _check(self, slot: _Slot, now: float) -> None:
        """Under the lock: reopen a replaced or returned warehouse, drop a vanished one."""
        if slot.file is not None:
            identity = file_identity(slot.file)
            if identity is None:
                self._drop(slot, f"warehouse not found: {slot.file}")
            elif slot.opened is None or identity != slot.opened.identity:
                self._open(slot, strict=False)
            return
        if slot.opened is None:
            self._open(slot, strict=False)
            return
        opened = slot.opened
        opened.checked = now
        try:
            meta = opened.workspace._read_meta()
        except StatcubeError:
            return  # unreachable now: its queries answer 503 by themselves
        if build_id(meta) != opened.build:
            self._open(slot, strict=False)

    def refresh(self) -> None:
        """Bring every warehouse up to date (see the class docstring). Never raises."""
        now = _monotonic()
        for slot in self._slots.values():
            if self._stale(slot, now):
                with self._lock:
                    if self._stale(slot, now):
                        self._check(slot, now)

    def _snapshot(self) -> _State:
        return _State({t: s.opened for t, s in self._slots.items()},
                      {t: s.problem for t, s in self._slots.items()})

    def pin(self) -> None:
        """Refresh (lazy sets), then fix this thread's view of every build until
        :meth:`unpin`: one request, one build."""
        if self._lazy:
            self.refresh()
        self._local.state = self._snapshot()

    def unpin(self) -> None:
        self._local.state = None

    def _state(self) -> _State:
        state = getattr(self._local, "state", None)
        if state is None:
            if self._lazy:
                self.refresh()
            state = self._snapshot()
        return state

    def _opened(self, target: str, state: _State | None = None) -> _Opened:
        st = state or self._state()
        opened = st.opened.get(target)
        if opened is None:
            raise EngineUnavailableError(f"warehouse {target} is unavailable: "
                                         f"{st.problems.get(target, 'unknown')}")
        return opened

    def ready(self) -> None:
        """Raise :class:`EngineUnavailableError` unless every warehouse is open and answers
        a trivial statement (a database that went away after opening is not ready)."""
        state = self._state()
        for target in self._slots:
            engine = self._opened(target, state).workspace.engine
            engine.execute(sa.select(sa.literal(1)))

    # --- what requests ask ---------------------------------------------------------------------

    @property
    def calendar(self) -> Calendar:
        if self._calendar is not None:
            return self._calendar
        assert self._default is not None
        own = self._opened(self._default).calendar
        assert own is not None
        return own

    def _of(self, release: Release) -> _Opened:
        target = self._target.get(release.id) if self._calendar is not None else self._default
        if target is None:
            raise unknown(NotFoundError, "release", release.id, list(self._target),
                          parameter="release")
        return self._opened(target)

    def workspace(self, release: Release) -> Workspace:
        return _view(self._of(release), release)

    def fingerprint(self, release: Release) -> str:
        """Identifies the bytes a release serves: changes if its warehouse is rebuilt (the
        build id covers ``built_at`` and the p-table digest)."""
        return f"{release.id}|{format_period(release.last_period)}|{self.build(release)}"

    def build(self, release: Release) -> str:
        """:func:`build_id` of the warehouse the release is served from."""
        return self._of(release).build

    def cube_names(self, release: Release) -> list[str]:
        return self.workspace(release).cube_names

    def browser(self, release: Release, cube: str) -> CubeBrowser:
        """A browser over the release's view; unknown cubes and cubes the release's warehouse
        does not hold are both 404 ``unknown_cube``."""
        opened = self._of(release)
        key = (release.id, cube)
        found = opened.browsers.get(key)
        if found is not None:
            return found
        view = _view(opened, release)
        names = view.cube_names
        if cube not in names:
            raise unknown(NoSuchCubeError, "cube", cube, names, parameter="cube")
        with self._lock:
            return opened.browsers.setdefault(key, view.cube(cube))

    def map_levels(self, release: Release) -> list[str]:
        """Geography levels that have boundaries in the release's warehouse (for /map)."""
        from cube.geojson import levels_with_geometry

        return sorted(levels_with_geometry(self.workspace(release).engine))

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.opened is not None:
                slot.opened.workspace.close()
                slot.opened = None
        for _, opened in self._retired:
            opened.workspace.close()
        self._retired.clear()


def _view(opened: _Opened, release: Release) -> Workspace:
    """The release's embargo-limited view of an open build (made once per build)."""
    view = opened.views.get(release.id)
    if view is None:
        view = opened.views.setdefault(release.id, opened.workspace.view(release.last_period))
    return view


def _monotonic() -> float:
    return time_module.monotonic()


def open_releases(settings: Settings, model: Model, *, lazy: bool = False) -> ReleaseSet:
    """The release calendar in force (:meth:`Settings.release_calendar`) over its warehouses.

    One function for the server and the command line, so they cannot disagree about which
    releases exist and which period is the latest published one (they did: the CLI read the
    newest warehouse whole while the server applied the demo's calendar). Releases that name
    no warehouse use the configured one, else the newest in ``DATA_DIR/warehouse``.

    ``lazy`` (the server): open nothing now, retry what is unavailable (see
    :class:`ReleaseSet`), apply ``settings.statement_timeout_ms`` to every statement and run
    DuckDB statements on ``settings.duckdb_threads`` threads."""
    path = settings.release_calendar()
    calendar = Calendar.load(path) if path else None
    warehouse = None
    if calendar is None or any(r.warehouse is None for r in calendar.releases):
        warehouse = resolve_warehouse(settings.warehouse, settings.data_dir)
    timeout = settings.statement_timeout_ms if lazy else None
    threads = settings.duckdb_threads if lazy else None
    return ReleaseSet(model, calendar, warehouse, lazy=lazy, statement_timeout_ms=timeout,
                      threads=threads)


# --- Embargo-safe cell details -----------------------------------------------------------------

def cell_details(browser: CubeBrowser, cut: str) -> list[dict[str, Any]]:
    """``browser.cell_details``: time paths after the visible period come back exactly as
    paths that do not exist (None) — the time dimension table can hold months a view may not
    see, and their labels must not confirm that they exist. The browser's own path lookup
    applies the view's period limit with the condition its member listing uses — in its copy
    of the members (:meth:`CubeBrowser.member_copy`, read with that condition) or in
    :func:`cube.sql.path_details` — so no second lookup per time path is needed (one was,
    and cost a query per path on every /cell)."""
    return browser.cell_details(cut)
