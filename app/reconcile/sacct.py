"""Slurm's side of a reconciliation: `sacct`'s allocation records, read or run.

A job's allocated GPU time is `gres/gpu` in `AllocTRES` times `ElapsedRaw`, summed over its
runs: with `--duplicates` a requeued job has one record per run, under the same `JobIDRaw`,
and the collectors measured every run under that id.
"""

import csv
import io
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

from app.core.errors import InvalidInput

# What `run_sacct` asks for, and what a file given instead must hold. JobName comes last: a
# name may hold the `|` that separates fields, so what follows the other fields is the name.
SACCT_FIELDS = ("JobIDRaw", "State", "Start", "End", "ElapsedRaw", "AllocTRES", "JobName")
_FORMAT = ("--allusers", "--allocations", "--duplicates", "--parsable2",
           "--format", ",".join(SACCT_FIELDS))  # fmt: skip
# The environment sacct runs in: times in UTC, in Slurm's standard ISO format.
_ENVIRONMENT = {"TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}
# Produce a file for `--sacct-file` with this command.
SACCT_COMMAND = (
    " ".join(f"{k}={v}" for k, v in _ENVIRONMENT.items())
    + f" sacct {' '.join(_FORMAT)} --starttime FROM --endtime TO"
)
SACCT_TIMEOUT_S = 600
_NO_TIME = ("", "Unknown", "None")


@dataclass(frozen=True)
class SlurmRun:
    """One allocation record: a job's run (a requeued job has several)."""

    job_id: str
    name: str
    state: str
    start: datetime | None
    end: datetime | None
    elapsed_s: int
    gpus: int | None  # None: AllocTRES has no gres/gpu at all


@dataclass(frozen=True)
class SlurmJob:
    """A job's runs together: its GPU time, and its last run's state."""

    job_id: str
    name: str
    state: str
    running: bool
    start: datetime | None  # of its first run
    end: datetime | None  # of its last run
    gpus: int
    gpu_seconds: int
    gpu_runs: int  # GPUs summed over the runs that ran: each run has its own two boundaries
    tracked: bool  # AllocTRES had gres/gpu (Slurm counts GPUs with AccountingStorageTRES)


def _time(value: str, field: str, line: int) -> datetime | None:
    if value in _NO_TIME:
        return None
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidInput("sacct", f"line {line}: {field} {value[:40]!r} is not a time") from None


def _gpus(tres: str) -> int | None:
    """`gres/gpu=N` from AllocTRES (typed ones, `gres/gpu:h800=N`, are counted in it too)."""
    for item in tres.split(","):
        name, _, count = item.partition("=")
        if name == "gres/gpu":
            return int(count)
    return None


def _runs(text: str) -> list[SlurmRun]:
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
    runs = []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) > len(header) and header[-1] == "JobName":
            row = [*row[: len(header) - 1], "|".join(row[len(header) - 1 :])]
        if len(row) != len(header):
            raise InvalidInput("sacct", f"line {number} has {len(row)} of {len(header)} fields")
        job_id = row[at["JobIDRaw"]]
        if "." in job_id:
            continue  # a step: its job's allocation record has the GPUs
        try:
            elapsed, gpus = int(row[at["ElapsedRaw"]]), _gpus(row[at["AllocTRES"]])
        except ValueError:
            raise InvalidInput(
                "sacct", f"line {number}: ElapsedRaw or AllocTRES unreadable"
            ) from None
        runs.append(
            SlurmRun(
                job_id=job_id,
                name=row[at["JobName"]],
                state=(row[at["State"]].split() or [""])[0],
                start=_time(row[at["Start"]], "Start", number),
                end=_time(row[at["End"]], "End", number),
                elapsed_s=elapsed,
                gpus=gpus,
            )
        )
    return runs


def parse_sacct(*, text: str) -> list[SlurmJob]:
    """`sacct --parsable2` output with its header line, as one `SlurmJob` per job id (in the
    order first seen); steps (ids with a dot) are skipped."""
    runs = _runs(text)
    by_id: dict[str, list[SlurmRun]] = {}
    for run in runs:
        by_id.setdefault(run.job_id, []).append(run)
    jobs = []
    for job_id, job_runs in by_id.items():
        last = job_runs[-1]
        jobs.append(
            SlurmJob(
                job_id=job_id,
                name=last.name,
                state=last.state,
                running=last.start is not None and last.end is None,
                start=next((run.start for run in job_runs if run.start), None),
                end=last.end,
                gpus=last.gpus or 0,
                gpu_seconds=sum((run.gpus or 0) * run.elapsed_s for run in job_runs),
                gpu_runs=sum(run.gpus or 0 for run in job_runs if run.elapsed_s),
                tracked=any(run.gpus is not None for run in job_runs),
            )
        )
    return jobs


def run_sacct(*, start: datetime, end: datetime, command: str = "sacct") -> str:
    """sacct's allocation records of the jobs that ran between `start` and `end` (UTC)."""
    period = ["--starttime", f"{start:%Y-%m-%dT%H:%M:%S}", "--endtime", f"{end:%Y-%m-%dT%H:%M:%S}"]
    args = [command, *_FORMAT, *period]
    try:
        done = subprocess.run(
            args,
            env={**os.environ, **_ENVIRONMENT},
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=SACCT_TIMEOUT_S,
        )
    except OSError as error:
        raise InvalidInput("sacct", f"cannot run {command}: {error.strerror}") from None
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            "sacct", f"{command} did not answer within {SACCT_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InvalidInput("sacct", f"{command} failed: {why}")
    return done.stdout
