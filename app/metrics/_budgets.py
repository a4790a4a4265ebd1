"""Budgets on `/metrics`: each budget's limit, spend, 80 % flag, burn rates and forecast
crossing.

The figures are `GET /v1/budgets`' (the same rules, the same roll-up), read from the database
through a cache of their own, so every replica exposes the same values. Labelled by budget
name and unit (`usd` or `gpu_hours`), both bounded by what admins set. The alert rules read
them: 80 % spent, and a forecast crossing within 7 days.
"""

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from app.budgets.rules import BURN_HOURS
from app.budgets.schemas import BudgetRead
from app.budgets.service import list_budgets
from app.core.config import Settings
from app.core.db import Database
from app.core.units import micro_from_usd
from app.metrics._cache import SnapshotCache

LABELS = ("budget", "unit")


class BudgetCollector(Collector):
    """Reads (through a cache) every budget's state on each scrape and exposes it."""

    def __init__(self, read: Callable[[], list[BudgetRead]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            budgets = self._read()
        except SQLAlchemyError:
            return  # gpucost_metrics_database_up says why (app.metrics._collector)
        limit = GaugeMetricFamily(
            "gpucost_budget_limit",
            "A budget's limit, in its unit (USD or GPU-hours)",
            labels=LABELS,
        )
        spent = GaugeMetricFamily(
            "gpucost_budget_spent",
            "What a budget's scope spent in its current window up to now, in its unit",
            labels=LABELS,
        )
        at_80 = GaugeMetricFamily(
            "gpucost_budget_at_80_percent",
            "1 when a budget has spent 80 % of its limit or more (exact, as GET /v1/budgets)",
            labels=LABELS,
        )
        burn = GaugeMetricFamily(
            "gpucost_budget_burn_per_day",
            "Spend per day over the last 24 or 168 complete UTC hours of the window",
            labels=(*LABELS, "window"),
        )
        crossing = GaugeMetricFamily(
            "gpucost_budget_forecast_crossing_timestamp_seconds",
            "When the limit is reached at the last 24 h's burn (absent: not within the window)",
            labels=LABELS,
        )
        window_end = GaugeMetricFamily(
            "gpucost_budget_window_end_timestamp_seconds",
            "End of a budget's current window (the next UTC month, or the range's end)",
            labels=LABELS,
        )
        for budget in budgets:
            labels = [budget.name, budget.unit]
            limit.add_metric(labels, float(budget.amount))
            spent.add_metric(labels, float(budget.spent))
            at_80.add_metric(labels, 1.0 if budget.at_80_percent else 0.0)
            for name, value in zip(
                BURN_HOURS, (budget.burn_per_day_24h, budget.burn_per_day_7d), strict=True
            ):
                burn.add_metric([*labels, name], float(value))
            if budget.forecast_crossing is not None:
                crossing.add_metric(labels, budget.forecast_crossing.timestamp())
            window_end.add_metric(labels, budget.window_end.timestamp())
        yield from (limit, spent, at_80, burn, crossing, window_end)


def budget_collector(
    database: Database, *, clock: Callable[[], datetime], settings: Settings
) -> BudgetCollector:
    """The collector for an app's registry, each read one snapshot of `database`."""

    def load() -> list[BudgetRead]:
        with database.read() as session:
            return list_budgets(
                session, now=clock(), default_micro_usd=micro_from_usd(settings.default_rate_usd)
            )

    cache = SnapshotCache(
        load, fresh_s=settings.metrics_cache_seconds, max_stale_s=settings.metrics_max_stale_seconds
    )
    return BudgetCollector(cache.get)
