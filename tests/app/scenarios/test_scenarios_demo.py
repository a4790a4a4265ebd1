"""The demo's price scenarios: the V3 table printed again under a rental price and under
the cost of owning the GPUs, set and read through a real server, exactly as the demo
prints them, and the books the same before and after."""

import io
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from app.cli.demo_scenarios import show_scenarios
from tests.app.costs.test_costs_v3 import V3_MARKDOWN, v3_client  # noqa: F401 - the fixture
from tests.support import running_server

pytestmark = pytest.mark.slow
# The fixture's 6,144 GPU reports measure 41,200 J each (tests.support.entry): 70.3147 kWh
# at $0.104 a kWh (0.08 x PUE 1.3), $7.3127.
ENERGY_USD = "7.31"


def test_the_demo_prints_the_v3_table_under_two_scenarios_side_by_side(
    v3_client: TestClient,  # noqa: F811 - the fixture
    db_url: str,
    tokens: dict[str, str],
    log_dir: Path,
) -> None:
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    # The report's 14.8T pre-training tokens, as the demo's scenario carries them.
    pretrain = {"tokens": 14_800_000_000_000}
    assert v3_client.put("/v1/jobs/hf-h800/v3-pretrain", json=pretrain, headers=admin).is_success
    out = io.StringIO()
    console = Console(file=out, width=200)
    with running_server(db_url, log_dir) as server:
        books = httpx.get(f"{server.url}/v1/models/deepseek-v3/cost", headers=viewer).json()
        show_scenarios(
            server.url,
            admin=tokens["admin"],
            viewer=tokens["viewer"],
            model="deepseek-v3",
            console=console,
        )
        after = httpx.get(f"{server.url}/v1/models/deepseek-v3/cost", headers=viewer).json()

    assert after == books  # the scenarios priced nothing in the books
    assert books["total"]["cost_usd"] == "5576000" and books["scenario"] is None
    # 2,788,000 H800 GPU-hours at $1.061644 (TCO): $2,959,863.472, $2.96M as the report
    # shows millions; pre-training 2,664,000 x 1.061644 = $2,828,219.616.
    assert out.getvalue().splitlines() == [
        "The same GPU-hours under two price scenarios, which never touch the books, exports "
        "or metrics (`gpucost scenario`, `?scenario=` on the cost API):",
        "",
        *V3_MARKDOWN[:3],
        "| in USD, booked | $5.328M | $0.238M | $0.01M | $5.576M |",
        "| in USD, rental-2usd | $5.328M | $0.238M | $0.01M | $5.576M |",
        "| in USD, owned-tco | $2.828M | $0.126M | $0.005M | $2.96M |",
        "| GPU Hours per Trillion Tokens | 180K | - | - | - |",
        "| USD per Million Tokens, booked | $0.36 | - | - | - |",
        "| USD per Million Tokens, rental-2usd | $0.36 | - | - | - |",
        # $2,828,219.616 for 14.8M million tokens: $0.19109592, shown to four places.
        "| USD per Million Tokens, owned-tco | $0.1911 | - | - | - |",
        "",
        "rental-2usd: H800s rented at $2 per GPU-hour, as the V3 report assumes.",
        "  Priced at NVIDIA H800 at $2 per GPU hour (scenario rental-2usd).",
        "owned-tco: H800s owned: $30,000 each over 48 months, $150 a month hosting each, "
        "electricity at $0.08 a kWh with a PUE of 1.3 (illustrative assumptions, not facts).",
        "  Priced at NVIDIA H800 at $1.061644 per GPU hour (scenario owned-tco). Measured GPU "
        f"energy adds ${ENERGY_USD}, not above.",
    ]
