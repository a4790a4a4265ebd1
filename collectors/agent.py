"""The collector's loop: sample, attribute, aggregate, spool, send; resume after a crash."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

from collectors.aggregate import OpenInterval
from collectors.attribution import Attribution, Attributor
from collectors.clock import NS_PER_S, Clock
from collectors.config import Config
from collectors.metrics import CollectorMetrics
from collectors.sampling import Sample, Sampler
from collectors.sender import Sender
from collectors.spool import Spool
from collectors.spool_merge import merge_oldest

logger = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        *,
        config: Config,
        clock: Clock,
        sampler: Sampler,
        attributor: Attributor,
        spool: Spool,
        sender: Sender | None,
        metrics: CollectorMetrics,
    ) -> None:
        self.config, self.clock, self.sampler, self.attributor = config, clock, sampler, attributor
        self.spool, self.sender, self.metrics = spool, sender, metrics
        self._known_jobs: set[str] = set()
        self.interval: OpenInterval | None = None
        self._waiting_for_wall_clock = False

    def _observe(self) -> tuple[Sample, Attribution]:
        sample = self.sampler.sample()
        attribution = self.attributor.attribute(sample.gpus)
        for job_id, metadata in attribution.metadata.items():
            if job_id not in self._known_jobs:
                self.spool.add_job(job_id, metadata)
                self._known_jobs.add(job_id)
        return sample, attribution

    def start(self) -> None:
        """Initialise NVML, take the first sample, and pick up an interval a crash left open."""
        self.sampler.start()
        sample, attribution = self._observe()
        saved = self.spool.load_state()
        if saved is None:
            self.interval = OpenInterval.begin(sample, attribution, self.clock.boot_id())
            self.spool.save_state(self.interval.to_json())
        else:
            interval = OpenInterval.from_json(saved)
            gap_s = (sample.mono_ns - interval.last_mono_ns) / NS_PER_S
            if self._carry_over(interval, sample, attribution):
                logger.info("resumed the open interval after %.1f s without a sample", gap_s)

    def tick(self) -> None:
        """One sample: attribute the time since the last one, close the report when due."""
        assert self.interval is not None
        sample, attribution = self._observe()
        self._carry_over(self.interval, sample, attribution)

    def _carry_over(self, interval: OpenInterval, sample: Sample, attribution: Attribution) -> bool:
        """Attribute the time since `interval`'s last sample to that sample's state, unless the
        gap is unknowable (a reboot, or longer than max_gap): then close it and start afresh."""
        boot_id = self.clock.boot_id()
        gap_s = (sample.mono_ns - interval.last_mono_ns) / NS_PER_S
        if interval.boot_id == boot_id and 0 <= gap_s <= self.config.max_gap:
            interval.advance(sample, attribution)
            self.interval = interval
            self._after_sample()
            return True
        logger.warning(
            "not counting %s without a sample",
            "the time up to a reboot" if interval.boot_id != boot_id else f"{gap_s:.0f} s",
        )
        dated = interval.dated() if interval.duration_ms > 0 else None
        body = interval.report() if dated is not None else None
        self.interval = OpenInterval.begin(sample, attribution, boot_id)
        self.interval.reported = interval.reported_after()
        # The old interval's report and the new interval go to the spool in one transaction.
        if body is not None and body["gpus"]:
            self._spool_report(body, state=self.interval.to_json())
        else:
            self.spool.save_state(self.interval.to_json())
        return False

    def _after_sample(self) -> None:
        assert self.interval is not None
        elapsed_s = (self.interval.last_mono_ns - self.interval.start_mono_ns) / NS_PER_S
        if elapsed_s >= self.config.report_interval - self.config.sample_interval / 2:
            self.close_interval()
        else:
            self.spool.save_state(self.interval.to_json())

    def close_interval(self) -> None:
        """Spool the open interval as a report (atomically with the next interval's start);
        keep it open while the wall clock, stepped back, is before the last report's end."""
        assert self.interval is not None
        if self.interval.dated() is None:
            if not self._waiting_for_wall_clock:
                logger.warning(
                    "the wall clock stepped back into time already reported: the "
                    "report waits until the clock is past it"
                )
            self._waiting_for_wall_clock = True
            self.spool.save_state(self.interval.to_json())
            return
        self._waiting_for_wall_clock = False
        body = self.interval.report()
        self.interval.restart()
        if body["gpus"]:
            self._spool_report(body, state=self.interval.to_json())
        else:
            self.spool.save_state(self.interval.to_json())
        merge_oldest(
            self.spool,
            max_bytes=self.config.spool_max_bytes,
            wall_ns=self.clock.wall_ns(),
            metrics=self.metrics,
        )

    def _spool_report(self, body: dict[str, Any], *, state: dict[str, Any] | None) -> None:
        full = {"cluster": self.config.cluster, "node": self.config.node, **body}
        self.spool.add_report(full, wall_ns=self.clock.wall_ns(), state=state)
        self.metrics.reports_spooled.inc()

    def update_spool_metrics(self) -> None:
        self.metrics.spool_depth.set(self.spool.depth())
        self.metrics.spool_bytes.set(self.spool.size_bytes())
        oldest = self.spool.oldest_spooled_wall_ns()
        age = 0.0 if oldest is None else max(0.0, (self.clock.wall_ns() - oldest) / NS_PER_S)
        self.metrics.oldest_unsent_age.set(age)

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set (SIGTERM) or the clock reaches `run_until`; then shut down."""
        assert self.interval is not None
        step_ns = int(self.config.sample_interval * NS_PER_S)
        until_ns = None if self.config.run_until is None else int(self.config.run_until * NS_PER_S)
        next_tick = self.interval.last_mono_ns + step_ns
        while until_ns is None or self.clock.monotonic_ns() < until_ns:
            if self.sender is not None:
                self.sender.send_pending()
            self.update_spool_metrics()
            if until_ns is not None:
                next_tick = min(next_tick, until_ns)
            wait_s = max(0, next_tick - self.clock.monotonic_ns()) / NS_PER_S
            if self.clock.wait(wait_s, stop):
                break
            self.tick()
            next_tick = max(next_tick + step_ns, self.clock.monotonic_ns())
        self.shutdown()

    def shutdown(self) -> None:
        """Close the partial interval, spool it, try one last send."""
        if self.interval is not None:
            self.tick()
            # Under a millisecond stays open: the next start resumes it.
            if self.interval.duration_ms > 0:
                self.close_interval()
        if self.sender is not None:
            self.sender.next_attempt_mono_ns = 0
            self.sender.send_pending()
        self.update_spool_metrics()
        self.sampler.shutdown()


def preview(sampler: Sampler, attributor: Attributor, *, interval_s: float) -> dict[str, Any]:
    """`once`: one sample, and the report it would give if held for one sample interval."""
    sampler.start()
    sample = sampler.sample()
    attribution = attributor.attribute(sample.gpus)
    interval = OpenInterval.begin(sample, attribution, "preview")
    step = int(interval_s * NS_PER_S)
    later = replace(
        sample,
        mono_ns=sample.mono_ns + step,
        wall_ns=sample.wall_ns + step,
        gpus=tuple(replace(g, energy_mj=None) for g in sample.gpus),
    )
    interval.advance(later, attribution)
    sampler.shutdown()
    return {**interval.report(), "job_metadata": attribution.metadata}
