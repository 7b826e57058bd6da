"""Strong ETags and an in-process LRU cache of serialised responses.

A published release never changes, so a response is fully determined by the release (its
id, visible period, warehouse build and p-table: :meth:`cube.releases.ReleaseSet.fingerprint`)
and the *normalised* query — the resolved :class:`~cube.query.Query`, so ``drilldown=geography``
and ``drilldown=geography:region`` under ``cut=geography:E92000001`` are one entry — plus the
output options (format, header, indentation). The ETag is a hash of exactly that, so it can be
checked (``If-None-Match`` → 304) before any SQL runs, and it doubles as the cache key.

The cache holds bytes, bounded by total size; each entry remembers how many cells it holds so
a cached table is still refused to a role whose size limit it exceeds. Thread-safe (gunicorn
gthread workers). Per process: workers do not share it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cube.grammar import format_cut
from cube.query import CutPart, Query

#: Entries larger than this share of the cache are served but not stored.
MAX_ENTRY_SHARE = 8


@dataclass(frozen=True)
class Entry:
    body: bytes
    media_type: str
    size: int


class ResultCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry

    def fits(self, nbytes: int) -> bool:
        return 0 < nbytes <= self.max_bytes // MAX_ENTRY_SHARE

    def put(self, key: str, entry: Entry) -> None:
        if not self.fits(len(entry.body)):
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._items[key] = entry
            self._bytes += len(entry.body)
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.body)

    def tee(self, key: str, chunks: Iterable[bytes], media_type: str, size: int
            ) -> Iterator[bytes]:
        """Stream ``chunks`` and store the whole body once streaming completes (if small)."""
        kept: list[bytes] | None = []
        total = 0
        for chunk in chunks:
            if kept is not None:
                total += len(chunk)
                if self.fits(total):
                    kept.append(chunk)
                else:
                    kept = None
            yield chunk
        if kept is not None:
            self.put(key, Entry(b"".join(kept), media_type, size))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits,
                    "misses": self.misses}


def etag(*parts: Any) -> str:
    """A strong entity tag (quoted) over JSON-serialisable parts."""
    digest = hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS),
                             digest_size=16).hexdigest()
    return f'"{digest}"'


def _cuts(cuts: Sequence[CutPart]) -> list[Any]:
    out: list[Any] = []
    for c in cuts:
        if c.source is not None:
            out.append(format_cut(c.source))
        else:  # a cut the core added (a stock's default period): its resolved path
            out.append([c.dimension.name, c.hierarchy.name, [str(k) for k in c.paths[0]]])
    return out


def normalise(query: Query) -> list[Any]:
    """The resolved query as plain data: names resolved, defaults made explicit."""
    return [
        query.cube.name,
        _cuts(query.cuts),
        [f"{d.dimension.name}@{d.hierarchy.name}:{d.level.name}" for d in query.drilldown],
        [a.name for a in query.aggregates],
        [[o.ref, o.descending] for o in query.order],
        query.page, query.pagesize,
        _cuts(query.split),
        [[f.aggregate.name, f.op, f.value] for f in query.filters],
        None if query.top is None else [query.top.n, query.top.aggregate.name,
                                        None if query.top.per is None
                                        else query.top.per.dimension.name],
        query.default_period, query.period_limit,
    ]
