"""A per-worker, in-memory rate-limit store for flask-limiter's fixed window, without a
thread per request.

Why not ``memory://`` (``limits.storage.MemoryStorage``): every counter increment checks its
expiry timer and starts a new ``threading.Timer(0.01 s)`` whenever the previous one has
finished — on a server that answers requests more than 10 ms apart, a new thread for nearly
every request, plus the lock traffic of that thread sweeping every key. Profiling an
uncached request showed thread starts and lock waits costing about as much as the
protection arithmetic. Expired counters need no timer: a counter is read through
:meth:`get`, which drops it when its window has passed, and keys never read again are swept
inline at most once per :data:`SWEEP_SECONDS`, so memory stays bounded by the keys of the
last window.

Counts are per worker process, exactly as with ``memory://`` (the setting's documented
meaning); ``rate_limit_storage = memory://`` selects this store (server/limits.py).
"""

from __future__ import annotations

import threading
import time

from limits.storage import Storage

#: How often keys that are never read again are swept (seconds).
SWEEP_SECONDS = 1.0
SCHEME = "statcube-memory"


class WorkerMemoryStorage(Storage):
    """Fixed-window counters in a dict under one lock (the only strategy statcube uses)."""

    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012 -- the base class declares it a plain list
    #: The clock windows are measured with (wall time, as flask-limiter's own stores).
    clock = staticmethod(time.time)

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: str) -> None:
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = self.clock() + SWEEP_SECONDS
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _drop_expired(self, key: str, now: float) -> None:
        if self._expiry.get(key, 0.0) <= now:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for key in [k for k, at in self._expiry.items() if at <= now]:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self.clock()
        with self._lock:
            self._sweep(now)
            self._drop_expired(key, now)
            count = self._counts.get(key, 0) + amount
            self._counts[key] = count
            if count == amount:  # a new window starts with its first request
                self._expiry[key] = now + expiry
            return count

    def get(self, key: str) -> int:
        now = self.clock()
        with self._lock:
            self._drop_expired(key, now)
            return self._counts.get(key, 0)

    def get_expiry(self, key: str) -> float:
        with self._lock:
            return self._expiry.get(key, self.clock())

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            n = len(self._counts)
            self._counts.clear()
            self._expiry.clear()
            return n

    def clear(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)


def storage_uri(configured: str) -> str:
    """The flask-limiter storage for the ``rate_limit_storage`` setting: ``memory://`` means
    per-worker counters, kept by :class:`WorkerMemoryStorage`; anything else (redis://…) as
    configured."""
    return f"{SCHEME}://" if configured.rstrip("/") == "memory:" else configured
