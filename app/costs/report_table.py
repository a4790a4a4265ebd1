"""A model's cost in the layout of the DeepSeek-V3 report's training-cost table."""

import csv
import io
from decimal import ROUND_HALF_EVEN, Decimal

from app.core.labels import CANONICAL_PHASES
from app.core.units import plain
from app.costs.schemas import ModelCost, PhaseCost

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


def gpu_name(cost: ModelCost) -> str | None:
    """The one GPU model priced, as the V3 report names it (`H800`); None for several."""
    models = sorted({r.gpu_model for r in cost.rates})
    return models[0].removeprefix("NVIDIA ") if len(models) == 1 else None


def _gpu_label(cost: ModelCost) -> str:
    name = gpu_name(cost)
    return f"in {name} GPU Hours" if name else "in GPU Hours"


def table_rows(cost: ModelCost) -> list[list[str]]:
    """Header, GPU-hours and USD rows, the V3 report's way, in units that fit the total;
    then, when some job carries tokens, the efficiency rows ("-" where a column has none)."""
    columns = _columns(cost)
    zero = Decimal(0)
    in_thousands = cost.total.gpu_hours >= THOUSAND
    in_millions = cost.total.cost_usd >= MILLION
    hours = [p.gpu_hours if p else zero for _, p in columns]
    usd = [p.cost_usd if p else zero for _, p in columns]
    rows = [
        ["Training Costs", *(title for title, _ in columns)],
        [_gpu_label(cost), *(gpu_hours_text(h, in_thousands=in_thousands) for h in hours)],
        ["in USD", *(usd_text(u, in_millions=in_millions) for u in usd)],
    ]
    return rows if cost.total.tokens is None else rows + _efficiency_rows(columns)


def comparison_rows(costs: list[tuple[str, ModelCost]]) -> list[list[str]]:
    """One model's table under several prices side by side: its GPU-hours once (no price
    changes them), then a USD row per named pricing, each in units that fit its own total;
    with tokens, GPU-hours per trillion once and USD per million tokens per pricing."""
    first = costs[0][1]
    titles = [title for title, _ in _columns(first)]
    rows = table_rows(first)[:2]  # header and GPU-hours
    efficiency = first.total.tokens is not None
    usd_rows, per_token_rows = [], []
    for name, cost in costs:
        if [title for title, _ in _columns(cost)] != titles:  # not one model's usage
            raise ValueError(f"{name}: phases {titles} expected")
        own = table_rows(cost)
        usd_rows.append([f"in USD, {name}", *own[2][1:]])
        if efficiency:
            per_token_rows.append([f"USD per Million Tokens, {name}", *own[4][1:]])
    rows += usd_rows
    if efficiency:
        rows += [table_rows(first)[3], *per_token_rows]
    return rows


def _efficiency_rows(columns: list[tuple[str, PhaseCost | None]]) -> list[list[str]]:
    per_trillion = [p.gpu_hours_per_trillion_tokens if p else None for _, p in columns]
    per_million = [p.usd_per_million_tokens if p else None for _, p in columns]
    return [
        [
            "GPU Hours per Trillion Tokens",
            # Each in its own unit: a small figure beside a large one would read 0K.
            *(
                "-" if h is None else gpu_hours_text(h, in_thousands=h >= THOUSAND)
                for h in per_trillion
            ),
        ],
        [
            "USD per Million Tokens",
            *("-" if u is None else usd_per_token_text(u) for u in per_million),
        ],
    ]


def usd_per_token_text(usd: Decimal) -> str:
    """`0.36` -> `$0.36`, `0.00354` -> `$0.0035` (four decimals at most, two at least); a
    figure that would show as zero, in full: `0.000001333` -> `$0.000001333`."""
    four = usd.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
    text = plain(four if four or not usd else usd)
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def tokens_text(tokens: int) -> str:
    """`14_800_000_000_000` -> `14.8T` (in the largest of T, B, M, K that fits; three
    decimals at most), below a thousand in full."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        # Rounded first, so that 999,999,600,000 is 1T, not 1000B.
        figure = (Decimal(tokens) / size).quantize(Decimal("0.001"), ROUND_HALF_EVEN)
        if figure >= 1:
            return plain(figure) + unit
    return str(tokens)


def efficiency_note(cost: ModelCost, *, phase: str, stated: Decimal) -> str:
    """The GPU-hours per trillion tokens measured in `phase`, beside the figure a report
    states for it."""
    stated_text = gpu_hours_text(stated, in_thousands=stated >= THOUSAND)
    measured = next((p for p in cost.phases if p.phase == phase), None)
    figure = measured.gpu_hours_per_trillion_tokens if measured else None
    if measured is None or measured.tokens is None or figure is None:
        return (
            f"Efficiency: no GPU-hours per trillion {phase} tokens measured; "
            f"the report states {stated_text}."
        )
    gpu = gpu_name(cost)
    agreement = "as the report states" if figure == stated else "where the report states"
    return (
        f"Efficiency: {gpu_hours_text(figure, in_thousands=figure >= THOUSAND)} "
        f"{f'{gpu} ' if gpu else ''}GPU-hours per trillion {phase} tokens "
        f"({tokens_text(measured.tokens)} tokens), {agreement} ({stated_text})."
    )


def figure_rows(cost: ModelCost) -> list[list[str]]:
    """The same table with exact figures in plain numbers, for machines (CSV); the
    efficiency rows are empty where a column has no figure."""
    columns = _columns(cost)
    rows = [
        ["figure", *(title for title, _ in columns)],
        ["gpu_hours", *(plain(p.gpu_hours) if p else "0" for _, p in columns)],
        ["cost_usd", *(plain(p.cost_usd) if p else "0" for _, p in columns)],
    ]
    if cost.total.tokens is None:
        return rows
    for name in ("gpu_hours_per_trillion_tokens", "usd_per_million_tokens"):
        figures = [getattr(p, name) if p else None for _, p in columns]
        rows.append([name, *("" if f is None else plain(f) for f in figures)])
    return rows


def rate_note(cost: ModelCost) -> str:
    """The assumption behind the USD row, as the V3 report states its own."""
    parts = []
    sources = {
        "default": "the default rate",
        "card": "the rate card",
        "scenario": f"scenario {cost.scenario}",
    }
    for rate in cost.rates:
        source = sources[rate.source]
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
