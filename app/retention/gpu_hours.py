"""Which GPUs a job held, hour by hour: its folded GPU-hour records and, for the hours still
raw, its raw usage folded the same way as it is read (app.retention._fold), so an hour reads
the same before and after a prune."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, false, null, select, true, union_all
from sqlalchemy.orm import Session

from app.core.batches import chunks
from app.core.errors import InvalidInput
from app.models import GPU_HOURS, USAGE, Gpu, Report
from app.retention._fold import RAW, split_by_hour

# A range of at most 31 days, and at most this many GPU-hours in one answer.
MAX_HOURS = 31 * 24
MAX_RECORDS = 100_000


@dataclass(frozen=True)
class GpuHour:
    hour: datetime
    gpu: str  # its UUID
    gpu_model: str
    gpu_us: int
    busy_us: int
    energy_mj: int


def job_gpu_hours(
    session: Session,
    *,
    job: ColumnElement[int],
    start: datetime,
    end: datetime,
    longest_report: timedelta,
) -> list[GpuHour]:
    """The job's GPU-hours from `start` to `end` (whole hours), by hour, then GPU. A report
    may begin up to `longest_report` before `start` and still reach into it. `job` is its id
    as SQL, a subquery that finds it: this reads the raw rows and folded records in the
    session's first statement (below)."""
    if end <= start or end - start > timedelta(hours=MAX_HOURS):
        raise InvalidInput("to", f"must be after `from`, by at most {MAX_HOURS} hours")
    # Raw rows and folded records in one statement, so in one snapshot: read in two, a prune
    # committing between them would leave an hour in neither, or in both. And the read's
    # first statement, where its snapshot begins: a prune drops a month's partition once it
    # is folded, and a dropped table is gone from every snapshot, so that one begun before
    # the fold committed would find the hours in neither.
    raw = (
        select(true().label("is_raw"), *RAW, Report.period_end)
        .join(Report, Report.id == USAGE.c.report_id)
        .where(
            USAGE.c.job_id == job,
            USAGE.c.period_start >= start - longest_report,
            USAGE.c.period_start < end,
        )
    )
    records = select(
        false(),
        null(),
        GPU_HOURS.c.hour,
        GPU_HOURS.c.gpu_id,
        GPU_HOURS.c.job_id,
        GPU_HOURS.c.gpu_us,
        GPU_HOURS.c.busy_us,
        GPU_HOURS.c.energy_mj,
        null(),
    ).where(GPU_HOURS.c.job_id == job, GPU_HOURS.c.hour >= start, GPU_HOURS.c.hour < end)
    rows = session.execute(union_all(raw, records)).all()
    # A raw row: `RAW`, then its report's end; a folded record: its hour where a raw row
    # has its start.
    raw_rows = [row for row in rows if row.is_raw]
    spans = {row.report_id: (row.period_start, row.period_end) for row in raw_rows}
    sums = split_by_hour((row[1 : 1 + len(RAW)] for row in raw_rows), spans)
    # An hour a prune cut through is partly folded, partly raw: both add up.
    by_gpu_hour: dict[tuple[int, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        if not row.is_raw:
            by_gpu_hour[(row.gpu_id, row.period_start)] = [
                int(row.gpu_us),
                int(row.busy_us),
                int(row.energy_mj),
            ]
    for (_, gpu_pk, hour), amounts in sums.items():
        if start <= hour < end:
            acc = by_gpu_hour[(gpu_pk, hour)]
            for i, amount in enumerate(amounts):
                acc[i] += amount
    if len(by_gpu_hour) > MAX_RECORDS:
        raise InvalidInput("to", f"more than {MAX_RECORDS:,} GPU-hours: ask for a shorter range")
    gpus: dict[int, tuple[str, str]] = {}
    for part in chunks(sorted({gpu_pk for gpu_pk, _ in by_gpu_hour})):
        gpus.update(
            (row.id, (row.uuid, row.model))
            for row in session.execute(select(Gpu.id, Gpu.uuid, Gpu.model).where(Gpu.id.in_(part)))
        )
    return sorted(
        (GpuHour(hour, *gpus[gpu_pk], *amounts) for (gpu_pk, hour), amounts in by_gpu_hour.items()),
        key=lambda gpu_hour: (gpu_hour.hour, gpu_hour.gpu),
    )
