"""Reconciling measured GPU time with Slurm's own accounting, job by job.

Whole jobs are compared: Slurm's allocation of each job sacct listed for the period, beside
what the collectors measured under that job id on the cluster (whenever it was measured); then
the jobs measured in the period that sacct did not list. The collector sees a job's GPUs from
its first sample after the prolog to its first sample after the epilog, so the figures of each
run differ by up to about one sampling interval per GPU: `tolerance_s`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.jobs.schemas import JobUsage
from app.jobs.service import job_usage_between
from app.reconcile.sacct import SlurmJob
from app.reconcile.schemas import ReconcileLine, Verdict

# How far a node's clock may be off the scheduler's, for finding a job's usage by its start.
CLOCK_SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class Rules:
    start: datetime
    end: datetime
    now: datetime
    tolerance_s: int  # per GPU of each run of a job
    settle_s: int  # how long after a job ends its last report may take to arrive


def _both(job: SlurmJob, measured: JobUsage | None, rules: Rules) -> ReconcileLine:
    slurm = Decimal(job.gpu_seconds)
    ours = measured.gpu_seconds if measured else None
    difference = (ours or Decimal(0)) - slurm
    within = abs(difference) <= rules.tolerance_s * max(job.gpu_runs, 1)
    settling = job.end is not None and rules.now - job.end < timedelta(seconds=rules.settle_s)
    if within and measured is not None:
        verdict = Verdict.MATCH
    elif job.running:
        verdict = Verdict.RUNNING
    elif settling and difference < 0:
        verdict = Verdict.NOT_YET_REPORTED
    elif measured is None:
        verdict = Verdict.UNKNOWN_TO_GPUCOST  # a job too short for any sample is within
    else:
        verdict = Verdict.DIFFERS
    fails = verdict is Verdict.DIFFERS or (verdict is Verdict.UNKNOWN_TO_GPUCOST and not within)
    return ReconcileLine(
        job_id=job.job_id,
        name=job.name,
        state=job.state,
        gpus=job.gpus,
        slurm_gpu_seconds=slurm,
        gpucost_gpu_seconds=ours,
        busy_gpu_seconds=measured.busy_gpu_seconds if measured else None,
        difference=difference,
        verdict=verdict,
        fails=fails,
    )


def _ours_only(measured: JobUsage, rules: Rules) -> ReconcileLine:
    inside = rules.start <= measured.first_seen and measured.last_seen <= rules.end
    return ReconcileLine(
        job_id=measured.job_id,
        name=measured.name,
        state=None,
        gpus=None,
        slurm_gpu_seconds=None,
        gpucost_gpu_seconds=measured.gpu_seconds,
        busy_gpu_seconds=measured.busy_gpu_seconds,
        difference=measured.gpu_seconds,
        verdict=Verdict.UNKNOWN_TO_SLURM if inside else Verdict.OUTSIDE,
        fails=inside and measured.gpu_seconds > rules.tolerance_s,
    )


def reconcile_slurm(
    session: Session, *, cluster: str, slurm: list[SlurmJob], rules: Rules
) -> list[ReconcileLine]:
    """One line per job with GPU time on either side, in job id order (numeric ids as numbers)."""
    # Slurm lists jobs that ran in the period, some of them also before or after it: their
    # usage is read whole, from their start (less the nodes' clock skew) to now.
    starts = [job.start for job in slurm if job.start is not None]
    since = min([rules.start, *starts]) - CLOCK_SKEW
    measured = {
        job.job_id: job
        for job in job_usage_between(
            session, cluster=cluster, start=since, end=max(rules.end, rules.now)
        )
    }
    if any(job.job_id in measured for job in slurm) and not any(job.tracked for job in slurm):
        raise InvalidInput(
            "sacct",
            "no job has gres/gpu in AllocTRES: Slurm records GPUs only with "
            "AccountingStorageTRES=gres/gpu in slurm.conf",
        )
    lines = []
    for job in slurm:
        ours = measured.pop(job.job_id, None)
        if job.gpu_seconds or (ours and ours.gpu_seconds):
            lines.append(_both(job, ours, rules))
    lines += [
        _ours_only(job, rules)
        for job in measured.values()
        if job.gpu_seconds and job.first_seen < rules.end and job.last_seen > rules.start
    ]
    return sorted(lines, key=lambda line: (len(line.job_id), line.job_id))
