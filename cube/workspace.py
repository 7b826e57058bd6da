"""The Python entry point: a model over a warehouse.

    ws = Workspace.open(load_model("model.json"), "data/warehouse/2026-11.duckdb")
    hb = ws.cube("housing_benefit")
    result = hb.aggregate(cut="geography:E92000001", drilldown="geography:region")
    result.to_json()          # protected cells, summary, paging, disclosure report

Every public method returns *protected* values: they pass through the one disclosure gate
(cube/disclosure/gate.py). Raw values are reachable only through methods whose names start
with ``_raw`` — for the build checks, the gate itself and tests — and never leave the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from cube import sql as compiler
from cube.disclosure.gate import Gate, ProtectedResult
from cube.engine import Engine
from cube.errors import ArgumentError, ConfigError, NoSuchAttributeError, NoSuchCubeError, unknown
from cube.grammar import parse_order
from cube.model import Cube, Dimension, Hierarchy, Model
from cube.query import (
    CutPart,
    Query,
    Request,
    names_members,
    parse_paging,
    period_limit_for,
    resolve_cuts,
    resolve_dimension,
    resolve_hierarchy,
    resolve_level,
)
from cube.raw import RawCube, RawResult
from cube.rollups import Rollup
from cube.rollups import from_meta as rollups_from_meta


@dataclass(frozen=True)
class Members:
    dimension: str
    hierarchy: str
    depth: int
    members: pa.Table
    total_member_count: int | None


@dataclass(frozen=True)
class MemberCopy:
    """The members of one hierarchy down to one depth — every attribute of those levels, in
    the order the members statement lists them (:func:`cube.sql.members`, no cut, no
    paging) — as a browser keeps them: its release's view, read once (see
    :meth:`CubeBrowser.member_copy`). ``index`` maps each key path to its first row."""

    table: pa.Table
    index: Mapping[tuple[Any, ...], int]
    #: Rows already looked up, as dicts (reading one row out of Arrow costs more than the
    #: rest of a lookup); at most one per member of the copy.
    _rows: dict[int, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def page(self, page: int | None, pagesize: int | None) -> pa.Table | None:
        """Every member (no ``pagesize``), or one page of them; None for a page past the end.
        A page is taken into arrays of its own (not a slice of the copy's), so Arrow and
        Parquet bodies are byte for byte those of the statement's own result."""
        if pagesize is None:
            return self.table
        start = (page or 0) * pagesize
        stop = min(start + pagesize, self.table.num_rows)
        if start >= stop:
            return None
        return self.table.take(pa.array(range(start, stop), pa.int64()))

    def row(self, path: Sequence[Any]) -> dict[str, Any] | None:
        """The member whose key path is ``path`` (its attributes by reference), or None."""
        at = self.index.get(tuple(path))
        if at is None:
            return None
        found = self._rows.get(at)
        if found is None:
            found = self._rows.setdefault(at, self.table.slice(at, 1).to_pylist()[0])
        return dict(found)


#: Result types a member copy may hold: those an engine gives whatever the values are (a
#: PostgreSQL ``numeric`` column is read as integers or floats depending on its values).
_COPY_TYPES = (pa.string(), pa.int64(), pa.bool_())


def member_copy_of(table: pa.Table, hierarchy: Hierarchy, depth: int) -> MemberCopy | None:
    """``table`` (the members statement's result) as a :class:`MemberCopy`, or None when a
    column's type could make a lookup in Python differ from the engine's comparison: a key
    column must hold exactly the model's key type (integers or text), every column a type
    the engine returns whatever the values."""
    if any(f.type not in _COPY_TYPES for f in table.schema):
        return None
    levels = hierarchy.levels[:depth]
    for lvl in levels:
        want = pa.int64() if lvl.key.type == "integer" else pa.string()
        if table.schema.field(lvl.key.ref).type != want:
            return None
    index: dict[tuple[Any, ...], int] = {}
    columns = [table.column(lvl.key.ref).to_pylist() for lvl in levels]
    for i, path in enumerate(zip(*columns, strict=True)):
        index.setdefault(path, i)
    return MemberCopy(table, index)


class Workspace:
    """A model over one warehouse, optionally seen only up to a period (embargo).

    ``visible_until`` is (year, month): data after it is invisible to every method — in
    aggregates, members, cell details and the default period. :meth:`view` gives another
    visibility over the same engine, so a server can hold one connection per release and
    answer each role with its own view.
    """

    def __init__(self, model: Model, engine: Engine,
                 visible_until: tuple[int, int] | None = None,
                 meta: dict[str, Any] | None = None, gate: Gate | None = None) -> None:
        self.model = model
        self.engine = engine
        self.visible_until = visible_until
        self.meta = meta if meta is not None else self._read_meta()
        self.gate = gate if gate is not None else Gate.for_warehouse(model, engine, self.meta)
        self._browsers: dict[str, CubeBrowser] = {}

    @classmethod
    def open(cls, model: Model, target: str | Path,
             visible_until: tuple[int, int] | None = None, *,
             statement_timeout_ms: int | None = None, threads: int | None = None) -> Workspace:
        """``statement_timeout_ms``: cancel any statement running longer; ``threads``: DuckDB
        threads per statement (servers set both; see :class:`cube.engine.Engine`)."""
        engine = Engine(target, statement_timeout_ms=statement_timeout_ms, threads=threads)
        try:
            return cls(model, engine, visible_until)
        except BaseException:
            engine.close()  # a file that is not a warehouse must not stay open
            raise

    def view(self, visible_until: tuple[int, int] | None) -> Workspace:
        """The same warehouse seen up to another period (no new connection)."""
        return Workspace(self.model, self.engine, visible_until, self.meta, self.gate)

    def _read_meta(self) -> dict[str, Any]:
        t = sa.table("statcube_meta", sa.column("key"), sa.column("value"))
        try:
            rows = self.engine.execute(sa.select(t.c.key, t.c.value)).to_pylist()
        except Exception as exc:
            raise ConfigError(f"{self.engine.target} is not a statcube warehouse "
                              f"(no statcube_meta table)") from exc
        return {r["key"]: json.loads(r["value"]) for r in rows}

    @property
    def release(self) -> str:
        return str(self.meta.get("release", ""))

    def cube(self, name: str) -> CubeBrowser:
        """The browser of one cube (kept: it caches the cube's latest visible period)."""
        browser = self._browsers.get(name)
        if browser is None:
            cube = self.model.cube(name)
            if name not in self.meta.get("cubes", []):
                raise NoSuchCubeError(f"cube {name!r} is not in release {self.release}",
                                      parameter="cube", value=name)
            browser = self._browsers[name] = CubeBrowser(self, cube)
        return browser

    @property
    def cube_names(self) -> list[str]:
        return [c for c in self.model.cubes if c in self.meta.get("cubes", [])]

    def close(self) -> None:
        self.engine.close()


class CubeBrowser:
    #: Hierarchies with up to this many members down to a depth are listed (``/members``
    #: without a cut) and looked up (``/cell``) from the browser's copy of them; larger
    #: ones are asked of the engine each time (0: every lookup asks the engine).
    MEMBER_COPY_ROWS = 5_000

    def __init__(self, workspace: Workspace, cube: Cube) -> None:
        self.ws = workspace
        self.cube = cube
        #: Raw execution of this cube's statements: handed to the gate, never made public.
        self.raw = RawCube(workspace.engine, cube, workspace.gate.k)
        self._copies: dict[tuple[str, str, int, int | None], MemberCopy | None] = {}
        self._copies_lock = threading.Lock()

    @property
    def period_limit(self) -> int | None:
        return period_limit_for(self.cube, self.ws.visible_until)

    @cached_property
    def latest_period(self) -> tuple[int, int] | None:
        """(year, month) of the newest visible data; quarterly cubes give the quarter's last
        month."""
        latest = self.ws.engine.scalar(compiler.period_bounds(self.cube, self.period_limit))
        if latest is None:
            return None
        if self.cube.grain == "quarter":
            return int(latest) // 10, (int(latest) % 10) * 3
        return int(latest) // 100, int(latest) % 100

    @cached_property
    def rollups(self) -> tuple[Rollup, ...]:
        """The rollup tables this warehouse holds for the cube, smallest first."""
        return rollups_from_meta(self.ws.meta, self.cube.name)

    def query(self, request: Request) -> Query:
        q = Query.from_request(self.cube, request, self.latest_period, self.period_limit)
        return replace(q, rollups=self.rollups) if self.rollups else q

    # --- public, protected -------------------------------------------------------------------

    def aggregate(self, *, cut: str | None = None, drilldown: str | Sequence[str] | None = None,
                  aggregates: str | Sequence[str] | None = None,
                  order: str | Sequence[str] | None = None, page: int | None = None,
                  pagesize: int | None = None, split: str | None = None,
                  having: str | None = None, top: str | None = None) -> ProtectedResult:
        request = Request.make(self.cube.name, cut=cut, drilldown=drilldown,
                               aggregates=aggregates, order=order, page=page,
                               pagesize=pagesize, split=split, having=having, top=top)
        return self.aggregate_query(self.query(request))

    def aggregate_query(self, query: Query) -> ProtectedResult:
        return self.ws.gate.aggregate(self.raw, query)

    def members(self, dimension: str, *, hierarchy: str | None = None,
                level: str | None = None, depth: int | None = None, cut: str | None = None,
                page: int | None = None, pagesize: int | None = None,
                fields: Sequence[str] = (), order: Sequence[str] = ()) -> Members:
        """Members of a level with the keys and labels of their ancestors (no values, so
        nothing to protect). ``level`` or ``depth`` (1-based) pick the level, default the
        deepest; ``cut`` (on this dimension only) narrows them; high-cardinality levels need
        ``pagesize`` or a cut naming members of that level. Paged results report
        ``total_member_count``; a page past the end is empty, never an error.

        ``fields`` keeps only those attributes, ``order`` (``attr[:desc]``) sorts before the
        hierarchy's own order — both as Cubes' Slicer takes them, by reference
        (``geography.la_name``) or bare name, and only attributes of the listed levels."""
        dim = resolve_dimension(self.cube, dimension, "dimension")
        hier = resolve_hierarchy(dim, hierarchy, "hierarchy")
        if level is not None and depth is not None:
            raise ArgumentError("give level or depth, not both", parameter="depth",
                                value=str(depth))
        if level is not None:
            d = hier.level_index(resolve_level(dim, hier, level, "level").name) + 1
        elif depth is not None:
            if not 1 <= depth <= len(hier.levels):
                raise ArgumentError(
                    f"depth must be between 1 and {len(hier.levels)} for hierarchy "
                    f"{dim.name}@{hier.name}", parameter="depth", value=str(depth))
            d = depth
        else:
            d = len(hier.levels)
        page, pagesize = parse_paging(None if page is None else str(page),
                                 None if pagesize is None else str(pagesize))
        cuts = resolve_cuts(self.cube, cut or "")
        foreign = [c for c in cuts if c.dimension.name != dim.name]
        if foreign:
            raise ArgumentError(
                f"members of {dim.name!r} take cuts on {dim.name!r} only (got a cut on "
                f"{foreign[0].dimension.name!r})", parameter="cut", value=cut)
        target = hier.levels[d - 1]
        if target.cardinality == "high" and pagesize is None and not any(
                names_members(c, target) for c in cuts):
            raise ArgumentError(
                f"level {target.ref} has high cardinality: give pagesize (and page) or a cut "
                f"naming {target.name} members", parameter="pagesize",
                hint="e.g. pagesize=1000&page=0")
        listed = {a.ref: a.ref for lvl in hier.levels[:d] for a in lvl.attributes}
        listed.update({ref.split(".", 1)[1]: ref for ref in list(listed)})

        def attribute(name: str, parameter: str) -> str:
            if name not in listed:
                raise unknown(NoSuchAttributeError, "attribute", name,
                              [r for r in listed if "." in r], parameter=parameter,
                              where=f"the levels of {dim.name}@{hier.name} listed")
            return listed[name]

        picked = [attribute(f.strip(), "fields") for v in fields for f in v.split(",")
                  if f.strip()]
        sort = tuple((attribute(o.attribute, "order"), o.descending)
                     for o in parse_order(order)) if order else ()
        mq = compiler.MembersQuery(self.cube, dim, hier, d, cuts, page, pagesize,
                                   self.period_limit, sort)
        copy = None if cuts or sort else self.member_copy(dim, hier, d)
        if copy is not None:
            table = copy.page(page, pagesize)
            if table is not None:  # None: a page past the end, answered as below
                if picked:
                    table = table.select(list(dict.fromkeys(picked)))
                return Members(dim.name, hier.name, d, table,
                               None if pagesize is None else copy.table.num_rows)
        table = self.ws.engine.execute(compiler.members(mq))
        total = None
        if compiler.TOTAL in table.column_names:
            total = table.column(compiler.TOTAL)[0].as_py() if table.num_rows else \
                self._count_members(mq)
            table = table.drop_columns([compiler.TOTAL])
        if picked:
            table = table.select(list(dict.fromkeys(picked)))
        return Members(dim.name, hier.name, d, table, total)

    def _count_members(self, mq: compiler.MembersQuery) -> int:
        """Total members when the requested page is past the end (the window saw no rows)."""
        sub = compiler.members(replace(mq, page=None, pagesize=None)).subquery()
        return int(self.ws.engine.scalar(sa.select(sa.func.count()).select_from(sub)) or 0)

    def member_copy(self, dimension: Dimension, hierarchy: Hierarchy, depth: int
                    ) -> MemberCopy | None:
        """The members of ``hierarchy`` down to ``depth`` as this browser's release sees
        them (time after its visible period excluded, as in every members statement), read
        from the engine once and kept; None when there are more than
        :attr:`MEMBER_COPY_ROWS` (or their types do not allow a copy: :func:`member_copy_of`).

        Kept per browser, and a browser serves one release's view of one build of one
        warehouse (cube/releases.py makes new browsers for a new build), so a copy never
        answers for another release or another file; the period limit is part of the key as
        well."""
        key = (dimension.name, hierarchy.name, depth, self.period_limit)
        with self._copies_lock:
            if key in self._copies:
                return self._copies[key]
        copy = None
        if self.MEMBER_COPY_ROWS > 0:
            mq = compiler.MembersQuery(self.cube, dimension, hierarchy, depth,
                                       period_limit=self.period_limit)
            try:
                stmt: sa.Select[Any] | None = compiler.members(mq)
            except ValueError:  # attributes in several tables: only the engine can answer
                stmt = None
            if stmt is not None:
                table = self.ws.engine.execute(stmt.limit(self.MEMBER_COPY_ROWS + 1))
                if table.num_rows <= self.MEMBER_COPY_ROWS:
                    copy = member_copy_of(table, hierarchy, depth)
        with self._copies_lock:
            return self._copies.setdefault(key, copy)

    def cell_details(self, cut: str) -> list[dict[str, Any]]:
        """The members a cut's paths name (for /cell), one entry per cut with ``paths``: a
        point's one path, a set's paths, a range's ``from`` and ``to`` (None when open). A
        path is a list with one dict per level — every attribute of the level by reference,
        with ``_key`` and ``_label`` as Cubes gives them, typed as stored (an integer year is
        an integer) — or None when no member has that path (or it is embargoed)."""
        out = []
        for c in resolve_cuts(self.cube, cut):
            paths = c.paths if c.kind != "range" else (c.from_path, c.to_path)
            found: list[list[dict[str, Any]] | None] = []
            for path in paths:
                r = None if path is None else self._path_row(c, path)
                if r is None:
                    found.append(None)
                    continue
                assert path is not None
                found.append([{**{a.ref: r[a.ref] for a in lvl.attributes},
                               "_key": r[lvl.key.ref], "_label": r[lvl.label_attribute.ref]}
                              for lvl in c.hierarchy.levels[: len(path)]])
            out.append({"dimension": c.dimension.name, "hierarchy": c.hierarchy.name,
                        "type": c.kind, "invert": c.invert, "paths": found})
        return out

    def _path_row(self, cut: CutPart, path: Sequence[Any]) -> dict[str, Any] | None:
        """The attributes of the levels of ``path`` (None if no visible member has it): from
        the browser's copy of the hierarchy where there is one, else from the engine."""
        copy = self.member_copy(cut.dimension, cut.hierarchy, len(path))
        if copy is not None:
            return copy.row(path)
        table = self.ws.engine.execute(compiler.path_details(self.cube, cut, path,
                                                             self.period_limit))
        return table.to_pylist()[0] if table.num_rows else None

    # --- internal, raw -------------------------------------------------------------------------

    def _raw_aggregate(self, query: Query) -> RawResult:
        """Unprotected (cube/raw.py): for build checks and tests only."""
        return self.raw.aggregate(query)


def resolve_warehouse(configured: str | None, data_dir: str | Path) -> str:
    """The warehouse to open: ``configured`` (a SQLAlchemy URL or a DuckDB file) if given,
    else the newest release (by release id) in ``<data_dir>/warehouse``."""
    if configured:
        return configured
    releases = sorted(p for p in (Path(data_dir) / "warehouse").glob("*.duckdb")
                      if not p.name.startswith("."))
    if not releases:
        raise ConfigError(f"no warehouse found in {Path(data_dir) / 'warehouse'}: run "
                          "`statcube build` (or `statcube demo`), or set STATCUBE_WAREHOUSE")
    return str(releases[-1])
