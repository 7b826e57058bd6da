"""The export catalogue and file downloads: ``/exports`` and ``/exports/<release>/<cube>/
<grain>/<file>``.

Only finished exports (a ``datapackage.json`` exists; partial directories are hidden) of
releases the caller may see are listed or served: an embargoed or unknown release looks
exactly like a missing one. Files are served only if the export's own metadata lists them,
so no path from a request ever reaches the filesystem unchecked. Downloads support Range,
ETag and Last-Modified through Flask's conditional ``send_file``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cube.errors import NotFoundError
from cube.releases import Calendar

METADATA_FILES = ("datapackage.json", "README.txt", "SHA256SUMS")


def visible_releases(calendar: Calendar, now: datetime, exempt: bool) -> list[str]:
    return [r.id for r in calendar.releases if exempt or r.is_published(now)]


def _grains(root: Path, release: str) -> list[tuple[str, str, Path]]:
    base = root / release
    if not base.is_dir():
        return []
    out = []
    for cube_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for grain_dir in sorted(p for p in cube_dir.iterdir() if p.is_dir()):
            if not grain_dir.name.startswith(".") and (grain_dir / "datapackage.json").exists():
                out.append((cube_dir.name, grain_dir.name, grain_dir))
    return out


def _files(grain_dir: Path) -> dict[str, dict[str, Any]]:
    package = json.loads((grain_dir / "datapackage.json").read_text(encoding="utf-8"))
    files: dict[str, dict[str, Any]] = dict(package.get("statcube", {}).get("files", {}))
    for name in METADATA_FILES:
        path = grain_dir / name
        if path.exists() and name not in files:
            files[name] = {"bytes": path.stat().st_size}
    return files


def catalogue(root: Path, releases: list[str], base_url: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for release in releases:
        cubes: dict[str, list[dict[str, Any]]] = {}
        for cube, grain, grain_dir in _grains(root, release):
            files = _files(grain_dir)
            cubes.setdefault(cube, []).append({
                "grain": grain,
                "datapackage": f"{base_url}/{release}/{cube}/{grain}/datapackage.json",
                "files": [{"path": name, "bytes": meta.get("bytes"),
                           "sha256": meta.get("sha256"),
                           "url": f"{base_url}/{release}/{cube}/{grain}/{name}"}
                          for name, meta in sorted(files.items())],
                "total_bytes": sum(int(m.get("bytes") or 0) for m in files.values()),
            })
        if cubes:
            out.append({"release": release, "cubes": cubes})
    return {"exports": out}


def resolve(root: Path, releases: list[str], release: str, cube: str, grain: str,
            name: str) -> Path:
    """The file to send, or a 404 naming what was not found (never whether it is embargoed)."""
    if release not in releases:
        raise NotFoundError(f"no export for release {release!r}", parameter="release",
                            value=release)
    for c, g, grain_dir in _grains(root, release):
        if (c, g) == (cube, grain):
            if name not in _files(grain_dir):
                raise NotFoundError(f"no file {name!r} in export {release}/{cube}/{grain}",
                                    parameter="file", value=name)
            return grain_dir / name
    raise NotFoundError(f"no export {cube}/{grain} in release {release!r}",
                        parameter="grain", value=f"{cube}/{grain}")
