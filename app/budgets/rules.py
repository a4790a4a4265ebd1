"""The budget rules, in one place: the window a budget covers, the hours its burn rates
read, and what its spend says (percent used, burn per day, forecast crossing, state).

Spend is an exact integer count of `PARTS` of the budget's unit (USD or GPU-hours), as
every cost figure is (`app.core.units`); each figure shown is rounded once from it.

- Window: a month budget covers the current UTC month at `now`, a range budget its range;
  both from a whole hour up to a whole hour (exclusive).
- Spent: usage in the window up to `now` (the current hour's usage so far included).
- Burn per day: what was spent in the last 24 complete UTC hours (per 1 day), and in the
  last 168 (per 7 days), counting only those hours inside the window: a window begun 3 h
  ago burns what those 3 h spent, not that extrapolated to a day.
- Forecast crossing: while spent < limit and the 24 h burn is above 0, the instant the
  remainder runs out at that burn, rounded up to a whole second (the first second by which
  it has run out); none once it would fall after the window's end.
- State: `exceeded` (spent >= limit), else `warning` (at least 80 % spent, exactly), else
  `forecast` (a crossing within 7 days of now), else `ok`. The two flags `at_80_percent`
  and `crossing_within_7_days` say each condition apart, so both show when both hold: the
  state names the more urgent (a budget 80 % spent is in warning whatever its forecast).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from app.core.calendar import HOUR, floor_hour, floor_month, next_month_start
from app.core.units import PARTS, PARTS_PER_MILLIONTH, PARTS_PER_US, US_PER_HOUR, rounded, shown

WARNING_PERCENT = 80
FORECAST_HORIZON = timedelta(days=7)
# Burn windows: their name (a metric label), and the complete hours each reads.
BURN_HOURS = {"24h": 24, "7d": 168}
_US = timedelta(microseconds=1)
_US_PER_DAY = 24 * US_PER_HOUR
_SECOND = timedelta(seconds=1)


def limit_parts(amount_micro: int) -> int:
    """A limit in millionths of its unit as `PARTS` of the unit."""
    return amount_micro * PARTS_PER_MILLIONTH


def gpu_hour_parts(gpu_us: int) -> int:
    """GPU-time in microseconds as `PARTS` of a GPU-hour."""
    return gpu_us * PARTS_PER_US


def window(
    period: str, starts_at: datetime | None, ends_at: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """The hours a budget covers at `now`: [start, end)."""
    if period == "month":
        return floor_month(now), next_month_start(now)
    assert starts_at is not None and ends_at is not None  # the database's CHECK
    return starts_at, ends_at


def spans(start: datetime, end: datetime, *, now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The hours each figure sums, inside the window: `spent` up to now, and each burn
    window's complete hours. An empty span has its start at or after its end."""
    complete = floor_hour(now)
    found = {"spent": (start, min(end, now))}
    for name, hours in BURN_HOURS.items():
        found[name] = (max(start, complete - hours * HOUR), min(end, complete))
    return found


@dataclass(frozen=True)
class Assessment:
    """What a budget's spend says, as shown."""

    spent: Decimal
    remaining: Decimal
    percent_used: Decimal
    burn_per_day_24h: Decimal
    burn_per_day_7d: Decimal
    forecast_crossing: datetime | None
    at_80_percent: bool
    crossing_within_7_days: bool
    state: str


def assess(*, limit: int, spent: dict[str, int], now: datetime, end: datetime) -> Assessment:
    """The figures and state of a budget of `limit` (`PARTS`) ending at `end`, from what
    each span of `spans` spent (`PARTS`)."""
    total, burn_24h, burn_7d = spent["spent"], spent["24h"], spent["7d"]
    crossing = _crossing(limit - total, burn_24h, now=now, end=end)
    at_80 = 100 * total >= WARNING_PERCENT * limit
    soon = crossing is not None and crossing <= now + FORECAST_HORIZON
    if total >= limit:
        state = "exceeded"
    elif at_80:
        state = "warning"
    elif soon:
        state = "forecast"
    else:
        state = "ok"
    return Assessment(
        spent=shown(total),
        # Of the figures as shown, so that spent and remaining add up to the limit.
        remaining=shown(limit) - shown(total),
        percent_used=rounded(100 * total, limit, 2),
        burn_per_day_24h=shown(burn_24h),
        burn_per_day_7d=rounded(burn_7d, 7 * PARTS),
        forecast_crossing=crossing,
        at_80_percent=at_80,
        crossing_within_7_days=soon,
        state=state,
    )


def _crossing(left: int, burn_per_day: int, *, now: datetime, end: datetime) -> datetime | None:
    """When `left` runs out at `burn_per_day`, up to a whole second; None if it never does
    within the window (already out, no burn, or after `end`)."""
    if left <= 0 or burn_per_day <= 0:
        return None
    after_us = -(-left * _US_PER_DAY // burn_per_day)  # rounded up
    if after_us > (end - now) // _US:
        return None
    exact = now + after_us * _US
    if exact.microsecond:
        exact = exact.replace(microsecond=0) + _SECOND
    return exact
