"""The hourly rollup, kept in the ingest transaction: a batch's usage summed per job (or idle
capacity), GPU model and UTC hour, then added to the stored sums in one upsert."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from app.core.upsert import insert_many
from app.models import HourlyUsage
from app.models.usage import IDLE_HOUR_WHERE, JOB_HOUR_WHERE
from app.reports.entries import Entry
from app.reports.hours import hour_slices, split_amounts

ROLLUP = cast(Table, HourlyUsage.__table__)
# (cluster id, job id or 0 for idle capacity, GPU model, hour)
Key = tuple[int, int, str, datetime]


class HourlyTotals:
    """Sums of GPU-µs, busy-µs and mJ per rollup key, split across hours exactly."""

    def __init__(self) -> None:
        self._sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(
        self,
        *,
        cluster_pk: int,
        start: datetime,
        end: datetime,
        entries: Iterable[tuple[Entry, int]],
    ) -> None:
        """Add a report's entries, each with its job's id (0 for idle capacity)."""
        slices = hour_slices(start, end)
        # Within one hour, as most reports are: nothing to split.
        whole = slices[1][0].hour if len(slices[1]) == 1 else None
        sums = self._sums
        for entry, job_pk in entries:
            amounts = (entry.gpu_us, entry.busy_us, entry.energy_mj)
            parts = ((whole, amounts),) if whole else split_amounts(slices, amounts)
            for hour, shares in parts:
                acc = sums[(cluster_pk, job_pk, entry.model, hour)]
                acc[0] += shares[0]
                acc[1] += shares[1]
                acc[2] += shares[2]

    def store(self, session: Session) -> None:
        """Add the sums into the rollup, job rows first, each part in key order so that
        concurrent batches lock the rows they share in the same order."""
        job_rows: list[dict[str, Any]] = []
        idle_rows: list[dict[str, Any]] = []
        for (cluster_pk, job_pk, model, hour), acc in sorted(
            self._sums.items(), key=lambda item: (item[0][1], item[0][2], item[0][3], item[0][0])
        ):
            row = {
                "cluster_id": cluster_pk,
                "job_id": job_pk or None,
                "gpu_model": model,
                "hour": hour,
                "gpu_us": acc[0],
                "busy_us": acc[1],
                "energy_mj": acc[2],
            }
            (job_rows if job_pk else idle_rows).append(row)
        if job_rows:
            insert_many(session, ROLLUP, job_rows, _add_to_job_hours)
        if idle_rows:
            insert_many(session, ROLLUP, idle_rows, _add_to_idle_hours)


def _add_to_job_hours(stmt: Any) -> Any:
    return _adding(stmt, keys=["job_id", "gpu_model", "hour"], where=JOB_HOUR_WHERE)


def _add_to_idle_hours(stmt: Any) -> Any:
    return _adding(stmt, keys=["cluster_id", "gpu_model", "hour"], where=IDLE_HOUR_WHERE)


def _adding(stmt: Any, *, keys: list[str], where: Any) -> Any:
    table = ROLLUP
    return stmt.on_conflict_do_update(
        index_elements=keys,
        index_where=where,
        set_={
            "gpu_us": table.c.gpu_us + stmt.excluded.gpu_us,
            "busy_us": table.c.busy_us + stmt.excluded.busy_us,
            "energy_mj": table.c.energy_mj + stmt.excluded.energy_mj,
        },
    )
