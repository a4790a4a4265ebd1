"""The README's walkthrough runs as written: its shell blocks, in order, in a fresh directory
against a fresh `gpucost serve`, each printing what the block after it shows.

Rules for the walkthrough section (so that a reader can follow it by hand as the test does):
a ```sh block whose first command is `.venv/bin/gpucost serve` is started in the background
and waited for (the reader leaves it running in a shell of its own); every other ```sh block
runs, in order, in one bash session of its own (variables carry over), and the ```text block
right after it, if any, is everything it prints, stdout and stderr together, where `…` stands
for any run of characters within a line. The server's address is the README's,
`127.0.0.1:8000`, moved to a free port."""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from app.cli.common import wait_until_serving
from tests.support import ROOT, free_port

README = ROOT / "README.md"
ADDRESS = "127.0.0.1:8000"
SERVE = ".venv/bin/gpucost serve"
MARK = "@@walkthrough-block@@"


@dataclass
class Block:
    script: str
    expected: str | None = None


def walkthrough(readme: str) -> list[Block]:
    """The walkthrough's shell blocks in order, each with the output shown after it."""
    section = readme.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[Block] = []
    for kind, body in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M):
        if kind == "sh":
            blocks.append(Block(body))
        elif kind == "text" and blocks and blocks[-1].expected is None:
            blocks[-1].expected = body
        else:
            raise AssertionError(f"a ```{kind} block the walkthrough test cannot place:\n{body}")
    return blocks


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


def test_the_walkthrough_parses_into_runnable_blocks() -> None:
    blocks = walkthrough(README.read_text())

    assert blocks[0].script.startswith(SERVE)
    assert len(blocks) >= 6
    assert all(block.expected for block in blocks[1:]), "every command block shows its output"


def first_command(readme: str, section: str) -> str:
    """The first line of the first ```sh block under `## section`, as `.ci/run` reads it."""
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```sh\n", 1)[1].splitlines()[0]


def test_the_tests_install_at_the_locked_versions_and_the_demo_with_the_server() -> None:
    readme = README.read_text()

    test_command = first_command(readme, "Run the tests")
    assert "pip install -c requirements.lock -e '.[test]'" in test_command
    assert "pip install -e '.[server]'" in first_command(readme, "Try it")
    # The command .ci/run runs is the README's.
    assert "/^## Run the tests/" in (README.parent / ".ci" / "run").read_text()


def test_matching_is_literal_but_for_the_ellipsis() -> None:
    assert matches("database: sqlite:////…/gpucost.db", "database: sqlite:////tmp/x/gpucost.db")
    assert not matches("$2.35", "$2.350")
    assert not matches("a.b", "axb")


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    blocks = [
        Block(
            block.script.replace(ADDRESS, f"127.0.0.1:{port}"),
            None
            if block.expected is None
            else block.expected.replace(ADDRESS, f"127.0.0.1:{port}"),
        )
        for block in walkthrough(README.read_text())
    ]
    (tmp_path / ".venv").symlink_to(sys.prefix)
    env = {key: value for key, value in os.environ.items() if not key.startswith("GPUCOST_")}
    env["COLUMNS"] = "100"

    serve_line = blocks[0].script.strip().replace(SERVE, f"{SERVE} --port {port}", 1)
    server = subprocess.Popen(
        ["bash", "-c", f"exec {serve_line}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("wb"),
    )
    try:
        why_not = wait_until_serving(server, f"http://127.0.0.1:{port}")
        assert why_not is None, (why_not, (tmp_path / "serve.log").read_text())
        script = "set -eo pipefail\nexec 2>&1\n" + "".join(
            f"echo {MARK}\n{block.script}" for block in blocks[1:]
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)

    outputs = done.stdout.split(f"{MARK}\n")[1:]
    assert done.returncode == 0, (done.stdout, (tmp_path / "serve.log").read_text())
    assert len(outputs) == len(blocks) - 1
    for block, output in zip(blocks[1:], outputs, strict=True):
        expected = (block.expected or "").rstrip("\n").splitlines()
        actual = [line.rstrip() for line in output.rstrip("\n").splitlines()]
        assert len(actual) == len(expected), (block.script, output)
        for want, got in zip(expected, actual, strict=True):
            assert matches(want.rstrip(), got), (block.script, want, got)
