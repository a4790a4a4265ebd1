"""`GET /metrics`: the Prometheus exposition of this app's registry."""

from fastapi import APIRouter, Request, Response
from prometheus_client import generate_latest

from app.core.numbers import DecimalJsonRoute

router = APIRouter(tags=["metrics"], route_class=DecimalJsonRoute)
# The classic text format, which every Prometheus version reads (names here are all ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/metrics", response_class=Response)
def get_metrics(request: Request) -> Response:
    """Accounting figures, fleet state and service health in Prometheus' text format."""
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
