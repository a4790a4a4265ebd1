"""Delivery of spooled reports: oldest first, in batches, with exponential back-off and jitter.

A report leaves the spool only when the service answers accepted or duplicate, or when it is
rejected for good (a 4xx other than 429, 409 included), in which case it moves to the
dead-letter table. A refused token (401/403) or a wrong URL (404/405) is the collector's
problem, not the report's: those are retried, never dead-lettered.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from urllib.parse import quote

import httpx

from collectors.clock import NS_PER_S, Clock
from collectors.metrics import CollectorMetrics
from collectors.spool import Spool, SpooledReport

logger = logging.getLogger(__name__)

# Answers that may pass when sent again as they are: a busy or restarting service.
_TRANSIENT = {408, 425, 429}
# The sender also waits out refusals an operator can fix (a token, a URL): its reports are
# spooled, so nothing is lost while it does.
_RETRY_STATUSES = {401, 403, 404, 405} | _TRANSIENT


# The service keeps an idle connection 75 s (`gpucost serve`): a collector reporting every
# minute keeps its one connection across reports, and lets it go a little before the service
# would, so that it never sends on a connection the service is closing.
KEEP_CONNECTION_S = 70.0


def service_client(timeout: float) -> httpx.Client:
    """The collector's HTTP client: its connection to the service kept between reports."""
    limits = httpx.Limits(max_keepalive_connections=1, keepalive_expiry=KEEP_CONNECTION_S)
    return httpx.Client(timeout=timeout, limits=limits)


def transient(status: int) -> bool:
    """A server error or an answer to send the same again later."""
    return status >= 500 or status in _TRANSIENT


def retryable(status: int) -> bool:
    return transient(status) or status in _RETRY_STATUSES


# The service's name for a refusal of GPU time already counted (its answer's "error").
OVERLAP = "Overlap"


def _error_text(response: httpx.Response) -> str:
    return response.text[:500] or response.reason_phrase


def _refusal(response: httpx.Response) -> object:
    """The service's error answer, if the response is one (a proxy's page is not)."""
    if response.status_code < 400:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}


class Backoff:
    """Exponential back-off with jitter: the n-th failure waits in [d/2, d], d = base·2^(n-1)."""

    def __init__(self, *, rng: random.Random, base_s: float = 1.0, max_s: float = 300.0) -> None:
        self._rng, self._base_s, self._max_s = rng, base_s, max_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self._max_s, self._base_s * 2 ** (self.failures - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Sender:
    def __init__(
        self,
        *,
        spool: Spool,
        client: httpx.Client,
        server: str,
        token: Callable[[], str],
        cluster: str,
        clock: Clock,
        backoff: Backoff,
        metrics: CollectorMetrics,
        batch_size: int = 500,
        register_jobs: bool = True,
    ) -> None:
        self._spool, self._client, self._server = spool, client, server.rstrip("/")
        self._token, self._cluster, self._clock = token, cluster, clock
        self._backoff, self._metrics = backoff, metrics
        self.batch_size = batch_size
        self.register_jobs = register_jobs
        self.next_attempt_mono_ns = 0

    def due(self) -> bool:
        return self._clock.monotonic_ns() >= self.next_attempt_mono_ns

    def _headers(self) -> dict[str, str] | None:
        """The token is read for every request, so that it can be rotated in place."""
        try:
            return {"Authorization": f"Bearer {self._token()}"}
        except Exception as error:  # whatever the token source raises, retry later
            logger.error("cannot read the token: %s", error)
            return None

    def send_pending(self, *, max_batches: int = 20) -> bool:
        """Send the backlog if the back-off allows; True when the spool is empty after."""
        if not self.due():
            return False
        for _ in range(max_batches):
            reports = self._spool.pending(self.batch_size)
            if not reports:
                break
            if not self._send(reports):
                delay = self._backoff.next_delay()
                self.next_attempt_mono_ns = self._clock.monotonic_ns() + int(delay * NS_PER_S)
                self._metrics.send_failures.inc()
                return False
        self._backoff.reset()
        if self.register_jobs:
            self._register_jobs()
        return self._spool.depth() == 0

    def _send(self, reports: list[SpooledReport]) -> bool:
        """One request; False when it must be retried later."""
        headers = self._headers()
        if headers is None:
            return False
        seqs = [r.seq for r in reports]
        self._spool.mark_attempted(seqs)
        # The spooled JSON goes as it is: a backlog of thousands of reports is neither parsed
        # nor encoded again.
        if len(reports) == 1:
            path, body = "/v1/reports", reports[0].text
        else:
            texts = ",".join(r.text for r in reports)
            path, body = "/v1/reports:batch", f'{{"reports":[{texts}]}}'
        headers["Content-Type"] = "application/json"
        try:
            response = self._client.post(self._server + path, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            # This attempt never reached the service; an earlier one may have.
            self._spool.mark_attempted([r.seq for r in reports if not r.attempted], False)
            logger.warning("cannot reach %s: %s", self._server, error)
            return False
        except httpx.HTTPError as error:
            logger.warning("sending %d reports failed: %s", len(reports), error)
            return False
        if len(reports) > 1 and response.status_code in (413, 422):
            self.batch_size = max(1, len(reports) // 2)
            logger.warning(
                "batch refused (%d); batches now %d", response.status_code, self.batch_size
            )
            return True
        if retryable(response.status_code):
            logger.warning("service answered %d: %s", response.status_code, _error_text(response))
            return False
        try:
            return self._settle_response(reports, response)
        except (ValueError, KeyError, TypeError) as error:
            logger.error("unreadable answer from the service (%s); retrying", error)
            return False

    def _settle_response(self, reports: list[SpooledReport], response: httpx.Response) -> bool:
        """Apply the service's answer: acknowledged reports leave in one transaction."""
        if len(reports) == 1:
            status = response.status_code
            duplicate = status == 200 and bool(response.json().get("duplicate"))
            outcomes = [(reports[0], status, duplicate, _error_text(response), _refusal(response))]
        else:
            results = response.json()["results"]
            if [r["seq"] for r in results] != [r.seq for r in reports]:
                logger.error("batch answer does not match the batch sent; retrying")
                return False
            outcomes = [
                (
                    report,
                    int(r["http_status"]),
                    r["status"] == "duplicate",
                    str(r.get("error")),
                    r.get("error") or {},
                )
                for report, r in zip(reports, results, strict=True)
            ]
        acknowledged = [report.seq for report, status, *_ in outcomes if 200 <= status < 300]
        self._spool.acknowledge(acknowledged)
        for report, status, duplicate, error, refusal in outcomes:
            if 200 <= status < 300:
                outcome = "duplicate" if duplicate else "accepted"
                self._metrics.reports_sent.labels(outcome=outcome).inc()
            elif not retryable(status):
                self._spool.dead_letter(
                    report.seq, http_status=status, error=error, wall_ns=self._clock.wall_ns()
                )
                self._metrics.reports_dead_lettered.inc()
                if isinstance(refusal, dict) and refusal.get("error") == OVERLAP:
                    self._metrics.reports_overlapping.inc()
                    logger.error(
                        "report seq %d counts GPU time the service has already counted (is "
                        "another collector reporting these GPUs?), dead-lettered: %s",
                        report.seq,
                        error,
                    )
                else:
                    logger.error(
                        "report seq %d rejected (%d), dead-lettered: %s", report.seq, status, error
                    )
        if acknowledged:
            self._metrics.last_success.set(self._clock.wall_ns() / NS_PER_S)
        return all(200 <= status < 300 or not retryable(status) for _, status, *_ in outcomes)

    def _register_jobs(self) -> None:
        for job_id, body in self._spool.pending_jobs():
            path = f"/v1/jobs/{quote(self._cluster, safe='')}/{quote(job_id, safe='')}"
            headers = self._headers()
            if headers is None:
                return
            try:
                response = self._client.put(self._server + path, json=body, headers=headers)
            except httpx.HTTPError:
                return
            if response.is_success:
                self._spool.set_job_state(job_id, "registered")
            elif response.status_code in (401, 403):
                logger.warning("the token may not register job metadata; not trying again")
                self.register_jobs = False
                return
            elif retryable(response.status_code):
                return
            else:
                self._spool.set_job_state(job_id, "rejected")
                logger.error("job %s metadata rejected: %s", job_id, _error_text(response))
