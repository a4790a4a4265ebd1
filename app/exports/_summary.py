"""The plain finance summary: per billing month and what was charged, in plain columns."""

from collections import defaultdict
from collections.abc import Iterable, Iterator

from app.billing.lines import Line
from app.core.calendar import month_of
from app.core.units import Carried
from app.exports.csvout import micro, nano, record, text

SUMMARY_COLUMNS = (
    "billing_month",
    "charge_class",
    "charge_month",
    "team",
    "model",
    "phase",
    "cluster",
    "gpu_model",
    "gpu_hours",
    "usd_per_gpu_hour",
    "cost_usd",
    "energy_kwh",
)


def cost_rows(lines: Iterable[tuple[str, Line]]) -> Iterator[str]:
    """Lines summed exactly per billing month, class, charge month, labels, cluster, GPU and
    rate; figures carried from row to row within a billing month (`units.Carried`), so a
    month's rows add up to its exact total as shown."""
    sums: dict[tuple[str, str, str, str, str, str, str, str, int], list[int]] = defaultdict(
        lambda: [0, 0, 0]
    )
    for month, line in lines:
        key = (month, line.kind, month_of(line.charge_start), line.team, line.model,
               line.phase, line.cluster, line.gpu_model, line.rate)  # fmt: skip
        figures = sums[key]
        figures[0] += line.gpu_parts
        figures[1] += line.cost_parts
        figures[2] += line.kwh_parts
    carried: dict[str, tuple[Carried, Carried, Carried]] = defaultdict(
        lambda: (Carried(), Carried(), Carried())
    )
    for key, figures in sorted(sums.items()):
        month, kind, charged, team, model, phase, cluster, gpu_model, rate = key
        hours, cost, energy = (
            carry.nano(figure) for carry, figure in zip(carried[month], figures, strict=True)
        )
        yield record([
            month, kind, charged, text(team), text(model), text(phase), text(cluster),
            text(gpu_model), nano(hours), micro(rate), nano(cost), nano(energy),
        ])  # fmt: skip
