"""Folding raw usage, as it leaves its retention, into one record per GPU, job and UTC hour.

Raw usage is a row per GPU, job and report: a minute's worth at the usual interval, about
1,440 rows a GPU-day. Past its retention it is summed per GPU, job (or idle) and hour into
`usage_gpu_hourly`, kept for ever beside the rollup: which job held which GPU when, its
GPU-time, busy time and energy, exact to the microsecond and millijoule. A report that runs
across an hour is split as the rollup splits it (app.core.calendar), so a job's records sum,
hour by hour, to what the rollup holds for it on its GPUs. Utilisation and peak memory are
not kept: busy time over GPU-time is the utilisation.

Raw rows are folded an hour of report starts at a time, each hour in a transaction of its
own (app.retention.service), so that each record is written once an hour and an
interrupted prune keeps the hours it finished. Within the hour they are deleted, with their
reports, `STEP` of report starts at a time and summed as they come, so memory holds the
hour's sums and one step's rows: about 75 bytes per raw row of the hour, 0.45 GB for
100,000 GPUs reporting each minute (bench_fold; an hour's rows at once took 700 bytes a
row, 4.2 GB). A record that a later hour adds to (a report that ran on past an hour or the
cutoff) is added to, not written twice.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from app.core.batches import chunks
from app.core.calendar import HourSlice, floor_hour, hour_slices, hourly_shares
from app.core.upsert import adding_on_conflict, insert_many
from app.models import GPU_HOURS, USAGE, Report

# Report starts folded in one transaction: an hour, so that each GPU-hour record is written
# once (a shorter window would update it again in each, leaving dead rows behind).
WINDOW = timedelta(hours=1)
# Report starts deleted, and their rows summed, in one statement: the rows held in memory.
STEP = timedelta(minutes=5)
_US = timedelta(microseconds=1)
SUMS = ("gpu_us", "busy_us", "energy_mj")
# What `split_by_hour` reads of each raw row.
RAW = (
    USAGE.c.report_id,
    USAGE.c.period_start,
    USAGE.c.gpu_id,
    USAGE.c.job_id,
    USAGE.c.gpu_us,
    USAGE.c.busy_us,
    USAGE.c.energy_mj,
)
# (job id or 0 for idle, GPU id, hour)
Key = tuple[int, int, datetime]

_ADD_JOB_HOURS = adding_on_conflict(
    GPU_HOURS, ["job_id", "gpu_id", "hour"], GPU_HOURS.c.job_id.is_not(None), SUMS
)
_ADD_IDLE_HOURS = adding_on_conflict(
    GPU_HOURS, ["gpu_id", "hour"], GPU_HOURS.c.job_id.is_(None), SUMS
)


@dataclass(frozen=True)
class Folded:
    raw_rows: int = 0  # raw usage rows deleted
    updates: int = 0  # GPU-hour records written or added to, per window
    reports: int = 0  # reports deleted
    end: datetime | None = None  # where the window folded ended: the next one starts there

    def __add__(self, other: "Folded") -> "Folded":
        return Folded(
            self.raw_rows + other.raw_rows,
            self.updates + other.updates,
            self.reports + other.reports,
            other.end,
        )


def fold_window(session: Session, *, start: datetime | None, before: datetime) -> Folded | None:
    """Delete the raw usage of the first `WINDOW` of report starts from `start` on (and
    before `before`) that holds any, and its reports, adding the usage to the GPU-hour
    records; None when there is none left.

    What is folded is what the deletes return, and a report goes only with its rows (both
    are stored in one transaction, so a report's rows are all seen or none): a report
    stored meanwhile is either folded whole or stays, rows and report, for the next prune;
    none is folded twice and no row loses its report's span."""
    query = select(func.min(USAGE.c.period_start)).where(USAGE.c.period_start < before)
    if start is not None:
        query = query.where(USAGE.c.period_start >= start)
    first = session.execute(query).scalar_one_or_none()
    if first is None:
        return None
    low = floor_hour(first)
    high = min(low + WINDOW, before)
    sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
    raw_rows = reports = 0
    step = low
    while step < high:
        rows, deleted_reports = _fold_step(session, step, min(step + STEP, high), into=sums)
        raw_rows, reports = raw_rows + rows, reports + deleted_reports
        step += STEP
    updates = _add(session, sums)
    return Folded(raw_rows=raw_rows, updates=updates, reports=reports, end=high)


def _fold_step(
    session: Session, low: datetime, high: datetime, *, into: dict[Key, list[int]]
) -> tuple[int, int]:
    """Delete the raw rows of report starts in [low, high) and, by the ids they return, their
    reports, adding the rows to `into`; how many rows and reports went. (The rows are let go
    on return, before the next step's are read.)"""
    deleted = session.execute(
        delete(USAGE)
        .where(USAGE.c.period_start >= low, USAGE.c.period_start < high)
        .returning(*RAW)
    ).all()
    spans: dict[int, tuple[datetime, datetime]] = {}
    for part in chunks(sorted({row[0] for row in deleted})):
        spans.update(
            (report_pk, (start, end))
            for report_pk, start, end in session.execute(
                delete(Report)
                .where(Report.id.in_(part))
                .returning(Report.id, Report.period_start, Report.period_end)
            )
        )
    split_by_hour(deleted, spans, into=into)
    return len(deleted), len(spans)


def delete_rowless_reports(session: Session, *, before: datetime) -> int:
    """Delete the reports that began before `before` with no usage rows (a report may list
    no GPU): none of them has anything to fold."""
    rowless = session.execute(
        delete(Report).where(
            Report.period_start < before,
            ~exists().where(
                USAGE.c.period_start == Report.period_start, USAGE.c.report_id == Report.id
            ),
        )
    )
    return rowless.rowcount  # type: ignore[attr-defined,no-any-return]


def split_by_hour(
    rows: Iterable[Sequence[Any]],
    spans: Mapping[int, tuple[datetime, datetime]],
    *,
    into: dict[Key, list[int]] | None = None,
) -> dict[Key, list[int]]:
    """Raw rows (`RAW`) summed per `Key` (added to `into`, when given), each split across
    the hours of its report's span (`spans` by report id). A row whose report is gone (an
    earlier version's prune could leave one) is counted in the hour it began."""
    sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0]) if into is None else into
    slicing: dict[int, tuple[int, list[HourSlice]]] = {}
    for report_pk, start, gpu_pk, job_pk, *amounts in rows:
        slices = slicing.get(report_pk)
        if slices is None:
            span = spans.get(report_pk) or (start, start + _US)
            slices = slicing[report_pk] = hour_slices(*span)
        for hour, shares in hourly_shares(slices, amounts):
            acc = sums[(job_pk or 0, gpu_pk, hour)]
            acc[0] += shares[0]
            acc[1] += shares[1]
            acc[2] += shares[2]
    return sums


def _add(session: Session, sums: dict[Key, list[int]]) -> int:
    job_rows: list[dict[str, Any]] = []
    idle_rows: list[dict[str, Any]] = []
    for (job_pk, gpu_pk, hour), acc in sorted(sums.items()):
        row = {"gpu_id": gpu_pk, "job_id": job_pk or None, "hour": hour}
        row.update(zip(SUMS, acc, strict=True))
        (job_rows if job_pk else idle_rows).append(row)
    for rows, finish in ((job_rows, _ADD_JOB_HOURS), (idle_rows, _ADD_IDLE_HOURS)):
        for part in chunks(rows):
            insert_many(session, GPU_HOURS, part, finish)
    return len(job_rows) + len(idle_rows)
