"""The rollup kept in the ingest transaction: a batch's usage summed per job (or idle
capacity), GPU model and UTC hour, then added to the stored sums of each level, one upsert
for each level's job rows and one for its idle rows, and one for the model level; and a
job's hours moved on the model level when its model or phase changes.

A sum past 64 bits is refused (`OutOfRange`, a 422), nothing of the batch stored: a batch's
own sums here, before they are sent; a stored sum they would take past it by the database
(PostgreSQL's BIGINT; SQLite's CHECK constraints, see app.core.sums.integers_only)."""

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.batches import chunks
from app.core.calendar import hour_slices, hourly_shares
from app.core.errors import OutOfRange
from app.core.sums import INT64_MAX, exact_sum
from app.core.upsert import adding_on_conflict, insert_many
from app.totals.levels import FINEST_FIRST, HOUR, MODEL_HOURS, Level

# (cluster id, job id or 0 for idle capacity, GPU model, period start)
Key = tuple[int, int, str, datetime]
# A job's (model, phase) on the model level, '' for none.
Labels = tuple[str, str]


class Usage(Protocol):
    """What the levels sum of one GPU's use in a report (a report's entry, as ingest reads it)."""

    @property
    def model(self) -> str: ...  # the GPU model
    @property
    def gpu_us(self) -> int: ...
    @property
    def busy_us(self) -> int: ...
    @property
    def energy_mj(self) -> int: ...


class Totals:
    """Sums of GPU-µs, busy-µs and mJ per rollup key, split across hours exactly."""

    def __init__(self) -> None:
        self._sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(
        self,
        *,
        cluster_pk: int,
        start: datetime,
        end: datetime,
        entries: Iterable[tuple[Usage, int]],
    ) -> None:
        """Add a report's entries, each with its job's id (0 for idle capacity)."""
        slices = hour_slices(start, end)
        sums = self._sums
        for entry, job_pk in entries:
            amounts = (entry.gpu_us, entry.busy_us, entry.energy_mj)
            for hour, shares in hourly_shares(slices, amounts):
                acc = sums[(cluster_pk, job_pk, entry.model, hour)]
                acc[0] += shares[0]
                acc[1] += shares[1]
                acc[2] += shares[2]

    def store(self, session: Session, labels: Mapping[int, Labels]) -> None:
        """Add the sums into each level, finest first, and in each level job rows first,
        in key order: concurrent batches lock the rows they share in the same order. Each
        job's GPU-time goes to the model level under `labels`, its (model, phase) now."""
        levels: list[tuple[Level, dict[Key, list[int]]]] = []
        for level in FINEST_FIRST:
            sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
            for (cluster_pk, job_pk, model, hour), acc in self._sums.items():
                into = sums[(cluster_pk, job_pk, model, level.start_of(hour))]
                for i, amount in enumerate(acc):
                    into[i] += amount
            levels.append((level, sums))
        by_label: dict[tuple[str, str, int, datetime], int] = defaultdict(int)
        for (cluster_pk, job_pk, _, hour), acc in self._sums.items():
            if job_pk:
                by_label[(*labels[job_pk], cluster_pk, hour)] += acc[0]
        # Past 64 bits, a sum cannot even be sent (SQLite's driver raises OverflowError).
        # Amounts are never negative: when the batch's totals fit, so does every row's part
        # of them, on every level, and no row need be looked at.
        if any(sum(figure) > INT64_MAX for figure in zip(*self._sums.values(), strict=True)):
            rows = [amount for _, sums in levels for acc in sums.values() for amount in acc]
            if max([*rows, *by_label.values()]) > INT64_MAX:
                raise OutOfRange()
        for level, sums in levels:
            _add(session, level, sums)
        _add_by_label(session, by_label)


def labels_of(model: str | None, phase: str | None) -> Labels:
    """A job's key on the model level: its model and phase, '' for none."""
    return (model or "", phase or "")


def move_job_hours(
    session: Session, *, job_pk: int, cluster_pk: int, old: Labels, new: Labels
) -> None:
    """Move a job's GPU-time on the model level from its old labels to its new ones, hour by
    hour; the caller holds the job's row lock, which ingest takes before adding to it. The
    old labels' rows the move empties are deleted: only rows it has just updated, and so
    locked already, so that it waits on no row ingest holds."""
    if old == new:
        return
    hourly = HOUR.table
    hours = session.execute(
        select(hourly.c.hour, exact_sum(hourly.c.gpu_us))
        .where(hourly.c.job_id == job_pk)
        .group_by(hourly.c.hour)
    ).all()
    moved: dict[tuple[str, str, int, datetime], int] = {}
    for hour, gpu_us in hours:
        moved[(*old, cluster_pk, hour)] = -int(gpu_us)
        moved[(*new, cluster_pk, hour)] = int(gpu_us)
    _add_by_label(session, moved)
    emptied = MODEL_HOURS.c
    for part in chunks([hour for hour, _ in hours]):
        session.execute(
            delete(MODEL_HOURS).where(
                emptied.model == old[0],
                emptied.phase == old[1],
                emptied.cluster_id == cluster_pk,
                emptied.hour.in_(part),
                emptied.gpu_us == 0,
            )
        )


# The model level's key, in its unique index's order: rows are added in that order, so that
# every writer (ingest, a relabelling) locks the rows it shares with another in the same order.
_MODEL_KEY = ("model", "hour", "phase", "cluster_id")


def _add_by_label(session: Session, sums: Mapping[tuple[str, str, int, datetime], int]) -> None:
    rows = sorted(
        (
            {
                "model": model,
                "phase": phase,
                "cluster_id": cluster_pk,
                "hour": hour,
                "gpu_us": gpu_us,
            }
            for (model, phase, cluster_pk, hour), gpu_us in sums.items()
        ),
        key=itemgetter(*_MODEL_KEY),
    )
    for part in chunks(rows):
        insert_many(session, MODEL_HOURS, part, _add_gpu_time)


def _add_gpu_time(stmt: Any) -> Any:
    return stmt.on_conflict_do_update(
        index_elements=list(_MODEL_KEY),
        set_={"gpu_us": MODEL_HOURS.c.gpu_us + stmt.excluded.gpu_us},
    )


def _add(session: Session, level: Level, sums: dict[Key, list[int]]) -> None:
    job_rows: list[dict[str, Any]] = []
    idle_rows: list[dict[str, Any]] = []
    for (cluster_pk, job_pk, model, start), acc in sorted(
        sums.items(), key=lambda item: (item[0][1], item[0][2], item[0][3], item[0][0])
    ):
        row = {
            "cluster_id": cluster_pk,
            "job_id": job_pk or None,
            "gpu_model": model,
            level.unit: start,
            "gpu_us": acc[0],
            "busy_us": acc[1],
            "energy_mj": acc[2],
        }
        (job_rows if job_pk else idle_rows).append(row)
    job_sums, idle_sums = _ADDING[level.unit]
    if job_rows:
        insert_many(session, level.table, job_rows, job_sums)
    if idle_rows:
        insert_many(session, level.table, idle_rows, idle_sums)


def _adding(level: Level, *, idle: bool) -> Callable[[Any], Any]:
    """The upsert's clause adding to a level's stored job (or idle) rows."""
    table = level.table
    keys = ["cluster_id" if idle else "job_id", "gpu_model", level.unit]
    where = table.c.job_id.is_(None) if idle else table.c.job_id.is_not(None)
    return adding_on_conflict(table, keys, where, ("gpu_us", "busy_us", "energy_mj"))


_ADDING = {
    level.unit: (_adding(level, idle=False), _adding(level, idle=True)) for level in FINEST_FIRST
}
