"""The `gpucost` command: tokens, migrations, and one clear line for a user's mistake."""

import os
import shlex
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import make_url
from typer.testing import CliRunner

from app import __version__
from app.cli import cli
from collectors.cli import app as collector_cli
from tests.app.metrics.test_metrics import Auth, seed_usage
from tests.support import H800, SettableClock, entry, report

runner = CliRunner()
BIN = Path(sys.executable).parent


def gpucost(*args: str, url: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), env={"GPUCOST_DATABASE_URL": url})
    return result.exit_code, result.stdout, result.stderr


def database_line(url: str) -> str:
    """The line a writing command prints, spelt out by hand for the two test databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database and Path(parsed.database).is_absolute()
        return f"database: sqlite:///{parsed.database}\n"
    hidden = ":***" if parsed.password else ""
    return (
        f"database: {parsed.drivername}://{parsed.username}{hidden}@{parsed.host}:{parsed.port}"
        f"/{parsed.database}\n"
    )


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
    assert err == (
        database_line(db_url)
        + "created collector token 'node-agent' for cluster c1; store it now, it is shown once:\n"
    )

    code, listing, err = gpucost("token", "list", url=db_url)
    assert code == 0
    assert "node-agent" in listing and "collector" in listing and token not in listing
    assert err == ""  # a command that only reads names no database

    code, out, err = gpucost("token", "revoke", "node-agent", url=db_url)
    assert (code, out.strip(), err) == (0, "revoked token 'node-agent'", database_line(db_url))


def test_a_writing_command_names_the_database_with_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default URL, sqlite:///./gpucost.db, is relative to the current directory: the line
    says which file that was."""
    monkeypatch.chdir(tmp_path)

    upgraded = gpucost("db", "upgrade", url="sqlite:///./gpucost.db")
    created = gpucost(
        "token", "create", "--role", "admin", "--name", "ops", url="sqlite:///./gpucost.db"
    )
    pruned = gpucost("db", "prune", url="sqlite:///gpucost.db")

    line = f"database: sqlite:///{tmp_path}/gpucost.db\n"
    assert line.startswith("database: sqlite:////")
    assert (upgraded[0], upgraded[2]) == (0, line)
    assert created[0] == 0 and created[2].startswith(line)
    assert (pruned[0], pruned[2]) == (0, line)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_database_line_hides_a_postgresql_password(db_url: str) -> None:
    # The test server trusts its clients, so a password is given but never checked.
    with_password = make_url(db_url).set(password="s3cret-pw").render_as_string(False)

    code, _, err = gpucost("token", "create", "--role", "admin", "--name", "ops", url=with_password)

    assert code == 0, err
    assert err.splitlines()[0] + "\n" == database_line(with_password)
    assert ":***@" in err and "s3cret-pw" not in err


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
            "cannot use the database at postgresql+psycopg://postgres@127.0.0.1:1/gpucost: ",
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
    sqlite3.connect(tmp_path / "new.db").execute("VACUUM").connection.close()  # an empty file
    url = f"sqlite:///{tmp_path / 'new.db'}"

    code, _, err = gpucost("token", "create", "--role", "admin", "--name", "ops", url=url)

    assert code == 1
    assert err == (
        f"error: the database at sqlite:///{tmp_path}/new.db has no gpucost tables yet: "
        "run `gpucost db upgrade`\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["token", "create", "--role", "admin", "--name", "ops"],
        ["token", "list"],
        [
            "rate",
            "set",
            "--gpu-model",
            "H800",
            "--usd-per-gpu-hour",
            "2",
            "--from",
            "2025-01-01T00:00:00Z",
        ],
        ["models"],
        ["db", "current"],
        ["export", "costs", "--month", "2025-01"],
    ],
)
def test_no_command_but_upgrade_and_serve_creates_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A command run in another directory than the server's says so, and leaves no empty
    gpucost.db behind to confuse the next one."""
    monkeypatch.chdir(tmp_path)
    code, out, err = gpucost(*command, url="sqlite:///gpucost.db")

    assert (code, out) == (1, "")
    assert err == (
        f"error: there is no database at sqlite:///{tmp_path}/gpucost.db: run `gpucost db "
        "upgrade` to create it, or run this where `gpucost serve` runs (or with its "
        "GPUCOST_DATABASE_URL)\n"
    )
    assert list(tmp_path.iterdir()) == []
    assert gpucost("db", "upgrade", url="sqlite:///gpucost.db")[0] == 0
    assert [path.name for path in tmp_path.iterdir()] == ["gpucost.db"]


def report_an_h800(client: TestClient, auth: Auth) -> None:
    """A collector reports one NVIDIA H800, so that `rate set` knows the model."""
    reported = client.post("/v1/reports", json=report(gpus=[entry(0)]), headers=auth["collector"])
    assert reported.status_code < 300, reported.text


def test_rate_set_list_and_restate(client: TestClient, auth: Auth, db_url: str) -> None:
    report_an_h800(client, auth)
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

    assert first == (
        0,
        "set: NVIDIA H800 at $2 per GPU-hour from 2025-01-01T00:00:00+00:00\n",
        database_line(db_url),
    )
    assert again[:2] == (
        0,
        "restated: NVIDIA H800 at $2.5 per GPU-hour from 2025-01-01T00:00:00+00:00\n",
    )
    assert listing[0] == 0 and "2.5" in listing[1] and "(all)" in listing[1]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["--usd-per-gpu-hour", "two", "--from", "2025-01-01T00:00:00Z"],
            "--usd-per-gpu-hour 'two': must be a number written in plain digits, e.g. 2.35 or 1e3",
        ),
        (
            ["--usd-per-gpu-hour", "2", "--from", "2025-01-01T00:30:00Z"],
            "--from '2025-01-01T00:30:00Z': must be a whole UTC hour, e.g. 2025-01-01T00:00:00Z",
        ),
        (
            ["--usd-per-gpu-hour", "2", "--from", "2025-01-01T00:00:00Z", "--cluster", "a b"],
            "--cluster 'a b': String should match pattern",
        ),
    ],
)
def test_rate_mistakes_name_the_flags(db_url: str, value: list[str], message: str) -> None:
    code, _, err = gpucost("rate", "set", "--gpu-model", "NVIDIA H800", *value, url=db_url)

    assert code == 1
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert "effective_from" not in err and "usd_per_gpu_hour" not in err


@pytest.mark.parametrize("asked", ["H800", "h800", "nvidia h800"])
def test_rate_set_refuses_a_gpu_model_no_gpu_reported_naming_the_one_meant(
    client: TestClient, auth: Auth, db_url: str, asked: str
) -> None:
    report_an_h800(client, auth)

    code, _, err = gpucost(
        "rate", "set", "--gpu-model", asked, "--usd-per-gpu-hour", "2",
        "--from", "2025-01-01T00:00:00Z", url=db_url,
    )  # fmt: skip

    assert code == 1
    assert err == f"error: no GPU has reported the model '{asked}'; did you mean '{H800}'?\n"
    assert "(open)" not in gpucost("rate", "list", url=db_url)[1]  # nothing was stored


def test_rate_set_prices_a_model_before_its_gpus_report_only_when_told(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    args = ["rate", "set", "--gpu-model", "NVIDIA B200", "--usd-per-gpu-hour", "4.5", "--from"]

    before = gpucost(*args, "2026-01-01T00:00:00Z", url=db_url)
    report_an_h800(client, auth)
    after = gpucost(*args, "2026-01-01T00:00:00Z", url=db_url)
    told = gpucost(*args, "2026-01-01T00:00:00Z", "--new-gpu-model", url=db_url)

    assert before == (
        1,
        "",
        "error: no GPU has reported the model 'NVIDIA B200' (no collector has reported any "
        "GPU yet); to price it before its GPUs report, add --new-gpu-model\n",
    )
    assert after == (
        1,
        "",
        "error: no GPU has reported the model 'NVIDIA B200' (GPUs have reported NVIDIA H800); "
        "to price it before its GPUs report, add --new-gpu-model\n",
    )
    assert told == (
        0,
        "set: NVIDIA B200 at $4.5 per GPU-hour from 2026-01-01T00:00:00+00:00\n",
        database_line(db_url),
    )


def test_rate_list_ends_each_rate_where_the_next_of_its_key_starts(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    report_an_h800(client, auth)
    for price, start, cluster in [
        ("2", "2025-01-01T00:00:00Z", []),
        ("3", "2025-03-01T06:00:00Z", []),
        ("1.5", "2025-02-01T00:00:00Z", ["--cluster", "hf-h800"]),
    ]:
        code, _, err = gpucost(
            "rate", "set", "--gpu-model", H800, "--usd-per-gpu-hour", price, "--from", start,
            *cluster, url=db_url,
        )  # fmt: skip
        assert code == 0, err

    code, out, _ = gpucost("rate", "list", url=db_url)

    rows = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in out.splitlines()
        if line.startswith("│")
    ]
    assert code == 0
    assert rows == [
        [H800, "(all)", "2", "2025-01-01 00:00", "2025-03-01 06:00"],
        [H800, "(all)", "3", "2025-03-01 06:00", "(open)"],
        [H800, "hf-h800", "1.5", "2025-02-01 00:00", "(open)"],
    ]


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(BIN / "gpucost"), "serve", "--port", str(port)],
            env={**env, "GPUCOST_DATABASE_URL": f"sqlite:///{database}"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert done.returncode == 1
    assert done.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another gpucost "
        f"serve?); choose another port with --port, e.g. --port {port + 1}\n"
    )
    assert done.stdout == "" and not database.exists()


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path under `group` (Typer's click command), the group's own first."""
    found = [path]
    if hasattr(group, "commands"):  # a group
        for name, command in group.commands.items():
            found += commands(command, (*path, name))
    return found


def example_lines(help_text: str, program: str) -> list[list[str]]:
    """The help's command lines that run `program` (after any VARIABLE=value), as words."""
    found = []
    for line in help_text.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]
        if words and words[0] == program:
            found.append(words[1:])
    return found


@pytest.mark.parametrize(
    ("app", "program"), [(cli, "gpucost"), (collector_cli, "gpucost-collector")]
)
def test_every_command_shows_examples_whose_flags_exist(app: typer.Typer, program: str) -> None:
    root = typer.main.get_command(app)
    for path in commands(root):
        result = runner.invoke(app, [*path, "-h"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, (path, result.output)
        name = " ".join((program, *path))
        assert any(
            line.strip().startswith(f"{name} ") or line.strip() == name
            for line in result.stdout.splitlines()
        ), (name, result.stdout)
        lines = example_lines(result.stdout, program)
        assert lines, name
        for words in lines:
            command = root
            while words and words[0] in getattr(command, "commands", {}):
                command, words = command.commands[words[0]], words[1:]
            known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            flags = [w.split("=")[0] for w in words if w.startswith("-")]
            assert set(flags) <= known, (name, words, set(flags) - known)


def test_both_commands_share_one_help_style() -> None:
    for app in (cli, collector_cli):
        short = runner.invoke(app, ["-h"], env={"COLUMNS": "120"})
        assert short.exit_code == 0
        assert short.stdout == runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).stdout
        assert "--install-completion" not in short.stdout
        assert "╭─ Options ─" in short.stdout and "Examples:" in short.stdout


@pytest.mark.parametrize("app", [cli, collector_cli])
def test_help_paragraphs_are_wrapped_by_the_terminal(app: typer.Typer) -> None:
    """A docstring's line breaks do not reach the help (at 80 columns they left half-lines):
    each paragraph is one line for the terminal to wrap."""
    root = typer.main.get_command(app)
    for path in commands(root)[1:]:
        command = root
        for name in path:
            command = command.commands[name]
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (path, paragraph)


def test_a_failed_export_leaves_the_earlier_file_as_it_was(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").execute("VACUUM").connection.close()
    target = tmp_path / "costs.csv"
    target.write_text("last month's\n")

    code, _, err = gpucost(
        "export", "costs", "--month", "2025-01", "-o", str(target),
        url=f"sqlite:///{tmp_path / 'empty.db'}",
    )  # fmt: skip

    assert code == 1 and "has no gpucost tables yet" in err
    assert target.read_text() == "last month's\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["costs.csv", "empty.db"]


def test_export_output_mistakes_are_one_line_and_links_are_followed(
    tmp_path: Path, db_url: str
) -> None:
    args = ["export", "costs", "--month", "2025-01", "-o"]

    code, _, err = gpucost(*args, str(tmp_path), url=db_url)
    assert (code, err) == (1, f"error: -o {tmp_path} is a directory: give a file name\n")
    code, _, err = gpucost(*args, str(tmp_path / "none" / "x.csv"), url=db_url)
    assert (code, err) == (
        1,
        f"error: cannot write {tmp_path}/none/x.csv: there is no directory {tmp_path}/none\n",
    )
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("old\n")
    real.chmod(0o600)
    link.symlink_to(real.name)

    code, _, err = gpucost(*args, str(link), url=db_url)

    assert code == 0, err
    assert link.is_symlink() and real.read_text().startswith("billing_month,")
    assert real.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.csv", "real.csv"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "GPUCOST_DATABASE_URL names an in-memory SQLite database"),
        ("sqlite:///:memory:", "GPUCOST_DATABASE_URL names an in-memory SQLite database"),
        ("sqlite:///file:x?mode=memory&uri=true", "GPUCOST_DATABASE_URL names an in-memory"),
        ("sqlite:///file:nothere.db?uri=true", "there is no database at sqlite:////"),
    ],
)
def test_sqlite_urls_that_cannot_hold_the_data_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)

    code, _, err = gpucost("token", "list", url=url)

    assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_revision_or_port_is_one_line(db_url: str) -> None:
    for command in (["db", "upgrade", "zzzz"], ["db", "downgrade", "zzzz"]):
        code, _, err = gpucost(*command, url=db_url)
        assert (code, err) == (
            1,
            "error: Can't locate revision identified by 'zzzz': `gpucost db current` shows "
            "the schema's revision and the newest\n",
        )
    code, _, err = gpucost("serve", "--port", "70000", url=db_url)
    assert code == 2 and "Invalid value for '--port'" in err and "Traceback" not in err
