"""The custom Prometheus collector that turns a database snapshot into metric families.

What a restatement does. Counters (`_total`) must never go down within a label set, or
`rate()` and `increase()` read the drop as a reset and invent a spike. So:

- Counters carry only what can never be taken back: GPU-seconds, idle GPU-seconds, busy
  GPU-seconds and energy per `cluster` and `gpu_model`. The hourly rollup only ever grows,
  an hour's cluster, GPU model and idleness are fixed when it is reported, and the sums are
  taken in exact integer units, so no regrouping can round one of them down.
- Everything a restatement can move is a gauge of the current truth, labelled `cluster`,
  `model`, `phase`, `team`, `gpu_model`: attributed usage (a re-labelled job moves all of its
  past usage to its new labels at once, and usage of an unregistered job moves out of
  `(unattributed)` when it is registered) and cost (a rate added for a past period re-prices
  it, up or down). A restatement shows as a step in these gauges, the same step the REST API
  and the exports show; `delta()` over a window containing it includes it.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from time import perf_counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from app.metrics._snapshot import LABEL_NAMES, Snapshot, Usage

FLEET_LABELS = ("cluster", "gpu_model")


# Counter, help, integer field of `Metered`, and the power of ten that makes it a base unit.
COUNTERS = (
    ("gpucost_gpu_seconds", "GPU-seconds reported, by jobs and idle (paid capacity)", "gpu_us", -6),
    ("gpucost_idle_gpu_seconds", "GPU-seconds reported with no job on the GPU", "idle_us", -6),
    ("gpucost_busy_gpu_seconds", "GPU-seconds weighted by utilisation", "busy_us", -6),
    ("gpucost_energy_joules", "Energy the GPUs reported", "energy_mj", -3),
)


def _metered_families(snapshot: Snapshot) -> Iterator[Metric]:
    for name, documentation, field, exponent in COUNTERS:
        family = CounterMetricFamily(name, documentation, labels=FLEET_LABELS)
        for key, metered in sorted(snapshot.metered.items()):
            family.add_metric(key, float(Decimal(getattr(metered, field)).scaleb(exponent)))
        yield family


def _attributed_families(snapshot: Snapshot) -> Iterator[Metric]:
    gauges: list[tuple[str, str, Callable[[Usage], Decimal]]] = [
        (
            "gpucost_attributed_gpu_seconds",
            "GPU-seconds to date under the job labels as they are now",
            lambda u: u.gpu_seconds,
        ),
        (
            "gpucost_attributed_busy_gpu_seconds",
            "Utilisation-weighted GPU-seconds to date under the job labels as they are now",
            lambda u: u.busy_gpu_seconds,
        ),
        (
            "gpucost_attributed_energy_joules",
            "Energy to date under the job labels as they are now",
            lambda u: u.energy_joules,
        ),
        (
            "gpucost_cost_usd",
            "Cost to date in USD at the rates and job labels as they are now (as GET /v1/costs)",
            lambda u: u.cost_usd,
        ),
    ]
    for name, documentation, figure in gauges:
        family = GaugeMetricFamily(name, documentation, labels=LABEL_NAMES)
        for attribution, usage in sorted(snapshot.usage.items()):
            family.add_metric(attribution, float(figure(usage)))
        yield family
    month = GaugeMetricFamily(
        "gpucost_month_to_date_cost_usd",
        "Cost in USD of the current UTC month so far, at the rates and labels as they are now",
        labels=LABEL_NAMES,
    )
    for attribution, cost in sorted(snapshot.month_cost_usd.items()):
        month.add_metric(attribution, float(cost))
    yield month


# A node silent for longer is taken as retired: no longer counted as silent (GET /v1/nodes
# still lists it).
RETIRED_AFTER_S = 7 * 86400


def _fleet_families(snapshot: Snapshot, *, now: datetime, window_s: int) -> Iterator[Metric]:
    # Per cluster, never per node: a series per node name would grow with every name a
    # collector ever sent. Which nodes are silent: GET /v1/nodes?silent_for=...
    nodes: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    gpus: dict[tuple[str, str], int] = defaultdict(int)
    for node in snapshot.nodes:
        seconds = (now - node.last_report_at).total_seconds()
        reporting = seconds <= window_s
        nodes[node.cluster] += reporting
        silent[node.cluster] += not reporting and seconds <= RETIRED_AFTER_S
        for gpu_model, count in node.gpus.items():
            gpus[(node.cluster, gpu_model)] += count if reporting else 0
    yield _gauge(
        "gpucost_nodes_reporting",
        f"Nodes that reported within the last {window_s} s",
        ("cluster",),
        [((cluster,), count) for cluster, count in sorted(nodes.items())],
    )
    yield _gauge(
        "gpucost_nodes_silent",
        f"Nodes that reported within the last {RETIRED_AFTER_S} s, but not the last {window_s} s",
        ("cluster",),
        [((cluster,), count) for cluster, count in sorted(silent.items())],
    )
    yield _gauge(
        "gpucost_gpus_reporting",
        f"GPUs on nodes that reported within the last {window_s} s",
        FLEET_LABELS,
        sorted(gpus.items()),
    )
    yield _gauge(
        "gpucost_running_jobs",
        f"Jobs with usage ending within {window_s} s of the last database read",
        ("cluster", "model"),
        sorted(snapshot.running_jobs.items()),
    )


def _gauge(
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    samples: Iterable[tuple[tuple[str, ...], float]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


class AccountingCollector(Collector):
    """Reads (through a cache) the database snapshot on each scrape and exposes it."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], *, clock: Callable[[], datetime], window_s: int
    ) -> None:
        self._snapshot, self._clock, self._window_s = snapshot, clock, window_s

    def collect(self) -> Iterator[Metric]:
        started = perf_counter()
        try:
            snapshot = self._snapshot()
        except SQLAlchemyError:
            # The service's own metrics still answer; this says why the figures are missing.
            yield _gauge("gpucost_metrics_database_up", _UP_HELP, (), [((), 0)])
            return
        yield _gauge("gpucost_metrics_database_up", _UP_HELP, (), [((), 1)])
        now = self._clock()
        yield _gauge(
            "gpucost_metrics_snapshot_age_seconds",
            "Age of the database read these figures come from (cached for a few seconds)",
            (),
            [((), max(0.0, (now - snapshot.read_at).total_seconds()))],
        )
        yield _gauge(
            "gpucost_metrics_read_seconds",
            "Time this scrape waited for the accounting figures (cache or database)",
            (),
            [((), perf_counter() - started)],
        )
        yield from _metered_families(snapshot)
        yield from _attributed_families(snapshot)
        yield from _fleet_families(snapshot, now=now, window_s=self._window_s)


_UP_HELP = "1 if the accounting figures could be read from the database, else 0"
