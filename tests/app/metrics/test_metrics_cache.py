"""The snapshot cache behind `/metrics`: fresh, stale-while-refreshing, expired, failing."""

import threading
import time

import pytest

from app.metrics._cache import SnapshotCache


class Loader:
    """Counts reads; each read returns the next number, or raises while `failing`."""

    def __init__(self) -> None:
        self.reads = 0
        self.failing = False
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> int:
        self.release.wait(timeout=10)
        if self.failing:
            raise RuntimeError("database down")
        self.reads += 1
        return self.reads


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def eventually(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_fresh_snapshot_is_served_without_a_read() -> None:
    loader, ticks = Loader(), Ticks()
    cache = SnapshotCache(loader, fresh_s=5, max_stale_s=60, monotonic=ticks)

    assert cache.get() == 1
    ticks.now += 4.9
    assert cache.get() == 1
    assert loader.reads == 1


def test_a_stale_snapshot_is_served_at_once_while_one_refresh_runs() -> None:
    loader, ticks = Loader(), Ticks()
    cache = SnapshotCache(loader, fresh_s=5, max_stale_s=60, monotonic=ticks)
    assert cache.get() == 1
    ticks.now += 30
    loader.release.clear()  # hold the background read

    answers = [cache.get() for _ in range(5)]

    assert answers == [1] * 5
    loader.release.set()
    eventually(lambda: cache.get() == 2)
    assert loader.reads == 2  # five stale scrapes, one refresh


def test_an_expired_snapshot_is_read_again_by_the_scrape() -> None:
    loader, ticks = Loader(), Ticks()
    cache = SnapshotCache(loader, fresh_s=5, max_stale_s=60, monotonic=ticks)
    cache.get()
    ticks.now += 66

    assert cache.get() == 2


def test_no_caching_reads_every_time() -> None:
    loader = Loader()
    cache = SnapshotCache(loader, fresh_s=0, max_stale_s=60)

    assert [cache.get(), cache.get(), cache.get()] == [1, 2, 3]


def test_a_failed_refresh_keeps_the_stale_snapshot_until_it_expires() -> None:
    loader, ticks = Loader(), Ticks()
    cache = SnapshotCache(loader, fresh_s=5, max_stale_s=60, monotonic=ticks)
    cache.get()
    loader.failing = True
    ticks.now += 10

    assert cache.get() == 1
    eventually(lambda: not cache._refreshing)
    assert cache.get() == 1  # a new background attempt, the old snapshot meanwhile
    eventually(lambda: not cache._refreshing)
    ticks.now += 60
    with pytest.raises(RuntimeError, match="database down"):
        cache.get()
