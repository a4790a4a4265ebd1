"""`gpucost-collector job-tokens` and its epilog when something else answers, or the job's user
plays tricks: a 2xx that is not the stored count is an error, a refusal is one line, and the
epilog reads only what the job's user left (never a file a link swapped in meanwhile points
to), logs one printable line, and still releases GPUs of a job whose id is no file name."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from tests.app.jobs.test_job_tokens_cli import (
    LABELS,
    Node,
    epilog,
    job_tokens,
    run_epilog,
    serving_node,
    write_config,
)
from tests.support import CLUSTER


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[Node]:
    with serving_node(db_url, tmp_path) as served:
        yield served


class Answering:
    """Something at the service's address answering every request `status` and `body`."""

    def __init__(self) -> None:
        self.status, self.body = 200, b"{}"
        answering = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(answering.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answering.body)))
                self.end_headers()
                self.wfile.write(answering.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status: int, body: object) -> None:
        self.status, self.body = status, json.dumps(body).encode()


@pytest.fixture
def answering() -> Iterator[Answering]:
    fake = Answering()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_a_2xx_that_is_not_the_count_sent_is_an_error_and_a_detail_one_line(
    answering: Answering, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("a-token\n")
    flags = ["--server", answering.url, "--token-file", str(tmp_path / "token"),
             "--cluster", CLUSTER, "--job", "7", "--tokens", "12"]  # fmt: skip
    said = {}
    for name, status, body in [
        ("null", 200, {"tokens": None}),
        ("other", 201, {"tokens": "5"}),
        ("number", 200, {"tokens": 12}),
        ("multi-line", 400, {"detail": "first\nsecond\r\nthird"}),
    ]:
        answering.answer(status, body)
        done = job_tokens(*flags)
        said[name] = (done.returncode, done.stdout, done.stderr)

    error = "gpucost-collector: error: the service answered"
    assert said == {
        "null": (1, "", f"{error} 200 but holds None tokens for job 7, not 12\n"),
        "other": (1, "", f"{error} 201 but holds 5 tokens for job 7, not 12\n"),
        "number": (0, f"job 7 on {CLUSTER}: 12 tokens\n", ""),
        "multi-line": (1, "", f"{error} 400: first second third\n"),
    }


def test_the_epilog_logs_one_printable_line_whatever_the_service_said(
    answering: Answering, tmp_path: Path
) -> None:
    """dash's `echo` turns a `\\n` in a message into a line end: a service (or a proxy) must
    not be able to write lines of its own into the node's log."""
    (tmp_path / "token").write_text("a-token\n")
    config = write_config(tmp_path / "collector.toml", answering.url, tmp_path / "token")
    script = epilog(tmp_path, config)
    answering.answer(400, {"detail": "bad\\nFORGED line\\c and \x1b[31mred"})
    (tmp_path / "tokens" / "71").write_text("5\n")

    done = run_epilog(script, "71", os.geteuid())

    assert done.returncode == 0
    assert done.stderr == (
        "gpucost epilog: job 71: 5 tokens not sent (the service answered 400: "
        "bad\\nFORGED line\\c and red); send them with: gpucost-collector job-tokens "
        "--job 71 --tokens 5\n"
    )


def swap_on_stat(tmp_path: Path, job_file: Path, target: Path) -> str:
    """A PATH whose `stat` first replaces `job_file` by a link to `target`, as the job's user
    may do at any moment: the window between the epilog's checks and its read, held open."""
    bin_dir = tmp_path / "racing-bin"
    bin_dir.mkdir()
    stat = bin_dir / "stat"
    stat.write_text(
        f'#!/bin/sh\nln -sfn "{target}" "{job_file}"\nexec {shutil.which("stat")} "$@"\n'
    )
    stat.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_the_epilog_never_reads_a_file_a_link_swapped_in_after_its_checks_points_to(
    node: Node, tmp_path: Path
) -> None:
    script = epilog(tmp_path, node.config)
    tokens = tmp_path / "tokens"
    secret = tmp_path / "secret"  # of root's, on a node: 32 bytes of it would be sent
    secret.write_text("31337\n")
    (tokens / "81").write_text("123\n")
    node.label("81", **LABELS)

    done = run_epilog(
        script, "81", os.geteuid(), path=swap_on_stat(tmp_path, tokens / "81", secret)
    )

    assert (done.returncode, done.stderr) == (
        0, f"gpucost epilog: job 81 on {CLUSTER}: 123 tokens\n"
    )  # fmt: skip
    assert node.job("81")["tokens"] == "123"
    assert secret.read_text() == "31337\n"


def test_the_epilog_sends_no_hard_link_nor_a_file_of_root_for_another_user(
    node: Node, tmp_path: Path
) -> None:
    """A hard link names another file (root's, where the kernel allows it); root's own file
    is not the job's user's."""
    script = epilog(tmp_path, node.config)
    tokens = tmp_path / "tokens"
    (tmp_path / "elsewhere").write_text("77\n")
    os.link(tmp_path / "elsewhere", tokens / "91")
    (tokens / "92").write_text("88\n")
    uid = (tokens / "92").stat().st_uid
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a job of another user than the file's (root's)")

    linked = run_epilog(script, "91", uid)
    roots = run_epilog(script, "92", 4321)

    assert linked.stderr == (
        f"gpucost epilog: job 91: {tokens}/91 has 2 links (one to another file?): not sent\n"
    )
    assert roots.stderr == (
        f"gpucost epilog: job 92: {tokens}/92 belongs to uid 0, not to the job's user: not sent\n"
    )
    assert (linked.returncode, roots.returncode) == (0, 0)
    assert sorted(p.name for p in tokens.iterdir()) == []
    assert (tmp_path / "elsewhere").read_text() == "77\n"
    assert (node.job("91"), node.job("92")) == (404, 404)


def test_the_epilog_releases_the_gpus_of_a_job_whose_id_is_no_file_name(tmp_path: Path) -> None:
    (tmp_path / "collector.token").write_text("a-token\n")
    config = write_config(tmp_path / "c.toml", "http://127.0.0.1:9", tmp_path / "collector.token")
    script = epilog(tmp_path, config)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "GPU-0").write_text("4242+1")
    (tmp_path / "jobs" / "GPU-1").write_text("4243")

    done = run_epilog(script, "4242+1", os.geteuid())

    assert (done.returncode, done.stderr) == (0, "")
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["GPU-1"]
