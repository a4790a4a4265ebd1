"""Timing and counting every HTTP request by its route template, never its raw path."""

import re
import time

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.auth import route_path
from app.core.limits import unanswered_status
from app.metrics.counters import ServiceMetrics

UNMATCHED = "(unmatched)"
REPORT_ROUTE = ("POST", "/v1/reports")


class RouteTemplates:
    """`/v1/jobs/{cluster}/{job_id}` for a request: the route it took, or would have taken."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        # Answered before routing (e.g. 413 by the body limit): match the documented paths.
        for regex, template in self._templates():
            if regex.match(route_path(scope)):
                return template
        return UNMATCHED

    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        if self._compiled is None:
            paths = self.app.openapi().get("paths", {})
            self._compiled = [(compile_path(template)[0], template) for template in paths]
        return self._compiled


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, templates: RouteTemplates) -> None:
        self.app, self.metrics, self.templates = app, metrics, templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            status = status or unanswered_status(scope)
            method, route = scope["method"], self.templates(scope)
            self.metrics.observe_request(
                method=method, route=route, status=status, seconds=time.perf_counter() - started
            )
            # A single report refused before its route ran (422 of the body, 401, 413)
            # is counted here with the rest, from the status it was answered with.
            if (method, route) == REPORT_ROUTE:
                self.metrics.observe_reports([status])
