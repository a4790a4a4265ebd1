"""The FastAPI application factory."""

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.audit.router import router as audit_router
from app.budgets.router import router as budgets_router
from app.core.auth import Authenticate
from app.core.clock import Clock, utc_now
from app.core.concurrency import DatabaseSlots
from app.core.config import Settings, get_settings
from app.core.db import SIDE_CONNECTIONS, Database, create_db_engine
from app.core.errors import ERROR_RESPONSES, install_error_handlers
from app.core.known_ids import KnownIds
from app.core.limits import RequestBody
from app.core.migrate import head_revision
from app.core.requests import RequestId
from app.costs.router import router as costs_router
from app.exports.router import router as exports_router
from app.gpus.router import router as gpus_router
from app.health.router import router as health_router
from app.jobs.router import router as jobs_router
from app.metrics.setup import install_metrics
from app.periods.router import router as periods_router
from app.pricing.router import router as pricing_router
from app.reports.router import router as reports_router
from app.reports.schemas import BODY_SCHEMAS
from app.reports.service import Ingest
from app.scenarios.router import router as scenarios_router
from app.tokens.known import KnownTokens
from app.ui.router import router as ui_router

SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (50_000, 20, 10)


def create_app(settings: Settings | None = None, clock: Clock = utc_now) -> FastAPI:
    """Build the service for the given settings (the environment's by default)."""
    settings = settings or get_settings()
    engine = create_db_engine(settings)
    side_engine = create_db_engine(settings, side=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A thread back from the database waits for the interpreter lock while the serving
        # loop (or a batch's thread) parses and validates bodies; switching threads more often
        # than every 5 ms keeps a transaction's dozen round trips from waiting a full interval
        # each (a group of reports took three times as long under load with the default).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # What start-up built (modules, routes, schemas, the engine) lives as long as the
        # process: frozen, the cycle collector stops walking it. A batch of 500 reports makes
        # some 100,000 objects, which at the default threshold of 700 set off a hundred
        # collections, full ones among them (replay: 31,000 GPU-entries/s before, 40,000 after).
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        yield
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        engine.dispose()
        side_engine.dispose()

    app = FastAPIOffline(
        title="gpucost",
        version=__version__,
        summary="GPU-hour cost accounting from NVML measurements",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.engine = engine
    app.state.side_engine = side_engine
    app.state.readiness = asyncio.Lock()  # one /readyz check at a time (see app.health)
    app.state.database = Database(engine)
    app.state.side_database = Database(side_engine)
    app.state.schema_head = head_revision()
    app.state.known_tokens = KnownTokens(clock)
    # The pool's connections and as many again on overflow (see create_db_engine).
    slots = 2 * settings.db_pool_size
    app.state.ingest = Ingest(
        app.state.database,
        KnownIds(),
        settings=settings,
        clock=clock,
        # Each waiting report holds a slot: a transaction never waits for more than these.
        max_reports=min(settings.max_batch_reports, slots),
    )
    install_error_handlers(app)
    app.add_middleware(
        DatabaseSlots,
        slots=slots,
        wait_seconds=settings.db_pool_timeout_seconds,
    )
    # Outside the slots: a body is read whole before its request waits for one.
    app.add_middleware(
        RequestBody,
        max_body_bytes=settings.max_body_bytes,
        read_seconds=settings.body_read_seconds,
        buffer_bytes=settings.body_buffer_bytes,
    )
    # Outside both: who sends a request is settled before its body is read.
    app.add_middleware(
        Authenticate,
        known=app.state.known_tokens,
        database=app.state.side_database,
        lookups=SIDE_CONNECTIONS - 1,  # one left for /readyz
        wait_seconds=settings.db_pool_timeout_seconds,
    )
    # Outermost: every line logged while serving a request carries its id.
    app.add_middleware(RequestId)
    app.include_router(health_router)
    app.include_router(reports_router, responses=ERROR_RESPONSES)
    app.include_router(jobs_router, responses=ERROR_RESPONSES)
    app.include_router(gpus_router, responses=ERROR_RESPONSES)
    app.include_router(pricing_router, responses=ERROR_RESPONSES)
    app.include_router(costs_router, responses=ERROR_RESPONSES)
    app.include_router(scenarios_router, responses=ERROR_RESPONSES)
    app.include_router(periods_router, responses=ERROR_RESPONSES)
    app.include_router(exports_router, responses=ERROR_RESPONSES)
    app.include_router(audit_router, responses=ERROR_RESPONSES)
    app.include_router(budgets_router, responses=ERROR_RESPONSES)
    app.include_router(ui_router)
    _document_bodies(app)
    install_metrics(app)  # reads the document
    return app


def _document_bodies(app: FastAPI) -> None:
    # The schemas of the bodies that routes read themselves, among the document's components.
    document = app.openapi

    def with_bodies() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = document().setdefault("components", {})
            components.setdefault("schemas", {}).update(BODY_SCHEMAS)
        return app.openapi_schema or document()

    app.openapi = with_bodies  # type: ignore[method-assign]
