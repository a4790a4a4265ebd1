"""Reconciling measured GPU time with Slurm's own accounting, job by job.

Slurm's side is `sacct`'s allocation records (one line per job, `--allocations`): the GPUs in
`AllocTRES` (`gres/gpu=N`) times `ElapsedRaw`, the whole allocation, held GPUs idle or not.
gpucost's side is what the collectors measured for the same job ids on one cluster. Whole jobs
are compared; the period only selects them (Slurm's jobs that ran in it, gpucost's jobs with
usage in it). The collector sees a job's GPUs from its first sample after the prolog to its
first sample after the epilog, so a job's two figures differ by up to about one sampling
interval per GPU; `tolerance_s` is that bound.
"""

import csv
import io
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel

from app.core.errors import InvalidInput
from app.core.units import Amount
from app.jobs.schemas import JobRead

# What `run_sacct` asks for, and what a file given instead must hold (in any order).
SACCT_FIELDS = ("JobIDRaw", "JobName", "State", "Start", "End", "ElapsedRaw", "AllocTRES")
# Produce a file for `--sacct-file` with this command (times then read as UTC).
SACCT_COMMAND = (
    "TZ=UTC sacct --allusers --allocations --parsable2 "
    f"--format {','.join(SACCT_FIELDS)} --starttime FROM --endtime TO"
)
_NO_TIME = ("", "Unknown", "None")


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    name: str
    state: str
    start: datetime | None
    end: datetime | None
    elapsed_s: int
    gpus: int

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_s

    @property
    def running(self) -> bool:
        return self.start is not None and self.end is None


class Verdict(StrEnum):
    """Why the two figures differ, when they do; whether the difference is a problem."""

    MATCH = "match"
    DIFFERS = "differs beyond tolerance"
    RUNNING = "still running"
    NOT_YET_REPORTED = "not yet reported"
    UNKNOWN_TO_GPUCOST = "unknown to gpucost"
    UNKNOWN_TO_SLURM = "unknown to Slurm"
    OUTSIDE = "outside the period"

    @property
    def fails(self) -> bool:
        return self in (Verdict.DIFFERS, Verdict.UNKNOWN_TO_GPUCOST, Verdict.UNKNOWN_TO_SLURM)


class Line(BaseModel):
    job_id: str
    name: str | None
    state: str | None
    gpus: int | None
    slurm_gpu_seconds: Amount | None
    gpucost_gpu_seconds: Amount | None
    busy_gpu_seconds: Amount | None
    difference: Amount
    verdict: Verdict


def _time(value: str, field: str) -> datetime | None:
    if value in _NO_TIME:
        return None
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput("sacct", f"{field} {value!r} is not a time") from None


def _gpus(tres: str) -> int:
    """`gres/gpu=N` from AllocTRES (typed ones, `gres/gpu:h800=N`, are counted in it too)."""
    for item in tres.split(","):
        name, _, count = item.partition("=")
        if name == "gres/gpu":
            return int(count)
    return 0


def parse_sacct(text: str) -> list[SlurmJob]:
    """`sacct --parsable2` output with its header line; steps (ids with a dot) are skipped."""
    rows = csv.reader(io.StringIO(text), delimiter="|", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if header is None:
        raise InvalidInput("sacct", "the output is empty (it needs its header line)")
    missing = [f for f in SACCT_FIELDS if f not in header]
    if missing:
        raise InvalidInput(
            "sacct", f"no {', '.join(missing)} column; produce it with: {SACCT_COMMAND}"
        )
    at = {name: header.index(name) for name in SACCT_FIELDS}
    jobs = []
    for number, row in enumerate(rows, start=2):
        if not row or len(row) < len(header):
            if row:
                raise InvalidInput("sacct", f"line {number} has {len(row)} of {len(header)} fields")
            continue
        job_id = row[at["JobIDRaw"]]
        if "." in job_id:
            continue
        try:
            elapsed, gpus = int(row[at["ElapsedRaw"]]), _gpus(row[at["AllocTRES"]])
        except ValueError:
            raise InvalidInput(
                "sacct", f"line {number}: ElapsedRaw or AllocTRES unreadable"
            ) from None
        jobs.append(
            SlurmJob(
                job_id=job_id,
                name=row[at["JobName"]],
                state=row[at["State"]].split()[0] if row[at["State"]] else "",
                start=_time(row[at["Start"]], "Start"),
                end=_time(row[at["End"]], "End"),
                elapsed_s=elapsed,
                gpus=gpus,
            )
        )
    return jobs


def run_sacct(start: datetime, end: datetime, *, command: str = "sacct") -> str:
    """sacct's allocation records of the jobs that ran between `start` and `end` (UTC)."""
    args = [
        command, "--allusers", "--allocations", "--parsable2",
        "--format", ",".join(SACCT_FIELDS),
        "--starttime", f"{start:%Y-%m-%dT%H:%M:%S}", "--endtime", f"{end:%Y-%m-%dT%H:%M:%S}",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            args, env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True, timeout=300
        )
    except OSError as error:
        raise InvalidInput("sacct", f"cannot run {command}: {error.strerror}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InvalidInput("sacct", f"{command} failed: {why}")
    return done.stdout


@dataclass(frozen=True)
class Rules:
    start: datetime
    end: datetime
    now: datetime
    tolerance_s: int  # per GPU of a job
    settle_s: int  # how long after a job ends its last report may take to arrive


def _both(job: SlurmJob, measured: JobRead | None, rules: Rules) -> Line:
    slurm = Decimal(job.gpu_seconds)
    ours = measured.gpu_seconds if measured else None
    difference = (ours or Decimal(0)) - slurm
    within = abs(difference) <= rules.tolerance_s * max(job.gpus, 1)
    settling = job.end is not None and rules.now - job.end < timedelta(seconds=rules.settle_s)
    if within:
        verdict = Verdict.MATCH
    elif job.running:
        verdict = Verdict.RUNNING
    elif settling and difference < 0:
        verdict = Verdict.NOT_YET_REPORTED
    elif measured is None:
        verdict = Verdict.UNKNOWN_TO_GPUCOST
    else:
        verdict = Verdict.DIFFERS
    return Line(
        job_id=job.job_id,
        name=job.name,
        state=job.state,
        gpus=job.gpus,
        slurm_gpu_seconds=slurm,
        gpucost_gpu_seconds=ours,
        busy_gpu_seconds=measured.busy_gpu_seconds if measured else None,
        difference=difference,
        verdict=verdict,
    )


def _ours_only(measured: JobRead, rules: Rules) -> Line:
    assert measured.first_seen is not None and measured.last_seen is not None
    inside = rules.start <= measured.first_seen and measured.last_seen <= rules.end
    unexplained = inside and measured.gpu_seconds > rules.tolerance_s
    return Line(
        job_id=measured.job_id,
        name=measured.name,
        state=None,
        gpus=None,
        slurm_gpu_seconds=None,
        gpucost_gpu_seconds=measured.gpu_seconds,
        busy_gpu_seconds=measured.busy_gpu_seconds,
        difference=measured.gpu_seconds,
        verdict=Verdict.UNKNOWN_TO_SLURM if unexplained else Verdict.OUTSIDE,
    )


def reconcile(slurm: Sequence[SlurmJob], measured: Sequence[JobRead], rules: Rules) -> list[Line]:
    """One line per job with GPU time on either side, in job id order (numeric ids as numbers)."""
    ours = {job.job_id: job for job in measured}
    lines = []
    for job in slurm:
        measured_job = ours.pop(job.job_id, None)
        if job.gpu_seconds or (measured_job and measured_job.gpu_seconds):
            lines.append(_both(job, measured_job, rules))
    lines += [_ours_only(job, rules) for job in ours.values() if job.gpu_seconds]
    return sorted(lines, key=lambda line: (len(line.job_id), line.job_id))
