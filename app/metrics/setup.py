"""Wiring metrics into an app: its own registry, the request middleware, `/metrics`."""

from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, disable_created_metrics
from sqlalchemy import event

from app.core.concurrency import EXPORTS
from app.core.config import Settings
from app.core.db import Database
from app.core.units import micro_from_usd
from app.metrics._budgets import budget_collector
from app.metrics._cache import SnapshotCache
from app.metrics._collector import AccountingCollector
from app.metrics._middleware import RequestMetrics, RouteTemplates
from app.metrics._snapshot import Snapshot, read_snapshot
from app.metrics.counters import ServiceMetrics
from app.metrics.router import router


def install_metrics(app: FastAPI) -> None:
    """Give the app a registry of its own (several apps in one process never collide)."""
    settings: Settings = app.state.settings
    # `_created` samples would double every series and tell Prometheus nothing it uses.
    disable_created_metrics()
    registry = CollectorRegistry()
    service = ServiceMetrics(registry)

    # Read sessions, one snapshot each, for all the queries of a read (this month never
    # exceeds the total) that never hold the SQLite write lock ingest needs.
    database: Database = app.state.database

    def load() -> Snapshot:
        with database.read() as session:
            return read_snapshot(
                session,
                now=app.state.clock(),
                default_micro_usd=micro_from_usd(settings.default_rate_usd),
                reporting_window_s=settings.metrics_reporting_window_seconds,
            )

    cache = SnapshotCache(
        load,
        fresh_s=settings.metrics_cache_seconds,
        max_stale_s=settings.metrics_max_stale_seconds,
    )
    registry.register(
        AccountingCollector(
            cache.get, clock=app.state.clock, window_s=settings.metrics_reporting_window_seconds
        )
    )
    registry.register(budget_collector(database, clock=app.state.clock, settings=settings))

    @event.listens_for(app.state.engine, "handle_error")
    def _count_database_error(context: Any) -> None:
        wrapped = context.sqlalchemy_exception
        service.observe_database_error(type(wrapped).__name__ if wrapped else "DatabaseError")

    app.state.metrics_registry = registry
    app.state.service_metrics = service
    app.state.metrics_cache = cache
    app.add_middleware(RequestMetrics, metrics=service, templates=RouteTemplates(app))
    app.include_router(router)
    # Each export route's server errors start at 0, so that an alert on their increase sees
    # the first one (a series born at 1 shows no increase). Last: the API document is
    # complete only once every router is in.
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(EXPORTS):
            for method in operations:
                service.requests.labels(method=method.upper(), route=path, status="500")
