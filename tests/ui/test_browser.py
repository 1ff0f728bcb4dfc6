"""The web UI in a real browser, against a real gateway process and the built-in engine's demo model.

What is checked comes from outside the UI: image tokens by hand (Qwen3-VL: one token per 32x32 pixels after
the 2x2 merge), the usage record the gateway stored (read from its SQLite file), and the bound that a
request cannot be billed more than its own latency at the pool's price.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.engine]

USD_PER_HOUR = 0.80
# 320 x 256 pixels are multiples of 32 and within the processor's pixel bounds: kept as they are, so
# (320 / 32) x (256 / 32) = 10 x 8 = 80 pad tokens, plus <|vision_start|> and <|vision_end|> (docs/tokens.md);
# two different such pictures are sent in one message.
IMAGE_SIZE = (320, 256)
IMAGE_TOKENS = 2 * (80 + 2)

DETAILS = re.compile(
    r"Served by (?P<pool>[^\s:,]+).*?request (?P<rid>\S+)\s+"
    r"Prompt (?P<prompt>[\d,]+) tokens \(text (?P<text>[\d,]+) · image (?P<image>[\d,]+) · video (?P<video>[\d,]+)"
    r".*?completion (?P<completion>[\d,]+)\s+"
    r"Time to first token (?P<ttft>[\d.]+ m?s) · latency (?P<latency>[\d.]+ m?s)"
    r"(?: · cold start wait (?P<cold>[\d.]+ m?s))? · cost \$(?P<usd>[\d.e+-]+)",
    re.S,
)


def seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) / 1000 if unit == "ms" else float(value)


def answers(page: Any) -> list[dict[str, str]]:
    """The details under each answer so far, parsed from what the page shows."""
    return [m.groupdict() for m in DETAILS.finditer(page.inner_text("#fs-chat"))]


def wait_for_answers(page: Any, n: int, timeout_s: float = 180) -> list[dict[str, str]]:
    page.wait_for_function(
        "n => (document.querySelector('#fs-chat').innerText.match(/ · cost /g) || []).length >= n",
        arg=n,
        timeout=timeout_s * 1000,
    )
    found = answers(page)
    assert len(found) == n, page.inner_text("#fs-chat")
    return found


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$FRUGALSERVE_HOME with the demo model written once for the module."""
    from frugalserve.engine.demo_model import ensure_demo_model

    home = tmp_path_factory.mktemp("home")
    ensure_demo_model(home / "demo-model")
    return home


@pytest.fixture(scope="module")
def demo_gateway(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``frugalserve up`` with no config, as ``make run`` starts it: the built-in demo config and its UI."""
    work = tmp_path_factory.mktemp("gateway")
    port = procs.free_port()
    env = {"FRUGALSERVE_HOME": str(demo_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    log = work / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "frugalserve", "up", "--port", str(port)],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=procs.spawn_env(env),
        )
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}", work / "frugalserve.db"
    finally:
        procs.stop(proc)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two different pictures (the gateway would count a repeated one once)."""
    out = []
    for name, colour in (("blue", (30, 90, 200)), ("red", (200, 40, 30))):
        path = tmp_path_factory.mktemp("img") / f"{name}-stripes.png"
        img = Image.new("RGB", IMAGE_SIZE, (240, 240, 240))
        for x in range(0, IMAGE_SIZE[0], 40):
            img.paste(colour, (x, 0, x + 20, IMAGE_SIZE[1]))
        img.save(path)
        out.append(path)
    return out


def send(page: Any, text: str, images: Sequence[Path] = ()) -> None:
    if images:
        page.set_input_files("#fs-input input[type=file]", [str(i) for i in images])
        # the uploads are shown before they are sent
        page.wait_for_function(
            "n => document.querySelectorAll('#fs-input img').length >= n", arg=len(images), timeout=10_000
        )
    page.fill("#fs-input textarea", text)
    page.press("#fs-input textarea", "Enter")


def test_chat_shows_the_cold_start_then_the_answer_its_tokens_and_cost_and_keeps_the_history(
    browser: Any, demo_gateway: tuple[str, Path], pictures: list[Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    url, db = demo_gateway
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url + "/ui/")
    expect(page.locator("#fs-banner")).to_contain_text("random weights")
    expect(page.locator("#fs-model input")).to_have_value("qwen3-vl-demo", timeout=15_000)
    expect(page.locator("#fs-key")).to_have_count(0)  # auth is off: no key to ask for
    page.fill("#fs-max-tokens input", "6")

    send(page, "What is in these pictures?", pictures)
    # the pool is cold: the page says so, with the wait, while the engine starts
    expect(page.locator("#fs-status")).to_contain_text(
        re.compile(r"Waiting for pool demo, which is (starting|stopped)"), timeout=20_000
    )
    expect(page.locator("#fs-status")).to_contain_text(re.compile(r"waited \d+ s"))
    page.screenshot(path=str(shots / "ui-chat-starting.png"))
    first = wait_for_answers(page, 1)[0]

    assert first["pool"] == "demo"
    assert int(first["image"]) == IMAGE_TOKENS
    assert first["cold"] is not None and seconds(first["cold"]) > 0.5, "the first answer waited for the cold start"
    stored = procs.stored_record(db, first["rid"])  # what the accounting stored, read from its file
    assert stored["prompt_image_tokens"] == IMAGE_TOKENS
    assert int(first["prompt"].replace(",", "")) == stored["prompt_tokens"]
    assert int(first["completion"]) == stored["completion_tokens"] <= 6
    # times as the page rounds them (ms below a second, tenths above), against the stored row
    for shown, column in (("latency", "duration_s"), ("ttft", "ttft_s"), ("cold", "cold_start_wait_s")):
        assert abs(seconds(first[shown]) - stored[column]) <= 0.051, (shown, first[shown], stored[column])
    usd = float(first["usd"])
    assert 0 < usd <= stored["duration_s"] * USD_PER_HOUR / 3600, "billed no more than its own time at $0.80/h"

    send(page, "And what colours are the stripes?")
    second = wait_for_answers(page, 2)[1]
    page.screenshot(path=str(shots / "ui-chat.png"), full_page=True)
    assert second["cold"] is None, "the pool is warm now"
    # the follow-up carries the first turn: its images once (not dropped, not sent twice), and more text
    assert int(second["image"]) == IMAGE_TOKENS
    assert int(second["text"].replace(",", "")) > int(first["text"].replace(",", "")) + 5
    assert procs.stored_record(db, second["rid"])["prompt_image_tokens"] == IMAGE_TOKENS
    page.close()


def pool_table(page: Any) -> str:
    return str(page.inner_text("#fs-pools"))


def test_operator_view_shows_pools_spend_and_events_and_sleeps_and_wakes_a_pool(
    browser: Any, demo_gateway: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    url, _ = demo_gateway
    page = browser.new_page(viewport={"width": 1280, "height": 1300})
    page.goto(url + "/ui/admin")
    expect(page.locator("#fs-admin-key")).to_have_count(0)
    expect(page.locator("#fs-pools")).to_contain_text("demo-0", timeout=15_000)
    expect(page.locator("#fs-spend")).to_contain_text("Today (since 00:00 UTC)")
    page.locator("#fs-pool input").click()
    page.get_by_role("option", name="demo").click()

    page.click("#fs-sleep")
    expect(page.locator("#fs-action")).to_contain_text("demo", timeout=60_000)
    expect(page.locator("#fs-pools")).to_contain_text("sleeping", timeout=30_000)
    page.click("#fs-wake")
    expect(page.locator("#fs-pools")).to_contain_text("ready", timeout=60_000)
    # the events the admin API keeps: the sleep (drained, then asleep) and the wake the buttons caused
    expect(page.locator("#fs-events")).to_contain_text("stopping → sleeping", timeout=10_000)
    expect(page.locator("#fs-events")).to_contain_text("sleeping → starting", timeout=10_000)
    expect(page.locator("#fs-spend")).to_contain_text("billed")
    page.screenshot(path=str(shots / "ui-admin.png"), full_page=True)
    page.close()


# -- auth on ------------------------------------------------------------------------------------------


@pytest.fixture
def auth_gateway(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Auth on, a fake backend (fast), the admin key in the environment; yields (url, a user's key)."""
    db = tmp_path / "auth.db"
    with procs.fake_upstream(tmp_path) as upstream:
        config = (
            f"gateway: {{database: 'sqlite:///{db}'}}\n"
            "auth: {enabled: true}\n"
            "ui: {enabled: true}\n"
            f"pools:\n  - name: small\n    model: small-model\n    backend: {{url: '{upstream}'}}\n"
        )
        (tmp_path / "cfg.yaml").write_text(config)
        out = procs.cli(
            tmp_path, "keys", "create", "--name", "ui-user", "--json", "--config", str(tmp_path / "cfg.yaml")
        )
        secret = json.loads(out)["secret"]
        with procs.gateway(tmp_path, config, env={"FRUGALSERVE_ADMIN_KEY": "admin-secret"}) as (url, _):
            yield url, secret


def test_with_auth_on_the_chat_needs_an_api_key_and_the_operator_view_the_admin_key(
    browser: Any, auth_gateway: tuple[str, str], shots: Path
) -> None:
    from playwright.sync_api import expect

    url, secret = auth_gateway
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "/ui/")
    expect(page.locator("#fs-models-note")).to_contain_text("Enter your API key", timeout=15_000)
    page.fill("#fs-key input", "sk-wrong")
    page.press("#fs-key input", "Enter")
    expect(page.locator("#fs-models-note")).to_contain_text("Enter your API key", timeout=10_000)
    page.fill("#fs-key input", secret)
    page.press("#fs-key input", "Enter")
    expect(page.locator("#fs-model input")).to_have_value("small-model", timeout=10_000)
    send(page, "Hello")
    wait_for_answers_without_kinds(page)

    admin = browser.new_page(viewport={"width": 1280, "height": 900})
    admin.goto(url + "/ui/admin")
    expect(admin.locator("#fs-admin-note")).to_contain_text("admin key", timeout=15_000)
    expect(admin.locator("#fs-pools")).not_to_contain_text("small")
    admin.fill("#fs-admin-key input", secret)  # a user's key is not the admin key
    admin.press("#fs-admin-key input", "Enter")
    expect(admin.locator("#fs-admin-note")).to_contain_text("Error:", timeout=10_000)
    expect(admin.locator("#fs-pools")).not_to_contain_text("small")
    admin.fill("#fs-admin-key input", "admin-secret")
    admin.press("#fs-admin-key input", "Enter")
    expect(admin.locator("#fs-pools")).to_contain_text("small", timeout=10_000)
    expect(admin.locator("#fs-admin-note")).to_contain_text("Updated")
    admin.screenshot(path=str(shots / "ui-admin-auth.png"), full_page=True)
    page.close()
    admin.close()


def wait_for_answers_without_kinds(page: Any) -> None:
    """The fake backend's answer, with its details (a text-only prompt: counted, with cost)."""
    page.wait_for_function("() => / · cost /.test(document.querySelector('#fs-chat').innerText)", timeout=60_000)
