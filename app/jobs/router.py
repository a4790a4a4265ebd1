"""`/v1/jobs`: job metadata that attributes usage to models, phases, teams and users."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.core.auth import JobWriterAuth, ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession, SettingsDep, WriteSession
from app.core.errors import PRINTABLE
from app.core.labels import JOB_ID_PATTERN, NAME_PATTERN
from app.core.numbers import Count, DecimalJsonRoute
from app.core.timestamps import UtcQueryHour
from app.jobs.schemas import JobGpuHours, JobList, JobRead, JobUpdate
from app.jobs.service import get_job, gpu_hours, list_jobs, upsert_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=DecimalJsonRoute)

ClusterPath = Annotated[str, Path(max_length=128, pattern=NAME_PATTERN)]
JobIdPath = Annotated[str, Path(max_length=128, pattern=JOB_ID_PATTERN)]
Filter = Annotated[str | None, Query(max_length=128, pattern=PRINTABLE)]


@router.put("/{cluster}/{job_id}", responses={201: {"model": JobRead, "description": "Created"}})
def put_job(
    cluster: ClusterPath,
    job_id: JobIdPath,
    changes: JobUpdate,
    principal: JobWriterAuth,
    session: WriteSession,
    clock: ClockDep,
    response: Response,
) -> JobRead:
    """Register a job or update its metadata; its usage, past and future, follows at once."""
    principal.require_cluster(cluster)
    job, created = upsert_job(
        session, cluster=cluster, job_id=job_id, changes=changes, actor=principal.name, now=clock()
    )
    response.status_code = 201 if created else 200
    return job


@router.get("/{cluster}/{job_id}")
def read_job(
    cluster: ClusterPath, job_id: JobIdPath, _: ViewerAuth, session: ReadSession
) -> JobRead:
    """One job with its usage totals."""
    return get_job(session, cluster=cluster, job_id=job_id)


@router.get("/{cluster}/{job_id}/gpu-hours")
def read_gpu_hours(
    cluster: ClusterPath,
    job_id: JobIdPath,
    _: ViewerAuth,
    session: ReadSession,
    settings: SettingsDep,
    start: Annotated[UtcQueryHour, Query(alias="from")],
    end: Annotated[UtcQueryHour, Query(alias="to")],
) -> JobGpuHours:
    """Which GPUs the job held, hour by hour: each GPU's GPU-seconds, busy GPU-seconds and
    energy in each UTC hour from `from` to `to` (whole hours, at most 31 days apart, at most
    100,000 GPU-hours), the same before and after its raw usage is pruned."""
    return gpu_hours(
        session,
        cluster=cluster,
        job_id=job_id,
        start=start,
        end=end,
        longest_report=timedelta(seconds=settings.max_report_interval_seconds),
    )


@router.get("")
def read_jobs(
    _: ViewerAuth,
    session: ReadSession,
    cluster: Filter = None,
    model: Filter = None,
    phase: Filter = None,
    team: Filter = None,
    user: Filter = None,
    limit: Annotated[int, Query(ge=1, le=1000), Count] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9), Count] = 0,
) -> JobList:
    """Jobs matching every filter given, most recently active first."""
    filters = {"cluster": cluster, "model": model, "phase": phase, "team": team, "user": user}
    jobs, total = list_jobs(session, filters=filters, limit=limit, offset=offset)
    return JobList(jobs=jobs, limit=limit, offset=offset, total=total)
