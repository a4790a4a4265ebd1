"""Pruning raw usage past its retention, folded first into per-GPU-hour records
(app.retention._fold); those, the rollup and booked months stay for ever.

Every figure is read from the rollup (and closed months from their booked lines), so a
prune changes no total. Reports older than the retention go too, which is why the service
refuses reports that old: without their rows a resend could no longer be told apart.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol, TypeVar

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.partitions import drop_partitions_before, ensure_partitions, is_partitioned
from app.models import GPU_OCCUPANCY, PruneMark
from app.retention._fold import Folded, delete_rowless_reports, fold_window

T = TypeVar("T")


class Transactions(Protocol):
    """Runs a piece of work in a transaction of its own and commits it."""

    def __call__(self, work: Callable[[Session], T], /) -> T: ...


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    partitions_dropped: list[str]
    usage_rows_deleted: int  # all of them folded first
    reports_deleted: int
    gpu_hour_updates: int  # GPU-hour records written or added to, per window


def prune_raw(run: Transactions, *, now: datetime, retention_days: int, actor: str) -> Pruned:
    """Fold raw usage that began more than `retention_days` ago into GPU-hour records and
    delete it and its reports, in steps that each commit (`run`): the pruned point first, so
    that the service refuses reports older than it before any is deleted (a report whose
    ingest began before that sees it after, see app.reports.service); then the fold, a
    window at a time, from the oldest; then the months it emptied, and the audit entry."""
    cutoff = now - timedelta(days=retention_days)
    run(lambda session: _mark(session, cutoff=cutoff))
    run(lambda session: _ensure_partitions(session, now))
    folded = Folded()
    while True:
        window = run(partial(fold_window, start=folded.end, before=cutoff))
        if window is None:
            break
        folded += window
    rowless = run(lambda session: delete_rowless_reports(session, before=cutoff))
    dropped = run(lambda session: _drop_emptied(session, cutoff))
    pruned = Pruned(
        cutoff=cutoff,
        partitions_dropped=dropped,
        usage_rows_deleted=folded.raw_rows,
        reports_deleted=folded.reports + rowless,
        gpu_hour_updates=folded.updates,
    )
    run(lambda session: _audit(session, pruned, now=now, actor=actor))
    return pruned


def _mark(session: Session, *, cutoff: datetime) -> None:
    """Move the pruned point to `cutoff`, and delete the GPU time that ends by it: no report
    accepted from here on can meet it (none may start before the cutoff); time reaching past
    it stays, so none is counted twice across it."""
    mark = session.get(PruneMark, 1, with_for_update=True)
    if mark is None:
        session.add(PruneMark(id=1, pruned_before=cutoff))
    elif mark.pruned_before < cutoff:
        mark.pruned_before = cutoff
    session.execute(delete(GPU_OCCUPANCY).where(GPU_OCCUPANCY.c.period_end <= cutoff))


def _ensure_partitions(session: Session, now: datetime) -> None:
    connection = session.connection()
    if is_partitioned(connection):
        ensure_partitions(connection, now)


def _drop_emptied(session: Session, cutoff: datetime) -> list[str]:
    connection = session.connection()
    return drop_partitions_before(connection, cutoff) if is_partitioned(connection) else []


def _audit(session: Session, pruned: Pruned, *, now: datetime, actor: str) -> None:
    record(
        session,
        at=now,
        actor=actor,
        action="db.prune",
        target="usage",
        details={
            "cutoff": pruned.cutoff.isoformat(),
            "partitions_dropped": pruned.partitions_dropped,
            "usage_rows_deleted": pruned.usage_rows_deleted,
            "reports_deleted": pruned.reports_deleted,
            "gpu_hour_updates": pruned.gpu_hour_updates,
        },
    )
