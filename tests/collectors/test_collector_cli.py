"""The command line: configuration sources, one-line errors, `once`, and a light import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest

from collectors.config import ConfigError, load_config
from collectors.metrics import CollectorMetrics
from tests.collectors.helpers import gpu, process, slurm
from tests.collectors.service import BIN, free_port

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}


def collector(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gpucost-collector"), *args],
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_the_collector_pulls_in_neither_the_service_nor_its_frameworks():
    code = (
        "import sys, collectors.cli, collectors.agent, collectors.fakenvml\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('app', 'fastapi', 'sqlalchemy', 'alembic', 'pydantic', 'uvicorn'))\n"
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_missing_nvml_library_is_one_clear_line_and_a_nonzero_exit(tmp_path):
    done = collector("once", "--spool", str(tmp_path / "s.db"))  # no NVIDIA driver here
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "gpucost-collector: error: NVML library (libnvidia-ml.so.1) not found: "
        "is the NVIDIA driver installed?"
    )


def test_driver_not_loaded_stops_run_with_one_line(tmp_path):
    (tmp_path / "sc.json").write_text(json.dumps({"init_error": "driver_not_loaded"}))
    (tmp_path / "token").write_text("t\n")
    done = collector(
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--token-file",
        str(tmp_path / "token"),
        "--cluster",
        "c1",
        "--spool",
        str(tmp_path / "s.db"),
        "--nvml",
        f"fake:{tmp_path}/sc.json",
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "gpucost-collector: error: the NVIDIA driver is not loaded (nvidia-smi should say why)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--server is required (or GPUCOST_COLLECTOR_SERVER, or `server` in the config file)"),
        (
            [
                "--server",
                "http://x",
                "--token-file",
                "/nonexistent/t",
                "--cluster",
                "c",
                "--nvml",
                "fake:/nonexistent.json",
            ],
            "cannot read the NVML scenario /nonexistent.json: [Errno 2] No such file or directory: "
            "'/nonexistent.json'",
        ),
        (
            ["--sample-interval", "fast"],
            "sample_interval: 'fast' is not a duration (like 10s, 1m, 500ms)",
        ),
        (
            ["--fake-clock", "sometimes"],
            "fake-clock: 'sometimes' is neither 'virtual' nor 'system'",
        ),
    ],
)
def test_configuration_mistakes_are_one_line(args, message):
    done = collector("run", *args)
    assert done.returncode in (1, 2)
    assert done.stderr.strip() == f"gpucost-collector: error: {message}"


def test_help_shows_the_defaults_and_says_what_run_until_is():
    done = collector("run", "--help", env={"COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    lines: dict[str, str] = {}  # each option's help, its wrapped lines joined
    for line in done.stdout.splitlines():
        if line.startswith("│ --"):
            flag = line.split()[1]
            lines[flag] = ""
        if line.startswith("│ ") and lines:
            lines[flag] += " " + " ".join(line.strip("│ ").split())
    for flag, default in [
        ("--sample-interval", "[default: 10s]"),
        ("--report-interval", "[default: 60s]"),
        ("--spool", "[default: /var/lib/gpucost/collector-spool.db]"),
        ("--spool-max-bytes", "[default: 64MiB]"),
        ("--mapping-dir", "[default: /run/gpucost/jobs]"),
        ("--proc-root", "[default: /proc]"),
        ("--nvml", "[default: real]"),
        ("--fake-clock", "[default: virtual]"),
        ("--node", "[default: the short hostname]"),
        ("--config", "[default: /etc/gpucost/collector.toml if it exists]"),
        ("--run-until", "[default: run until SIGTERM]"),
    ]:
        assert default in lines[flag], (flag, lines[flag])
    assert "monotonic" not in done.stdout
    assert (
        "stop, sending what is left, once the collector's clock reads this time"
        in (lines["--run-until"])
    )
    # The defaults shown are the configuration's own.
    config = load_config({"node": "n"}, {})
    assert (config.sample_interval, config.report_interval) == (10.0, 60.0)
    assert config.spool_max_bytes == 64 * 2**20 and str(config.spool).endswith("spool.db")


@pytest.mark.parametrize("args", [["run", "--bogus"], []])
def test_usage_mistakes_get_a_usage_message_not_a_traceback(args):
    done = collector(*args)
    assert done.returncode == 2
    assert "Usage: gpucost-collector" in done.stderr and "Traceback" not in done.stderr


def test_flags_win_over_variables_which_win_over_the_file(tmp_path):
    config_file = tmp_path / "collector.toml"
    config_file.write_text(
        'server = "http://file"\ncluster = "from-file"\nnode = "n-file"\n'
        'sample_interval = "5s"\nreport_interval = "2m"\nspool_max_bytes = "1MiB"\n'
    )
    env = {
        "GPUCOST_COLLECTOR_CLUSTER": "from-env",
        "GPUCOST_COLLECTOR_NODE": "n-env",
        "GPUCOST_COLLECTOR_REGISTER_JOBS": "false",
        "PATH": "/bin",
    }
    config = load_config({"node": "n-flag", "metrics_port": None}, env, config_file)
    assert (config.server, config.cluster, config.node) == ("http://file", "from-env", "n-flag")
    assert (config.sample_interval, config.report_interval) == (5.0, 120.0)
    assert config.spool_max_bytes == 2**20 and config.register_jobs is False
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_config({}, {"GPUCOST_COLLECTOR_COLOUR": "red"})
    with pytest.raises(ConfigError, match="sample-interval <= report-interval"):
        load_config({"sample_interval": "2m", "report_interval": "1m"}, {})


def test_once_prints_the_report_it_would_send(tmp_path):
    from collectors.node_script import parse_scenario, write_fake_proc

    scenario = {
        "gpus": [gpu(0, power_mw=250_000), gpu(1)],
        "processes": [process(4, 1, cgroup=slurm(77), environ={"GPUCOST_MODEL": "m1"})],
    }
    (tmp_path / "sc.json").write_text(json.dumps(scenario))
    write_fake_proc(parse_scenario(scenario), tmp_path / "proc")
    done = collector(
        "once",
        "--cluster",
        "c1",
        "--node",
        "n1",
        "--nvml",
        f"fake:{tmp_path}/sc.json",
        "--proc-root",
        str(tmp_path / "proc"),
        "--mapping-dir",
        str(tmp_path / "jobs"),
        "--spool",
        str(tmp_path / "s.db"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["cluster"], report["node"], report["seq"]) == ("c1", "n1", None)
    assert [(e["index"], e["job_id"], e["gpu_seconds"]) for e in report["gpus"]] == [
        (0, None, 10.0),
        (1, "77", 10.0),
    ]
    assert report["gpus"][0]["energy_j"] == 2500.0
    assert report["job_metadata"] == {"77": {"model": "m1"}}
    assert not (tmp_path / "s.db").exists()


def test_metrics_are_served_with_the_gpucost_prefix():
    metrics = CollectorMetrics()
    metrics.samples.inc()
    port = free_port()
    metrics.serve(port, host="127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for name in (
        "gpucost_collector_samples_total 1.0",
        "gpucost_collector_spool_depth",
        "gpucost_collector_spool_oldest_unsent_age_seconds",
        "gpucost_collector_reports_dead_lettered_total",
        "gpucost_collector_last_successful_send_timestamp_seconds",
        "gpucost_collector_gpus_lost_total",
        "gpucost_collector_reports_sent_total",
    ):
        assert name in text


def test_the_fake_nvml_on_the_system_clock_counts_scenario_time_from_the_start(tmp_path):
    """With `--fake-clock system` a scenario's times are seconds since the collector started
    (the virtual clock's would be its saved time): a process due in an hour is not there yet,
    and the report is dated now, not at the scenario's `start_wall`."""
    scenario = {
        "start_wall": "2020-01-01T00:00:00Z",
        "gpus": [gpu(0), gpu(1)],
        "processes": [
            process(4, 0, cgroup=slurm(77)),
            process(5, 1, start=3600, cgroup=slurm(78)),
        ],
    }
    (tmp_path / "sc.json").write_text(json.dumps(scenario))
    from collectors.node_script import parse_scenario, write_fake_proc

    write_fake_proc(parse_scenario(scenario), tmp_path / "proc")
    before = time.time()
    done = collector(
        "once", "--cluster", "c1", "--nvml", f"fake:{tmp_path}/sc.json", "--fake-clock", "system",
        "--proc-root", str(tmp_path / "proc"), "--mapping-dir", str(tmp_path / "jobs"),
        "--spool", str(tmp_path / "s.db"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(e["index"], e["job_id"]) for e in report["gpus"]] == [(0, "77"), (1, None)]
    start = datetime.fromisoformat(report["start"]).timestamp()
    assert before - 1 <= start <= time.time()
