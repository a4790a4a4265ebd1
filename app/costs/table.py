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


# The V3 report counts GPU-hours in thousands and dollars in millions; a table whose total
# is smaller than one such unit shows its figures in full instead (no total of `0K` or
# `$0.00M`; a small phase beside a large total may still round to one, as in the report).
THOUSAND, MILLION = Decimal(1000), Decimal(1_000_000)


def gpu_hours_text(gpu_hours: Decimal, *, in_thousands: bool) -> str:
    """`2664000` -> `2664K` (three decimals at most); in full, `12.5`."""
    if not in_thousands:
        return plain(gpu_hours.quantize(Decimal("0.001"), ROUND_HALF_EVEN))
    return plain((gpu_hours / THOUSAND).quantize(Decimal("0.001"), ROUND_HALF_EVEN)) + "K"


def usd_text(usd: Decimal, *, in_millions: bool) -> str:
    """`5576000` -> `$5.576M`, `10000` -> `$0.01M` (three decimals at most, two at least);
    in full, `$25.00`."""
    if not in_millions:
        return f"${usd.quantize(Decimal('0.01'), ROUND_HALF_EVEN)}"
    text = plain((usd / MILLION).quantize(Decimal("0.001"), ROUND_HALF_EVEN))
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
    """Header, GPU-hours and USD rows, the V3 report's way, in units that fit the total."""
    columns = _columns(cost)
    zero = Decimal(0)
    in_thousands = cost.total.gpu_hours >= THOUSAND
    in_millions = cost.total.cost_usd >= MILLION
    hours = [p.gpu_hours if p else zero for _, p in columns]
    usd = [p.cost_usd if p else zero for _, p in columns]
    return [
        ["Training Costs", *(title for title, _ in columns)],
        [_gpu_label(cost), *(gpu_hours_text(h, in_thousands=in_thousands) for h in hours)],
        ["in USD", *(usd_text(u, in_millions=in_millions) for u in usd)],
    ]


def figure_rows(cost: ModelCost) -> list[list[str]]:
    """The same table with exact figures in plain numbers, for machines (CSV)."""
    columns = _columns(cost)
    return [
        ["figure", *(title for title, _ in columns)],
        ["gpu_hours", *(plain(p.gpu_hours) if p else "0" for _, p in columns)],
        ["cost_usd", *(plain(p.cost_usd) if p else "0" for _, p in columns)],
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
