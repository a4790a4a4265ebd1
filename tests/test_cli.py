"""The `gpucost` command: tokens, migrations, and one clear line for a user's mistake."""

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app import __version__
from app.cli import cli
from collectors.cli import app as collector_cli
from tests.support import SettableClock
from tests.test_metrics import Auth, seed_usage

runner = CliRunner()


def gpucost(*args: str, url: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), env={"GPUCOST_DATABASE_URL": url})
    return result.exit_code, result.stdout, result.stderr


def test_token_create_list_revoke(db_url: str) -> None:
    code, out, err = gpucost(
        "token",
        "create",
        "--role",
        "collector",
        "--cluster",
        "c1",
        "--name",
        "node-agent",
        url=db_url,
    )
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert token.startswith("gpc_")
    assert "shown once" in err

    code, listing, _ = gpucost("token", "list", url=db_url)
    assert code == 0
    assert "node-agent" in listing and "collector" in listing and token not in listing

    code, out, _ = gpucost("token", "revoke", "node-agent", url=db_url)
    assert (code, out.strip()) == (0, "revoked token 'node-agent'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["token", "create", "--role", "collector"],
            "a collector token must be bound to a cluster",
        ),
        (
            ["token", "create", "--role", "viewer", "--cluster", "c"],
            "only collector tokens are bound",
        ),
        (["token", "create", "--role", "root"], "'root' is not one of admin, viewer, collector"),
        (["token", "revoke", "ghost"], "no token named 'ghost'"),
    ],
)
def test_token_mistakes_are_one_line(db_url: str, args: list[str], message: str) -> None:
    code, _, err = gpucost(*args, url=db_url)

    assert code == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_duplicate_token_name_is_refused(db_url: str) -> None:
    assert gpucost("token", "create", "--role", "admin", "--name", "ops", url=db_url)[0] == 0

    code, _, err = gpucost("token", "create", "--role", "admin", "--name", "ops", url=db_url)

    assert code == 1 and "a token named 'ops' already exists" in err


def test_db_current_reports_head(db_url: str) -> None:
    code, out, _ = gpucost("db", "current", url=db_url)

    assert code == 0
    current, head = (line.split()[-1] for line in out.strip().splitlines())
    assert current == head != "base"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://postgres@127.0.0.1:1/gpucost",
            "cannot use the database at 127.0.0.1:1/gpucost",
        ),
        ("nosuchdb://x", "'nosuchdb' is not supported: use sqlite:///PATH"),
        ("mysql://root@localhost/gpucost", "'mysql' is not supported: use sqlite:///PATH"),
        ("postgresql+psycopg2://u@h/d", "'postgresql+psycopg2' is not supported"),
        ("not a url", "GPUCOST_DATABASE_URL is not a usable database URL"),
    ],
)
def test_database_trouble_is_one_clear_line(url: str, message: str) -> None:
    code, _, err = gpucost("db", "upgrade", url=url)

    assert code == 1
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_both_commands_print_their_version() -> None:
    assert runner.invoke(cli, ["--version"]).stdout == f"gpucost {__version__}\n"
    collector = runner.invoke(collector_cli, ["--version"])
    assert collector.exit_code == 0 and collector.stdout == f"gpucost-collector {__version__}\n"


def test_a_database_without_the_schema_says_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"

    code, _, err = gpucost("token", "create", "--role", "admin", "--name", "ops", url=url)

    assert code == 1
    assert "has no gpucost tables yet: run `gpucost db upgrade`" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_rate_set_list_and_restate(db_url: str) -> None:
    args = ["rate", "set", "--gpu-model", "NVIDIA H800", "--usd-per-gpu-hour", "2.00"]

    first = gpucost(*args, "--from", "2025-01-01T00:00:00Z", url=db_url)
    again = gpucost(
        "rate",
        "set",
        "--gpu-model",
        "NVIDIA H800",
        "--usd-per-gpu-hour",
        "2.5",
        "--from",
        "2025-01-01T00:00:00Z",
        url=db_url,
    )
    listing = gpucost("rate", "list", url=db_url)

    assert first[:2] == (0, "set: NVIDIA H800 at $2 per GPU-hour from 2025-01-01T00:00:00+00:00\n")
    assert again[:2] == (
        0,
        "restated: NVIDIA H800 at $2.5 per GPU-hour from 2025-01-01T00:00:00+00:00\n",
    )
    assert listing[0] == 0 and "2.5" in listing[1] and "(all)" in listing[1]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["--usd-per-gpu-hour", "two", "--from", "2025-01-01T00:00:00Z"], "usd_per_gpu_hour:"),
        (
            ["--usd-per-gpu-hour", "2", "--from", "2025-01-01T00:30:00Z"],
            "effective_from: Value error, must be a whole UTC hour",
        ),
    ],
)
def test_rate_mistakes_are_one_line(db_url: str, value: list[str], message: str) -> None:
    code, _, err = gpucost("rate", "set", "--gpu-model", "NVIDIA H800", *value, url=db_url)

    assert code == 1
    assert message in err and err.count("\n") == 1


def test_report_knows_the_idle_and_unattributed_pseudo_models(
    client: TestClient, auth: Auth, clock: SettableClock, db_url: str
) -> None:
    seed_usage(client, auth, live_end=clock())

    for model in ("(idle)", "(unattributed)"):
        code, out, err = gpucost("report", model, "--format", "csv", url=db_url)
        assert code == 0, err
        assert out.splitlines()[0].startswith("figure,"), out


def test_report_for_an_unknown_model_is_one_line(db_url: str) -> None:
    code, _, err = gpucost("report", "nothing", url=db_url)

    assert code == 1
    assert "no usage recorded for model 'nothing'" in err


def test_serve_on_a_busy_port_is_one_line_before_any_migration(tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, _, err = gpucost("serve", "--port", str(port), url=f"sqlite:///{database}")

    assert code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not database.exists()
