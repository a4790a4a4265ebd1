"""`POST /v1/reports` and `POST /v1/reports:batch`: what collectors send."""

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.core.auth import CollectorAuth, Principal
from app.core.errors import AppError, ErrorBody, InvalidInput, validation_body
from app.core.numbers import (
    DecimalJsonRoute,
    body_errors,
    json_body,
    read_body,
    read_exact_json,
    read_json,
)
from app.metrics.counters import ServiceMetrics
from app.metrics.deps import ServiceMetricsDep
from app.reports._occupancy import Overlap
from app.reports.schemas import (
    BATCH_REQUEST_BODY,
    REPORT_REQUEST_BODY,
    BatchIn,
    BatchItemOut,
    BatchOut,
    ReportIn,
    ReportOutcome,
    ValidBatchIn,
)
from app.reports.service import Ingest

router = APIRouter(prefix="/v1", tags=["reports"], route_class=DecimalJsonRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Not a collector token, or another cluster's"},
    409: {
        "model": ErrorBody,
        "description": "Same (cluster, node, seq), different content; or GPU time already "
        "counted (`Overlap`)",
    },
}


@router.post(
    "/reports",
    status_code=201,
    response_model=ReportOutcome,
    responses={
        200: {"description": "Already stored: counted once", "model": ReportOutcome},
        **_ERRORS,
    },
    openapi_extra=REPORT_REQUEST_BODY,
)
async def post_report(request: Request, principal: CollectorAuth) -> Response:
    """Store one collector report; 201 when new, 200 with `duplicate: true` for a resend."""
    # The busiest route, kept lean: the body read from its JSON in one pass, the report
    # waiting for its transaction on the serving loop (app.reports._group_commit), the answer
    # written once.
    state = request.app.state
    report = read_body(ReportIn, await json_body(request))
    stored = await state.ingest.store_report(principal, report)
    if isinstance(stored, AppError):
        if isinstance(stored, Overlap):
            state.service_metrics.overlaps.inc()
        raise stored
    outcome = ReportOutcome(
        status="duplicate" if stored.duplicate else "accepted",
        duplicate=stored.duplicate,
        cluster=report.cluster,
        node=report.node,
        seq=report.seq,
        report_id=stored.report_id,
    )
    return Response(
        outcome.model_dump_json(),
        status_code=200 if stored.duplicate else 201,
        media_type="application/json",
    )


@router.post("/reports:batch", responses=_ERRORS, openapi_extra=BATCH_REQUEST_BODY)
async def post_report_batch(
    request: Request, principal: CollectorAuth, metrics: ServiceMetricsDep
) -> BatchOut:
    """Store many reports, each on its own: accepted, duplicate or rejected, in order."""
    # The body is read here, after the token is checked, and validated in one pass.
    body = await json_body(request)
    ingest = request.app.state.ingest
    return await run_in_threadpool(_store_batch, body, principal, ingest, metrics)


def _store_batch(
    body: bytes, principal: Principal, ingest: Ingest, metrics: ServiceMetrics
) -> BatchOut:
    reports = _parse_batch(body)
    most = ingest.settings.max_batch_reports
    if len(reports) > most:
        raise InvalidInput("reports", f"{len(reports)} reports exceed the maximum of {most}")
    results: list[BatchItemOut] = []
    parsed: list[ReportIn | None] = []
    for index, raw in enumerate(reports):
        seq = raw.seq if isinstance(raw, ReportIn) else raw.get("seq")
        item = BatchItemOut(
            index=index,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            status="rejected",
            http_status=422,
        )
        results.append(item)
        try:
            report = raw if isinstance(raw, ReportIn) else ReportIn.model_validate(raw)
        except ValidationError as exc:
            item.error = validation_body(exc.errors())
            parsed.append(None)
        else:
            item.seq = report.seq
            parsed.append(report)
    outcomes = ingest.store_batch(principal, parsed)
    for item, outcome in zip(results, outcomes, strict=True):
        if outcome is None:
            continue
        if isinstance(outcome, AppError):
            item.http_status, item.error = outcome.status, outcome.body()
            if isinstance(outcome, Overlap):
                metrics.overlaps.inc()
        else:
            item.report_id = outcome.report_id
            item.status = "duplicate" if outcome.duplicate else "accepted"
            item.http_status = 200 if outcome.duplicate else 201
    metrics.observe_batch([r.http_status for r in results])
    return BatchOut(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        results=results,
    )


def _parse_batch(body: bytes) -> Sequence[ReportIn | dict[str, Any]]:
    """The batch's reports. When all are valid, as they nearly always are, they are read in
    one pass; otherwise each is returned raw, to be validated on its own, so that a bad report
    rejects only itself."""
    valid = read_exact_json(ValidBatchIn, body)  # as a collector's batches nearly always are
    if valid is not None:
        return valid.reports
    raw = read_json(body)
    try:
        return ValidBatchIn.model_validate(raw).reports
    except ValidationError:
        pass
    try:
        return BatchIn.model_validate(raw).reports
    except ValidationError as exc:
        raise body_errors(exc) from None
