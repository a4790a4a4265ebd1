"""Group commit for single reports: the reports a process receives close together from
several senders go to the database together, in one transaction.

A fleet sends one small report per node a minute, hundreds a second in all. Stored one
transaction each, most of a report's cost is the statements and the commit that every
transaction pays whatever its size (about 2.3 ms of server CPU, against 0.27 ms a report);
stored together, they share them.

One transaction at a time, and while several senders report, at most one every `gather`
seconds: a report that comes within `gather` of the last transaction's start, less than
`gather` after another sender's report, waits out the rest of that interval, joined by those
that arrive meanwhile. So under load transactions grow with the rate (100 reports a second
and 0.1 s: about ten), and a report waits for at most `gather`, the transaction under way
when it came, and its own. One sender alone (it sends its next report once this one is
answered) and reports at a trickle are stored at once. A transaction starts early once
`max_reports` wait: each waiting request holds one of the service's database slots
(app.core.concurrency), so `max_reports` is at most their number.

Requests wait on the serving loop, not in worker threads: only the transaction itself runs
in a thread, and its requests are answered together when it ends. What a transaction is, and
its retries, are the store's (app.reports.service.Ingest.store_reports, the batch route's
too): this module only decides which reports go together.
"""

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.reports.schemas import ReportIn

log = logging.getLogger(__name__)
Outcome = TypeVar("Outcome")


@dataclass(eq=False)
class _Waiting(Generic[Outcome]):
    report: ReportIn
    answer: "asyncio.Future[Outcome] | None" = None
    outcome: Outcome | None = None  # set by the transaction
    error: BaseException | None = None


@dataclass(eq=False)
class _Lane:
    """What waits on one event loop (a server process has one), and its writer."""

    queue: list[_Waiting[Any]] = field(default_factory=list)
    writer: "asyncio.Task[None] | None" = None
    full: "asyncio.Future[None] | None" = None  # while the writer waits: done when full
    began: float = float("-inf")  # when its last transaction began
    # The last report's sender and when it came; when another sender's report last came.
    sender: tuple[str, str] | None = None
    sent_at: float = float("-inf")
    other_sent_at: float = float("-inf")


# A transaction that fails for want of the database fails all its reports; any other failure
# (a value the database refuses, say) is one report's: each is then stored on its own.
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


@dataclass
class GroupCommit(Generic[Outcome]):
    """The reports waiting to be stored, and the task that stores them: `store` stores a
    list of reports in one transaction of its own and says what became of each."""

    store: Callable[[list[ReportIn]], list[Outcome]]
    max_reports: int
    gather: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    _lanes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane]" = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def __post_init__(self) -> None:
        if self.max_reports < 1:
            raise ValueError("a transaction holds at least one report")

    async def submit(self, report: ReportIn) -> Outcome:
        """Store `report` in the next transaction and return its outcome; raises what
        storing its transaction raised."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        now, sender = self.monotonic(), (report.cluster, report.node)
        if sender != lane.sender:
            lane.sender, lane.other_sent_at = sender, lane.sent_at
        lane.sent_at = now
        mine: _Waiting[Outcome] = _Waiting(report, loop.create_future())
        lane.queue.append(mine)
        if len(lane.queue) >= self.max_reports and lane.full is not None and not lane.full.done():
            lane.full.set_result(None)
        if lane.writer is None or lane.writer.done():
            # In a context of its own: not the request's that happened to start it.
            writing = self._write(lane, paced=now - lane.other_sent_at < self.gather)
            lane.writer = loop.create_task(writing, context=contextvars.Context())
            lane.writer.add_done_callback(lambda writer: _orphaned(lane, writer))
        assert mine.answer is not None
        return await mine.answer  # a request given up leaves its report to be stored

    async def _write(self, lane: _Lane, *, paced: bool) -> None:
        batch: list[_Waiting[Outcome]] = []
        try:
            while lane.queue:
                wait = lane.began + self.gather - self.monotonic()
                if (paced or len(lane.queue) > 1) and wait > 0:
                    await self._gather(lane, wait)
                lane.began = self.monotonic()
                batch = lane.queue[: self.max_reports]
                del lane.queue[: self.max_reports]
                await self._store(batch)
                batch = []
                paced = True  # what queued meanwhile came while a transaction was stored
        except BaseException as exc:
            # Cancelled (the server stops), or a failure of its own: every report it holds
            # is answered, not left waiting.
            unstored = [*batch, *lane.queue]
            lane.queue.clear()
            if isinstance(exc, Exception):
                log.error("storing reports failed", exc_info=exc)
                _answer(unstored, exc)
            else:
                _answer(unstored, RuntimeError("storing was interrupted"))
                raise
        finally:
            lane.writer = None

    async def _gather(self, lane: _Lane, wait: float) -> None:
        """Wait `wait` seconds for more reports, or until the lane holds `max_reports`."""
        if len(lane.queue) >= self.max_reports:
            return
        lane.full = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(wait):
                await lane.full
        except TimeoutError:
            pass
        finally:
            lane.full = None

    async def _store(self, batch: list[_Waiting[Outcome]]) -> None:
        """Store the batch in a worker thread and answer its requests. Cancelled meanwhile
        (the server stops), it lets the transaction end first, so that each request is
        answered with what became of its report."""
        storing = asyncio.get_running_loop().run_in_executor(None, self._run, batch)
        cancelled: asyncio.CancelledError | None = None
        while not storing.done():
            try:
                await asyncio.shield(storing)
            except asyncio.CancelledError as exc:
                cancelled = exc
            except Exception:  # read below
                break
        failure = None if storing.cancelled() else storing.exception()
        if failure is not None:  # not the store's (see _run): storing itself failed
            log.error("storing a transaction of reports failed", exc_info=failure)
        _answer(batch, failure or RuntimeError("storing was interrupted"))
        if cancelled is not None:
            raise cancelled

    def _run(self, batch: list[_Waiting[Outcome]]) -> None:
        """Store the batch in one transaction; each waiting report gets its outcome or error."""
        try:
            outcomes = self.store([w.report for w in batch])
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, _UNAVAILABLE):
                for waiting in batch:
                    self._run([waiting])
                return
            for waiting in batch:
                waiting.error = exc
        else:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome


def _orphaned(lane: _Lane, writer: "asyncio.Task[None]") -> None:
    # A writer cancelled before it began (the server stops) never ran its own cleanup.
    if lane.writer is writer:
        lane.writer = None
        unstored = list(lane.queue)
        lane.queue.clear()
        _answer(unstored, RuntimeError("storing was interrupted"))


def _answer(batch: list[_Waiting[Any]], unanswered: BaseException) -> None:
    """Answer each request: its report's outcome or error, else `unanswered`."""
    for waiting in batch:
        if waiting.answer is None or waiting.answer.done():
            continue
        if waiting.outcome is not None:
            waiting.answer.set_result(waiting.outcome)
            continue
        error = waiting.error or unanswered
        if isinstance(error, StopIteration) or not isinstance(error, Exception):
            error = RuntimeError(f"storing failed: {error!r}")  # one a future cannot hold
        waiting.answer.set_exception(error)
