"""A model's cost in the layout of the DeepSeek-V3 report's training-cost table."""

import csv
import io
from decimal import ROUND_HALF_EVEN, Decimal

from app.core.units import plain
from app.costs.schemas import ModelCost, PhaseCost
from app.jobs.phases import CANONICAL_PHASES

TITLES = {
    "pre-training": "Pre-Training",
    "context-extension": "Context Extension",
    "post-training": "Post-Training",
}


def _thousands(gpu_hours: Decimal) -> str:
    """`2664000` GPU-hours -> `2664K`; up to three decimals where the figure has them."""
    return plain((gpu_hours / 1000).quantize(Decimal("0.001"), ROUND_HALF_EVEN)) + "K"


def _millions(usd: Decimal) -> str:
    """`5576000` -> `$5.576M`, `10000` -> `$0.01M`: three decimals at most, two at least."""
    text = plain((usd / 1_000_000).quantize(Decimal("0.001"), ROUND_HALF_EVEN))
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}M"


def _columns(cost: ModelCost) -> list[tuple[str, PhaseCost | None]]:
    by_name = {p.phase: p for p in cost.phases}
    columns: list[tuple[str, PhaseCost | None]] = [
        (TITLES[name], by_name.get(name)) for name in CANONICAL_PHASES
    ]
    columns += [(p.phase, p) for p in cost.phases if p.phase not in CANONICAL_PHASES]
    return [*columns, ("Total", cost.total)]


def _gpu_label(cost: ModelCost) -> str:
    models = sorted({r.gpu_model for r in cost.rates})
    if len(models) == 1:
        return f"in {models[0].removeprefix('NVIDIA ')} GPU Hours"
    return "in GPU Hours"


def table_rows(cost: ModelCost) -> list[list[str]]:
    """Header, GPU-hours and USD rows, the V3 report's way."""
    columns = _columns(cost)
    zero = Decimal(0)
    return [
        ["Training Costs", *(title for title, _ in columns)],
        [_gpu_label(cost), *(_thousands(p.gpu_hours if p else zero) for _, p in columns)],
        ["in USD", *(_millions(p.cost_usd if p else zero) for _, p in columns)],
    ]


def rate_note(cost: ModelCost) -> str:
    """The assumption behind the USD row, as the V3 report states its own."""
    parts = []
    for rate in cost.rates:
        source = "the default rate" if rate.source == "default" else "the rate card"
        parts.append(f"{rate.gpu_model} at ${plain(rate.usd_per_gpu_hour)} per GPU hour ({source})")
    return "Priced at " + "; ".join(parts) + "." if parts else "No usage priced."


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def render_csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()
