"""The rollup's levels (app.totals): which level answers which hours, ingest keeping the day
and month levels equal to their hours, and every cost read from them equal, digit for digit,
to the same question answered from hours alone."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli
from app.costs import query
from app.totals.check import check_totals
from app.totals.levels import DAY, HOUR, MODEL_HOURS, MONTH, Level, cover
from tests.app.costs.test_costs import label_job, send, set_rate
from tests.app.scenarios.test_scenarios import priced, put_scenario
from tests.support import SettableClock, entry, report

Auth = dict[str, dict[str, str]]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_range_is_read_in_whole_months_then_days_then_hours() -> None:
    ranges = cover(at("2025-01-15T10:00"), at("2025-03-03T05:00"), changes=[])
    assert ranges == {
        HOUR: [
            (at("2025-01-15T10:00"), at("2025-01-16T00:00")),
            (at("2025-03-03T00:00"), at("2025-03-03T05:00")),
        ],
        DAY: [
            (at("2025-01-16T00:00"), at("2025-02-01T00:00")),
            (at("2025-03-01T00:00"), at("2025-03-03T00:00")),
        ],
        MONTH: [(at("2025-02-01T00:00"), at("2025-03-01T00:00"))],
    }


def test_a_range_in_another_zone_is_read_in_the_same_utc_periods() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    start = at("2025-01-15T10:00").astimezone(india)  # 15:30 local: a whole hour in UTC
    change = at("2025-02-10T13:30").astimezone(india)  # 19:00 local
    assert cover(start, None, changes=[change]) == cover(
        at("2025-01-15T10:00"), None, changes=[at("2025-02-10T13:30")]
    )


def test_a_period_where_a_price_changes_is_read_a_level_finer() -> None:
    # A rate from 2025-07-02 13:30: it prices hours from 14:00, as the hourly level does.
    ranges = cover(None, None, changes=[at("2025-07-02T13:30")])
    assert ranges == {
        MONTH: [(None, at("2025-07-01T00:00")), (at("2025-08-01T00:00"), None)],
        DAY: [
            (at("2025-07-01T00:00"), at("2025-07-02T00:00")),
            (at("2025-07-03T00:00"), at("2025-08-01T00:00")),
        ],
        HOUR: [(at("2025-07-02T00:00"), at("2025-07-03T00:00"))],
    }
    # A change on a period's first hour splits nothing; by day, months are never read.
    assert cover(None, None, changes=[at("2025-07-01T00:00")]) == {MONTH: [(None, None)]}
    assert cover(None, None, changes=[], coarsest=DAY) == {DAY: [(None, None)]}
    assert cover(at("2025-07-02T10:00"), at("2025-07-02T10:00"), changes=[]) == {}


START = at("2025-01-01T00:00")
HOURS = 24 * 70  # January to mid-March
# What the property below enumerates: whole months around every range and change it draws.
WINDOW = (at("2024-10-01T00:00"), at("2025-07-01T00:00"))


@settings(max_examples=300, deadline=None)
@given(
    low=st.one_of(st.none(), st.integers(0, HOURS)),
    length=st.one_of(st.none(), st.integers(0, HOURS)),
    changes=st.lists(st.integers(-24 * 60, HOURS + 24 * 60), max_size=4),
    minutes=st.integers(0, 59),
    coarsest=st.sampled_from([HOUR, DAY, MONTH]),
)
def test_every_hour_is_read_once_from_a_period_at_one_price(
    low: int | None, length: int | None, changes: list[int], minutes: int, coarsest: Level
) -> None:
    start = None if low is None else START + timedelta(hours=low, minutes=minutes)
    end = None if low is None or length is None else START + timedelta(hours=low + length)
    instants = [START + timedelta(hours=c, minutes=minutes) for c in changes]
    ranges = cover(start, end, changes=instants, coarsest=coarsest)
    finest_first = [HOUR, DAY, MONTH]
    assert all(finest_first.index(level) <= finest_first.index(coarsest) for level in ranges)
    read: dict[datetime, int] = {}
    for level, spans in ranges.items():
        for lo, hi in spans:
            moment = level.ceil(lo or WINDOW[0])
            while moment < (hi or WINDOW[1]):
                after = level.after(moment)
                # A period read whole holds one price: none changes after its first hour.
                assert not any(moment < HOUR.ceil(c) < after for c in instants), (level, moment)
                hour = moment
                while hour < after:
                    read[hour] = read.get(hour, 0) + 1
                    hour += timedelta(hours=1)
                moment = after
    assert all(n == 1 for n in read.values())
    first = WINDOW[0] if start is None else HOUR.ceil(start)
    last = WINDOW[1] if end is None else end
    wanted = set()
    hour = first
    while hour < last:
        wanted.add(hour)
        hour += timedelta(hours=1)
    assert set(read) == wanted


def usage_across_periods(client: TestClient, auth: Auth, clock: SettableClock) -> None:
    """Reports crossing hours, midnights and months' ends, idle GPUs among them, on two GPU
    models; rates and an energy price that change mid-month, mid-day, then none."""
    clock.moment = at("2025-06-01T00:00")
    assert set_rate(client, auth, "2.35", "2025-01-01T00:00:00Z").status_code == 201
    assert set_rate(client, auth, "1.85", "2025-02-14T13:00:00Z").status_code == 201
    assert (
        set_rate(client, auth, "3", "2025-01-20T07:00:00Z", model="NVIDIA A100").status_code == 201
    )
    for usd, start in (("0.12", "2025-01-01T00:00:00Z"), ("0.2", "2025-03-02T09:00:00Z")):
        energy = {"usd_per_kwh": usd, "effective_from": start}
        assert (
            client.post("/v1/energy-rates", json=energy, headers=auth["admin"]).status_code == 201
        )
    label_job(client, auth, "a", model="m", phase="pre-training", team="red")
    label_job(client, auth, "b", model="m", phase="eval", team="blue")
    spans = [
        ("2025-01-06T10:20:00Z", "2025-01-06T11:10:00Z"),
        ("2025-01-31T23:40:00Z", "2025-02-01T00:25:00Z"),
        ("2025-02-14T12:30:00Z", "2025-02-14T13:30:00Z"),
        ("2025-02-28T23:50:00Z", "2025-03-01T00:05:00Z"),
        ("2025-03-02T08:45:00Z", "2025-03-02T09:15:00Z"),
        ("2025-04-10T05:30:00Z", "2025-04-10T06:30:00Z"),  # April and May: one price each
        ("2025-04-30T23:30:00Z", "2025-05-01T00:30:00Z"),
    ]
    for seq, (start, end) in enumerate(spans, start=1):
        seconds = int((at(end[:-1]) - at(start[:-1])).total_seconds())
        gpus = [
            entry(0, job_id="a", gpu_seconds=seconds, energy_j=300 * seconds + 7),
            entry(1, job_id="b", gpu_seconds=seconds - 13, energy_j=251 * seconds),
            entry(2, job_id=None, gpu_seconds=seconds, energy_j=60 * seconds),
            entry(
                3, job_id="a", gpu_seconds=seconds - 1, energy_j=250 * seconds, model="NVIDIA A100"
            ),  # fmt: skip
        ]
        send(client, auth, report(seq, start=start, end=end, gpus=gpus))


def test_ingest_keeps_each_day_and_month_equal_to_its_hours(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session, db_url: str
) -> None:
    usage_across_periods(client, auth, clock)
    with client.app.state.database.read() as session:  # type: ignore[attr-defined]
        checked = check_totals(session)
    assert checked.disagreements == []
    # Three GPU models and idle capacity: (job a H800, a A100, b H800, idle H800) per period.
    # Per hour: job a (pre-training) and job b (eval) of model m on the model level.
    assert checked.rows == {"day": 4 * 10, "month": 4 * 5, "model": 2 * 14}
    env = {"GPUCOST_DATABASE_URL": db_url}
    ok = CliRunner().invoke(cli, ["db", "check-totals"], env=env)
    assert ok.exit_code == 0, ok.output
    assert (
        "every total equals the sum of its hours (40 day rows, 20 month rows, 28 model rows)"
        in ok.output
    )

    db.execute(text("UPDATE usage_monthly SET gpu_us = gpu_us + 1 WHERE job_id IS NULL"))
    db.commit()
    wrong = CliRunner().invoke(cli, ["db", "check-totals"], env=env)
    assert wrong.exit_code == 1
    assert (
        "5 totals differ from their hours (40 day rows, 20 month rows, 28 model rows read)"
        in wrong.output
    )
    assert (
        "month 2025-01 cluster 1 job (idle) NVIDIA H800: "
        "stored (4200000001, 4095000000, 252000000), its hours (4200000000, 4095000000, 252000000)"
    ) in wrong.output
    repaired = CliRunner().invoke(cli, ["db", "check-totals", "--repair"], env=env)
    assert repaired.exit_code == 0, repaired.output
    assert (
        "5 totals differed: rebuilt from the hours (40 day rows, 20 month rows, 28 model rows)"
    ) in repaired.output
    again = CliRunner().invoke(cli, ["db", "check-totals"], env=env)
    assert again.exit_code == 0, again.output


def test_a_relabelling_leaves_no_emptied_row_on_the_model_level(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    usage_across_periods(client, auth, clock)
    # Job b leaves phase eval for pre-training: eval's hours hold nothing of model m now.
    label_job(client, auth, "b", model="m", phase="pre-training", team="blue")

    with client.app.state.database.read() as session:  # type: ignore[attr-defined]
        checked = check_totals(session)
        phases = session.execute(select(MODEL_HOURS.c.phase, MODEL_HOURS.c.gpu_us)).all()
    assert checked.disagreements == []
    assert checked.rows["model"] == 14
    assert {phase for phase, _ in phases} == {"pre-training"}
    assert all(gpu_us > 0 for _, gpu_us in phases)


def within(start: str, end: str) -> dict[str, str]:
    return {"from": f"2025-{start}:00:00Z", "to": f"2025-{end}:00:00Z"}


QUESTIONS: list[tuple[str, dict[str, str]]] = [
    ("/v1/costs", {"group_by": "team,model"}),
    ("/v1/costs", {"group_by": "day,gpu_model", "include_idle": "true"}),
    ("/v1/costs", {"group_by": "month,team", "include_idle": "true"}),
    ("/v1/costs", {"group_by": "job", **within("01-06T11", "03-01T00")}),
    ("/v1/costs", {"group_by": "cluster", **within("02-01T00", "03-01T00")}),
    ("/v1/costs", {"group_by": "phase", **within("01-31T23", "03-02T09")}),
    ("/v1/costs", {"group_by": "team", **within("03-31T10", "05-01T01")}),
    ("/v1/costs", {"group_by": "team", "scenario": "rental"}),
    ("/v1/costs", {"group_by": "month", "scenario": "rental", "include_idle": "true"}),
    ("/v1/models/m/cost", {}),
    ("/v1/models/m/cost", {"from": "2025-02-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}),
    ("/v1/models/m/cost", {"scenario": "rental"}),
    ("/v1/models/(idle)/cost", {"from": "2025-01-06T11:00:00Z"}),
]  # fmt: skip


def test_every_cost_read_from_the_levels_equals_its_hours(
    client: TestClient, auth: Auth, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage_across_periods(client, auth, clock)
    assert put_scenario(client, auth, "rental").status_code == 201
    priced(client, auth, "rental", gpu_model="NVIDIA H800", effective_from="2025-02-20T05:00:00Z",
           usd_per_gpu_hour="2.5")  # fmt: skip
    priced(client, auth, "rental", effective_from="2025-01-10T00:00:00Z", usd_per_gpu_hour="4",
           usd_per_kwh="0.3")  # fmt: skip

    def answers() -> list[Any]:
        out = []
        for path, params in QUESTIONS:
            response = client.get(path, params=params, headers=auth["viewer"])
            assert response.status_code == 200, (path, params, response.text)
            out.append(response.json())
        return out

    read: list[str] = []
    engine = client.app.state.engine  # type: ignore[attr-defined]
    listen = ("before_cursor_execute", lambda *args: read.append(args[2]))
    event.listen(engine, *listen)
    from_levels = answers()
    assert any("usage_monthly" in s for s in read) and any("usage_daily" in s for s in read)
    read.clear()
    monkeypatch.setattr(query, "MONTH", HOUR)  # every question answered from hours alone
    monkeypatch.setattr(query, "DAY", HOUR)
    # Statements are built once per question: built from the levels above, now from the
    # hours, and forgotten again after.
    query.forget_built()
    try:
        assert answers() == from_levels
    finally:
        query.forget_built()
    # Only tokens' GPU-time reads months whatever the range (all of such a job's usage lies
    # within it: app.costs._efficiency).
    assert not any("usage_daily" in s for s in read)
    assert all("per_job" in s for s in read if "usage_monthly" in s)
    event.remove(engine, *listen)
    assert any(row["cost_usd"] != "0" for body in from_levels for row in body.get("rows", []))
