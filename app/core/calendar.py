"""Calendar arithmetic in UTC: hours, days and months, and splitting an interval's quantities
across UTC hours, conserving every unit exactly.

Months are named as the API and the books name them, `2025-01`; instants are UTC. (Which
instants the API accepts, and the whole-UTC-hour type, are `app.core.timestamps`.)
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.core.errors import InvalidInput
from app.core.timestamps import as_utc, utc_instant

HOUR = timedelta(hours=1)
_US = timedelta(microseconds=1)
_A_MONTH_ON = timedelta(days=32)  # from any day of a month, a day of the next one


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def floor_month(moment: datetime) -> datetime:
    """The start of `moment`'s UTC month (no zone means UTC)."""
    return floor_day(as_utc(moment)).replace(day=1)


def next_month_start(moment: datetime) -> datetime:
    """The start of the UTC month after `moment`'s."""
    return floor_month(floor_month(moment) + _A_MONTH_ON)


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def month_start(month: str) -> datetime:
    year, number = (int(part) for part in month.split("-"))
    return datetime(year, number, 1, tzinfo=UTC)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's instants, [its start, the next month's start)."""
    start = month_start(month)
    return start, next_month_start(start)


def next_month(month: str) -> str:
    return month_of(next_month_start(month_start(month)))


def parse_month(text: str, *, field: str = "month") -> str:
    """`2025-01` as given, or an InvalidInput naming the field; months from 1970 to 2999."""
    try:
        start = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise InvalidInput(field, f"'{text}' is not a month like 2025-01") from None
    try:
        utc_instant(start)
    except ValueError as exc:
        raise InvalidInput(field, f"'{text}' {exc}") from None
    return month_of(start)


def span_us(start: datetime, end: datetime) -> int:
    """Whole microseconds from `start` to `end`."""
    return (end - start) // _US


@dataclass(frozen=True)
class HourSlice:
    hour: datetime
    # Microseconds from the interval's start to this slice's start and end.
    offset_start: int
    offset_end: int


def hour_slices(start: datetime, end: datetime) -> tuple[int, list[HourSlice]]:
    """The interval's length in microseconds and the UTC hours it covers."""
    total = span_us(start, end)
    slices = []
    hour = floor_hour(start)
    while hour < end:
        seg_start, seg_end = max(hour, start), min(hour + HOUR, end)
        slices.append(HourSlice(hour, (seg_start - start) // _US, (seg_end - start) // _US))
        hour += HOUR
    return total, slices


def split_amounts(
    slices: tuple[int, list[HourSlice]], amounts: Sequence[int]
) -> Iterator[tuple[datetime, tuple[int, ...]]]:
    """Each hour's share of each amount, in proportion to time.

    Shares are differences of floored cumulative shares, so they add up to each amount
    exactly, whatever the interval and however it falls across hours.
    """
    total, parts = slices
    for part in parts:
        yield (
            part.hour,
            tuple(a * part.offset_end // total - a * part.offset_start // total for a in amounts),
        )


def hourly_shares(
    slices: tuple[int, list[HourSlice]], amounts: Sequence[int]
) -> Iterable[tuple[datetime, Sequence[int]]]:
    """`split_amounts`, and the amounts as they are when the interval lies within one hour,
    as most do."""
    parts = slices[1]
    return ((parts[0].hour, amounts),) if len(parts) == 1 else split_amounts(slices, amounts)
