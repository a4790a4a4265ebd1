"""`POST /v1/reports` and `POST /v1/reports:batch`: what collectors send."""

from typing import Any

from fastapi import APIRouter, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.core.auth import CollectorAuth, Principal
from app.core.clock import Clock, ClockDep
from app.core.config import Settings
from app.core.db import SessionDep, SettingsDep, commit_with_retry
from app.core.errors import AppError, ErrorBody, InvalidInput, validation_body
from app.metrics.deps import ServiceMetricsDep
from app.reports.schemas import BatchIn, BatchItemOut, BatchOut, ReportIn, ReportOutcome
from app.reports.service import Stored, check_report, ingest_report

router = APIRouter(prefix="/v1", tags=["reports"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Not a collector token, or another cluster's"},
    409: {"model": ErrorBody, "description": "Same (cluster, node, seq), different content"},
}


def _store(
    report: ReportIn, *, principal: Principal, session: Session, settings: Settings, clock: Clock
) -> Stored:
    principal.require_cluster(report.cluster)
    check_report(report, settings=settings, now=clock())
    return commit_with_retry(
        session, lambda: ingest_report(session, report=report, received_at=clock())
    )


@router.post(
    "/reports",
    status_code=201,
    responses={
        200: {"description": "Already stored: counted once", "model": ReportOutcome},
        **_ERRORS,
    },
)
def post_report(
    report: ReportIn,
    principal: CollectorAuth,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    response: Response,
) -> ReportOutcome:
    """Store one collector report; 201 when new, 200 with `duplicate: true` for a resend."""
    stored = _store(report, principal=principal, session=session, settings=settings, clock=clock)
    if stored.duplicate:
        response.status_code = 200
    return ReportOutcome(
        status="duplicate" if stored.duplicate else "accepted",
        duplicate=stored.duplicate,
        cluster=report.cluster,
        node=report.node,
        seq=report.seq,
        report_id=stored.report_id,
    )


@router.post("/reports:batch", responses=_ERRORS)
def post_report_batch(
    batch: BatchIn,
    principal: CollectorAuth,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    metrics: ServiceMetricsDep,
) -> BatchOut:
    """Store many reports, each on its own: accepted, duplicate or rejected, in order."""
    if len(batch.reports) > settings.max_batch_reports:
        raise InvalidInput(
            "reports",
            f"{len(batch.reports)} reports exceed the maximum of {settings.max_batch_reports}",
        )
    results = []
    for index, raw in enumerate(batch.reports):
        seq = raw.get("seq")
        item = BatchItemOut(
            index=index,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            status="rejected",
            http_status=422,
        )
        try:
            report = ReportIn.model_validate(raw)
            stored = _store(
                report, principal=principal, session=session, settings=settings, clock=clock
            )
        except ValidationError as exc:
            item.error = validation_body(exc.errors())
        except AppError as exc:
            item.http_status, item.error = exc.status, exc.body()
        else:
            item.report_id = stored.report_id
            item.status = "duplicate" if stored.duplicate else "accepted"
            item.http_status = 200 if stored.duplicate else 201
        results.append(item)
    metrics.observe_batch([r.http_status for r in results])
    return BatchOut(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        results=results,
    )
