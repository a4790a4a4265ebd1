"""The page at `/`, in headless Chromium driven by Selenium through Debian's chromium-driver,
against a real server whose data came in through the API: it asks once for a viewer token,
shows each model's training-cost table, this month by team and model, the idle share and
the exports, refuses a wrong token plainly, draws its tables (read off a screenshot), and
loads nothing from another host."""

import io
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from app.ui import service as ui_service
from tests.support import CLUSTER, H800, entry, report, running_server, skip_or_fail

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver: nothing is downloaded
WAIT_S = 30
WINDOW = (1280, 1000)
DARK = 90  # grey levels below this are text (the page draws #1b1b1b on white)

V3_HEADER = ["Training Costs", "Pre-Training", "Context Extension", "Post-Training", "Total"]
# deepseek-v3: 8 GPUs for an hour in January and 12 for a minute this month in pre-training
# (8.2 GPU-hours), 4 GPUs for an hour of post-training, at $2.35: in full, under 1K and $1M.
DEEPSEEK_TABLE = [
    V3_HEADER,
    ["in H800 GPU Hours", "8.2", "0", "4", "12.2"],
    ["in USD", "$19.27", "$0.00", "$9.40", "$28.67"],
]
# llama-4: 30 GPUs for a minute this month, 0.5 GPU-hours; $1.175 is $1.18 (half to even).
LLAMA_TABLE = [
    V3_HEADER,
    ["in H800 GPU Hours", "0.5", "0", "0", "0.5"],
    ["in USD", "$1.18", "$0.00", "$0.00", "$1.18"],
]
# This month: those minutes and 6 idle GPUs for the same minute ($0.235 is $0.24). The total
# is the exact sum rounded once ($1.88), not the sum of the rounded rows.
MONTH_ROWS = {
    ("(idle)", "(idle)", "0.1", "$0.24"),
    ("foundation", "deepseek-v3", "0.2", "$0.47"),
    ("research", "llama-4", "0.5", "$1.18"),
}
MONTH_TOTAL = ["Total", "0.8", "$1.88"]
IDLE_SHARE = "12.5 %"  # 0.1 of 0.8 GPU-hours


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _load(url: str, tokens: dict[str, str]) -> str:
    """Usage in January 2025 and in this UTC month, labelled and priced, through the API;
    this month's name."""
    collector = {"Authorization": f"Bearer {tokens['collector']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    january = report(
        1,
        start="2025-01-06T10:00:00Z",
        end="2025-01-06T11:00:00Z",
        gpus=[entry(n, job_id="91234", gpu_seconds=3600) for n in range(8)]
        + [entry(n, job_id="91235", gpu_seconds=3600) for n in range(8, 12)],
    )
    # A minute from the month's start: never too far ahead of the server's clock.
    this_month = report(
        2,
        start=_iso(month),
        end=_iso(month + timedelta(minutes=1)),
        gpus=[entry(n, job_id="92000") for n in range(30)]
        + [entry(n, job_id=None) for n in range(30, 36)]
        + [entry(n, job_id="91234") for n in range(36, 48)],
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in (january, this_month):
            answer = client.post("/v1/reports", json=body, headers=collector)
            assert answer.status_code == 201, answer.text
        labels = {
            "91234": {"model": "deepseek-v3", "phase": "pre-training", "team": "foundation"},
            "91235": {"model": "deepseek-v3", "phase": "post-training", "team": "foundation"},
            "92000": {"model": "llama-4", "phase": "pre-training", "team": "research"},
        }
        for job_id, body in labels.items():
            answer = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=body, headers=collector)
            assert answer.status_code in (200, 201), answer.text
        rate = {
            "gpu_model": H800,
            "usd_per_gpu_hour": "2.35",
            "effective_from": "2025-01-01T00:00:00Z",
        }
        answer = client.post("/v1/rates", json=rate, headers=admin)
        assert answer.status_code == 201, answer.text
    return f"{month:%Y-%m}"


@pytest.fixture
def server(db_url: str, log_dir: Path, tokens: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The server's URL and this month, with the data loaded."""
    with running_server(db_url, log_dir) as process:
        yield process.url, _load(process.url, tokens)


@pytest.fixture
def downloads() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.fixture
def browser(downloads: Path) -> Iterator[WebDriver]:
    """Headless Chromium that resolves no host but this machine, driven through Debian's
    chromium-driver, with a fresh profile (an empty browser session)."""
    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if binary is None or not Path(CHROMEDRIVER).exists():
        skip_or_fail(
            "chromium or chromedriver not installed "
            "(Debian: apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in (
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers' /dev/shm is small
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition)


def _give_token(driver: WebDriver, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    assert field.is_displayed()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def _shown(driver: WebDriver) -> None:
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#summary table.month"))


def _cells(table: WebElement) -> list[list[str]]:
    return [
        [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]
        for row in table.find_elements(By.TAG_NAME, "tr")
    ]


def _v3(driver: WebDriver, model: str) -> list[list[str]]:
    return _cells(driver.find_element(By.CSS_SELECTOR, f'table.v3[data-model="{model}"]'))


def test_asks_for_a_token_once_and_shows_the_exact_figures(
    server: tuple[str, str], browser: WebDriver, tokens: dict[str, str]
) -> None:
    url, month = server
    browser.get(f"{url}/")

    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#summary table") == []

    _give_token(browser, tokens["viewer"])
    _shown(browser)

    tables = browser.find_elements(By.CSS_SELECTOR, "table.v3")
    assert [table.get_attribute("data-model") for table in tables] == ["deepseek-v3", "llama-4"]
    assert _v3(browser, "deepseek-v3") == DEEPSEEK_TABLE
    assert _v3(browser, "llama-4") == LLAMA_TABLE
    month_table = _cells(browser.find_element(By.CSS_SELECTOR, "table.month"))
    assert month_table[0] == ["Team", "Model", "GPU hours", "USD"]
    assert {tuple(row) for row in month_table[1:-1]} == MONTH_ROWS
    assert month_table[-1] == MONTH_TOTAL
    assert f"{month} (UTC) by team and model" in browser.find_element(By.ID, "month").text
    idle = browser.find_element(By.ID, "idle-share").text
    assert IDLE_SHARE in idle and "(0.1 of 0.8)" in idle
    notes = browser.find_element(By.ID, "models").text
    assert "Priced at NVIDIA H800 at $2.35 per GPU hour (the rate card)." in notes
    assert not browser.find_element(By.ID, "token-form").is_displayed()

    browser.refresh()
    _shown(browser)

    assert not browser.find_element(By.ID, "token-form").is_displayed()
    assert _v3(browser, "deepseek-v3") == DEEPSEEK_TABLE

    browser.find_element(By.ID, "forget").click()

    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#summary table") == []
    assert browser.execute_script("return sessionStorage.length") == 0


def _downloaded(browser: WebDriver, downloads: Path, prefix: str, suffix: str) -> Path:
    """The file a click saved, once Chromium has finished writing it (and renamed it)."""
    found = _wait(
        browser,
        lambda _: [
            p for p in downloads.iterdir() if p.name.startswith(prefix) and p.suffix == suffix
        ],
    )
    path: Path = found[0]
    return path


def test_the_export_links_download_the_months_exports(
    server: tuple[str, str], browser: WebDriver, tokens: dict[str, str], downloads: Path
) -> None:
    url, month = server
    year, number = (int(part) for part in month.split("-"))
    following = f"{year + number // 12:04d}-{number % 12 + 1:02d}"
    window = f"from={month}-01T00%3A00%3A00Z&to={following}-01T00%3A00%3A00Z"
    browser.get(f"{url}/")
    _give_token(browser, tokens["viewer"])
    _shown(browser)

    links = {
        link.get_attribute("data-export"): link.get_attribute("href")
        for link in browser.find_elements(By.CSS_SELECTOR, "a[data-export]")
    }
    assert links == {
        kind: f"{url}/v1/exports/{kind}?{window}"
        for kind in ("focus.csv", "focus.parquet", "costs.csv")
    }

    browser.find_element(By.CSS_SELECTOR, 'a[data-export="costs.csv"]').click()
    summary = _downloaded(browser, downloads, f"gpucost-costs-{month.replace('-', '')}-", ".csv")
    browser.find_element(By.CSS_SELECTOR, 'a[data-export="focus.parquet"]').click()
    focus = _downloaded(browser, downloads, "gpucost-focus-", ".parquet")

    lines = summary.read_text().splitlines()
    assert lines[0].startswith("billing_month,charge_class,charge_month,team,model,phase")
    assert any(
        ",research,llama-4,pre-training,hf-h800,NVIDIA H800,0.5,2.35,1.175," in line
        for line in lines
    ), lines
    parquet = focus.read_bytes()
    assert parquet[:4] == parquet[-4:] == b"PAR1" and len(parquet) > 1000


@pytest.mark.parametrize("role", ["wrong", "collector"])
def test_a_refused_token_gets_a_clear_message_and_no_data(
    server: tuple[str, str], browser: WebDriver, tokens: dict[str, str], role: str
) -> None:
    url, _ = server
    browser.get(f"{url}/")

    _give_token(browser, "gpc_not-a-token" if role == "wrong" else tokens[role])
    message = _wait(browser, lambda d: d.find_element(By.ID, "message").text)

    expected = "unknown or revoked token" if role == "wrong" else "needs admin or viewer"
    assert message.startswith("That token was refused (") and expected in message
    assert message.endswith("Give a viewer token.")
    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert browser.find_element(By.ID, "summary").text == ""
    assert "deepseek" not in browser.page_source
    assert browser.execute_script("return sessionStorage.length") == 0


def _dark_rows(png: bytes, rows: list[dict[str, float]], left: float, right: float) -> list[int]:
    """Pixels of dark text in each row's band of the screenshot, within the table's width."""
    image = Image.open(io.BytesIO(png)).convert("L")
    counts = []
    for row in rows:
        band = image.crop(
            (int(left) + 2, int(row["top"]) + 2, int(right) - 2, int(row["bottom"]) - 2)
        )
        counts.append(sum(band.histogram()[:DARK]))
    return counts


def _light_background(png: bytes, box: tuple[int, int, int, int]) -> bool:
    image = Image.open(io.BytesIO(png)).convert("L").crop(box)
    histogram = image.histogram()
    return max(range(256), key=histogram.__getitem__) > 200


def test_a_screenshot_shows_the_table_drawn(
    server: tuple[str, str], browser: WebDriver, tokens: dict[str, str]
) -> None:
    url, _ = server
    browser.get(f"{url}/")
    time.sleep(0.2)  # the script has run: the form has focus, nothing else changes
    before = browser.get_screenshot_as_png()

    _give_token(browser, tokens["viewer"])
    _shown(browser)
    after = browser.get_screenshot_as_png()

    table = browser.find_element(By.CSS_SELECTOR, 'table.v3[data-model="deepseek-v3"]')
    box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", table)
    rows = browser.execute_script(
        "return [...arguments[0].rows].map(r => r.getBoundingClientRect().toJSON())", table
    )
    assert len(rows) == 3 and box["bottom"] <= WINDOW[1] - 200
    region = (int(box["left"]), int(box["top"]), int(box["right"]), int(box["bottom"]))
    drawn = _dark_rows(after, rows, box["left"], box["right"])
    blank = _dark_rows(before, rows, box["left"], box["right"])

    assert all(count > 40 for count in drawn), drawn  # text in every row, header included
    assert _light_background(after, region)
    assert blank == [0, 0, 0], blank


def test_the_page_loads_nothing_from_another_host(
    server: tuple[str, str], browser: WebDriver, tokens: dict[str, str]
) -> None:
    url, _ = server
    shell = httpx.get(f"{url}/")
    assert shell.status_code == 200 and "text/html" in shell.headers["content-type"]
    assert "http://" not in shell.text and "https://" not in shell.text
    assert "default-src 'none'" in shell.headers["content-security-policy"]

    browser.get(f"{url}/")
    _give_token(browser, tokens["viewer"])
    _shown(browser)

    referred = browser.execute_script(
        "return [...document.querySelectorAll('[src], [href]')].map(e => e.src || e.href)"
    )
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any(src.endswith("/ui/page.js") for src in referred)
    assert any("/v1/ui/summary" in name for name in loaded)
    for address in [*referred, *loaded]:
        assert address.startswith(f"{url}/"), address


def test_the_summary_needs_a_token_that_may_read_costs(
    server: tuple[str, str], tokens: dict[str, str]
) -> None:
    url, _ = server
    summary = f"{url}/v1/ui/summary"

    assert httpx.get(summary).status_code == 401
    assert httpx.get(summary, headers={"Authorization": "Bearer gpc_nope"}).status_code == 401
    collector = httpx.get(summary, headers={"Authorization": f"Bearer {tokens['collector']}"})
    assert collector.status_code == 403
    viewer = httpx.get(summary, headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert viewer.status_code == 200 and "$28.67" in viewer.text
    assert viewer.headers["cache-control"] == "no-store"
    assert "deepseek" not in httpx.get(f"{url}/").text  # the shell holds no data
    assert httpx.get(f"{url}/ui/summary").status_code == 404  # outside /v1 it does not exist


def test_names_are_text_and_only_the_models_used_last_are_shown(
    client: TestClient, auth: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: model and team names a collector chose are shown as text, never markup;
    past PAGE_MODELS models the page shows the ones used last and says how many more."""
    evil = {"a": "<img src=x onerror=alert(1)>", "b": '"><b>bold</b>', "c": "plain & simple"}
    for seq, (job_id, model) in enumerate(evil.items(), start=1):
        hour = f"2025-01-06T1{seq}:00:00Z"
        body = report(
            seq,
            start=hour,
            end=hour.replace(":00:00Z", ":01:00Z"),
            gpus=[entry(seq, job_id=job_id)],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
        labels = {"model": model, "phase": "pre-training", "team": f"{model}-team"}
        answer = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=labels, headers=auth["collector"])
        assert answer.status_code in (200, 201), answer.text
    monkeypatch.setattr(ui_service, "PAGE_MODELS", 2)

    summary = client.get("/v1/ui/summary", headers=auth["viewer"])

    assert summary.status_code == 200
    html = summary.text
    assert "<img" not in html and "<b>" not in html
    assert 'data-model="&#34;&gt;&lt;b&gt;bold&lt;/b&gt;"' in html
    assert "plain &amp; simple training costs" in html
    assert 'data-model="&lt;img' not in html  # used first: no table of its own
    assert re.search(r"The 2 models used last are shown;\s+1 more have usage", html)
    shell = client.get("/")
    policy = shell.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert (
        'id="token"' in shell.text
        and "name=" not in shell.text.split('id="token"')[1].split(">")[0]
    )
