"""Process-local service health: requests by route, report outcomes, batch sizes, DB errors.

These count what this process saw since it started (each replica its own), unlike the
accounting figures, which every replica reads from the database.
"""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OUTCOMES = ("accepted", "duplicate", "rejected")
# The HTTP status a report (alone or in a batch) is refused with, and its reason label.
REJECTION_REASONS = {
    401: "unauthenticated",
    403: "forbidden",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    503: "database_unavailable",
}
OTHER_REASON = "other"
# The DB-API exception classes of PEP 249, which SQLAlchemy wraps one for one.
DATABASE_ERRORS = (
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gpucost_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "gpucost_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reports = Counter(
            "gpucost_reports",
            "Collector reports received, alone or in batches, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "gpucost_reports_rejected",
            "Collector reports refused, by reason",
            ["reason"],
            registry=registry,
        )
        # Within the 409s: reports that counted GPU time already counted (app.reports._occupancy).
        self.overlaps = Counter(
            "gpucost_reports_overlapping",
            "Collector reports refused for counting a GPU's time already counted",
            registry=registry,
        )
        self.batch_size = Histogram(
            "gpucost_report_batch_size",
            "Reports per POST /v1/reports:batch request",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.database_errors = Counter(
            "gpucost_database_errors",
            "Errors the database driver raised, by DB-API class",
            ["error"],
            registry=registry,
        )
        # Every label value that can occur, at 0, so rates and alerts have a series from the start.
        for outcome in OUTCOMES:
            self.reports.labels(outcome=outcome)
        for reason in (*REJECTION_REASONS.values(), OTHER_REASON):
            self.rejected.labels(reason=reason)
        for error in DATABASE_ERRORS:
            self.database_errors.labels(error=error)

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(method=method, route=route).observe(seconds)

    def observe_reports(self, statuses: Iterable[int]) -> None:
        """Count reports by the HTTP status each was answered with (201 new, 200 resent)."""
        for status in statuses:
            if status == 201:
                self.reports.labels(outcome="accepted").inc()
            elif status == 200:
                self.reports.labels(outcome="duplicate").inc()
            else:
                self.reports.labels(outcome="rejected").inc()
                self.rejected.labels(reason=REJECTION_REASONS.get(status, OTHER_REASON)).inc()

    def observe_batch(self, statuses: list[int]) -> None:
        self.batch_size.observe(len(statuses))
        self.observe_reports(statuses)

    def observe_database_error(self, error_class: str) -> None:
        error = error_class if error_class in DATABASE_ERRORS else "DatabaseError"
        self.database_errors.labels(error=error).inc()
