"""Group commit for single reports: the reports a process receives close together from
several senders go to the database together, in one transaction.

A fleet sends one small report per node a minute, hundreds a second in all. Stored one
transaction each, most of a report's cost is the statements and the commit that every
transaction pays whatever its size (about 2.3 ms of server CPU, against 0.27 ms a report);
stored together, they share them.

One transaction at a time, at most one every `gather` seconds while several senders report:
a report that comes within `gather` of the last transaction's start, less than `gather`
after another sender's report, waits out the rest of that interval, joined by those that
arrive meanwhile. So under load transactions grow with the rate (100 reports a second and
0.1 s: about ten), and a report waits at most `gather` and the transaction before it. One
sender alone (it sends its next report once this one is answered) and reports at a trickle
are stored at once. A transaction starts early once it holds `max_reports`: each waiting
request holds one of the service's database slots (app.core.concurrency), so `max_reports`
is at most their number.

Requests wait on the serving loop, not in worker threads: only the transaction itself runs
in a thread, and its requests are answered together when it ends.
"""

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.clock import Clock
from app.core.db import commit_with_retry
from app.core.upsert import KnownIds
from app.reports.schemas import ReportIn
from app.reports.service import Outcome, ingest_reports

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiting:
    report: ReportIn
    answer: "asyncio.Future[Outcome] | None" = None
    outcome: Outcome | None = None  # set by the transaction
    error: BaseException | None = None


@dataclass(eq=False)
class _Lane:
    """What waits on one event loop (a server process has one), and its writer."""

    queue: list[_Waiting] = field(default_factory=list)
    storing: int = 0  # reports in the transaction under way
    # Set when the reports waiting and those being stored are `max_reports`.
    full: asyncio.Event = field(default_factory=asyncio.Event)
    writer: "asyncio.Task[None] | None" = None
    began: float = float("-inf")  # when its last transaction began
    # The last report's sender and when it came; when another sender's report last came.
    sender: tuple[str, str] | None = None
    sent_at: float = float("-inf")
    other_sent_at: float = float("-inf")


@dataclass
class Coalescer:
    """The reports waiting to be stored, and the task that stores them."""

    store: Callable[[Session, list[ReportIn]], list[Outcome]]
    max_reports: int
    gather: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    _lanes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane]" = field(
        default_factory=weakref.WeakKeyDictionary
    )

    async def submit(self, sessions: Callable[[], Session], report: ReportIn) -> Outcome:
        """Store `report` in the next transaction (in a session from `sessions`) and return
        its outcome; raises what storing its transaction raised."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        now, sender = self.monotonic(), (report.cluster, report.node)
        if sender != lane.sender:
            lane.sender, lane.other_sent_at = sender, lane.sent_at
        lane.sent_at = now
        mine = _Waiting(report, loop.create_future())
        lane.queue.append(mine)
        if len(lane.queue) + lane.storing >= self.max_reports:
            lane.full.set()  # as many as hold slots: no other report can come to join them
        if lane.writer is None:
            # In a context of its own: not the request's that happened to start it.
            writing = self._write(lane, sessions, paced=now - lane.other_sent_at < self.gather)
            lane.writer = loop.create_task(writing, context=contextvars.Context())
        assert mine.answer is not None
        return await mine.answer  # a request given up leaves its report to be stored

    async def _write(self, lane: _Lane, sessions: Callable[[], Session], *, paced: bool) -> None:
        try:
            while lane.queue:
                wait = lane.began + self.gather - self.monotonic()
                if (paced or len(lane.queue) > 1) and wait > 0 and not lane.full.is_set():
                    try:
                        async with asyncio.timeout(wait):
                            await lane.full.wait()
                    except TimeoutError:
                        pass
                lane.began = self.monotonic()
                batch = lane.queue[: self.max_reports]
                del lane.queue[: self.max_reports]
                lane.storing = len(batch)
                if len(lane.queue) + lane.storing < self.max_reports:
                    lane.full.clear()
                try:
                    await self._store(sessions, batch)
                finally:
                    lane.storing = 0
                paced = True  # what queued meanwhile came while a transaction was stored
        except BaseException:
            # Cancelled (the server stops): what still waits is answered, not left hanging.
            unstored, lane.queue[:] = list(lane.queue), []
            _answer(unstored, RuntimeError("storing was interrupted"))
            raise
        finally:
            lane.writer = None

    async def _store(self, sessions: Callable[[], Session], batch: list[_Waiting]) -> None:
        """Store the batch in a worker thread and answer its requests. Cancelled meanwhile
        (the server stops), it lets the transaction end first, so that each request is
        answered with what became of its report."""
        storing = asyncio.get_running_loop().run_in_executor(
            None, self._store_in_session, sessions, batch
        )
        cancelled: asyncio.CancelledError | None = None
        while not storing.done():
            try:
                await asyncio.shield(storing)
            except asyncio.CancelledError as exc:
                cancelled = exc
            except Exception:  # read below
                break
        if storing.exception() is not None:  # not the store's own failure: see _run
            log.error("storing a transaction of reports failed", exc_info=storing.exception())
        _answer(batch, storing.exception() or RuntimeError("storing was interrupted"))
        if cancelled is not None:
            raise cancelled

    def _store_in_session(self, sessions: Callable[[], Session], batch: list[_Waiting]) -> None:
        with sessions() as session:
            self._run(session, batch)

    def _run(self, session: Session, batch: list[_Waiting]) -> None:
        """Store the batch in one transaction; each waiting report gets its outcome or error."""
        try:
            outcomes = commit_with_retry(
                session, lambda: self.store(session, [w.report for w in batch])
            )
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, OperationalError):
                # One report failed them all (the database refused one of its values, say):
                # store each on its own, so that it fails only its own request.
                for waiting in batch:
                    self._run(session, [waiting])
                return
            for waiting in batch:
                waiting.error = exc
        else:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome


def _answer(batch: list[_Waiting], unanswered: BaseException) -> None:
    """Answer each request: its report's outcome or error, else `unanswered`."""
    for waiting in batch:
        if waiting.answer is None or waiting.answer.done():
            continue
        if waiting.outcome is not None:
            waiting.answer.set_result(waiting.outcome)
        else:
            waiting.answer.set_exception(waiting.error or unanswered)


def report_coalescer(
    known: KnownIds, *, clock: Clock, max_reports: int, tolerance: Decimal, gather: float
) -> Coalescer:
    """The coalescer of an app's single-report requests, each report received when stored."""
    return Coalescer(
        store=lambda session, reports: ingest_reports(
            session, known, reports=reports, received_at=clock(), tolerance=tolerance
        ),
        max_reports=max_reports,
        gather=gather,
    )
