"""Job metadata as clients send it and read it back."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.errors import PRINTABLE
from app.core.labels import GPUCOST_TAG_PREFIX, IDLE, UNATTRIBUTED, canonical_phase
from app.core.numbers import Count
from app.core.units import BigCount


def _not_reserved(value: str) -> str:
    # Costs name idle capacity and jobs without the label so; a job named so would be
    # counted with them.
    if value in (IDLE, UNATTRIBUTED):
        raise ValueError(
            f"{value} is reserved: costs show idle GPUs as {IDLE} and jobs "
            f"without this label as {UNATTRIBUTED}"
        )
    return value


Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, strip_whitespace=True, pattern=PRINTABLE),
    AfterValidator(_not_reserved),
]


def _not_gpucost_tag(key: str) -> str:
    if key.lower().startswith(GPUCOST_TAG_PREFIX):
        raise ValueError(f"label keys starting with '{GPUCOST_TAG_PREFIX}' are gpucost's own")
    return key


LabelKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$"),
    AfterValidator(_not_gpucost_tag),
]
LabelValue = Annotated[str, StringConstraints(max_length=256, pattern=PRINTABLE)]
MAX_LABELS = 64
# Tokens a job processed: a sanity bound far above any training run (DeepSeek-V3
# pre-trained on 1.48e13), well inside a 64-bit column and a sum of many jobs.
MAX_TOKENS = 10**18
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS), Count]
Phase = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=PRINTABLE),
    AfterValidator(canonical_phase),
    AfterValidator(_not_reserved),
]


class JobUpdate(BaseModel):
    """Fields given are set (null clears one); fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    model: Text | None = Field(default=None, examples=["deepseek-v3"])
    # Canonical phases in any spelling (`pretrain`, `Pre_Training`) are stored canonically.
    phase: Phase | None = Field(default=None, examples=["pre-training"])
    team: Text | None = None
    user: Text | None = None
    name: (
        Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE)] | None
    ) = None
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)] | None = None
    # The job's whole run's; a model's cost sets it against the job's GPU-hours.
    tokens: Tokens | None = Field(default=None, examples=[14_800_000_000_000])


class JobRead(BaseModel):
    cluster: str
    job_id: str
    model: str | None
    phase: str | None
    team: str | None
    user: str | None
    name: str | None
    labels: dict[str, str]
    tokens: BigCount | None  # a string, as other large figures
    first_seen: datetime | None
    last_seen: datetime | None
    gpu_seconds: Decimal
    busy_gpu_seconds: Decimal
    energy_j: Decimal


class JobList(BaseModel):
    jobs: list[JobRead]
    limit: int
    offset: int
    total: int


class JobUsage(BaseModel):
    """A job's measured totals, for comparing with a scheduler's accounting."""

    job_id: str
    name: str | None
    first_seen: datetime
    last_seen: datetime
    gpu_seconds: Decimal
    busy_gpu_seconds: Decimal


class GpuHourRead(BaseModel):
    """One GPU's share of a job in one UTC hour."""

    hour: datetime
    gpu: str  # the GPU's UUID
    gpu_model: str
    gpu_seconds: Decimal
    busy_gpu_seconds: Decimal
    energy_j: Decimal


class JobGpuHours(BaseModel):
    """Which GPUs a job held, hour by hour, from `start` to `end`."""

    cluster: str
    job_id: str
    start: datetime
    end: datetime
    gpu_hours: list[GpuHourRead]
