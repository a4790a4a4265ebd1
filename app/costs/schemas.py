"""Cost figures as the API returns them: decimals as strings, never floats."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.core.units import Amount, BigCount

GROUP_KEYS: tuple[str, ...] = (
    "model",
    "phase",
    "team",
    "user",
    "cluster",
    "gpu_model",
    "job",
    "day",
    "month",
)


Source = Literal["scenario", "card", "default"]


class Figures(BaseModel):
    gpu_seconds: Amount
    gpu_hours: Amount
    busy_gpu_hours: Amount
    energy_kwh: Amount
    cost_usd: Amount
    # Measured energy at the kWh price, apart from the GPU-hour cost; null where none is set.
    energy_cost_usd: Amount | None
    # Who priced the GPU-hours: a price scenario (only when one is asked for), the rate card,
    # the default rate.
    rate_sources: list[Source]


class CostRow(Figures):
    """Figures with the row's group keys beside them (`team`, `model`, ...)."""

    model_config = ConfigDict(extra="allow")


class CostReport(BaseModel):
    start: datetime | None
    end: datetime | None
    group_by: list[str]
    # The price scenario the figures are priced under (`?scenario=`); null: the books.
    scenario: str | None = None
    currency: Literal["USD"] = "USD"
    default_usd_per_gpu_hour: Amount
    rows: list[CostRow]
    total: Figures


class PhaseCost(Figures):
    phase: str
    share: Amount
    first_usage: datetime | None
    last_usage: datetime | None
    peak_gpus: Amount
    # Efficiency (`app.costs._efficiency`): the tokens of the jobs that carry a count (null
    # when none does) and those jobs' GPU-hours; the ratios only when such jobs hold all of
    # the phase's GPU-time and their tokens are more than zero.
    tokens: BigCount | None
    gpu_hours_with_tokens: Amount
    gpu_hours_per_trillion_tokens: Amount | None
    usd_per_million_tokens: Amount | None


class RateUsed(BaseModel):
    gpu_model: str
    usd_per_gpu_hour: Amount
    source: Source


class ModelCost(BaseModel):
    model: str
    start: datetime | None
    end: datetime | None
    # The price scenario the figures are priced under (`?scenario=`); null: the books.
    scenario: str | None = None
    currency: Literal["USD"] = "USD"
    phases: list[PhaseCost]
    total: PhaseCost
    rates: list[RateUsed]
