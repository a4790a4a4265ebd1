"""`gpucost-collector run | once | flush | job-tokens`: the node agent's command line."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from collectors.agent import Agent, preview
from collectors.attribution import Attributor
from collectors.clock import Clock, FakeClock, SystemClock
from collectors.config import (
    DEFAULT_CONFIG_FILE,
    Config,
    ConfigError,
    load_config,
    parse_duration,
)
from collectors.job_tokens import TokensError, check_job_id, parse_tokens, put_tokens
from collectors.metrics import CollectorMetrics
from collectors.sampling import Sampler
from collectors.sender import Backoff, Sender, service_client
from collectors.spool import Spool

# The same settings as app/cli/common.py's TYPER_SETTINGS (the collector never imports
# `app`), so that both commands' help reads alike: -h as well as --help, rich markup, no
# shell-completion options, a plain traceback for what is not a user's mistake.
TYPER_SETTINGS: dict[str, Any] = {
    "context_settings": {"help_option_names": ["-h", "--help"]},
    "rich_markup_mode": "rich",
    "add_completion": False,
    "pretty_exceptions_enable": False,
}
DEFAULTS = Config()
SERVICE = (
    "--server https://gpucost.example.org --token-file /etc/gpucost/collector.token "
    "--cluster hf-h800"
)


def examples(*command_lines: str) -> str:
    """A command's help epilog: real command lines, one a line."""
    return "Examples:\n\n" + "\n".join(f"  {escape(line)}" for line in command_lines)


def shown(default: object) -> str:
    """A default as the help shows it, as gpucost's does for options with a plain default
    (the collector's options default to None, so that a flag left out can come from a
    variable or the config file)."""
    return escape(f"[default: {default}]")


app = typer.Typer(
    help="GPU-hour collector for gpucost (one per GPU node).",
    epilog=examples(
        f"gpucost-collector run {SERVICE}",
        "gpucost-collector run --config /etc/gpucost/collector.toml",
        "gpucost-collector once",
        "gpucost-collector flush --config /etc/gpucost/collector.toml",
        "gpucost-collector job-tokens --job 4242 --tokens 14800000000000",
    )
    + "\n\nEvery option can also be set as GPUCOST_COLLECTOR_<NAME> (e.g. "
    "GPUCOST_COLLECTOR_SERVER) or as `name = value` in the TOML config file (default: "
    f"{DEFAULT_CONFIG_FILE} when it exists); flags win over variables, which win over the file.",
    **TYPER_SETTINGS,
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"gpucost-collector {package_version('gpucost')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """GPU-hour collector for gpucost (one per GPU node)."""


class UserError(Exception):
    """Printed as one line, exit status 1."""


def nvml_and_clock(config: Config) -> tuple[Any, Clock]:
    """The real `pynvml` and system clock, or the scenario-driven fakes (`fake:FILE`)."""
    if config.nvml == "real":
        import pynvml

        return pynvml, SystemClock()
    from collectors.fakenvml import FakeNvml
    from collectors.node_script import load_scenario

    path = Path(config.nvml.removeprefix("fake:"))
    try:
        scenario = load_scenario(path)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot read the NVML scenario {path}: {error}") from None
    if config.fake_clock == "system":
        system = SystemClock()
        return FakeNvml(scenario, system, origin_ns=system.monotonic_ns()), system
    clock = FakeClock(
        start_wall_ns=scenario.start_wall_ns,
        speed=scenario.speed,
        wall_steps=list(scenario.wall_steps),
        state_file=config.fake_clock_state or config.spool.with_name(config.spool.name + ".clock"),
        boot=scenario.boot_id,
    )
    return FakeNvml(scenario, clock), clock


def nvml_start_error(error: Exception) -> str:
    """One line for an NVML that cannot start (no library, no driver, no permission)."""
    name = type(error).__name__
    if name == "NVMLError_LibraryNotFound":
        return "NVML library (libnvidia-ml.so.1) not found: is the NVIDIA driver installed?"
    if name == "NVMLError_DriverNotLoaded":
        return "the NVIDIA driver is not loaded (nvidia-smi should say why)"
    if name == "NVMLError_NoPermission":
        return "no permission to use NVML: run the collector as root or in the video group"
    return f"NVML failed to start: {error}"


def read_token(path: Path) -> str:
    """The token a file holds; a `UserError` saying why when it is unreadable or empty."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise UserError(f"cannot read the token file {path}: {error.strerror}") from None
    if not token:
        raise UserError(f"the token file {path} is empty")
    return token


def _build(config: Config) -> Agent:
    """The agent with the real (or scenario) NVML, the spool and a sender."""
    nvml, clock = nvml_and_clock(config)
    metrics = CollectorMetrics()
    try:
        spool = Spool(config.spool)
    except Exception as error:  # sqlite3 and OSError both say what is wrong with the path
        raise UserError(f"cannot open the spool {config.spool}: {error}") from None
    assert config.server is not None and config.token_file is not None
    token_file = config.token_file
    read_token(token_file)
    sender = Sender(
        spool=spool,
        client=service_client(config.http_timeout),
        server=config.server,
        token=lambda: read_token(token_file),
        cluster=str(config.cluster),
        clock=clock,
        backoff=Backoff(rng=random.Random()),
        metrics=metrics,
        batch_size=config.batch_size,
        register_jobs=config.register_jobs,
    )
    return Agent(
        config=config,
        clock=clock,
        sampler=Sampler(nvml=nvml, clock=clock, metrics=metrics),
        attributor=Attributor(mapping_dir=config.mapping_dir, proc_root=config.proc_root),
        spool=spool,
        sender=sender,
        metrics=metrics,
    )


def _config(options: dict[str, Any]) -> Config:
    config_file = options.pop("config", None)
    config = load_config(options, os.environ, config_file)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return config


def _start_nvml(agent: Agent) -> None:
    try:
        agent.start()
    except agent.sampler.nvml_error as error:
        raise UserError(nvml_start_error(error)) from None


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (or GPUCOST_COLLECTOR_CONFIG). "
        + shown(f"{DEFAULT_CONFIG_FILE} if it exists"),
    ),
]
ServerOpt = Annotated[
    str | None, typer.Option(help="The gpucost service's URL, e.g. https://gpucost.example.org.")
]
TokenOpt = Annotated[Path | None, typer.Option(help="File holding the collector token.")]
ClusterOpt = Annotated[
    str | None, typer.Option(help="Cluster name, the one the token is bound to.")
]
NodeOpt = Annotated[str | None, typer.Option(help="Node name. " + shown("the short hostname"))]
SpoolOpt = Annotated[
    Path | None,
    typer.Option(help="SQLite file holding reports until they are sent. " + shown(DEFAULTS.spool)),
]
NvmlOpt = Annotated[
    str | None,
    typer.Option(
        help="'real' (the driver's NVML) or 'fake:SCENARIO_FILE' (a simulated node, for "
        "tests). " + shown(DEFAULTS.nvml)
    ),
]
FakeClockOpt = Annotated[
    str | None,
    typer.Option(
        help="With --nvml fake:…, 'virtual' (the scenario's own, faster time) or 'system' "
        "(real time). " + shown(DEFAULTS.fake_clock)
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        help="Directory where the scheduler's prolog writes which job holds which GPU. "
        + shown(DEFAULTS.mapping_dir)
    ),
]
ProcOpt = Annotated[
    Path | None, typer.Option(help="The proc file system's root. " + shown(DEFAULTS.proc_root))
]
SampleOpt = Annotated[
    str | None,
    typer.Option(
        help="Time between samples, e.g. 10s or 1m. " + shown(f"{DEFAULTS.sample_interval:g}s")
    ),
]
ReportOpt = Annotated[
    str | None,
    typer.Option(
        help="Time one report covers, at most 30m. " + shown(f"{DEFAULTS.report_interval:g}s")
    ),
]

GiveUpOpt = Annotated[
    str | None,
    typer.Option(
        help="Retry an unreachable or failing service (as reports are) until this long, e.g. "
        "10s. " + shown("30s")
    ),
]


@app.command(
    epilog=examples(
        f"gpucost-collector run {SERVICE}",
        "gpucost-collector run --config /etc/gpucost/collector.toml --metrics-port 9402",
        "gpucost-collector run --config /etc/gpucost/collector.toml --nvml fake:node.json "
        "--run-until 2h",
    )
)
def run(
    config: ConfigOpt = None,
    server: ServerOpt = None,
    token_file: TokenOpt = None,
    cluster: ClusterOpt = None,
    node: NodeOpt = None,
    sample_interval: SampleOpt = None,
    report_interval: ReportOpt = None,
    spool: SpoolOpt = None,
    spool_max_bytes: Annotated[
        str | None,
        typer.Option(
            help="Largest the spool may grow while the service is unreachable, e.g. 1GiB. "
            + shown(f"{DEFAULTS.spool_max_bytes // 2**20}MiB")
        ),
    ] = None,
    mapping_dir: MappingOpt = None,
    proc_root: ProcOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port. " + shown("none served")),
    ] = None,
    nvml: NvmlOpt = None,
    fake_clock: FakeClockOpt = None,
    run_until: Annotated[
        str | None,
        typer.Option(
            help="For tests and simulations: stop, sending what is left, once the collector's "
            "clock reads this time, e.g. 2h. With --nvml fake:… the clock starts at 0 with the "
            "scenario; the real clock counts from the machine's boot. " + shown("run until SIGTERM")
        ),
    ] = None,
) -> None:
    """Sample, spool and send until SIGTERM (Ctrl-C)."""
    cfg = _config(dict(locals()))
    cfg.require_delivery()
    agent = _build(cfg)
    if cfg.metrics_port is not None:
        try:
            agent.metrics.serve(cfg.metrics_port)
        except OSError as error:
            raise UserError(f"cannot serve metrics on port {cfg.metrics_port}: {error}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _start_nvml(agent)
    agent.run(stop)


@app.command(
    epilog=examples(
        "gpucost-collector once",
        "gpucost-collector once --cluster hf-h800 --sample-interval 1s",
    )
)
def once(
    config: ConfigOpt = None,
    cluster: ClusterOpt = None,
    node: NodeOpt = None,
    sample_interval: SampleOpt = None,
    spool: SpoolOpt = None,
    mapping_dir: MappingOpt = None,
    proc_root: ProcOpt = None,
    nvml: NvmlOpt = None,
    fake_clock: FakeClockOpt = None,
) -> None:
    """Take one sample and print the report it would give (nothing is spooled or sent)."""
    cfg = _config(dict(locals()))
    nvml_module, clock = nvml_and_clock(cfg)
    sampler = Sampler(nvml=nvml_module, clock=clock, metrics=CollectorMetrics())
    attributor = Attributor(mapping_dir=cfg.mapping_dir, proc_root=cfg.proc_root)
    try:
        body = preview(sampler, attributor, interval_s=cfg.sample_interval)
    except nvml_module.NVMLError as error:
        raise UserError(nvml_start_error(error)) from None
    typer.echo(
        json.dumps({"cluster": cfg.cluster, "node": cfg.node, "seq": None, **body}, indent=2)
    )


@app.command(
    epilog=examples(
        f"gpucost-collector flush {SERVICE}",
        "gpucost-collector flush --config /etc/gpucost/collector.toml",
    )
)
def flush(
    config: ConfigOpt = None,
    server: ServerOpt = None,
    token_file: TokenOpt = None,
    cluster: ClusterOpt = None,
    spool: SpoolOpt = None,
    nvml: NvmlOpt = None,
    fake_clock: FakeClockOpt = None,
) -> None:
    """Send the spool's backlog now, once; exit 1 if anything is left unsent."""
    cfg = _config(dict(locals()))
    cfg.require_delivery()
    agent = _build(cfg)
    assert agent.sender is not None
    agent.sender.send_pending(max_batches=1_000_000)
    left = agent.spool.depth()
    typer.echo(f"{left} reports left unsent, {len(agent.spool.dead_letters())} dead-lettered")
    if left:
        raise typer.Exit(1)


@app.command(
    "job-tokens",
    epilog=examples(
        "gpucost-collector job-tokens --job 4242 --tokens 14800000000000",
        f"gpucost-collector job-tokens --job 4242 --tokens 14800000000000 {SERVICE}",
        "gpucost-collector job-tokens --config /etc/gpucost/collector.toml --job 4242 "
        "--tokens 0 --give-up-after 10s",
    )
    + "\n\nOnly the count is sent: the job's model, phase, team and labels stay as they are. "
    "A job the service does not know yet is created (its usage follows).",
)
def job_tokens(
    job: Annotated[str, typer.Option(help="The scheduler's job id, e.g. Slurm's.")],
    tokens: Annotated[
        str, typer.Option(help="Tokens the job processed in its whole run: digits, 0 to 10^18.")
    ],
    config: ConfigOpt = None,
    server: ServerOpt = None,
    token_file: TokenOpt = None,
    cluster: ClusterOpt = None,
    give_up_after: GiveUpOpt = None,
) -> None:
    """Set the tokens a job processed, as this node's collector (same service, token, cluster)."""
    count = parse_tokens(tokens)
    job_id = check_job_id(job)
    patience = parse_duration(give_up_after or "30s", "give-up-after")
    cfg = _config(
        {"config": config, "server": server, "token_file": token_file, "cluster": cluster}
    )
    cfg.require_delivery()
    assert cfg.server is not None and cfg.token_file is not None and cfg.cluster is not None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its line per request: one line here
    with service_client(cfg.http_timeout) as client:
        stored = put_tokens(
            client=client,
            server=cfg.server,
            token=read_token(cfg.token_file),
            cluster=cfg.cluster,
            job_id=job_id,
            tokens=count,
            clock=SystemClock(),
            backoff=Backoff(rng=random.Random()),
            give_up_after=patience,
            http_timeout=cfg.http_timeout,
        )
    new = " (a new job: no usage reported yet)" if stored.created else ""
    typer.echo(f"job {job_id} on {cfg.cluster}: {stored.tokens} tokens{new}")


def main() -> None:
    try:
        app()  # click answers usage errors itself: a usage line and exit status 2
    except (ConfigError, UserError, TokensError) as error:
        typer.echo(f"gpucost-collector: error: {error}", err=True)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
