"""Group commit for single reports: reports that arrive while another transaction of reports
is being stored wait, then go to the database together, in one transaction.

A fleet sends one small report per node a minute, hundreds a second in all. Stored one
transaction each, most of a report's cost is the statements and the commit that every
transaction pays whatever its size; stored together, they share them.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from app.core.clock import Clock
from app.core.db import commit_with_retry
from app.reports.schemas import ReportIn
from app.reports.service import Outcome, ingest_reports


@dataclass(eq=False)
class _Waiting:
    report: ReportIn
    outcome: Outcome | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class Coalescer:
    """One writer at a time per process: a request that finds no transaction of reports in
    progress stores everything waiting (its own report among it, up to `max_reports`);
    the others wait for their outcome, or for their turn to store."""

    store: Callable[[Session, list[ReportIn]], list[Outcome]]
    max_reports: int
    _queue: list[_Waiting] = field(default_factory=list)
    _storing: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def submit(self, session: Session, report: ReportIn) -> Outcome:
        """Store `report` (in `session`, or in another waiting request's) and return its
        outcome; raises what storing its transaction raised."""
        mine = _Waiting(report)
        with self._changed:
            self._queue.append(mine)
        while True:
            with self._changed:
                self._changed.wait_for(lambda: mine.done or not self._storing)
                if mine.done:
                    break
                self._storing = True
                batch = self._queue[: self.max_reports]
                del self._queue[: self.max_reports]
            try:
                self._run(session, batch)
            finally:
                with self._changed:
                    self._storing = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error
        assert mine.outcome is not None
        return mine.outcome

    def _run(self, session: Session, batch: list[_Waiting]) -> None:
        try:
            outcomes = commit_with_retry(
                session, lambda: self.store(session, [w.report for w in batch])
            )
        except DBAPIError as exc:
            if len(batch) > 1 and not isinstance(exc, OperationalError):
                # The database refused a value of one report: store each on its own, so
                # that it fails only its own request.
                for waiting in batch:
                    self._run(session, [waiting])
                return
            self._fail(batch, exc)
        except Exception as exc:
            self._fail(batch, exc)
        else:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome, waiting.done = outcome, True

    @staticmethod
    def _fail(batch: list[_Waiting], exc: Exception) -> None:
        # Every request of the transaction answers with what went wrong.
        for waiting in batch:
            waiting.error, waiting.done = exc, True


def report_coalescer(*, clock: Clock, max_reports: int) -> Coalescer:
    """The coalescer of an app's single-report requests, each report received when stored."""
    return Coalescer(
        store=lambda session, reports: ingest_reports(
            session, reports=reports, received_at=clock()
        ),
        max_reports=max_reports,
    )
