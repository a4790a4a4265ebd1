"""Occupancy: a GPU, wherever it is reported from, is counted once for any moment.

Each stored report occupies each of its GPUs (a MIG device's parent GPU for the device) for
its interval. A report whose interval overlaps time already stored for one of its GPUs by
more than the tolerance is refused whole (409). The tolerance absorbs a collector's clock
stepping back: the overlap tolerated is the configured tolerance, at most a sixtieth of the
report's own interval, so that however reports are cut a GPU is never counted more than one
part in 59 beyond the time that passed.

The rule is the database's: the constraint reads each interval from `guard_start` (its start
plus the tolerance it was granted) to its end, and no two of one GPU's may meet. Ingest looks
first, in the same transaction, so that each report gets its own answer; a concurrent
transaction that stores an overlapping report first makes ours fail on the constraint, and
it is run again (see app.core.db.commit_with_retry), to find that report stored.
"""

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import Conflict
from app.core.upsert import find_rows, insert_rows
from app.models import GPU_OCCUPANCY, Cluster, Node, Report
from app.reports.entries import micros
from app.reports.schemas import ReportIn

_US = timedelta(microseconds=1)
# A report may overlap stored time by at most this part of its own interval.
INTERVAL_SHARE = 60
OCCUPANCY_COLUMNS = ("gpu_id", "report_id", "period_start", "period_end", "guard_start")


class Overlap(Conflict):
    """A report counts a GPU for time already counted."""


@dataclass(frozen=True)
class Interval:
    """One GPU's time in one report; `owner` says whose it is, in a refusal's words."""

    gpu_pk: int
    start: datetime
    end: datetime
    guard: datetime
    owner: str


def tolerated(start: datetime, end: datetime, tolerance: Decimal) -> timedelta:
    """The overlap with stored time a report of this interval may have."""
    return timedelta(microseconds=min(micros(tolerance), (end - start) // _US // INTERVAL_SHARE))


class Ledger:
    """Each GPU's intervals, stored and accepted so far in this transaction, by guard start."""

    def __init__(self) -> None:
        self._guards: dict[int, list[datetime]] = defaultdict(list)
        self._intervals: dict[int, list[Interval]] = defaultdict(list)

    def add(self, interval: Interval) -> None:
        at = bisect.bisect(self._guards[interval.gpu_pk], interval.guard)
        self._guards[interval.gpu_pk].insert(at, interval.guard)
        self._intervals[interval.gpu_pk].insert(at, interval)

    def clash(self, interval: Interval) -> Interval | None:
        """An interval of the same GPU that `interval` may not overlap, if any."""
        guards, intervals = self._guards[interval.gpu_pk], self._intervals[interval.gpu_pk]
        at = bisect.bisect(guards, interval.guard)
        # One GPU's intervals never overlap: by guard start, their ends are in order too, so
        # only the two neighbours can meet it.
        if at < len(guards) and guards[at] < interval.end:
            return intervals[at]
        if at > 0 and intervals[at - 1].end > interval.guard:
            return intervals[at - 1]
        return None


def stored_ledger(session: Session, probes: Sequence[Interval]) -> Ledger:
    """The stored intervals of the probes' GPUs that could meet any of them."""
    ledger = Ledger()
    if not probes:
        return ledger
    rows = list(
        find_rows(
            session,
            GPU_OCCUPANCY,
            ("report_id", "period_start", "period_end", "guard_start", "gpu_id"),
            ("gpu_id",),
            sorted({(p.gpu_pk,) for p in probes}),
            where=_WINDOW,
            params={"lo": min(p.guard for p in probes), "hi": max(p.end for p in probes)},
        )
    )
    owners = _owners(session, {row.report_id for row in rows})
    for row in rows:
        owner = owners.get(row.report_id, "a pruned report")
        ledger.add(Interval(row.gpu_id, row.period_start, row.period_end, row.guard_start, owner))
    return ledger


def _window() -> tuple[object, ...]:
    table = GPU_OCCUPANCY
    lo = bindparam("lo", type_=table.c.period_end.type)
    hi = bindparam("hi", type_=table.c.guard_start.type)
    return (table.c.period_end > lo, table.c.guard_start < hi)


_WINDOW = _window()


def _owners(session: Session, report_pks: Iterable[int]) -> dict[int, str]:
    wanted = sorted(report_pks)
    if not wanted:
        return {}
    query = (
        select(Report.id, Cluster.name, Node.name, Report.seq)
        .join(Node, Node.id == Report.node_id)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .where(Report.id.in_(wanted))
    )
    return {pk: f"{c}/{n} seq {seq}" for pk, c, n, seq in session.execute(query)}


def refusal(uuid: str, interval: Interval, held: Interval) -> Overlap:
    overlap = min(interval.end, held.end) - max(interval.start, held.start)
    return Overlap(
        f"GPU {uuid} is already counted from {held.start.isoformat()} to "
        f"{held.end.isoformat()} (report {held.owner}); this report's "
        f"{interval.start.isoformat()} to {interval.end.isoformat()} overlaps it by "
        f"{overlap.total_seconds():g} s, more than the "
        f"{(interval.guard - interval.start).total_seconds():g} s tolerated"
    )


def occupy(
    session: Session,
    reports: Sequence[tuple[ReportIn, int]],
    gpus: Mapping[str, Row[Any]],
    *,
    received_at: datetime,
    tolerance: Decimal,
) -> dict[int, Overlap]:
    """Record the GPU time of each report (with its id; `gpus`: the stored rows by UUID) that
    counts none already counted, stored or earlier in `reports`; refuse the others, each
    recorded in the audit log. The refusals, by report id."""
    claims = [(report, pk, _intervals(report, gpus, tolerance)) for report, pk in reports]
    ledger = stored_ledger(session, [i for _, _, held in claims for i in held])
    uuids = {row.id: uuid for uuid, row in gpus.items()}
    refused: dict[int, Overlap] = {}
    rows: list[tuple[Any, ...]] = []
    for report, report_pk, intervals in claims:
        clash = next(((i, held) for i in intervals if (held := ledger.clash(i)) is not None), None)
        if clash is None:
            for i in intervals:
                ledger.add(i)
            rows.extend((i.gpu_pk, report_pk, i.start, i.end, i.guard) for i in intervals)
            continue
        interval, held = clash
        uuid = uuids[interval.gpu_pk]
        refused[report_pk] = error = refusal(uuid, interval, held)
        record(
            session,
            at=received_at,
            actor=f"{report.cluster}/{report.node}",
            action="report.overlap",
            target=f"gpu {uuid}",
            details={"seq": report.seq, "detail": error.message},
        )
    # In GPU order, so that two transactions meeting on the same GPUs wait in one order.
    rows.sort(key=lambda row: (row[0], row[2]))
    insert_rows(session, GPU_OCCUPANCY, OCCUPANCY_COLUMNS, rows)
    return refused


def _intervals(
    report: ReportIn, gpus: Mapping[str, Row[Any]], tolerance: Decimal
) -> list[Interval]:
    """The report's time on each GPU it names (a MIG device's GPU for the device)."""
    guard = report.start + tolerated(report.start, report.end, tolerance)
    owner = f"{report.cluster}/{report.node} seq {report.seq}"
    physical = sorted({report.physical(e.uuid) for e in report.entries})
    return [Interval(gpus[uuid].id, report.start, report.end, guard, owner) for uuid in physical]
