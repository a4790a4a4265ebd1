"""Whether the day, month and model levels hold exactly what their hours sum to, and
rebuilding them from their hours where they do not (`gpucost db check-totals [--repair]`)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, String, delete, func, select
from sqlalchemy.orm import Session

from app.core.batches import chunks
from app.core.db import exclude_writers
from app.core.errors import AppError
from app.core.sql import utc_period
from app.core.sums import INT64_MAX, exact_sum
from app.core.upsert import insert_many
from app.models import Job
from app.totals.levels import DAY, FIGURES, HOUR, MODEL_HOURS, MONTH, Level

# A row's key (its columns but the sums, in order) -> its sums.
Sums = dict[tuple[Any, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Disagreement:
    level: str
    key: str  # the row, as people read it
    stored: tuple[int, ...] | None  # None: no row where the hours have usage
    hours: tuple[int, ...] | None  # None: a row where the hours have none


@dataclass(frozen=True)
class Checked:
    rows: dict[str, int]  # rows read per level
    disagreements: list[Disagreement]


@dataclass(frozen=True)
class _Kept:
    """A kept level: its name, its rows as stored and as its hours sum to (both queries
    give the key columns, then the sums), how a key reads, and how a key is written back."""

    name: str
    stored: Callable[[Session], Select[Any]]
    from_hours: Callable[[Session], Select[Any]]
    shown: Callable[[tuple[Any, ...]], str]
    row: Callable[[tuple[Any, ...], tuple[int, ...]], dict[str, Any]]
    table: Any
    sums: int = len(FIGURES)  # how many of the queries' last columns are sums


def check_totals(session: Session) -> Checked:
    """Every day, month and model row against the sums of its hours, in one transaction:
    a read one (`Database.read()`, one snapshot), for its queries to read the same rows
    while ingest goes on, and to leave SQLite's write lock to ingest."""
    rows: dict[str, int] = {}
    found: list[Disagreement] = []
    for kept in _KEPT:
        stored = _sums(session, kept.stored(session), kept.sums)
        hours = _sums(session, kept.from_hours(session), kept.sums)
        rows[kept.name] = len(stored)
        for key in sorted(stored.keys() | hours.keys(), key=repr):
            if _nonzero(stored.get(key)) != _nonzero(hours.get(key)):
                found.append(
                    Disagreement(kept.name, kept.shown(key), stored.get(key), hours.get(key))
                )
    return Checked(rows=rows, disagreements=found)


def rebuild_totals(session: Session) -> dict[str, int]:
    """Every day, month and model row summed again from the hourly level, ingest and
    relabelling held off until the transaction ends; the rows written per level. Hours are
    locked first, then the model level, which a relabelling writes without writing hours;
    ingest writes them in that order too, and both lock jobs FOR NO KEY UPDATE, which the
    foreign-key checks of the rows written here do not wait on."""
    exclude_writers(session, HOUR.table)
    exclude_writers(session, MODEL_HOURS)
    written: dict[str, int] = {}
    for kept in _KEPT:
        session.execute(delete(kept.table))
        summed = _sums(session, kept.from_hours(session), kept.sums)
        for key, sums in summed.items():
            # Never, where ingest added to every level (it refuses a sum past 64 bits on
            # any): only where a level held less than its hours, wrongly, all along.
            if max(sums) > INT64_MAX:
                raise AppError(
                    f"{kept.name} {kept.shown(key)}: its hours sum to {sums}, past the 64 "
                    "bits a total holds; nothing was rebuilt"
                )
        rows = [kept.row(key, sums) for key, sums in summed.items()]
        for part in chunks(rows):
            insert_many(session, kept.table, part)
        written[kept.name] = len(rows)
    return written


def _nonzero(sums: tuple[int, ...] | None) -> tuple[int, ...] | None:
    # A model-level row emptied by a relabelling holds zeros: the same as no row.
    return sums if sums and any(sums) else None


def _sums(session: Session, query: Select[Any], sums: int) -> Sums:
    return {
        tuple(row[:-sums]): tuple(int(value) for value in row[-sums:])
        for row in session.execute(query)
    }


def _level(level: Level) -> _Kept:
    """The day or month level: keyed by cluster, job, GPU model and period (as text)."""

    def grouped(source: Level) -> Select[Any]:
        table = source.table
        keys = [
            table.c.cluster_id,
            table.c.job_id,
            table.c.gpu_model,
            utc_period(level.unit, source.start),
        ]
        return select(*keys, *(exact_sum(table.c[name]) for name in FIGURES)).group_by(*keys)

    def row(key: tuple[Any, ...], sums: tuple[int, ...]) -> dict[str, Any]:
        cluster, job, model, start = key
        return {
            "cluster_id": cluster,
            "job_id": job,
            "gpu_model": model,
            level.unit: _period_start(start),
            **dict(zip(FIGURES, sums, strict=True)),
        }

    return _Kept(
        name=level.unit,
        stored=lambda _: grouped(level),
        from_hours=lambda _: grouped(HOUR),
        shown=lambda k: f"{k[3]} cluster {k[0]} job {k[1] or '(idle)'} {k[2]}",
        row=row,
        table=level.table,
    )


def _model_stored(_: Session) -> Select[Any]:
    m = MODEL_HOURS.c
    return select(m.cluster_id, m.model, m.phase, m.hour, m.gpu_us)


def _model_from_hours(_: Session) -> Select[Any]:
    hourly = HOUR.table.c
    keys = [
        hourly.cluster_id,
        func.coalesce(Job.model, "", type_=String),
        func.coalesce(Job.phase, "", type_=String),
        hourly.hour,
    ]
    return (
        select(*keys, exact_sum(hourly.gpu_us)).join(Job, Job.id == hourly.job_id).group_by(*keys)
    )


_KEPT = (
    _level(DAY),
    _level(MONTH),
    _Kept(
        name="model",
        stored=_model_stored,
        from_hours=_model_from_hours,
        shown=lambda k: f"{k[3].isoformat()} cluster {k[0]} model '{k[1]}' phase '{k[2]}'",
        row=lambda k, sums: {
            "cluster_id": k[0],
            "model": k[1],
            "phase": k[2],
            "hour": k[3],
            "gpu_us": sums[0],
        },
        table=MODEL_HOURS,
        sums=1,
    ),
)


def _period_start(text: str) -> datetime:
    """The start of a period as `utc_period` names it: '2025-01-06' or '2025-01'."""
    return datetime.fromisoformat(text if len(text) == 10 else f"{text}-01").replace(tzinfo=UTC)
