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
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cube.errors import ConfigError, NoSuchCubeError, NotFoundError, unknown
from cube.grammar import PointCut, format_cut
from cube.model import Model
from cube.settings import Settings
from cube.workspace import CubeBrowser, Workspace, resolve_warehouse

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


class ReleaseSet:
    """The calendar over open warehouses: one read-only engine per warehouse file, one
    embargo-limited :class:`Workspace` view per release, one :class:`CubeBrowser` per
    (release, cube) so each browser's latest period is looked up once.

    Build it in each server process (after a fork), never at import time.
    """

    def __init__(self, model: Model, calendar: Calendar, default_warehouse: str | Path | None
                 ) -> None:
        self.model = model
        self.calendar = calendar
        self._bases: dict[str, Workspace] = {}
        self._views: dict[str, Workspace] = {}
        self._browsers: dict[tuple[str, str], CubeBrowser] = {}
        self._lock = threading.Lock()
        try:
            for r in calendar.releases:
                target = r.warehouse or default_warehouse
                if target is None:
                    raise ConfigError(f"release {r.id} names no warehouse and no default "
                                      "warehouse is configured")
                key = str(target)
                if key not in self._bases:
                    self._bases[key] = Workspace.open(model, target)
                self._views[r.id] = self._bases[key].view(r.last_period)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, model: Model, warehouse: str | Path, calendar: Calendar | None = None
             ) -> ReleaseSet:
        """With no calendar, the warehouse is one release, published and complete."""
        if calendar is None:
            ws = Workspace.open(model, warehouse)
            try:
                calendar = warehouse_calendar(ws)
            finally:
                ws.close()
        return cls(model, calendar, warehouse)

    def workspace(self, release: Release) -> Workspace:
        return self._views[release.id]

    def fingerprint(self, release: Release) -> str:
        """Identifies the bytes a release serves: changes if its warehouse is rebuilt."""
        meta = self._views[release.id].meta
        return f"{release.id}|{format_period(release.last_period)}|{meta.get('built_at')}|" \
               f"{meta.get('ptable_digest')}"

    def build(self, release: Release) -> str:
        """:func:`build_id` of the warehouse the release is served from."""
        return build_id(self._views[release.id].meta)

    def cube_names(self, release: Release) -> list[str]:
        return self._views[release.id].cube_names

    def browser(self, release: Release, cube: str) -> CubeBrowser:
        """A browser over the release's view; unknown cubes and cubes the release's warehouse
        does not hold are both 404 ``unknown_cube``."""
        key = (release.id, cube)
        found = self._browsers.get(key)
        if found is not None:
            return found
        names = self.cube_names(release)
        if cube not in names:
            raise unknown(NoSuchCubeError, "cube", cube, names, parameter="cube")
        with self._lock:
            return self._browsers.setdefault(key, self._views[release.id].cube(cube))

    def map_levels(self, release: Release) -> list[str]:
        """Geography levels that have boundaries in the release's warehouse (for /map)."""
        from cube.geojson import levels_with_geometry

        return sorted(levels_with_geometry(self._views[release.id].engine))

    def close(self) -> None:
        for ws in self._bases.values():
            ws.close()
        self._bases.clear()


def open_releases(settings: Settings, model: Model) -> ReleaseSet:
    """The release calendar in force (:meth:`Settings.release_calendar`) over its warehouses.

    One function for the server and the command line, so they cannot disagree about which
    releases exist and which period is the latest published one (they did: the CLI read the
    newest warehouse whole while the server applied the demo's calendar). Releases that name
    no warehouse use the configured one, else the newest in ``DATA_DIR/warehouse``."""
    path = settings.release_calendar()
    calendar = Calendar.load(path) if path else None
    warehouse = None
    if calendar is None or any(r.warehouse is None for r in calendar.releases):
        warehouse = resolve_warehouse(settings.warehouse, settings.data_dir)
    if calendar is None:
        assert warehouse is not None
        return ReleaseSet.open(model, warehouse)
    return ReleaseSet(model, calendar, warehouse)


# --- Embargo-safe cell details -----------------------------------------------------------------

def cell_details(browser: CubeBrowser, cut: str) -> list[dict[str, Any]]:
    """``browser.cell_details`` with time paths after the visible period shown exactly as paths
    that do not exist (None): the time dimension table can hold months a view may not see,
    and their labels must not confirm that they exist."""
    details = browser.cell_details(cut)
    tdim = browser.cube.time_dimension
    if tdim is None or browser.period_limit is None:
        return details
    for d in details:
        if d["dimension"] != tdim.name:
            continue
        d["paths"] = [path if path is not None and _visible_path(browser, d["hierarchy"], path)
                      else None for path in d["paths"]]
    return details


def _visible_path(browser: CubeBrowser, hierarchy: str, path: Sequence[Mapping[str, Any]]
                  ) -> bool:
    tdim = browser.cube.time_dimension
    assert tdim is not None
    keys = tuple(str(e["_key"]) for e in path)
    cut = format_cut(PointCut(tdim.name, keys, hierarchy))
    found = browser.members(tdim.name, hierarchy=hierarchy, depth=len(keys), cut=cut)
    return bool(found.members.num_rows > 0)
