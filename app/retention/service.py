"""Pruning raw usage past its retention, folded first into per-GPU-hour records
(app.retention.fold); those, the rollup and booked months stay for ever.

Every figure is read from the rollup (and closed months from their booked lines), so a
prune changes no total. Reports older than the retention go too, which is why the service
refuses reports that old: without their rows a resend could no longer be told apart.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.partitions import drop_partitions_before, ensure_partitions, is_partitioned
from app.models import GPU_OCCUPANCY, PruneMark
from app.retention.fold import fold_raw


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    partitions_dropped: list[str]
    usage_rows_deleted: int
    reports_deleted: int
    gpu_hours_folded: int  # GPU-hour records written or added to


def prune_raw(session: Session, *, now: datetime, retention_days: int, actor: str) -> Pruned:
    """Fold raw usage that began more than `retention_days` ago into GPU-hour records,
    then remove it and its reports."""
    cutoff = now - timedelta(days=retention_days)
    connection = session.connection()
    partitioned = is_partitioned(connection)
    if partitioned:
        ensure_partitions(connection, now)
    folded = fold_raw(session, before=cutoff)
    # The months the fold emptied go whole, their dead rows with them.
    dropped = drop_partitions_before(connection, cutoff) if partitioned else []
    mark = session.get(PruneMark, 1, with_for_update=True)
    if mark is None:
        session.add(PruneMark(id=1, pruned_before=cutoff))
    elif mark.pruned_before < cutoff:
        mark.pruned_before = cutoff
    # GPU time ending by the cutoff can meet no report accepted after the prune (none may
    # start before it); time reaching past it stays, so none is counted twice across it.
    session.execute(delete(GPU_OCCUPANCY).where(GPU_OCCUPANCY.c.period_end <= cutoff))
    result = Pruned(
        cutoff=cutoff,
        partitions_dropped=dropped,
        usage_rows_deleted=folded.raw_rows,
        reports_deleted=folded.reports,
        gpu_hours_folded=folded.records,
    )
    record(
        session,
        at=now,
        actor=actor,
        action="db.prune",
        target="usage",
        details={
            "cutoff": cutoff.isoformat(),
            "partitions_dropped": dropped,
            "usage_rows_deleted": result.usage_rows_deleted,
            "reports_deleted": result.reports_deleted,
            "gpu_hours_folded": folded.records,
        },
    )
    return result
