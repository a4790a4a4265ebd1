"""Cost queries under many prices, on both databases: a rate for every hour of 45 days,
mid-day changes on more than a thousand separate days, some 6,000 rate rows with a scenario
over them; and ranges that hold no hour. Every figure is checked exactly against what this
file works out on its own from the prices and the usage it sent."""

from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.costs.model_cost import model_cost
from app.costs.query import priced_usage, prices_for
from app.costs.service import cost_report
from app.models import Cluster, EnergyRate, Rate
from app.pricing.atom_prices import PRICES
from app.totals.levels import DAY, FIGURES, HOUR, cover
from tests.app.costs.test_costs import label_job
from tests.app.scenarios.test_scenarios import priced, put_scenario
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
H800, A100, L4 = "NVIDIA H800", "NVIDIA A100", "NVIDIA L4"
ONE_HOUR = timedelta(hours=1)
DEFAULT_MICRO_USD = 2_000_000  # Settings' default rate, 2.00 USD per GPU-hour
JOBS = {
    "a": {"model": "m-a", "phase": "pre-training", "team": "red"},
    "b": {"model": "m-b", "phase": "eval", "team": "blue"},
}
# Each (job, GPU model) on a GPU of its own; job None: idle capacity.
GPUS = {("a", H800): 0, ("b", A100): 1, (None, H800): 2, ("b", L4): 3}
SOURCE_ORDER = ("scenario", "card", "default")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nine(usd: Fraction) -> Decimal:
    """An exact amount as the API shows it: nine decimals, half to even."""
    return Decimal(round(usd * 10**9)).scaleb(-9)


@dataclass(frozen=True)
class Use:
    """One GPU's usage in one hour: what a report sends, in the rollup's units."""

    hour: datetime
    job: str | None
    gpu_model: str
    gpu_us: int
    energy_mj: int

    def label(self, name: str) -> str:
        return "(idle)" if self.job is None else JOBS[self.job][name]


@dataclass(frozen=True)
class Price:
    key: str | None  # a GPU model; None for a kWh price, or a scenario's general price
    cluster_id: int | None
    start: datetime
    micro_usd: int
    micro_usd_per_kwh: int | None = None  # a scenario price's own kWh price


class Prices:
    """Prices by key and cluster, each in force from its start until the next of its key."""

    def __init__(self, prices: Iterable[Price]) -> None:
        self.by_key: dict[tuple[str | None, int | None], list[Price]] = {}
        for price in sorted(prices, key=lambda p: p.start):
            self.by_key.setdefault((price.key, price.cluster_id), []).append(price)
        self.starts = {key: [p.start for p in found] for key, found in self.by_key.items()}

    def at(self, key: str | None, cluster_id: int | None, hour: datetime) -> Price | None:
        """The cluster's own price in force at `hour`, else the general one, else None."""
        for cluster in [cluster_id, None] if cluster_id is not None else [None]:
            found = bisect_right(self.starts.get((key, cluster), []), hour)
            if found:
                return self.by_key[(key, cluster)][found - 1]
        return None


@dataclass
class Book:
    rates: Prices
    energy: Prices
    cluster_id: int
    scenario: Prices | None = None

    def price(self, use: Use) -> tuple[int, str, int | None]:
        """The use's GPU-hour price, who set it, and its kWh price (micro-USD)."""
        kwh = self.energy.at(None, self.cluster_id, use.hour)
        books_kwh = None if kwh is None else kwh.micro_usd
        if self.scenario is not None:
            own = self.scenario.at(use.gpu_model, None, use.hour)
            chosen = own or self.scenario.at(None, None, use.hour)
            if chosen is not None:
                energy = chosen.micro_usd_per_kwh
                return chosen.micro_usd, "scenario", books_kwh if energy is None else energy
        rate = self.rates.at(use.gpu_model, self.cluster_id, use.hour)
        if rate is None:
            return DEFAULT_MICRO_USD, "default", books_kwh
        return rate.micro_usd, "card", books_kwh


@dataclass
class Expected:
    gpu_us: int = 0
    cost: Fraction = Fraction(0)  # USD
    energy_cost: Fraction | None = None
    sources: set[str] = field(default_factory=set)

    def add(self, use: Use, book: Book) -> None:
        rate, source, kwh = book.price(use)
        self.gpu_us += use.gpu_us
        self.cost += Fraction(use.gpu_us, 3_600_000_000) * Fraction(rate, 1_000_000)
        if kwh is not None:
            energy = Fraction(use.energy_mj, 3_600_000_000) * Fraction(kwh, 1_000_000)
            self.energy_cost = (self.energy_cost or 0) + energy
        self.sources.add(source)

    def shown(self) -> dict[str, Any]:
        return {
            "gpu_seconds": Decimal(self.gpu_us).scaleb(-6),
            "cost_usd": nine(self.cost),
            "energy_cost_usd": None if self.energy_cost is None else nine(self.energy_cost),
            "rate_sources": [s for s in SOURCE_ORDER if s in self.sources],
        }


def expected(
    book: Book, uses: Iterable[Use], key: Callable[[Use], Hashable]
) -> dict[Hashable, dict[str, Any]]:
    groups: dict[Hashable, Expected] = {}
    for use in uses:
        groups.setdefault(key(use), Expected()).add(use, book)
    return {name: group.shown() for name, group in groups.items()}


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """A row's figures as `Expected.shown` writes them."""
    energy = row["energy_cost_usd"]
    return {
        "gpu_seconds": Decimal(row["gpu_seconds"]),
        "cost_usd": Decimal(row["cost_usd"]),
        "energy_cost_usd": None if energy is None else Decimal(energy),
        "rate_sources": row["rate_sources"],
    }


# A question to GET /v1/costs: its parameters, and how a use's group and a row's are named.
Question = tuple[dict[str, str], Callable[[Use], Hashable], Callable[[dict[str, Any]], Hashable]]


def answered(
    client: TestClient, auth: Auth, key: Callable[[dict[str, Any]], Hashable], **params: str
) -> tuple[dict[Hashable, dict[str, Any]], dict[str, Any]]:
    """GET /v1/costs: its rows' figures by `key`, and its total's."""
    response = client.get("/v1/costs", params=params, headers=auth["viewer"])
    assert response.status_code == 200, (params, response.text)
    body = response.json()
    rows = {key(row): figures(row) for row in body["rows"]}
    assert len(rows) == len(body["rows"])
    return rows, figures(body["total"])


def check_costs(
    client: TestClient, auth: Auth, book: Book, uses: list[Use], questions: Sequence[Question]
) -> None:
    """Each question's rows and total against this file's own pricing of the uses."""
    for params, use_key, row_key in questions:
        start, end = (at(params[n][:-1]) if n in params else None for n in ("from", "to"))
        idle = params.get("include_idle") != "false"
        asked = [
            u
            for u in uses
            if (start is None or u.hour >= start)
            and (end is None or u.hour < end)
            and (idle or u.job is not None)
        ]
        rows, total = answered(client, auth, row_key, **params)
        assert rows == expected(book, asked, use_key), params
        assert total == expected(book, asked, lambda _: "total")["total"], params


def check_model_cost(
    client: TestClient, auth: Auth, book: Book, uses: list[Use], job: str, **params: str
) -> None:
    model = JOBS[job]["model"]
    response = client.get(f"/v1/models/{model}/cost", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    body = response.json()
    start, end = (at(params[n][:-1]) if n in params else None for n in ("from", "to"))
    mine = [
        u
        for u in uses
        if u.job == job and (start is None or u.hour >= start) and (end is None or u.hour < end)
    ]
    assert [figures(p) for p in body["phases"]] == [expected(book, mine, lambda _: 0)[0]]
    assert figures(body["total"]) == expected(book, mine, lambda _: 0)[0]


def send(client: TestClient, auth: Auth, uses: list[Use]) -> None:
    """The uses as one-hour reports, a report per hour, in batches."""
    by_hour: dict[datetime, list[Use]] = {}
    for use in uses:
        by_hour.setdefault(use.hour, []).append(use)
    reports = [
        report(
            seq,
            start=hour.isoformat().replace("+00:00", "Z"),
            end=(hour + ONE_HOUR).isoformat().replace("+00:00", "Z"),
            gpus=[
                entry(
                    GPUS[(u.job, u.gpu_model)],
                    job_id=u.job,
                    gpu_seconds=str(Decimal(u.gpu_us).scaleb(-6)),
                    energy_j=str(Decimal(u.energy_mj).scaleb(-3)),
                    model=u.gpu_model,
                )
                for u in hour_uses
            ],
        )
        for seq, (hour, hour_uses) in enumerate(sorted(by_hour.items()), start=1)
    ]
    for first in range(0, len(reports), 1000):
        batch = {"reports": reports[first : first + 1000]}
        response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(batch["reports"]), response.text


def add_prices(db: Session, rates: list[Price], energy: list[Price]) -> None:
    """Rate rows written straight to the tables, thousands at a time."""
    made = {"created_at": at("2025-01-01T00:00"), "created_by": "test"}
    if rates:
        db.execute(
            insert(Rate),
            [
                {
                    "gpu_model": r.key,
                    "cluster_id": r.cluster_id,
                    "effective_from": r.start,
                    "micro_usd_per_gpu_hour": r.micro_usd,
                    **made,
                }
                for r in rates
            ],
        )
    if energy:
        db.execute(
            insert(EnergyRate),
            [
                {
                    "cluster_id": e.cluster_id,
                    "effective_from": e.start,
                    "micro_usd_per_kwh": e.micro_usd,
                    **made,
                }
                for e in energy
            ],
        )
    db.commit()


def started(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session, uses: list[Use]
) -> int:
    """Jobs labelled and the uses sent; the test cluster's id."""
    clock.moment = at("2025-06-01T00:00")
    for job, labels in JOBS.items():
        label_job(client, auth, job, **labels)
    send(client, auth, uses)
    cluster_id = db.scalar(select(Cluster.id).where(Cluster.name == CLUSTER))
    assert cluster_id is not None
    return cluster_id


QUESTIONS: list[Question] = [
    ({"group_by": "job"}, lambda u: u.job, lambda r: r["job"]),
    (
        {"group_by": "team,model"},
        lambda u: (u.label("team"), u.label("model")),
        lambda r: (r["team"], r["model"]),
    ),
    (
        {"group_by": "day,team"},
        lambda u: (u.hour.strftime("%Y-%m-%d"), u.label("team")),
        lambda r: (r["day"], r["team"]),
    ),
    (
        {"group_by": "month,gpu_model"},
        lambda u: (u.hour.strftime("%Y-%m"), u.gpu_model),
        lambda r: (r["month"], r["gpu_model"]),
    ),
]


WINDOW = at("2025-03-01T00:00")
WINDOW_HOURS = 24 * 45


def hourly_uses() -> list[Use]:
    uses = []
    for h in range(WINDOW_HOURS):
        hour = WINDOW + h * ONE_HOUR
        a_us = 3_600_000_000 - (h * 37 % 900) * 10**6 - h
        b_us = (1800 + h * 11 % 1200) * 10**6 + 7 * h
        uses += [
            Use(hour, "a", H800, a_us, a_us // 4000 + h),
            Use(hour, "b", A100, b_us, b_us // 3000),
            Use(hour, None, H800, 3_600_000_000 - (h % 60) * 10**6, 216_000_000),
        ]
        if h % 5 == 0:
            uses.append(Use(hour, "b", L4, 900_000_000 + h, 90_000_000))
    return uses


def test_a_rate_for_every_hour_of_45_days_prices_each_hour_at_its_own(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session
) -> None:
    uses = hourly_uses()
    cluster_id = started(client, auth, clock, db, uses)
    hours = [WINDOW + h * ONE_HOUR for h in range(WINDOW_HOURS)]
    rates = [
        Price(H800, None, at("2025-01-01T00:00"), 2_000_000),
        *(
            Price(H800, None, hour, 1_000_000 + h * 7919 % 2_000_000)
            for h, hour in enumerate(hours)
        ),
        Price(A100, None, at("2025-01-01T00:00"), 3_000_000),
        *(
            Price(A100, cluster_id, hour, 2_500_000 + h * 104_729 % 1_000_000)
            for h, hour in enumerate(hours)
            if h % 2 == 1
        ),
    ]
    energy = [
        Price(None, None, at("2025-01-01T00:00"), 120_000),
        *(
            Price(None, None, hour, 100_000 + h * 313 % 90_000)
            for h, hour in enumerate(hours)
            if h % 7 == 3
        ),
    ]
    add_prices(db, rates, energy)
    book = Book(Prices(rates), Prices(energy), cluster_id)
    # Over a thousand changes within a day.
    assert sum(p.start.hour != 0 for p in rates) >= 1000

    within = {"from": "2025-03-03T07:00:00Z", "to": "2025-04-02T13:00:00Z"}
    questions: list[Question] = [
        *QUESTIONS,
        ({"group_by": "model", **within}, lambda u: u.label("model"), lambda r: r["model"]),
        (
            {"group_by": "team", "include_idle": "false", **within},
            lambda u: u.label("team"),
            lambda r: r["team"],
        ),
    ]
    check_costs(client, auth, book, uses, questions)
    check_model_cost(client, auth, book, uses, "a")
    check_model_cost(client, auth, book, uses, "b", **within)


# A change at noon every other day from 2019: 1,100 days read hour by hour, apart, and as
# many days between them read whole.
NOONS = [at("2019-01-01T12:00") + timedelta(days=2 * k) for k in range(1100)]


def test_mid_day_changes_on_a_thousand_separate_days_price_each_hour_at_its_own(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session
) -> None:
    ranges = cover(None, None, changes=NOONS)
    assert len(ranges[HOUR]) == len(ranges[DAY]) == 1100
    uses = []
    for k in range(0, len(NOONS), 23):
        noon = NOONS[k]
        for hour in (noon - ONE_HOUR, noon, noon + timedelta(hours=17)):  # the next day whole
            uses.append(Use(hour, "a", H800, 3_000_000_000 + k, 600_000_000))
        uses.append(Use(noon, None, H800, 600_000_000 + k, 60_000_000))
        uses.append(Use(noon, "b", L4, 1_200_000_000, 300_000_000))
    cluster_id = started(client, auth, clock, db, uses)
    rates = [
        Price(H800, None, at("2019-01-01T00:00"), 1_500_000),
        *(
            Price(H800, None, noon, 1_000_000 + k * 7919 % 2_000_000)
            for k, noon in enumerate(NOONS)
        ),
    ]
    add_prices(db, rates, [])
    book = Book(Prices(rates), Prices([]), cluster_id)

    check_costs(client, auth, book, uses, QUESTIONS)
    check_model_cost(client, auth, book, uses, "a")


FEBRUARY = at("2025-02-01T00:00")


def test_six_thousand_rate_rows_and_a_scenario_over_them(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session
) -> None:
    uses = []
    for k in range(150):
        hour = at("2025-01-20T00:00") + k * 17 * ONE_HOUR
        uses += [
            Use(hour, "a", H800, 3_100_000_000 + k, 900_000_000 + k),
            Use(hour, "b", A100, 2_000_000_000 + 3 * k, 500_000_000),
            Use(hour, None, H800, 500_000_000, 40_000_000 + k),
        ]
        if k % 3 == 0:
            uses.append(Use(hour, "b", L4, 1_000_000_000 - k, 70_000_000))
    cluster_id = started(client, auth, clock, db, uses)
    made = at("2025-01-01T00:00")
    db.execute(
        insert(Cluster), [{"name": f"other-{i:04d}", "created_at": made} for i in range(1000)]
    )
    others = db.scalars(select(Cluster.id).where(Cluster.name.like("other-%"))).all()
    rates = [
        Price(H800, None, at("2025-01-01T00:00"), 2_100_000),
        Price(H800, None, at("2025-03-10T10:00"), 2_250_000),
        Price(H800, cluster_id, at("2025-02-10T09:00"), 1_700_000),
        Price(H800, cluster_id, at("2025-02-20T15:00"), 1_900_000),
        Price(A100, None, at("2025-01-01T00:00"), 3_300_000),
        Price(A100, None, at("2025-02-15T03:00"), 2_900_000),
        # Other clusters' own H800 prices, and other GPU models': 6,000 rows that price
        # nothing here, each a change somewhere in February and March.
        *(
            Price(H800, other, FEBRUARY + ((3 * i + j) * 7 % 1300) * ONE_HOUR, 1_000_000 + i)
            for i, other in enumerate(others)
            for j in range(3)
        ),
        *(
            Price(f"Other GPU {i}", None, FEBRUARY + ((2 * i + j) * 11 % 1400) * ONE_HOUR, 10 + j)
            for i in range(1500)
            for j in range(2)
        ),
    ]
    energy = [
        Price(None, None, at("2025-01-01T00:00"), 120_000),
        Price(None, cluster_id, at("2025-02-12T06:00"), 150_000),
        *(
            Price(None, other, FEBRUARY + (i * 5 % 1000) * ONE_HOUR, 99_000)
            for i, other in enumerate(others[:500])
        ),
    ]
    add_prices(db, rates, energy)
    assert len(rates) >= 6000
    book = Book(Prices(rates), Prices(energy), cluster_id)
    by_job, by_team_model, by_day_team, _ = QUESTIONS
    check_costs(client, auth, book, uses, [by_job, by_day_team])
    check_model_cost(client, auth, book, uses, "a")

    assert put_scenario(client, auth, "rental").status_code == 201
    scenario = [
        Price(None, None, at("2025-02-25T00:00"), 4_000_000, 300_000),
        Price(H800, None, at("2025-03-05T05:00"), 2_500_000),
    ]
    for price in scenario:
        body = {
            "effective_from": price.start.isoformat(),
            "usd_per_gpu_hour": str(Decimal(price.micro_usd).scaleb(-6)),
        }
        if price.key is not None:
            body["gpu_model"] = price.key
        if price.micro_usd_per_kwh is not None:
            body["usd_per_kwh"] = str(Decimal(price.micro_usd_per_kwh).scaleb(-6))
        priced(client, auth, "rental", **body)
    book.scenario = Prices(scenario)
    params, use_key, row_key = by_team_model
    check_costs(client, auth, book, uses, [({"scenario": "rental", **params}, use_key, row_key)])
    check_model_cost(client, auth, book, uses, "b", scenario="rental")


def test_a_range_without_hours_costs_nothing(
    client: TestClient, auth: Auth, clock: SettableClock, db: Session
) -> None:
    uses = [Use(at("2025-01-06T10:00"), "a", H800, 3_600_000_000, 1_000_000)]
    started(client, auth, clock, db, uses)
    for path in ("/v1/costs", "/v1/models/m-a/cost"):
        instant = "2025-01-06T10:00:00Z"
        response = client.get(path, params={"from": instant, "to": instant}, headers=auth["viewer"])
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [{"field": "to", "reason": "must be after from"}]

    ten, quarter = at("2025-01-06T10:00"), timedelta(minutes=15)
    # Equal, and within one hour (both bounds round up to 11:00), and backwards.
    empty = [(ten, ten), (ten + quarter, ten + 3 * quarter), (ten + ONE_HOUR, ten)]
    with client.app.state.database.read() as session:  # type: ignore[attr-defined]
        for start, end in empty:
            stage_one = priced_usage(
                prices_for(session, default_micro_usd=DEFAULT_MICRO_USD),
                start=start,
                end=end,
                where=[],
                by={"day": "day"},
            ).subquery("priced")
            assert list(stage_one.c.keys()) == [
                "job_id",
                "cluster_id",
                "gpu_model",
                "day",
                *PRICES,
                *FIGURES,
            ]
            assert session.execute(select(stage_one)).all() == []
            costs = cost_report(
                session,
                start=start,
                end=end,
                group_by=["team"],
                filters={},
                include_idle=True,
                default_micro_usd=DEFAULT_MICRO_USD,
            )
            assert costs.rows == []
            assert (costs.total.gpu_seconds, costs.total.cost_usd) == (0, 0)
            assert costs.total.energy_cost_usd is None
            with pytest.raises(NotFound):
                model_cost(
                    session,
                    model="m-a",
                    start=start,
                    end=end,
                    cluster=None,
                    default_micro_usd=DEFAULT_MICRO_USD,
                )
        # The hour itself: one hour, all of it.
        whole = cost_report(
            session,
            start=ten,
            end=ten + ONE_HOUR,
            group_by=[],
            filters={},
            include_idle=True,
            default_micro_usd=DEFAULT_MICRO_USD,
        )
        assert (whole.total.gpu_seconds, whole.total.cost_usd) == (3600, Decimal(2))
