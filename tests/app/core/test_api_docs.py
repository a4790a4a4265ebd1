"""The API documents load with no network beyond the server: `/docs` (Swagger UI) and `/redoc`
refer only to assets the server itself serves from the installed package, and rendered in
headless Chromium, with every other host unresolvable, they list every operation."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support import running_server, skip_or_fail

PAGES = ("/docs", "/redoc")
CHROMIUM = ("chromium", "chromium-browser")


def rendered(url: str) -> str:
    """The page's DOM once its scripts have run, in headless Chromium that can resolve no
    host but this machine's."""
    browser = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if browser is None:
        skip_or_fail("chromium not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                str(browser),
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",  # containers' /dev/shm is small
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def server_url(db_url: str, log_dir: Path):  # type: ignore[no-untyped-def]
    with running_server(db_url, log_dir) as server:
        yield server.url


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_refer_only_to_the_servers_own_assets(server_url: str, page: str) -> None:
    html = httpx.get(f"{server_url}{page}").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)

    assert assets, html
    assert not re.search(r"https?://", html), html
    for asset in assets:
        assert asset.startswith("/"), asset
        answer = httpx.get(f"{server_url}{asset}")
        assert answer.status_code == 200 and answer.content, asset


def test_swagger_ui_renders_every_operation_offline(server_url: str) -> None:
    paths = set(json.loads(httpx.get(f"{server_url}/openapi.json").text)["paths"])

    dom = rendered(f"{server_url}/docs")

    assert set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)) == paths


def test_redoc_renders_every_operation_offline(server_url: str) -> None:
    paths = set(json.loads(httpx.get(f"{server_url}/openapi.json").text)["paths"])

    dom = rendered(f"{server_url}/redoc")

    # Each operation's verb and path, as ReDoc draws them beside its description.
    drawn = re.findall(r'http-verb [a-z]+">[a-z]+</span><span[^>]*>([^<]+)</span>', dom)
    assert set(drawn) == paths
