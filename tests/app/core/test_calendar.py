"""Calendar arithmetic (app.core.calendar): months are UTC months, named as the books name them."""

from datetime import UTC, datetime, timedelta, timezone

from app.core.calendar import floor_month, month_of, month_start, next_month, next_month_start

PLUS_5 = timezone(timedelta(hours=5))


def test_a_month_is_the_utc_month_whatever_zone_an_instant_is_given_in() -> None:
    # 01:00 on 1 March at +05:00 is 20:00 on 28 February in UTC.
    moment = datetime(2025, 3, 1, 1, tzinfo=PLUS_5)

    assert floor_month(moment) == datetime(2025, 2, 1, tzinfo=UTC)
    assert next_month_start(moment) == datetime(2025, 3, 1, tzinfo=UTC)
    assert floor_month(datetime(2025, 3, 1, 1)) == datetime(2025, 3, 1, tzinfo=UTC)  # naive: UTC


def test_month_names_and_their_starts_across_a_year_and_at_the_last_accepted_month() -> None:
    assert next_month("2024-12") == "2025-01"
    assert next_month("2999-12") == "3000-01"
    assert month_start("2025-02") == datetime(2025, 2, 1, tzinfo=UTC)
    assert month_of(next_month_start(datetime(2024, 2, 29, 23, tzinfo=UTC))) == "2024-03"
