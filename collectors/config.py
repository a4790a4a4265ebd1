"""Configuration: command-line flags over `GPUCOST_COLLECTOR_*` variables over a TOML file.

The TOML file is `--config PATH` (or `GPUCOST_COLLECTOR_CONFIG`), else
`/etc/gpucost/collector.toml` when it exists. Keys are the flag names with underscores:
`server`, `token_file`, `cluster`, `node`, `sample_interval = "10s"`, ...
"""

from __future__ import annotations

import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

ENV_PREFIX = "GPUCOST_COLLECTOR_"
# Half the service's one-hour limit on a report, so that late samples never exceed it.
MAX_REPORT_INTERVAL_S = 1800.0
# The service's rule for cluster and node names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DEFAULT_CONFIG_FILE = Path("/etc/gpucost/collector.toml")
# A duration, for the collector's settings and the simulator's scenarios alike.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: dict[str | None, Fraction] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
    None: Fraction(1),
}


class ConfigError(ValueError):
    """A configuration mistake, reported to the operator as one line."""


def parse_duration(value: Any, name: str) -> float:
    """`10s`, `1m`, `500ms`, `1h` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    seconds = exact_duration(value)
    if seconds is None:
        raise ConfigError(f"{name}: {value!r} is not a duration (like 10s, 1m, 500ms)")
    return float(seconds)


def exact_duration(value: Any) -> Fraction | None:
    """`500ms`, `10s`, `15m`, `1300.78125h`, `2d` or a whole number of seconds, as an exact
    number of seconds; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Fraction(value)
    match = _DURATION.match(str(value))
    if match is None:
        return None
    return Fraction(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_size(value: Any, name: str) -> int:
    """Bytes, or with a unit: `64MiB`, `1GiB`, `500kB`."""
    match = re.match(r"^\s*(\d+)\s*([kMG]i?B)?\s*$", str(value))
    if match is None:
        raise ConfigError(f"{name}: {value!r} is not a size (like 64MiB)")
    units: dict[str | None, int] = {
        "kB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "KiB": 2**10,
        "kiB": 2**10,
    }
    units |= {"MiB": 2**20, "GiB": 2**30, None: 1}
    return int(match.group(1)) * units[match.group(2)]


@dataclass(frozen=True)
class Config:
    server: str | None = None
    token_file: Path | None = None
    cluster: str | None = None
    node: str = ""
    sample_interval: float = 10.0
    report_interval: float = 60.0
    spool: Path = Path("/var/lib/gpucost/collector-spool.db")
    spool_max_bytes: int = 64 * 2**20
    mapping_dir: Path = Path("/run/gpucost/jobs")
    proc_root: Path = Path("/proc")
    metrics_port: int | None = None
    nvml: str = "real"
    batch_size: int = 500
    http_timeout: float = 10.0
    max_gap: float = 900.0
    register_jobs: bool = True
    run_until: float | None = None
    fake_clock_state: Path | None = None
    # The fake NVML's clock: "virtual" (the scenario's compressed time) or "system".
    fake_clock: str = "virtual"
    log_level: str = "INFO"

    def require_delivery(self) -> None:
        """`run` needs somewhere to send to."""
        for name in ("server", "token_file", "cluster"):
            if getattr(self, name) in (None, ""):
                raise ConfigError(
                    f"--{name.replace('_', '-')} is required "
                    f"(or {ENV_PREFIX}{name.upper()}, or `{name}` in the config file)"
                )


_FIELDS = {f.name: f for f in fields(Config)}


def _convert(name: str, value: Any) -> Any:
    if name in ("sample_interval", "report_interval", "http_timeout", "max_gap", "run_until"):
        return parse_duration(value, name)
    if name == "spool_max_bytes":
        return parse_size(value, name)
    if name in ("token_file", "spool", "mapping_dir", "proc_root", "fake_clock_state"):
        return Path(value)
    if name in ("metrics_port", "batch_size"):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not a whole number") from None
    if name == "register_jobs" and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value


def load_config(
    cli: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None = None
) -> Config:
    """Merge the sources (flags win, then variables, then the file) and check the result."""
    file_path = config_file or (
        Path(env[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in env else None
    )
    values: dict[str, Any] = {}
    if file_path is not None or DEFAULT_CONFIG_FILE.exists():
        path = file_path or DEFAULT_CONFIG_FILE
        try:
            values.update(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {path}: {error}") from None
    values.update(
        {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    )
    values.update({k: v for k, v in cli.items() if v is not None})
    values.pop("config", None)
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    config = Config(**{k: _convert(k, v) for k, v in values.items()})
    if not config.node:
        config = Config(**{**config.__dict__, "node": socket.gethostname().split(".")[0]})
    if not 0 < config.sample_interval <= config.report_interval <= MAX_REPORT_INTERVAL_S:
        raise ConfigError("need 0 < sample-interval <= report-interval <= 30m")
    for name in ("cluster", "node"):
        value = getattr(config, name)
        if value is not None and not _NAME.match(str(value)):
            raise ConfigError(f"{name}: {value!r} is not a valid name (letters, digits, ._:-)")
    if not 0 <= config.max_gap <= MAX_REPORT_INTERVAL_S:
        raise ConfigError("max-gap must be between 0 and 30m")
    if not 1 <= config.batch_size <= 1000:
        raise ConfigError("batch-size must be between 1 and 1000")
    if not (config.nvml == "real" or config.nvml.startswith("fake:")):
        raise ConfigError(f"nvml: {config.nvml!r} is neither 'real' nor 'fake:SCENARIO_FILE'")
    if config.fake_clock not in ("virtual", "system"):
        raise ConfigError(f"fake-clock: {config.fake_clock!r} is neither 'virtual' nor 'system'")
    return config
