"""A reconciliation's lines: one job, both sides' GPU-seconds, and the verdict."""

from enum import StrEnum

from pydantic import BaseModel

from app.core.units import Amount


class Verdict(StrEnum):
    """Why the two figures differ, when they do."""

    MATCH = "match"
    DIFFERS = "differs beyond tolerance"
    RUNNING = "still running"
    NOT_YET_REPORTED = "not yet reported"
    UNKNOWN_TO_GPUCOST = "unknown to gpucost"
    UNKNOWN_TO_SLURM = "unknown to Slurm"
    OUTSIDE = "outside the period"


class ReconcileLine(BaseModel):
    job_id: str
    name: str | None
    state: str | None
    gpus: int | None
    slurm_gpu_seconds: Amount | None
    gpucost_gpu_seconds: Amount | None
    busy_gpu_seconds: Amount | None
    difference: Amount
    verdict: Verdict
    # Whether this line makes the reconciliation fail: a difference beyond the tolerance that
    # no pending report, running job or period edge explains.
    fails: bool
