"""Group commit for single reports: reports that arrive while another transaction of reports
is being stored wait, then go to the database together, in one transaction.

A fleet sends one small report per node a minute, hundreds a second in all. Stored one
transaction each, most of a report's cost is the statements and the commit that every
transaction pays whatever its size; stored together, they share them.

Under load, a request that was handed the turn (it came while a transaction was stored: the
reports arrive faster than they are stored) first waits `gather` seconds for those still
arriving, so that transactions grow with the load instead of staying at one or two reports
(measured: a transaction of one report costs 3 ms of CPU, of four 1.5 ms a report). A report
that finds nothing in progress is stored at once: alone, or at a trickle, none waits.
"""

import threading
import time
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


@dataclass(eq=False)
class _Waiting:
    report: ReportIn
    outcome: Outcome | None = None
    error: BaseException | None = None
    done: bool = False
    lead: bool = False  # its turn to store what waits
    woken: threading.Event = field(default_factory=threading.Event)


@dataclass
class Coalescer:
    """One writer at a time per process: a request that finds no transaction of reports in
    progress stores everything waiting (its own report among it, up to `max_reports`),
    then hands the turn to the oldest report still waiting; the others wait to be told
    their outcome, or that their turn has come."""

    store: Callable[[Session, list[ReportIn]], list[Outcome]]
    max_reports: int
    gather: float = 0.0
    _queue: list[_Waiting] = field(default_factory=list)
    _storing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, sessions: Callable[[], Session], report: ReportIn) -> Outcome:
        """Store `report` (in a session from `sessions`, or in another waiting request's) and
        return its outcome; raises what storing its transaction raised. Only a request
        whose turn it is to store takes a session, and with it a pooled connection."""
        mine = _Waiting(report)
        with self._lock:
            self._queue.append(mine)
            if not self._storing:
                self._storing = mine.lead = True
        while not mine.done:
            if not mine.lead:
                mine.woken.wait()
                mine.woken.clear()
                if mine.lead and len(self._queue) < self.max_reports:
                    time.sleep(self.gather)
                continue
            with self._lock:
                batch = self._queue[: self.max_reports]
                del self._queue[: self.max_reports]
            try:
                with sessions() as session:
                    self._run(session, batch)
            finally:
                self._hand_over(mine, batch)
        if mine.error is not None:
            raise mine.error
        assert mine.outcome is not None
        return mine.outcome

    def _hand_over(self, mine: _Waiting, batch: list[_Waiting]) -> None:
        # Wake each stored request once, and the next in line, if any, with the turn.
        for waiting in batch:
            if not waiting.done:  # storing was interrupted before it came to this one
                waiting.error, waiting.done = RuntimeError("storing was interrupted"), True
        with self._lock:
            mine.lead = False
            following = self._queue[0] if self._queue else None
            if following is None:
                self._storing = False
            else:
                following.lead = True
        for waiting in batch:
            if waiting is not mine:
                waiting.woken.set()
        if following is not None:
            following.woken.set()

    def _run(self, session: Session, batch: list[_Waiting]) -> None:
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
            self._fail(batch, exc)
        except BaseException as exc:  # interrupted: the waiting are answered, then it goes on
            self._fail(batch, exc)
            raise
        else:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome, waiting.done = outcome, True

    @staticmethod
    def _fail(batch: list[_Waiting], exc: BaseException) -> None:
        # Every request of the transaction answers with what went wrong.
        for waiting in batch:
            waiting.error, waiting.done = exc, True


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
