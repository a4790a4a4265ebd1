"""`gpucost-collector job-tokens` and the Slurm epilog that runs it, against a real server.

The count is stored exactly and alone (the job's model, phase, team and labels stay); a bad
count or job id is one line and stores nothing; a refusal is final at once, a failing
service is retried and then given up on in one line; the epilog sends only a plain file of
the job's own user holding digits, and never fails."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.collectors.service import BIN, FlakyProxy
from tests.slurm_cluster import install_slurm_script
from tests.support import CLUSTER, free_port, running_server, token_on

V3_TOKENS = 14_800_000_000_000
LABELS = {"model": "deepseek-v3", "phase": "pre-training", "team": "research"}
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}


@dataclass
class Node:
    """A node's collector settings for a running server, and an admin to look with."""

    url: str
    config: Path
    token_file: Path
    admin: dict[str, str]

    def flags(self, server: str | None = None) -> list[str]:
        return ["--server", server or self.url, "--token-file", str(self.token_file),
                "--cluster", CLUSTER]  # fmt: skip

    def job(self, job_id: str) -> Any:
        response = httpx.get(f"{self.url}/v1/jobs/{CLUSTER}/{job_id}", headers=self.admin)
        return response.json() if response.status_code == 200 else response.status_code

    def label(self, job_id: str, **fields: Any) -> None:
        url = f"{self.url}/v1/jobs/{CLUSTER}/{job_id}"
        httpx.put(url, json=fields, headers=self.admin).raise_for_status()


def write_config(path: Path, server: str, token_file: Path, cluster: str = CLUSTER) -> Path:
    """A node's collector configuration file."""
    path.write_text(f'server = "{server}"\ntoken_file = "{token_file}"\ncluster = "{cluster}"\n')
    return path


@contextmanager
def serving_node(db_url: str, tmp_path: Path) -> Iterator[Node]:
    """A server on the test's database, and a node's collector settings for it."""
    token_file = tmp_path / "collector.token"
    token_file.write_text(token_on(db_url, "collector", cluster=CLUSTER, name="node-017") + "\n")
    admin = {"Authorization": f"Bearer {token_on(db_url, 'admin', name='admin')}"}
    with running_server(db_url, tmp_path) as server:
        config = write_config(tmp_path / "collector.toml", server.url, token_file)
        yield Node(server.url, config, token_file, admin)


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[Node]:
    with serving_node(db_url, tmp_path) as served:
        yield served


def job_tokens(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gpucost-collector"), "job-tokens", *args],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_count_is_stored_exactly_and_the_jobs_labels_stay(node: Node) -> None:
    node.label("4242", **LABELS, labels={"run": "v3"})

    done = job_tokens("--config", str(node.config), "--job", "4242", "--tokens", str(V3_TOKENS))
    largest = job_tokens(*node.flags(), "--job", "4242", "--tokens", str(10**18))
    zero_on_a_new_job = job_tokens(*node.flags(), "--job", "4243", "--tokens", "0")

    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"job 4242 on {CLUSTER}: {V3_TOKENS} tokens\n", ""
    )  # fmt: skip
    assert (largest.returncode, largest.stdout) == (
        0, f"job 4242 on {CLUSTER}: 1000000000000000000 tokens\n"
    )  # fmt: skip
    assert (zero_on_a_new_job.returncode, zero_on_a_new_job.stdout) == (
        0, f"job 4243 on {CLUSTER}: 0 tokens (a new job: no usage reported yet)\n"
    )  # fmt: skip
    labelled, new = node.job("4242"), node.job("4243")
    assert {k: labelled[k] for k in ("model", "phase", "team", "labels", "tokens")} == {
        **LABELS, "labels": {"run": "v3"}, "tokens": "1000000000000000000"
    }  # fmt: skip
    assert (new["model"], new["tokens"]) == (None, "0")


NOT_DIGITS = "is not a whole number of tokens written in plain digits"
NOT_A_JOB_ID = "is not a job id (letters, digits and ._:@+-, at most 128)"
BAD_INPUT = [
    ("4242", "-1", f"--tokens: '-1' {NOT_DIGITS}"),
    ("4242", "1.5", f"--tokens: '1.5' {NOT_DIGITS}"),
    ("4242", "1e3", f"--tokens: '1e3' {NOT_DIGITS}"),
    ("4242", " 12", f"--tokens: ' 12' {NOT_DIGITS}"),
    ("4242", "", f"--tokens: '' {NOT_DIGITS}"),
    ("4242", "\u0663", f"--tokens: '\u0663' {NOT_DIGITS}"),  # an Arabic-Indic 3
    (
        "4242",
        str(10**18 + 1),
        "--tokens: 1000000000000000001 is more than 1000000000000000000 (10^18)",
    ),  # fmt: skip
    ("4242", "1" * 5000, "--tokens: a 5000-digit number is more than 10^18"),  # no traceback
    ("4242", "0" * 30 + "1" + "0" * 19, "--tokens: a 20-digit number is more than 10^18"),
    ("../4242", "7", f"--job: '../4242' {NOT_A_JOB_ID}"),
    ("4242\n", "7", f"--job: '4242\\n' {NOT_A_JOB_ID}"),  # `$` alone lets a line end through
    ("", "7", f"--job: '' {NOT_A_JOB_ID}"),
]


def test_a_bad_count_or_job_id_is_one_line_and_stores_nothing(node: Node) -> None:
    node.label("4242", **LABELS, tokens=5)

    answers = [job_tokens(*node.flags(), "--job", job, "--tokens", count)
               for job, count, _ in BAD_INPUT]  # fmt: skip
    missing = job_tokens(*node.flags(), "--job", "4242")

    assert [(done.returncode, done.stdout, done.stderr) for done in answers] == [
        (1, "", f"gpucost-collector: error: {message}\n") for _, _, message in BAD_INPUT
    ]
    assert missing.returncode == 2 and "Missing option '--tokens'" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert node.job("4242")["tokens"] == "5"
    listed = httpx.get(f"{node.url}/v1/jobs", headers=node.admin).json()
    assert [j["job_id"] for j in listed["jobs"]] == ["4242"]


def test_a_refusal_is_final_and_a_failing_service_is_retried(node: Node, db_url: str) -> None:
    """A token of another cluster is refused once, not retried; two 500s are retried past;
    a service that never answers is given up on at the deadline, in one line."""
    flaky = FlakyProxy(node.url, lambda n: "before" if n <= 2 else None)
    other = node.token_file.with_name("other.token")
    other.write_text(token_on(db_url, "collector", cluster="other", name="other") + "\n")
    try:
        retried = job_tokens(*node.flags(flaky.url), "--job", "7", "--tokens", "12")
        requests_retried = flaky.count
        refused = job_tokens(
            "--server", flaky.url, "--token-file", str(other), "--cluster", CLUSTER,
            "--job", "7", "--tokens", "99",
        )  # fmt: skip
        requests_refused = flaky.count - requests_retried
    finally:
        flaky.close()
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = job_tokens(*node.flags(dead), "--give-up-after", "1s", "--job", "7",
                             "--tokens", "99")  # fmt: skip
    no_token = job_tokens("--server", node.url, "--token-file", str(other) + ".missing",
                          "--cluster", CLUSTER, "--job", "7", "--tokens", "99")  # fmt: skip

    assert (retried.returncode, requests_retried) == (0, 3), retried.stderr
    assert (refused.returncode, requests_refused) == (1, 1)
    assert refused.stderr.startswith("gpucost-collector: error: the service answered 403: ")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"gpucost-collector: error: cannot reach {dead}: ")
    assert unreachable.stderr.endswith(" tries)\n") and "gave up after " in unreachable.stderr
    assert no_token.stderr == (
        f"gpucost-collector: error: cannot read the token file {other}.missing: "
        "No such file or directory\n"
    )
    for done in (refused, unreachable, no_token):
        assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    assert node.job("7")["tokens"] == "12"


def configure_epilog(script: Path, **settings: object) -> None:
    """Set the installed epilog's `NAME=` lines with sed, as docs/slurm.md says."""
    edits = [arg for k, v in settings.items() for arg in ("-e", f"s|^{k}=.*|{k}={v}|")]
    subprocess.run(["sed", "-i", *edits, str(script)], check=True)


def epilog(tmp_path: Path, config: Path, send_seconds: int = 15) -> Path:
    """The shipped epilog installed, sending the counts left in `tmp_path/tokens`."""
    tokens = tmp_path / "tokens"
    tokens.mkdir(exist_ok=True)
    tokens.chmod(0o1777)  # as docs/slurm.md says: every user may write there
    installed = install_slurm_script("slurm-epilog.sh", tmp_path / "epilog", tmp_path / "jobs")
    configure_epilog(installed, TOKENS_DIR=tokens, COLLECTOR=BIN / "gpucost-collector",
                     COLLECTOR_CONFIG=config, SEND_SECONDS=send_seconds)  # fmt: skip
    return installed


def run_epilog(
    script: Path, job: str, uid: int, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """As slurmd runs it: with only Slurm's variables."""
    env = {"PATH": path or os.environ["PATH"], "SLURM_JOB_ID": job, "SLURM_JOB_UID": str(uid)}
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_the_epilog_sends_the_count_the_job_left_and_refuses_what_is_unsafe(
    node: Node, tmp_path: Path
) -> None:
    script = epilog(tmp_path, node.config)
    tokens = tmp_path / "tokens"
    for job in ("51", "52", "53", "54"):
        node.label(job, **LABELS)
    (tokens / "51").write_text(f"{V3_TOKENS}\n")
    (tokens / "elsewhere").write_text("77\n")
    (tokens / "52").symlink_to(tokens / "elsewhere")
    (tokens / "53").write_text("88\n")
    (tokens / "54").write_text("many\n")
    uid = (tokens / "51").stat().st_uid
    if os.geteuid() == 0:  # a file of another user than the job's (root's is taken)
        os.chown(tokens / "53", 4321, -1)
    someone_else = (tokens / "53").stat().st_uid + 1

    sent = run_epilog(script, "51", uid)
    symlink = run_epilog(script, "52", uid)
    not_the_jobs_user = run_epilog(script, "53", someone_else)
    not_digits = run_epilog(script, "54", uid)
    no_file = run_epilog(script, "55", uid)

    assert sent.stderr == f"gpucost epilog: job 51 on {CLUSTER}: {V3_TOKENS} tokens\n"
    assert symlink.stderr == f"gpucost epilog: job 52: {tokens}/52 is not a plain file: not sent\n"
    assert not_the_jobs_user.stderr == (
        f"gpucost epilog: job 53: {tokens}/53 belongs to uid {someone_else - 1}, not to the "
        "job's user: not sent\n"
    )
    assert not_digits.stderr == (
        f"gpucost epilog: job 54: {tokens}/54 does not hold a whole number of tokens: not sent\n"
    )
    assert no_file.stderr == ""
    for done in (sent, symlink, not_the_jobs_user, not_digits, no_file):
        assert done.returncode == 0
    assert sorted(p.name for p in tokens.iterdir()) == ["elsewhere"]
    stored = {job: node.job(job) for job in ("51", "52", "53", "54")}
    assert {job: (j["tokens"], j["model"], j["phase"]) for job, j in stored.items()} == {
        "51": (str(V3_TOKENS), "deepseek-v3", "pre-training"),
        "52": (None, "deepseek-v3", "pre-training"),
        "53": (None, "deepseek-v3", "pre-training"),
        "54": (None, "deepseek-v3", "pre-training"),
    }
    assert node.job("55") == 404


def test_the_epilog_logs_a_count_it_cannot_send_and_still_succeeds(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "collector.token").write_text("a-token\n")
    config = write_config(tmp_path / "collector.toml", dead, tmp_path / "collector.token")
    script = epilog(tmp_path, config, send_seconds=1)
    (tmp_path / "tokens" / "61").write_text("123\n")

    done = run_epilog(script, "61", os.geteuid())

    assert done.returncode == 0
    assert done.stderr.startswith(
        f"gpucost epilog: job 61: 123 tokens not sent (cannot reach {dead}"
    )
    assert done.stderr.endswith(
        "; send them with: gpucost-collector job-tokens --job 61 --tokens 123\n"
    )
    assert not (tmp_path / "tokens" / "61").exists()
