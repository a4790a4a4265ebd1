"""`GET /metrics`: the Prometheus exposition of this app's registry."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import generate_latest

from app.core.errors import ErrorBody, Unauthorized
from app.core.numbers import DecimalJsonRoute

router = APIRouter(tags=["metrics"], route_class=DecimalJsonRoute)
# The classic text format, which every Prometheus version reads (names here are all ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Not an API token: the one of GPUCOST_METRICS_TOKEN, when it is set.
_metrics_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="MetricsToken",
    description="GPUCOST_METRICS_TOKEN, when the service sets one (else none is needed)",
)
MetricsBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)]


@router.get(
    "/metrics",
    response_class=Response,
    responses={401: {"model": ErrorBody, "description": "GPUCOST_METRICS_TOKEN is set: not it"}},
)
def get_metrics(request: Request, credentials: MetricsBearer) -> Response:
    """Accounting figures, fleet state and service health in Prometheus' text format."""
    expected = request.app.state.settings.metrics_token
    if expected is not None:
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise Unauthorized("/metrics needs the bearer token of GPUCOST_METRICS_TOKEN")
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
