"""`gpucost scenario` and `gpucost report --scenario`: exact figures under each scenario,
one clear line for each mistake."""

from fastapi.testclient import TestClient

from tests.app.cli.test_cli import database_line, gpucost
from tests.app.costs.test_costs import Auth
from tests.app.scenarios.test_scenarios import seed

FROM = "2025-01-01T00:00Z"
TCO = ["--purchase-usd", "30000", "--months", "48", "--hosting-usd-per-month", "150",
       "--electricity-usd-per-kwh", "0.08", "--pue", "1.3"]  # fmt: skip


def test_scenarios_set_priced_listed_reported_side_by_side_and_deleted(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    seed(client, auth)  # model m: 4 H800 GPU-hours, half an A100 hour (books: $10.40)
    steps = [
        (["scenario", "set", "rental-2usd", "--description", "rented, as the paper"],
         "created: scenario rental-2usd\n"),
        (["scenario", "price", "rental-2usd", "--gpu-model", "NVIDIA H800", "--from", FROM,
          "--usd-per-gpu-hour", "2"],
         "set: rental-2usd: NVIDIA H800 at $2 per GPU-hour from 2025-01-01T00:00:00+00:00\n"),
        (["scenario", "set", "owned-tco"], "created: scenario owned-tco\n"),
        (["scenario", "price", "owned-tco", "--from", FROM, *TCO],
         "set: owned-tco: every GPU model at $1.061644 per GPU-hour and $0.104 per kWh from "
         "2025-01-01T00:00:00+00:00 (from TCO)\n"),
    ]  # fmt: skip
    for args, shown in steps:
        code, out, err = gpucost(*args, url=db_url)
        assert (code, out, err) == (0, shown, database_line(db_url)), args

    code, out, err = gpucost(
        "report", "m", "--format", "csv", "--scenario", "booked", "--scenario", "rental-2usd",
        "--scenario", "owned-tco", url=db_url,
    )  # fmt: skip

    assert code == 0, err
    # The A100 has no price in rental-2usd: the books' default $2 (half an hour, $1).
    assert out.splitlines() == [
        "scenario,figure,Pre-Training,Context Extension,Post-Training,Total",
        "booked,gpu_hours,4.5,0,0,4.5",
        "booked,cost_usd,10.4,0,0,10.4",
        "rental-2usd,gpu_hours,4.5,0,0,4.5",
        "rental-2usd,cost_usd,9,0,0,9",
        "owned-tco,gpu_hours,4.5,0,0,4.5",
        "owned-tco,cost_usd,4.777398,0,0,4.777398",
    ]
    code, out, err = gpucost(
        "report", "m", "--format", "markdown", "--rate-note", "--scenario", "rental-2usd",
        "--scenario", "owned-tco", url=db_url,
    )  # fmt: skip
    assert code == 0, err
    assert out == (
        "| Training Costs | Pre-Training | Context Extension | Post-Training | Total |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| in GPU Hours | 4.5 | 0 | 0 | 4.5 |\n"
        "| in USD, rental-2usd | $9.00 | $0.00 | $0.00 | $9.00 |\n"
        "| in USD, owned-tco | $4.78 | $0.00 | $0.00 | $4.78 |\n"
        "rental-2usd: Priced at NVIDIA A100 at $2 per GPU hour (the default rate); "
        "NVIDIA H800 at $2 per GPU hour (scenario rental-2usd).\n"
        "owned-tco: Priced at NVIDIA A100 at $1.061644 per GPU hour (scenario owned-tco); "
        "NVIDIA H800 at $1.061644 per GPU hour (scenario owned-tco).\n"
    )

    code, out, _ = gpucost("scenario", "list", url=db_url)
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines()
            if line.startswith("│")]  # fmt: skip
    assert rows == [
        ["owned-tco", "(all others)", "tco", "1.061644", "0.104", "2025-01-01 00:00", "(open)"],
        ["rental-2usd", "NVIDIA H800", "price", "2", "(books)", "2025-01-01 00:00", "(open)"],
    ]
    code, out, err = gpucost("scenario", "delete", "rental-2usd", url=db_url)
    assert (code, out) == (0, "deleted: scenario rental-2usd and its 1 price\n"), err


def test_each_mistake_is_one_line(client: TestClient, auth: Auth, db_url: str) -> None:
    seed(client, auth)
    assert gpucost("scenario", "set", "owned-tco", url=db_url)[0] == 0
    mistakes = [
        (["report", "m", "--scenario", "owned-tc"],
         "no scenario named 'owned-tc'; did you mean owned-tco?"),
        (["scenario", "price", "owned-tco", "--from", FROM, "--usd-per-gpu-hour", "2", *TCO],
         "give --usd-per-gpu-hour (and --usd-per-kwh) or the TCO flags, not both"),
        (["scenario", "price", "owned-tco", "--from", FROM, *TCO[:-2]],
         "a TCO price needs --pue too"),
        (["scenario", "price", "owned-tco", "--from", FROM, *TCO[:-1], "0.9"],
         "--pue '0.9': Input should be greater than or equal to 1"),
        (["scenario", "price", "owned-tco", "--from", "2025-01-01T00:30Z",
          "--usd-per-gpu-hour", "2"],
         "--from '2025-01-01T00:30Z': must be a whole UTC hour, e.g. 2025-01-01T00:00:00Z"),
        (["scenario", "set", "a b"],
         "scenario name 'a b': letters, digits, '.', '_' and '-' (a letter or digit first), "
         "up to 64"),
        (["scenario", "set", "booked"],
         "name: 'booked' is what reports call the books: choose another"),
        (["scenario", "delete", "nothing"],
         "no scenario named 'nothing' (there are owned-tco)"),
    ]  # fmt: skip
    for args, line in mistakes:
        code, out, err = gpucost(*args, url=db_url)
        assert (code, out, err) == (1, "", f"error: {line}\n"), args


def test_a_scenario_named_scenario_keeps_its_csv_rows(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    seed(client, auth)
    price = ["scenario", "price", "scenario", "--from", FROM, "--usd-per-gpu-hour", "3"]
    for args in (["scenario", "set", "scenario"], price):
        assert gpucost(*args, url=db_url)[0] == 0, args

    code, out, err = gpucost(
        "report", "m", "--format", "csv", "--scenario", "booked", "--scenario", "scenario",
        url=db_url,
    )  # fmt: skip

    assert code == 0, err
    assert out.splitlines() == [
        "scenario,figure,Pre-Training,Context Extension,Post-Training,Total",
        "booked,gpu_hours,4.5,0,0,4.5",
        "booked,cost_usd,10.4,0,0,10.4",
        "scenario,gpu_hours,4.5,0,0,4.5",
        "scenario,cost_usd,13.5,0,0,13.5",
    ]
