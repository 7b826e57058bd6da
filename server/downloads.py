"""The export catalogue and file downloads: ``/exports`` and ``/exports/<release>/<cube>/
<grain>/<file>``.

An export is listed and served only when all of these hold:

- the calendar shows its release to the caller — the API's own rule
  (:meth:`cube.releases.Calendar.visible`: published, or any release for prerelease and admin
  keys);
- its record (``statcube.provenance`` in ``datapackage.json``) is of that release as the
  calendar defines it now — same last period — made from the build of the warehouse the
  release is served from, for the cube and grain its directory names
  (:func:`cube.export.record_matches`);
- no symlink stands anywhere below the export root (release, cube or grain directory,
  partition directory or file), and no name is hidden (``.<grain>.partial``, locks): every
  step is opened with ``O_NOFOLLOW`` relative to the directory checked before it, so what is
  checked is what is sent, even if the tree changes meanwhile;
- the file is one the record lists (or datapackage.json and SHA256SUMS), a regular file of
  the size the record gives.

Anything else — no record, a mismatch, an embargoed or unknown release, a symlink, a hidden
directory, a file not listed — is not listed and answers exactly the 404 of a path that does
not exist, so the answer never tells which. Why a mismatch is refused is logged for the
operator (once per process and reason), never sent. Downloads support Range, ETag and
Last-Modified; an unpublished release's files are ``private, no-store``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from flask import Request, Response, send_file
from werkzeug.exceptions import NotFound, RequestedRangeNotSatisfiable
from werkzeug.http import parse_range_header

from cube.export import CHECKSUMS, DATAPACKAGE, record_matches
from cube.releases import Release, ReleaseSet

log = logging.getLogger("statcube.server")
#: Files of an export that its record does not list but that are served with it.
METADATA_FILES = (DATAPACKAGE, CHECKSUMS)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block
_reported: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Servable:
    """A release the caller may download, and the build its exports must come from."""

    release: Release
    build: str
    published: bool


def servable(releases: ReleaseSet, now: datetime, exempt: bool) -> list[Servable]:
    return [Servable(r, releases.build(r), r.is_published(now))
            for r in releases.calendar.visible(now, embargo_exempt=exempt)]


def _plain(name: str) -> bool:
    """One path component that names nothing hidden and goes nowhere else."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


@contextlib.contextmanager
def _opened(parent: int | None, name: str, flags: int = _DIR) -> Iterator[int | None]:
    """``name`` opened relative to the directory descriptor ``parent`` without following a
    symlink; None if ``parent`` is None, the name is not plain, or it cannot be opened."""
    fd = None
    if parent is not None and _plain(name):
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except OSError:
            fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def _release_dir(root: Path, release: str) -> Iterator[int | None]:
    """The release's directory under the export root. The root itself may be a symlink (it
    is configuration); nothing below it may."""
    try:
        root_fd: int | None = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        root_fd = None
    try:
        with _opened(root_fd, release) as fd:
            yield fd
    finally:
        if root_fd is not None:
            os.close(root_fd)


def _subdirs(fd: int) -> list[str]:
    """Names of the real (not symlinked), not hidden directories in a directory."""
    with os.scandir(fd) as entries:
        return sorted(e.name for e in entries
                      if _plain(e.name) and e.is_dir(follow_symlinks=False))


def _read_package(grain_fd: int) -> dict[str, Any] | None:
    with _opened(grain_fd, DATAPACKAGE, _FILE) as fd:
        if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            try:
                package = json.loads(f.read())
            except ValueError:
                return None
    return package if isinstance(package, dict) else None


def _report(where: str, why: str) -> None:
    if (where, why) not in _reported:
        _reported.add((where, why))
        log.warning("export %s is not served: %s", where, why)


@dataclass(frozen=True)
class _Export:
    cube: str
    grain: str
    files: dict[str, dict[str, Any]]


def _files(package: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = package["statcube"].get("files")
    out = {str(k): dict(v) for k, v in listed.items() if isinstance(v, dict)} \
        if isinstance(listed, dict) else {}
    for name in METADATA_FILES:
        out.setdefault(name, {})
    return out


def _exports(release_fd: int, s: Servable, only: tuple[str, str] | None = None
             ) -> Generator[tuple[_Export, int], None, None]:
    """The release's exports that may be served, each with its grain directory's descriptor
    (valid until the next item)."""
    for cube in [only[0]] if only else _subdirs(release_fd):
        with _opened(release_fd, cube) as cube_fd:
            if cube_fd is None:
                continue
            for grain in [only[1]] if only else _subdirs(cube_fd):
                with _opened(cube_fd, grain) as grain_fd:
                    if grain_fd is None:
                        continue
                    package = _read_package(grain_fd)
                    if package is None:
                        continue
                    if not record_matches(package, s.release, s.build, cube, grain):
                        _report(f"{s.release.id}/{cube}/{grain}", "its record does not match "
                                "the release calendar and the served warehouse build")
                        continue
                    yield _Export(cube, grain, _files(package)), grain_fd


@contextlib.contextmanager
def _open_file(grain_fd: int, name: str, meta: dict[str, Any]
               ) -> Iterator[tuple[int, os.stat_result] | None]:
    """A listed file of a grain, opened without following any symlink on the way, if it is
    a regular file of the size the record gives."""
    parts = name.split("/")
    with contextlib.ExitStack() as stack:
        fd: int | None = grain_fd
        for part in parts[:-1]:
            fd = stack.enter_context(_opened(fd, part))
        leaf = stack.enter_context(_opened(fd, parts[-1], _FILE))
        st = os.fstat(leaf) if leaf is not None else None
        if leaf is None or st is None or not stat.S_ISREG(st.st_mode) \
                or ("bytes" in meta and meta["bytes"] != st.st_size):
            yield None
        else:
            yield leaf, st


def catalogue(root: Path, releases: list[Servable], base_url: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for s in releases:
        cubes: dict[str, list[dict[str, Any]]] = {}
        with _release_dir(root, s.release.id) as release_fd:
            if release_fd is None:
                continue
            with contextlib.closing(_exports(release_fd, s)) as exports:
                for export, grain_fd in exports:
                    url = f"{base_url}/{s.release.id}/{export.cube}/{export.grain}"
                    files = []
                    for name, meta in sorted(export.files.items()):
                        with _open_file(grain_fd, name, meta) as found:
                            if found is not None:
                                files.append({"path": name, "bytes": found[1].st_size,
                                              "sha256": meta.get("sha256"),
                                              "url": f"{url}/{name}"})
                    cubes.setdefault(export.cube, []).append({
                        "grain": export.grain, "datapackage": f"{url}/{DATAPACKAGE}",
                        "files": files, "total_bytes": sum(f["bytes"] for f in files)})
        if cubes:
            out.append({"release": s.release.id, "cubes": cubes})
    return {"exports": out}


def send(root: Path, releases: list[Servable], release: str, cube: str, grain: str,
         name: str, req: Request, *, max_age: int = 3600) -> Response:
    """The file, or the 404 of a path that does not exist (never why)."""
    s = next((x for x in releases if x.release.id == release), None)
    if s is None or not (_plain(cube) and _plain(grain)):
        raise NotFound()
    with _release_dir(root, release) as release_fd:
        if release_fd is None:
            raise NotFound()
        with contextlib.closing(_exports(release_fd, s, only=(cube, grain))) as exports:
            for export, grain_fd in exports:
                meta = export.files.get(name)
                if meta is None:
                    break
                with _open_file(grain_fd, name, meta) as found:
                    if found is None:
                        break
                    fd, st = found
                    return _response(os.fdopen(os.dup(fd), "rb"), name, st, req,
                                     max_age if s.published else None)
    raise NotFound()


#: Media types of the files an export holds (the OpenAPI document lists the same).
MEDIA_TYPES = {".json": "application/json", ".parquet": "application/vnd.apache.parquet"}
#: SHA256SUMS and anything without a known suffix.
TEXT_FILES = {CHECKSUMS: "text/plain; charset=utf-8"}
OCTETS = "application/octet-stream"


def media_type(name: str) -> str:
    leaf = name.rsplit("/", 1)[-1]
    if leaf in TEXT_FILES:
        return TEXT_FILES[leaf]
    return MEDIA_TYPES.get(Path(leaf).suffix.lower(), OCTETS)


def usable_range(req: Request, size: int) -> bool:
    """Whether to honour the request's ``Range`` (RFC 9110 §14.2): a header that does not
    parse, names another unit or asks for several ranges is ignored — the whole file, 200 —
    rather than refused (werkzeug answered all of these 416). One satisfiable range is served
    206; one unsatisfiable range raises 416 with ``Content-Range: bytes */size``."""
    header = req.headers.get("Range")
    if header is None:
        return False
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return False
    if parsed.range_for_length(size) is None:
        raise RequestedRangeNotSatisfiable(length=size, units="bytes")
    return True


def _response(f: IO[bytes], name: str, st: os.stat_result, req: Request,
              max_age: int | None) -> Response:
    """``send_file`` of an open file, made conditional (ETag, Last-Modified, Range) with the
    size the descriptor has — the path is never opened again."""
    try:
        ranged = usable_range(req, st.st_size)
        if not ranged and "Range" in req.headers:  # ignored: make_conditional must not see it
            environ = dict(req.environ)
            environ.pop("HTTP_RANGE", None)
            req = Request(environ)
        resp = send_file(f, mimetype=media_type(name), download_name=name.rsplit("/", 1)[-1],
                         conditional=False, etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-"
                                                 f"{st.st_size:x}",
                         last_modified=st.st_mtime, max_age=max_age)
        resp.content_length = st.st_size
        if max_age is None:
            resp.cache_control.no_cache = None
            resp.headers["Cache-Control"] = "private, no-store"
        resp.make_conditional(req, accept_ranges=True, complete_length=st.st_size)
        return resp
    except BaseException:
        f.close()
        raise
