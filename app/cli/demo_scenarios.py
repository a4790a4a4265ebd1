"""The demo's price scenarios: the V3 table again as if the GPUs were rented at the paper's
price, and as if they were owned, both set through the real API and never in the books.

The owned GPU's figures are illustrative assumptions, not facts: no one has published what
DeepSeek paid for its H800s or its data centre."""

from typing import Any

import httpx
from rich.console import Console

from app.cli.common import fail
from app.costs.report_table import comparison_rows, rate_note, render_markdown
from app.costs.schemas import ModelCost

# Before any simulated hour: each scenario's price holds for the whole replay.
SINCE = "2020-01-01T00:00:00Z"
OWNED = {
    "purchase_usd": "30000",
    "amortisation_months": 48,
    "hosting_usd_per_month": "150",
    "electricity_usd_per_kwh": "0.08",
    "pue": "1.3",
}
SCENARIOS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "rental-2usd",
        "H800s rented at $2 per GPU-hour, as the V3 report assumes",
        {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "2"},
    ),
    (
        "owned-tco",
        "H800s owned: $30,000 each over 48 months, $150 a month hosting each, electricity "
        "at $0.08 a kWh with a PUE of 1.3 (illustrative assumptions, not facts)",
        {"tco": OWNED},
    ),
]


def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    response = httpx.request(method, url, json=body, headers=headers, timeout=60)
    if response.status_code not in (200, 201):
        fail(f"the service answered {response.status_code}: {response.text[:300]}")
    return response.json()


def show_scenarios(url: str, *, admin: str, viewer: str, model: str, console: Console) -> None:
    """Set the demo's scenarios through the API and print the model's table under the books
    and each scenario side by side, with what each scenario assumes."""
    admin_headers = {"Authorization": f"Bearer {admin}"}
    viewer_headers = {"Authorization": f"Bearer {viewer}"}
    console.print(
        "The same GPU-hours under two price scenarios, which never touch the books, exports "
        "or metrics (`gpucost scenario`, `?scenario=` on the cost API):"
    )
    costs = [("booked", _model_cost(url, model, viewer_headers, scenario=None))]
    for name, description, price in SCENARIOS:
        _call("PUT", f"{url}/v1/scenarios/{name}", admin_headers, {"description": description})
        body = {"effective_from": SINCE, **price}
        _call("POST", f"{url}/v1/scenarios/{name}/prices", admin_headers, body)
        costs.append((name, _model_cost(url, model, viewer_headers, scenario=name)))
    console.print()
    console.print(render_markdown(comparison_rows(costs)))
    console.print()
    for (name, cost), (_, description, _) in zip(costs[1:], SCENARIOS, strict=True):
        energy = cost.total.energy_cost_usd
        console.print(f"{name}: {description}.")
        console.print(
            f"  {rate_note(cost)}"
            + ("" if energy is None else f" Measured GPU energy adds ${energy:,.2f}, not above.")
        )


def _model_cost(
    url: str, model: str, headers: dict[str, str], *, scenario: str | None
) -> ModelCost:
    query = "" if scenario is None else f"?scenario={scenario}"
    return ModelCost.model_validate(_call("GET", f"{url}/v1/models/{model}/cost{query}", headers))
