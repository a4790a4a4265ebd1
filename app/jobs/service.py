"""Registering jobs' metadata and reading jobs with their measured usage."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import NotFound
from app.core.sums import exact_sum
from app.core.unique import insert_unless_present
from app.core.units import joules, seconds
from app.core.upsert import get_or_create_ids
from app.jobs.schemas import GpuHourRead, JobGpuHours, JobRead, JobUpdate, JobUsage
from app.models import Cluster, Job, MonthlyUsage
from app.retention.gpu_hours import job_gpu_hours
from app.totals.store import labels_of, move_job_hours

# API field name -> column, for the fields a client may set.
_FIELDS = {
    "model": "model",
    "phase": "phase",
    "team": "team",
    "user": "user_name",
    "name": "name",
    "labels": "labels",
    "tokens": "tokens",
}


def upsert_job(
    session: Session, *, cluster: str, job_id: str, changes: JobUpdate, actor: str, now: datetime
) -> tuple[JobRead, bool]:
    """Create or update a job's metadata; returns the job and whether it was created."""
    cluster_id = get_or_create_ids(
        session, Cluster, ["name"], [{"name": cluster, "created_at": now}]
    )[(cluster,)]
    # FOR NO KEY UPDATE, as ingest locks a job (its id never changes): it excludes ingest of
    # the job, yet lets `check-totals --repair` check the job's key for the rows it writes
    # while this waits on the repair's lock of the model level (FOR UPDATE would deadlock).
    locked = (
        select(Job)
        .where(Job.cluster_id == cluster_id, Job.scheduler_job_id == job_id)
        .with_for_update(key_share=True)
    )
    job = session.execute(locked).scalar_one_or_none()
    created = False
    if job is None:
        # A report or another request may create the same job at this moment: the unique
        # key decides which one created it, and the others update what it created.
        row = {
            "cluster_id": cluster_id,
            "scheduler_job_id": job_id,
            "labels": {},
            "created_at": now,
            "updated_at": now,
        }
        created = insert_unless_present(session, Job, row)
        job = session.execute(locked).scalar_one()
    given = changes.model_dump(exclude_unset=True)
    labelled = labels_of(job.model, job.phase)
    old = {field: getattr(job, column) for field, column in _FIELDS.items() if field in given}
    for field, value in given.items():
        # Labels are kept in key order, so that equal labels are equal JSON text (exports
        # group and compare jobs by it).
        setattr(
            job, _FIELDS[field], value if field != "labels" else dict(sorted((value or {}).items()))
        )
    new = {field: getattr(job, column) for field, column in _FIELDS.items() if field in given}
    # Under the job's row lock, taken above: no report of the job is stored meanwhile.
    move_job_hours(
        session,
        job_pk=job.id,
        cluster_pk=cluster_id,
        old=labelled,
        new=labels_of(job.model, job.phase),
    )
    if created or old != new:
        job.updated_at = now
        record(
            session,
            at=now,
            actor=actor,
            action="job.create" if created else "job.update",
            target=f"job:{cluster}/{job_id}",
            details={"old": None if created else old, "new": new},
        )
    session.flush()
    return read_jobs(session, select(Job).where(Job.id == job.id))[0], created


def get_job(session: Session, *, cluster: str, job_id: str) -> JobRead:
    """One job by cluster and scheduler job id."""
    jobs = read_jobs(session, _filtered(cluster=cluster, job_id=job_id))
    if not jobs:
        raise NotFound(f"no job '{job_id}' on cluster '{cluster}'")
    return jobs[0]


def gpu_hours(
    session: Session,
    *,
    cluster: str,
    job_id: str,
    start: datetime,
    end: datetime,
    longest_report: timedelta,
) -> JobGpuHours:
    """Which GPUs a job held, hour by hour (app.retention.gpu_hours)."""
    # The job is found inside the read's first statement (app.retention.gpu_hours: why).
    job = _filtered(cluster=cluster, job_id=job_id).with_only_columns(Job.id).scalar_subquery()
    found = job_gpu_hours(session, job=job, start=start, end=end, longest_report=longest_report)
    if not found and session.execute(select(job)).scalar_one() is None:
        raise NotFound(f"no job '{job_id}' on cluster '{cluster}'")
    return JobGpuHours(
        cluster=cluster,
        job_id=job_id,
        start=start,
        end=end,
        gpu_hours=[
            GpuHourRead(
                hour=row.hour,
                gpu=row.gpu,
                gpu_model=row.gpu_model,
                gpu_seconds=seconds(row.gpu_us),
                busy_gpu_seconds=seconds(row.busy_us),
                energy_j=joules(row.energy_mj),
            )
            for row in found
        ],
    )


def list_jobs(
    session: Session, *, filters: dict[str, str | None], limit: int, offset: int
) -> tuple[list[JobRead], int]:
    """A page of jobs matching the filters, newest activity first, and the match count."""
    query = _filtered(**filters)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    page = (
        query.order_by(Job.last_seen.desc().nulls_last(), Job.id.desc()).limit(limit).offset(offset)
    )
    return read_jobs(session, page), total


def job_usage_between(
    session: Session, *, cluster: str, start: datetime, end: datetime
) -> list[JobUsage]:
    """The cluster's jobs with usage reported between `start` and `end`, with their totals
    (all of their usage, also outside that span)."""
    rows = session.execute(
        select(
            Job.scheduler_job_id,
            Job.name,
            Job.first_seen,
            Job.last_seen,
            exact_sum(MonthlyUsage.gpu_us).label("gpu_us"),
            exact_sum(MonthlyUsage.busy_us).label("busy_us"),
        )
        .join(Cluster, Cluster.id == Job.cluster_id)
        .join(MonthlyUsage, MonthlyUsage.job_id == Job.id)
        .where(Cluster.name == cluster, Job.first_seen < end, Job.last_seen > start)
        .group_by(Job.id, Job.scheduler_job_id, Job.name, Job.first_seen, Job.last_seen)
    )
    return [
        JobUsage(
            job_id=row.scheduler_job_id,
            name=row.name,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            gpu_seconds=seconds(int(row.gpu_us)),
            busy_gpu_seconds=seconds(int(row.busy_us)),
        )
        for row in rows
    ]


def _filtered(**filters: str | None) -> Select[Job]:
    query = select(Job).join(Cluster, Cluster.id == Job.cluster_id)
    columns: dict[str, Any] = {
        "cluster": Cluster.name,
        "job_id": Job.scheduler_job_id,
        "model": Job.model,
        "phase": Job.phase,
        "team": Job.team,
        "user": Job.user_name,
    }
    for field, value in filters.items():
        if value is not None:
            query = query.where(columns[field] == value)
    return query


def read_jobs(session: Session, query: Select[Job]) -> list[JobRead]:
    """Jobs with their usage totals, summed from the rollup's month level."""
    jobs = session.execute(query).scalars().all()
    if not jobs:
        return []
    clusters = dict(
        session.execute(
            select(Cluster.id, Cluster.name).where(Cluster.id.in_({j.cluster_id for j in jobs}))
        ).all()
    )
    usage = {
        row.job_id: row
        for row in session.execute(
            select(
                MonthlyUsage.job_id,
                exact_sum(MonthlyUsage.gpu_us).label("gpu_us"),
                exact_sum(MonthlyUsage.busy_us).label("busy_us"),
                exact_sum(MonthlyUsage.energy_mj).label("energy_mj"),
            )
            .where(MonthlyUsage.job_id.in_([j.id for j in jobs]))
            .group_by(MonthlyUsage.job_id)
        )
    }
    result = []
    for job in jobs:
        totals = usage.get(job.id)
        result.append(
            JobRead(
                cluster=clusters[job.cluster_id],
                job_id=job.scheduler_job_id,
                model=job.model,
                phase=job.phase,
                team=job.team,
                user=job.user_name,
                name=job.name,
                labels=job.labels or {},
                tokens=job.tokens,
                first_seen=job.first_seen,
                last_seen=job.last_seen,
                gpu_seconds=seconds(int(totals.gpu_us)) if totals else Decimal(0),
                busy_gpu_seconds=seconds(int(totals.busy_us)) if totals else Decimal(0),
                energy_j=joules(int(totals.energy_mj)) if totals else Decimal(0),
            )
        )
    return result


def models_with_usage(session: Session) -> list[str]:
    """The models that jobs with reported usage are labelled with, in order."""
    query = (
        select(Job.model)
        .where(Job.model.is_not(None), Job.first_seen.is_not(None))
        .distinct()
        .order_by(Job.model)
    )
    return [model for model in session.scalars(query) if model is not None]


def latest_models(session: Session, *, limit: int) -> tuple[list[str], int]:
    """At most `limit` of the models with usage, the most recently used first (then by
    name), and how many models have usage in all."""
    used = Job.model.is_not(None), Job.first_seen.is_not(None)
    last = func.max(Job.last_seen)
    query = (
        select(Job.model)
        .where(*used)
        .group_by(Job.model)
        .order_by(last.desc().nulls_last(), Job.model)
        .limit(limit)
    )
    total = session.scalar(select(func.count(func.distinct(Job.model))).where(*used)) or 0
    return [model for model in session.scalars(query) if model is not None], total
