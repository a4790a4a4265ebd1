"""`gpucost simulate` (a scenario's fleet against a service) and `gpucost demo` (all of it,
with no configuration: a temporary service, the DeepSeek-V3 replay, its cost table)."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from app.cli.common import (
    CLI_ACTOR,
    database,
    examples,
    fail,
    load_settings,
    shown_database,
    uvicorn_command,
    wait_until_serving,
)
from app.cli.demo_scenarios import show_scenarios
from app.core import migrate
from app.core.labels import IDLE, UNATTRIBUTED
from app.costs.report_table import efficiency_note, rate_note, render_markdown, table_rows
from app.costs.schemas import CostReport, ModelCost
from app.tokens.service import create_token

if TYPE_CHECKING:  # the simulator is imported by the two commands only, not by every command
    from simulator.fleet import Fleet
    from simulator.fleet import Progress as SimProgress

out = Console(soft_wrap=True, highlight=False)
# The demo's reduction (see `demo`): the same 2,048 GPUs as 8 collectors of 256, one report
# per GPU and job per simulated day, so that it runs in under three minutes on two cores.
DEMO_GPUS_PER_NODE = 8 * 32
DEMO_REPORT_SECONDS = 86_400


def _read_token(path: Path) -> str:
    from collectors.cli import UserError, read_token

    try:
        return read_token(path)
    except UserError as error:
        fail(str(error))


def replay(fleet: "Fleet", *, console: Console = out) -> "SimProgress":
    """Run the fleet with a progress bar: simulated time, reports sent, GPU-hours so far."""
    from simulator.fleet import SimulationError

    total_days = float(fleet.scenario.end) / 86400
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("day {task.fields[day]:,.1f} of {task.fields[days]:,.1f}"),
        TextColumn("{task.fields[reports]:,} reports sent"),
        TextColumn("{task.fields[hours]:,.0f} GPU-hours measured"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(
            fleet.scenario.name, total=total_days, day=0.0, days=total_days, reports=0, hours=0.0
        )

        def show(p: "SimProgress") -> None:
            day = float(p.simulated_s) / 86400
            bar.update(task, completed=day, day=day, reports=p.reports_sent, hours=p.gpu_hours)

        try:
            return fleet.run(show)
        except SimulationError as error:
            fail(str(error))


SIMULATE_EXAMPLES = examples(
    "gpucost simulate deepseek-v3 --server http://127.0.0.1:8000 --token-file collector.token",
    "gpucost simulate my-fleet.toml --server http://127.0.0.1:8000 --token-file collector.token "
    "--admin-token-file admin.token --speed 3600",
)
DEMO_EXAMPLES = examples("gpucost demo", "gpucost demo --serve --port 8080")


def simulate(
    scenario: Annotated[str, typer.Argument(help="A shipped scenario name or a TOML file.")],
    server: Annotated[str, typer.Option(help="The gpucost service, e.g. http://127.0.0.1:8000")],
    token_file: Annotated[Path, typer.Option(help="File holding a collector token.")],
    admin_token_file: Annotated[
        Path | None, typer.Option(help="Admin token file, for scenarios that change rates.")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second (0: as fast as possible).")
    ] = 0.0,
    as_fast_as_possible: Annotated[bool, typer.Option(help="Do not pace (the default).")] = False,
    nodes_concurrency: Annotated[int, typer.Option(min=1, help="Nodes stepped at once.")] = 8,
    report_seconds: Annotated[
        int, typer.Option(min=1, help="Longest report; the service allows 3600 by default.")
    ] = 3600,
) -> None:
    """Replay a scenario's fleet through the collector's real code against a service."""
    from simulator import scenario as scenarios
    from simulator.fleet import Fleet, Options

    try:
        loaded = scenarios.load(scenario)
    except scenarios.ScenarioError as error:
        fail(str(error))
    token = _read_token(token_file)
    admin = _read_token(admin_token_file) if admin_token_file else None
    options = Options(
        report_seconds=report_seconds,
        speed=0.0 if as_fast_as_possible else speed,
        concurrency=nodes_concurrency,
    )
    fleet = Fleet(
        loaded, server=server.rstrip("/"), token=token, admin_token=admin, options=options
    )
    try:
        final = replay(fleet)
    finally:
        fleet.close()
    out.print(f"{final.reports_sent:,} reports sent, {final.gpu_hours:,.3f} GPU-hours measured")


def _free_port(preferred: int) -> int:
    """`preferred` if it is free on 127.0.0.1, else another free port, saying so."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            chosen = int(sock.getsockname()[1])
            if chosen != preferred:
                out.print(f"Port {preferred} is in use; the demo serves on port {chosen} instead.")
            return chosen
    fail("no free TCP port on 127.0.0.1")


@contextlib.contextmanager
def _service(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """`uvicorn` serving gpucost in a child process, until the block ends."""
    url = f"http://127.0.0.1:{port}"
    command = uvicorn_command(port)
    with log.open("wb") as log_file:
        child = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        why_not = wait_until_serving(child, url)
        if why_not is not None:
            fail(f"the service {why_not}; see {log}")
        yield url
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def demo(
    serve: Annotated[
        bool,
        typer.Option(
            help="Keep serving after the replay, for the API docs and metrics (Ctrl-C stops)."
        ),
    ] = False,
    port: Annotated[
        int, typer.Option(help="TCP port on 127.0.0.1 (another free one, said, if taken).")
    ] = 8000,
) -> None:
    """Start a temporary service, replay DeepSeek-V3's training, print its cost table.

    Needs no configuration: the service runs on a temporary SQLite database (any
    GPUCOST_DATABASE_URL is left alone), deleted when the demo ends. It takes one to three
    minutes, depending on the machine; the progress bar shows how far it is.
    """
    from simulator import scenario as scenarios
    from simulator.fleet import Fleet, Options

    scenario = scenarios.load("deepseek-v3")
    simulated = scenario.regrouped(DEMO_GPUS_PER_NODE)
    with tempfile.TemporaryDirectory(prefix="gpucost-demo-") as tmp:
        workdir = Path(tmp)
        env = {
            **os.environ,
            "GPUCOST_DATABASE_URL": f"sqlite:///{workdir / 'gpucost.db'}",
            "GPUCOST_MAX_REPORT_INTERVAL_SECONDS": str(DEMO_REPORT_SECONDS),
        }
        settings = load_settings(database_url=env["GPUCOST_DATABASE_URL"])
        with database(settings, creates=True) as db:
            migrate.upgrade(db.engine)
            with db.write() as session:
                now = datetime.now(UTC)
                tokens = {
                    role: create_token(
                        session,
                        role=role,
                        name=f"demo-{role}",
                        actor=CLI_ACTOR,
                        cluster=scenario.cluster if role == "collector" else None,
                        now=now,
                    )[1]
                    for role in ("admin", "viewer", "collector")
                }
        out.print(f"[bold]gpucost demo[/]: {scenario.description}.")
        out.print(
            f"Simulated: {simulated.gpu_count:,} {scenario.gpu_model} GPUs as {simulated.nodes} "
            f"collectors of {simulated.gpus_per_node} GPUs (the scenario has {scenario.nodes} "
            f"nodes of {scenario.gpus_per_node}), {float(scenario.end) / 3600:,.2f} simulated "
            "hours, one report per GPU and job per simulated day (service limit raised to "
            "1 day for the demo), on a temporary SQLite database. This takes up to three minutes, "
            "depending on the machine."
        )
        with _service(env, _free_port(port), workdir / "server.log") as url:
            fleet = Fleet(
                simulated,
                server=url,
                token=tokens["collector"],
                options=Options(report_seconds=DEMO_REPORT_SECONDS, concurrency=8, send_every=1),
            )
            try:
                replay(fleet)
            finally:
                fleet.close()
            viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
            cost = ModelCost.model_validate(_get(f"{url}/v1/models/deepseek-v3/cost", viewer))
            by_model = CostReport.model_validate(_get(f"{url}/v1/costs?group_by=model", viewer))
            out.print()
            out.print(render_markdown(table_rows(cost)))
            out.print()
            out.print(rate_note(cost))
            out.print(_measured_note(by_model, cost.model))
            if scenario.reference is not None:  # what the scenario's report states
                reference = scenario.reference
                stated = reference.gpu_hours_per_trillion_tokens
                out.print(efficiency_note(cost, phase=reference.phase, stated=stated))
            out.print()
            show_scenarios(
                url, admin=tokens["admin"], viewer=tokens["viewer"], model=cost.model, console=out
            )
            out.print()
            if not serve:
                out.print(
                    "The service stopped with the demo and its database is deleted; "
                    "`gpucost demo --serve` keeps it running, with its page at /, its API "
                    "docs at /docs and its metrics at /metrics."
                )
                return
            out.print(f"Page:     {url}/")
            out.print(f"API docs: {url}/docs")
            out.print(f"Metrics:  {url}/metrics")
            out.print(f"Viewer token: {tokens['viewer']}")
            out.print(f"Admin token:  {tokens['admin']}")
            out.print(f"Database: {shown_database(settings.database_url)}")
            out.print("Serving until Ctrl-C; the database is deleted when it stops.")
            # SIGTERM too stops the service and removes the database on the way out.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)


def _get(url: str, headers: dict[str, str]) -> object:
    response = httpx.get(url, timeout=60, headers=headers)
    if response.status_code != 200:
        fail(f"the service answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _measured_note(by_model: CostReport, model: str) -> str:
    """The GPU-hours measured in all (the progress bar's figure) split into the model's (the
    table's) and the rest: idle GPUs and jobs without a model, in no model's cost."""
    hours = {str(getattr(row, "model", "")): row.gpu_hours for row in by_model.rows}
    parts = [f"{hours.pop(model, 0):,.0f} in {model}'s jobs (the table)"]
    named = {IDLE: "idle (GPUs with no job)", UNATTRIBUTED: "in jobs without a model"}
    parts += [f"{figure:,.0f} {named.get(name, name)}" for name, figure in sorted(hours.items())]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return f"Measured: {by_model.total.gpu_hours:,.0f} GPU-hours, {listed}."
