"""Billing months as the API shows them: booked figures beside the current truth."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from app.core.units import Amount


class Totals(BaseModel):
    gpu_hours: Amount
    cost_usd: Amount


class PeriodRead(BaseModel):
    month: str
    state: Literal["open", "closed"]
    closed_at: datetime | None
    closed_by: str | None
    # Closed months: what was booked when the month closed, and what later months booked
    # as corrections of it. Current: what the month's usage comes to today.
    booked: Totals | None
    corrections_booked: Totals | None
    current: Totals


class PeriodPage(BaseModel):
    periods: list[PeriodRead]
    # The books' range: from their start (the first closed month, or before any the first
    # month with usage) to the last month with usage or closed; null when there is none.
    first: str | None
    last: str | None
    # Pass as `from` to read the next page; null on the last page.
    next_from: str | None
