"""Splitting an interval's quantities across UTC hours, conserving every unit exactly."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
_US = timedelta(microseconds=1)


def span_us(start: datetime, end: datetime) -> int:
    """Whole microseconds from `start` to `end`."""
    return (end - start) // _US


@dataclass(frozen=True)
class HourSlice:
    hour: datetime
    # Microseconds from the interval's start to this slice's start and end.
    offset_start: int
    offset_end: int


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


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
