"""`GET /metrics`: the Prometheus exposition of this app's registry."""

import secrets

from fastapi import APIRouter, Request, Response
from prometheus_client import generate_latest

from app.core.auth import BearerDep
from app.core.errors import ErrorBody, Unauthorized
from app.core.numbers import DecimalJsonRoute

router = APIRouter(tags=["metrics"], route_class=DecimalJsonRoute)
# The classic text format, which every Prometheus version reads (names here are all ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=Response,
    responses={401: {"model": ErrorBody, "description": "GPUCOST_METRICS_TOKEN is set: not it"}},
)
def get_metrics(request: Request, credentials: BearerDep) -> Response:
    """Accounting figures, fleet state and service health in Prometheus' text format."""
    expected = request.app.state.settings.metrics_token
    if expected is not None:
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise Unauthorized("/metrics needs the bearer token of GPUCOST_METRICS_TOKEN")
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
