"""`gpucost budget set`, `list` and `delete`: the API's rules, one line for each mistake."""

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from tests.app.budgets.test_budgets import NOW, Auth, seed
from tests.support import SettableClock

JANUARY = ["--from", "2025-01-01T00:00:00Z", "--to", "2025-02-01T00:00:00Z"]


def run(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"GPUCOST_DATABASE_URL": db_url})
    return result.exit_code, result.stdout, result.stderr


def test_set_list_and_delete_budgets(
    client: TestClient, auth: Auth, clock: SettableClock, db_url: str
) -> None:
    clock.moment = NOW
    seed(client, auth)

    ranged = run(db_url, "budget", "set", "red-jan", "--team", "red", "--usd", "70", *JANUARY)
    monthly = run(db_url, "budget", "set", "blue", "--model", "m-blue", "--gpu-hours", "500")
    replaced = run(db_url, "budget", "set", "blue", "--cluster", "hf-h800", "--gpu-hours", "5")
    listed = run(db_url, "budget", "list")
    deleted = run(db_url, "budget", "delete", "blue")
    after = client.get("/v1/budgets", headers=auth["viewer"]).json()
    audit = client.get("/v1/audit", params={"action": "budget"}, headers=auth["admin"]).json()

    assert ranged[:2] == (
        0,
        "created: red-jan, team red, 70 USD from 2025-01-01 00:00 to 2025-02-01 00:00; "
        "57.5 spent (82.14 %), warning\n",
    )
    assert ranged[2].startswith("database: ")
    assert monthly[0] == 0 and monthly[1].startswith("created: blue, model m-blue, 500 GPU-hours")
    assert replaced[0] == 0 and replaced[1].startswith("replaced: blue, cluster hf-h800, 5 GPU")
    assert listed[0] == 0, listed
    lines = listed[1].splitlines()
    (red,) = [line for line in lines if "red-jan" in line]
    for cell in ("team red", "USD", "70", "57.5", "82.14", "warning"):
        assert cell in red, red
    (blue,) = [line for line in lines if "blue" in line]
    assert "cluster hf-h800" in blue and "GPU-hours" in blue
    assert deleted[:2] == (0, "deleted: blue\n")
    assert [budget["name"] for budget in after] == ["red-jan"]
    assert [(e["action"], e["actor"]) for e in audit["entries"]] == [
        ("budget.delete", "cli"),
        ("budget.replace", "cli"),
        ("budget.create", "cli"),
        ("budget.create", "cli"),
    ]


def test_mistakes_are_one_line(client: TestClient, auth: Auth, db_url: str) -> None:
    mistakes = {
        ("budget", "set", "b", "--usd", "1"): "give exactly one of --team, --model, --cluster",
        ("budget", "set", "b", "--team", "a", "--model", "m", "--usd", "1"): "exactly one of",
        ("budget", "set", "b", "--team", "a"): "give exactly one of --usd, --gpu-hours",
        ("budget", "set", "b", "--team", "a", "--usd", "0"): "--usd/--gpu-hours '0':",
        ("budget", "set", "b", "--team", "a", "--usd", "1.0000001"): "decimal places",
        ("budget", "set", "b", "--team", "a", "--usd", "1", "--month", *JANUARY): "--month",
        ("budget", "set", "b", "--team", "a", "--usd", "1", "--from", "2025-01-01T00:00:00Z"): (
            "--to: a range budget needs --from and --to"
        ),
        (
            "budget",
            "set",
            "b",
            "--team",
            "a",
            "--usd",
            "1",
            "--from",
            "2025-02-01T00:00:00Z",
            "--to",
            "2025-01-01T00:00:00Z",
        ): "--to: must be after --from",
        (
            "budget",
            "set",
            "b",
            "--team",
            "a",
            "--usd",
            "1",
            "--from",
            "2025-01-01T00:30:00Z",
            "--to",
            "2025-02-01T00:00:00Z",
        ): "--from '2025-01-01T00:30:00Z': ",
        ("budget", "set", "b c", "--team", "a", "--usd", "1"): "name: must be 1 to 64",
        ("budget", "delete", "nothing"): "no budget named 'nothing'",
    }
    for args, message in mistakes.items():
        code, stdout, stderr = run(db_url, *args)
        assert code == 1, (args, stdout, stderr)
        error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and message in error_lines[0], (args, stderr)
        assert "Traceback" not in stderr
    assert client.get("/v1/budgets", headers=auth["viewer"]).json() == []
