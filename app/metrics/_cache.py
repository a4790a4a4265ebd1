"""The database read behind `/metrics`, cached so that a scrape stays cheap.

A snapshot younger than the cache duration is served as it is. An older one, up to the
maximum staleness, is served at once while one background thread reads a fresh one, so a
scrape every 15 s never waits for the database; past that (or on the first scrape) the
scrape reads the database itself. A cache duration of 0 reads on every scrape.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class SnapshotCache(Generic[T]):
    def __init__(
        self,
        load: Callable[[], T],
        *,
        fresh_s: float,
        max_stale_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._fresh_s, self._max_stale_s = load, fresh_s, max_stale_s
        self._monotonic = monotonic
        self._lock = threading.Lock()  # guards the fields below
        self._load_lock = threading.Lock()  # one synchronous read at a time
        self._value: T | None = None
        self._loaded_at = 0.0
        self._refreshing = False

    def get(self) -> T:
        """The cached snapshot if recent enough, else a fresh read (may raise its error)."""
        with self._lock:
            value = self._usable()
            if value is not None:
                return value
        with self._load_lock:
            with self._lock:
                value = self._usable()  # another scrape may have read it meanwhile
            if value is None:
                value = self._store(self._load())
            return value

    def _usable(self) -> T | None:
        if self._value is None or self._fresh_s == 0:
            return None
        age = self._monotonic() - self._loaded_at
        if age < self._fresh_s:
            return self._value
        if age < self._fresh_s + self._max_stale_s:
            if not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="metrics-refresh", daemon=True).start()
            return self._value
        return None

    def _store(self, value: T) -> T:
        with self._lock:
            self._value, self._loaded_at = value, self._monotonic()
        return value

    def _refresh(self) -> None:
        try:
            with self._load_lock:
                self._store(self._load())
        except Exception:
            # The stale snapshot stays until it is too old; the next scrape tries again.
            log.warning("background read of the metrics snapshot failed", exc_info=True)
        finally:
            with self._lock:
                self._refreshing = False
