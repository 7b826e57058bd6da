"""What every endpoint does around its one core call: who is asking, which release they may
see, which format they want, and the conditional/cached response.

:meth:`Service.call` turns a Flask request into an explicit :class:`Call` (principal,
validated parameters, release, format, size limit) that handlers pass on as an argument —
nothing travels in ``flask.g``. :meth:`Service.respond` computes the strong ETag from the
release and the normalised request, answers ``If-None-Match`` with 304, serves the LRU cache,
or runs the handler's ``produce`` and caches what it serialised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Request, Response
from werkzeug.datastructures import ETags

from cube import labels
from cube.model import Model
from cube.releases import Calendar, Release, ReleaseSet
from cube.settings import Settings
from cube.workspace import CubeBrowser
from server import limits
from server.auth import KeyStore, Principal
from server.cache import Entry, ResultCache, etag
from server.formats import Output, json_bytes, negotiate
from server.params import ALL_FORMATS, Args, check_lang, formats_for, read

VARY = "Accept, APIKey, Authorization"


@dataclass(frozen=True)
class Call:
    """One request, parsed: everything a handler needs, passed explicitly."""

    principal: Principal
    args: Args
    release: Release
    explicit_release: bool
    now: datetime
    fmt: str
    header: str
    pretty: bool
    max_cells: int
    if_none_match: ETags
    #: The label language asked for with ``lang=`` when statcube offers it and it is not the
    #: model's own (e.g. "cy"), else None: labels stay as stored.
    lang: str | None = None


class Service:
    def __init__(self, settings: Settings, model: Model, releases: ReleaseSet, keys: KeyStore,
                 clock: Callable[[], datetime], version: str) -> None:
        self.settings = settings
        self.model = model
        self.releases = releases
        self.keys = keys
        self.clock = clock
        self.version = version
        self.cache = ResultCache(settings.cache_bytes)

    @property
    def calendar(self) -> Calendar:
        return self.releases.calendar

    def identify(self, req: Request, endpoint: str) -> tuple[Principal, Args]:
        """The caller and the request's validated parameters (no release needed)."""
        principal, args = self.keys.authenticate(req.headers), read(endpoint, req.args)
        negotiate(args.choice("format", ALL_FORMATS, None), None, formats_for(endpoint))
        check_lang(args.one("lang"))
        return principal, args

    def call(self, req: Request, endpoint: str) -> Call:
        principal, args = self.identify(req, endpoint)
        for name in ("cut", "split"):  # bounded work: refused before any SQL
            if args.many(name):
                limits.check_cut(args.joined_cut(name), name)
        now = self.clock()
        release = self.calendar.select(args.one("release"), now,
                                       embargo_exempt=principal.role.embargo_exempt)
        fmt = negotiate(args.choice("format", ALL_FORMATS, None), req.accept_mimetypes
                        if "Accept" in req.headers else None, formats_for(endpoint))
        return Call(principal, args, release, bool(args.one("release")), now, fmt,
                    args.choice("header", ("names", "labels", "none"), "names") or "names",
                    args.flag("prettyprint"), limits.max_cells(self.settings, principal.role),
                    req.if_none_match, _label_language(args.one("lang")))

    def browser(self, call: Call, cube: str) -> CubeBrowser:
        self.model.cube(cube)  # unknown everywhere: 404 with close matches from the model
        return self.releases.browser(call.release, cube)

    def cache_headers(self, call: Call, tag: str) -> dict[str, str]:
        if not call.release.is_published(call.now):
            control = "private, no-store"  # pre-release access: never in shared caches
        elif call.explicit_release:
            control = f"public, max-age={self.settings.cache_max_age}"
        else:  # "latest" moves at the next publication: revalidate (cheap: ETag, no SQL)
            control = "public, no-cache"
        return {"ETag": tag, "Cache-Control": control, "Vary": VARY,
                "X-Statcube-Release": call.release.id}

    def respond(self, call: Call, key: Any, produce: Callable[[], Output], *,
                pagesize: int | None = None, what: str = "cells") -> Response:
        limits.check_pagesize(pagesize, call.max_cells, what, call.principal)
        tag = etag(self.releases.fingerprint(call.release), key, call.fmt, call.header,
                   call.pretty, call.lang)
        headers = self.cache_headers(call, tag)
        entry = self.cache.get(tag)
        if entry is not None:
            limits.check_size(entry.size, call.max_cells, what, call.principal)
        # "*" matches any current representation (RFC 9110 §13.1.2), as on downloads
        if call.if_none_match.star_tag or call.if_none_match.contains_weak(tag[1:-1]):
            return Response(status=304, headers=headers)
        if entry is not None:
            return Response(entry.body, content_type=entry.media_type, headers=headers)
        out = produce()
        if isinstance(out.body, bytes):
            self.cache.put(tag, Entry(out.body, out.media_type, out.size))
            body: Any = out.body
        else:
            body = self.cache.tee(tag, out.body, out.media_type, out.size)
        return Response(body, content_type=out.media_type, headers=headers)

    def plain(self, call_pretty: bool, payload: Any, *, private: bool = False) -> Response:
        """Small uncached JSON (version, info)."""
        resp = Response(json_bytes(payload, call_pretty), mimetype="application/json")
        resp.headers["Cache-Control"] = "private, no-cache" if private else "public, max-age=60"
        return resp


def _label_language(lang: str | None) -> str | None:
    """``lang=`` as a label language to translate into, or None for the stored labels (the
    default language, or one statcube does not offer: Cubes falls back the same way)."""
    found = labels.language(lang)
    return None if found in (None, labels.DEFAULT_LANGUAGE) else found
