"""Budgets as clients set them and read them back, with what has been spent."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.numbers import Number
from app.core.timestamps import UtcHour
from app.core.units import Amount
from app.jobs.schemas import Text

Scope = Literal["team", "model", "cluster"]
Period = Literal["month", "range"]
Unit = Literal["usd", "gpu_hours"]
State = Literal["ok", "forecast", "warning", "exceeded"]
NAME_MAX = 64  # the column's length
# A limit in USD or GPU-hours, kept in millionths; far inside the 64-bit column.
MAX_AMOUNT = 10**12
BudgetAmount = Annotated[
    Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=6, allow_inf_nan=False), Number
]


class BudgetSet(BaseModel):
    """`PUT /v1/budgets/{name}`: the whole budget (a PUT replaces it)."""

    model_config = ConfigDict(extra="forbid")

    scope: Annotated[Scope, Field(description="What is limited: a team, a model or a cluster")]
    value: Annotated[Text, Field(description="The team, model or cluster name", examples=["nlp"])]
    period: Annotated[Period, Field(description="Each UTC month, or starts_at to ends_at")]
    # Whole UTC hours, as usage is kept; only (and both) for a range.
    starts_at: UtcHour | None = None
    ends_at: UtcHour | None = None
    unit: Unit
    amount: Annotated[BudgetAmount, Field(examples=["1000"])]


class BudgetRead(BaseModel):
    """A budget and its state as of `as_of`; every figure in the budget's unit."""

    name: str
    scope: Scope
    value: str
    period: Period
    starts_at: datetime | None
    ends_at: datetime | None
    unit: Unit
    amount: Amount
    as_of: datetime
    # The hours the budget covers now: the current UTC month, or the range.
    window_start: datetime
    window_end: datetime
    spent: Amount
    remaining: Amount
    percent_used: Amount
    burn_per_day_24h: Amount
    burn_per_day_7d: Amount
    forecast_crossing: datetime | None
    at_80_percent: bool
    crossing_within_7_days: bool
    state: State
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
