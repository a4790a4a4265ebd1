"""Instants as the API accepts them: one range, one conversion to UTC, one "whole UTC hour".

Every instant a client sends (a report's interval, `from`/`to`, a rate's start, an audit
filter) goes through `utc_instant`, so that no value at the edge of what Python's datetime
can hold reaches arithmetic (an hour added, a month's end, a zone converted) and fails there.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

from app.core.errors import InvalidInput

# Far outside any real usage, far inside what every layer (datetime, PostgreSQL, SQLite's
# ISO text) can compute with: a month or an hour past either end is still representable.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(3000, 1, 1, tzinfo=UTC)
WHOLE_HOUR_EXAMPLE = "2025-01-01T00:00:00Z"


def as_utc(value: datetime) -> datetime:
    """`value` in UTC (no zone means UTC), whatever its range."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_instant(value: datetime) -> datetime:
    """`value` in UTC (no zone means UTC); a ValueError for one outside the accepted range."""
    try:
        value = as_utc(value)
    except OverflowError:  # a zone that moves it past year 1 or 9999
        value = LATEST_INSTANT
    if not EARLIEST_INSTANT <= value < LATEST_INSTANT:
        raise ValueError(
            f"must be from {EARLIEST_INSTANT:%Y-%m-%d} to before {LATEST_INSTANT:%Y-%m-%d} (UTC)"
        )
    return value


def whole_hour(value: datetime) -> datetime:
    """`value` (already UTC) unchanged if it is a whole hour; a ValueError if not."""
    if (value.minute, value.second, value.microsecond) != (0, 0, 0):
        raise ValueError(f"must be a whole UTC hour, e.g. {WHOLE_HOUR_EXAMPLE}")
    return value


def check_whole_hour(field: str, value: datetime) -> datetime:
    """`whole_hour` for values checked outside a schema: an InvalidInput naming `field`."""
    try:
        return whole_hour(value)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None


# A body field: an instant with a zone, in UTC once validated.
UtcInstant = Annotated[AwareDatetime, AfterValidator(utc_instant)]
# A query parameter: a zone is optional (none means UTC).
UtcQueryInstant = Annotated[datetime, AfterValidator(utc_instant)]
# A whole UTC hour, after conversion to UTC.
UtcHour = Annotated[AwareDatetime, AfterValidator(utc_instant), AfterValidator(whole_hour)]
UtcQueryHour = Annotated[datetime, AfterValidator(utc_instant), AfterValidator(whole_hour)]
