"""Occupancy: a GPU, wherever it is reported from, is counted once for any moment.

Each stored report occupies each GPU it names for its interval: a whole GPU, and a MIG
device both itself and its GPU (so that neither the GPU's other users nor a second parent
claimed for the device can count the same time). A report whose interval overlaps time
already stored for one of them by more than the tolerance is refused whole (409). The
tolerance absorbs a collector's clock stepping back: a report may start that much before
the end of time already counted, the configured tolerance but at most a sixtieth of its own
interval, so that however reports are cut a GPU is never counted more than one part in 59
beyond the time that passed.

The rule is the database's: the constraint reads each stored span from `guard_start` (its
start plus the tolerance it was granted) to its end, and no two of one GPU's may meet.
Stored spans are runs: a report that carries on where a GPU's stored time ends extends that
span instead of adding one, so a GPU reporting without gaps keeps one row. Ingest looks
first, in the same transaction, so that each report gets its own answer; a concurrent
transaction that stores overlapping time first makes ours fail on the constraint (or find
the span it extends moved on), and it is run again (app.core.db.commit_with_retry), to find
that time stored.
"""

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.core.bulk_insert import insert_rows
from app.core.calendar import span_us
from app.core.db import RaceLost
from app.core.errors import Conflict
from app.core.rows import find_in_windows, update_rows
from app.models import GPU_OCCUPANCY, Cluster, Node, Report
from app.reports._entries import micros
from app.reports.schemas import ReportIn

# A report may overlap stored time by at most this part of its own interval.
INTERVAL_SHARE = 60
OCCUPANCY_COLUMNS = ("gpu_id", "report_id", "period_start", "period_end", "guard_start")


class Overlap(Conflict):
    """A report counts a GPU for time already counted."""

    def __init__(self, message: str, *, gpu: str) -> None:
        super().__init__(message)
        self.gpu = gpu


class Interval(NamedTuple):  # a tuple: thousands are made per batch
    """Time of one GPU (by UUID): a report's, or a stored span (`stored_end` set)."""

    gpu: str
    start: datetime
    end: datetime
    guard: datetime
    report_pk: int
    stored_end: datetime | None = None


def tolerated(start: datetime, end: datetime, tolerance: Decimal) -> timedelta:
    """How far before time already counted a report of this interval may start."""
    return timedelta(microseconds=min(micros(tolerance), span_us(start, end) // INTERVAL_SHARE))


def owner(cluster: str, node: str, seq: int) -> str:
    return f"{cluster}/{node} seq {seq}"


class Ledger:
    """Each GPU's spans, stored and accepted so far in this transaction, by guard start."""

    def __init__(self) -> None:
        self._guards: dict[str, list[datetime]] = defaultdict(list)
        self._spans: dict[str, list[Interval]] = defaultdict(list)

    def add(self, span: Interval) -> None:
        guards, spans = self._guards[span.gpu], self._spans[span.gpu]
        if not guards or guards[-1] <= span.guard:  # in order, as reports nearly always are
            guards.append(span.guard)
            spans.append(span)
            return
        at = bisect.bisect(guards, span.guard)
        guards.insert(at, span.guard)
        spans.insert(at, span)

    def clash(self, span: Interval) -> Interval | None:
        """A span of the same GPU that `span` may not overlap, if any."""
        guards, spans = self._guards[span.gpu], self._spans[span.gpu]
        if not guards:
            return None
        at = len(guards) if guards[-1] <= span.guard else bisect.bisect(guards, span.guard)
        # One GPU's spans never overlap: by guard start their ends are in order too, so only
        # the two neighbours can meet it.
        if at < len(guards) and guards[at] < span.end:
            return spans[at]
        if at > 0 and spans[at - 1].end > span.guard:
            return spans[at - 1]
        return None

    def spans(self) -> Iterable[tuple[str, list[Interval]]]:
        return self._spans.items()


def judge(
    session: Session,
    reports: Sequence[tuple[ReportIn, int]],
    known: Mapping[str, int],
    *,
    tolerance: Decimal,
) -> tuple[dict[int, Overlap], Ledger]:
    """Refuse, in order, each report (with its id) that counts time already counted, stored
    (`known`: the ids of the GPUs stored so far) or earlier in `reports`. The refusals by
    report id, and the ledger of what stays."""
    claims = [(report, pk, intervals(report, pk, tolerance)) for report, pk in reports]
    ledger = _stored(session, [i for _, _, held in claims for i in held], known)
    names = {pk: "report " + owner(r.cluster, r.node, r.seq) for r, pk in reports}
    refused: dict[int, Overlap] = {}
    for report_pk, held in ((pk, held) for _, pk, held in claims):
        clash = next(((i, other) for i in held if (other := ledger.clash(i)) is not None), None)
        if clash is None:
            for interval in held:
                ledger.add(interval)
        else:
            interval, other = clash
            holder = names.get(other.report_pk) if other.stored_end is None else None
            refused[report_pk] = _refusal(
                interval,
                other,
                claiming=names[report_pk],
                holder=holder or _stored_owner(session, other.report_pk),
            )
    return refused, ledger


def intervals(report: ReportIn, report_pk: int, tolerance: Decimal) -> list[Interval]:
    """The report's time on each GPU and MIG device it names."""
    guard = report.start + tolerated(report.start, report.end, tolerance)
    # The entries come by UUID: the devices in that order, each once, then their GPUs.
    named = dict.fromkeys(e.uuid for e in report.entries)
    if report.parents:
        named.update(dict.fromkeys(sorted(set(report.parents.values()))))
    start, end = report.start, report.end
    return [Interval(uuid, start, end, guard, report_pk) for uuid in named]


def _stored(session: Session, probes: Sequence[Interval], known: Mapping[str, int]) -> Ledger:
    """A ledger of the stored spans that may meet the probes: per GPU, those ending at or
    after its earliest probe's start (the span a probe carries on included)."""
    windows: dict[str, tuple[datetime, datetime]] = {}
    for p in probes:
        if p.gpu in known:
            lo, hi = windows.get(p.gpu, (p.start, p.end))
            windows[p.gpu] = (min(lo, p.start), max(hi, p.end))
    uuids = {known[uuid]: uuid for uuid in windows}
    rows = find_in_windows(
        session,
        GPU_OCCUPANCY,
        OCCUPANCY_COLUMNS,
        ("gpu_id", "guard_start", "period_end"),
        [(known[uuid], lo, hi) for uuid, (lo, hi) in sorted(windows.items())],
    )
    ledger = Ledger()
    for row in rows:
        gpu, start, end = uuids[row.gpu_id], row.period_start, row.period_end
        ledger.add(Interval(gpu, start, end, row.guard_start, row.report_id, stored_end=end))
    return ledger


def _stored_owner(session: Session, report_pk: int) -> str:
    """The report that began a stored span, in a refusal's words."""
    query = (
        select(Cluster.name, Node.name, Report.seq)
        .join(Node, Node.id == Report.node_id)
        .join(Cluster, Cluster.id == Node.cluster_id)
        .where(Report.id == report_pk)
    )
    found = session.execute(query).first()
    return "report " + owner(*found) if found else "a pruned report"


def _refusal(interval: Interval, held: Interval, *, claiming: str, holder: str) -> Overlap:
    overlap = min(interval.end, held.end) - max(interval.start, held.start)
    # The tolerance in force is the later-starting one's: it may begin that far back.
    later = interval if interval.start >= held.start else held
    return Overlap(
        f"GPU {interval.gpu} is already counted from {held.start.isoformat()} to "
        f"{held.end.isoformat()} (first by {holder}); {claiming}, "
        f"{interval.start.isoformat()} to {interval.end.isoformat()}, overlaps it by "
        f"{overlap.total_seconds():g} s, more than the "
        f"{(later.guard - later.start).total_seconds():g} s tolerated",
        gpu=interval.gpu,
    )


def record(session: Session, ledger: Ledger, gpus: Mapping[str, Row[Any]]) -> None:
    """Store the time accepted into `ledger` (`gpus`: the stored rows by UUID): a run of
    reports without gaps as one span, which extends a stored span that it carries on."""
    extended: list[tuple[int, datetime, datetime]] = []
    added: list[tuple[Any, ...]] = []
    for gpu, spans in ledger.spans():
        stored = [s for s in spans if s.stored_end is not None]
        for run in _runs([s for s in spans if s.stored_end is None]):
            gpu_pk = gpus[gpu].id
            before = next((s for s in stored if run.start <= s.end <= run.guard), None)
            if before is None:
                added.append((gpu_pk, run.report_pk, run.start, run.end, run.guard))
            else:
                extended.append((gpu_pk, before.end, run.end))
    if extended:
        # In GPU order, so that two transactions meeting on the same GPUs wait in one order.
        extended.sort()
        moved = update_rows(
            session, GPU_OCCUPANCY, ("gpu_id", "period_end"), ("period_end",), extended
        )
        if moved != len(extended):
            # A concurrent transaction moved one of these spans on: run again, to see it.
            raise RaceLost("a GPU's stored time changed while this report was stored")
    added.sort(key=lambda row: (row[0], row[2]))
    insert_rows(session, GPU_OCCUPANCY, OCCUPANCY_COLUMNS, added)


def _runs(spans: list[Interval]) -> Iterable[Interval]:
    """Spans merged where each starts by the end of the one before (accepted spans meet
    only within the tolerance)."""
    if not spans:  # a GPU whose reports here were all refused
        return
    ordered = sorted(spans, key=lambda s: s.start)
    first, end = ordered[0], ordered[0].end
    for span in ordered[1:]:
        if span.start > end:
            yield first._replace(end=end)
            first, end = span, span.end
        elif span.end > end:
            end = span.end
    yield first._replace(end=end)
