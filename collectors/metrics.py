"""The collector's own Prometheus metrics, on a private registry (optional `--metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.samples = Counter("gpucost_collector_samples", "NVML samples taken", registry=r)
        self.gpus = Gauge("gpucost_collector_gpus", "GPUs found at start", registry=r)
        self.gpus_lost = Counter(
            "gpucost_collector_gpus_lost", "GPUs lost (e.g. NVML_ERROR_GPU_IS_LOST)", registry=r
        )
        self.nvml_errors = Counter(
            "gpucost_collector_nvml_errors", "NVML calls that failed", ["error"], registry=r
        )
        self.reports_spooled = Counter(
            "gpucost_collector_reports_spooled", "Reports written to the spool", registry=r
        )
        self.reports_sent = Counter(
            "gpucost_collector_reports_sent",
            "Reports acknowledged by the service",
            ["outcome"],
            registry=r,
        )
        self.reports_dead_lettered = Counter(
            "gpucost_collector_reports_dead_lettered",
            "Reports the service rejected, kept in the dead-letter table",
            registry=r,
        )
        # Within the dead letters: GPU time the service had counted already, from another
        # report (a second collector on this node, or this node's GPUs reported elsewhere).
        self.reports_overlapping = Counter(
            "gpucost_collector_reports_overlapping",
            "Reports the service refused for counting GPU time already counted (dead-lettered)",
            registry=r,
        )
        self.reports_coalesced = Counter(
            "gpucost_collector_reports_coalesced",
            "Spooled reports merged into hour-long ones because the spool was full",
            registry=r,
        )
        self.send_failures = Counter(
            "gpucost_collector_send_failures", "Send attempts that will be retried", registry=r
        )
        self.spool_depth = Gauge(
            "gpucost_collector_spool_depth", "Unsent reports in the spool", registry=r
        )
        self.spool_bytes = Gauge(
            "gpucost_collector_spool_bytes", "Size of the unsent reports", registry=r
        )
        self.oldest_unsent_age = Gauge(
            "gpucost_collector_spool_oldest_unsent_age_seconds",
            "Age of the oldest unsent report (0 when none)",
            registry=r,
        )
        self.last_success = Gauge(
            "gpucost_collector_last_successful_send_timestamp_seconds",
            "Wall-clock time of the last acknowledged send",
            registry=r,
        )
        for outcome in ("accepted", "duplicate"):
            self.reports_sent.labels(outcome=outcome)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)
