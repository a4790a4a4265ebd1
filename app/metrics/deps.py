"""The app's service metrics, for routes that count what they do."""

from typing import Annotated

from fastapi import Depends, Request

from app.metrics.counters import ServiceMetrics


async def _service_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.service_metrics
    return metrics


ServiceMetricsDep = Annotated[ServiceMetrics, Depends(_service_metrics)]
