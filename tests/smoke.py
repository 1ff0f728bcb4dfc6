"""`make smoke`: the product as a user installs and runs it, checked from outside.

Runs after `make test` in CI. The gateway runs from a venv made by `make run`'s own install target (core +
engine, no dev extras), with the built-in demo config, in an empty folder; the client is the official openai
package from the test venv. It sends a text chat and two image chats, checks the answers and the usage against
hand-computed Qwen3-VL image token counts and the engine's own (transformers) prompt count, reads the usage
records back with the installed `frugalserve report`, and stops the gateway with SIGTERM.

    python tests/smoke.py RUN_VENV
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import openai
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(width: int, height: int) -> str:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 7) % 256, (y * 3) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"SMOKE FAILED: {what}")
    print(f"ok: {what}")


def _stop(gateway: subprocess.Popen[bytes], log: IO[bytes], log_path: Path) -> int:
    """SIGTERM, as a process manager would; the exit code (the log's tail printed when it is not 0)."""
    if gateway.poll() is None:
        gateway.send_signal(signal.SIGTERM)
    try:
        code = gateway.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(gateway.pid, signal.SIGKILL)
        code = -9
    log.close()
    if code != 0:
        sys.stdout.write(log_path.read_text(errors="replace")[-4000:])
    return code


def main(run_venv: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="frugalserve-smoke-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUGALSERVE_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["FRUGALSERVE_HOME"] = str(work / "home")  # the demo model is written here on first use
    log = open(work / "gateway.log", "wb")
    gateway = subprocess.Popen(
        [str(run_venv / "bin" / "frugalserve"), "up", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if gateway.poll() is not None or time.monotonic() > deadline:
                _check(False, "gateway starts")
            time.sleep(0.2)
        _check(True, "gateway starts")
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)

        text = client.chat.completions.with_raw_response.create(
            model="qwen3-vl-demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
        )
        cold_ms = int(text.headers.get("x-frugalserve-cold-start-ms", "0"))
        answer = text.parse()
        _check(bool(answer.choices[0].message.content), f"text chat answered after a {cold_ms} ms cold start")

        # 640x480: multiples of 32 inside the budget, so unchanged: 20*15 = 300 pads + 2 markers.
        # 1600x1200: 1900 pads + 2 before the budget (round(1200/32) = 38 by half-to-even); resized after.
        expected_image = {(640, 480): 302, (1600, 1200): None}
        total_image = 0
        for (w, h), expected in expected_image.items():
            raw = client.chat.completions.with_raw_response.create(
                model="qwen3-vl-demo",
                max_tokens=4,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": _png(w, h)}},
                            {"type": "text", "text": "What is in this picture?"},
                        ],
                    }
                ],
            )
            out = raw.parse()
            usage = out.usage
            assert usage is not None
            details = (usage.prompt_tokens_details.model_dump() if usage.prompt_tokens_details else {}) or {}
            image, saved = details.get("image_tokens"), details.get("image_tokens_saved")
            counted = sum(details.get(k) or 0 for k in ("text_tokens", "image_tokens", "video_tokens"))
            _check(
                counted == usage.prompt_tokens, f"{w}x{h}: gateway count {counted} == engine's {usage.prompt_tokens}"
            )
            if expected is not None:
                _check(image == expected and saved == 0, f"{w}x{h}: {image} image tokens, none saved")
            else:
                _check(
                    image is not None and image <= 1026 and saved == 1902 - image, f"{w}x{h}: {image} + {saved} saved"
                )
                notes = raw.headers.get("x-frugalserve-notes", "")
                _check("resized" in notes, f"{w}x{h}: notes header says so: {notes!r}")
            total_image += image or 0

        # A 1.2 MB body goes to a body worker process (gateway.large_body_mb: 1): that process must start from
        # this install and answer with the same OpenAI error the gateway would.
        try:
            client.chat.completions.create(
                model="qwen3-vl-demo",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "describe " * 150_000},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ],
            )
            _check(False, "a large body with a broken image is refused")
        except openai.BadRequestError as exc:
            err = exc.body if isinstance(exc.body, dict) else {}
            _check(
                err.get("code") == "invalid_image" and err.get("param") == "messages[0].content[1].image_url",
                f"a 1.2 MB body is checked in the body worker: {err.get('code')} naming {err.get('param')}",
            )

        deadline = time.monotonic() + 10
        while True:  # records are written in batches, off the request path
            report = subprocess.run(
                [str(run_venv / "bin" / "frugalserve"), "report", "--by", "model", "--format", "json"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            _check(report.returncode == 0, "frugalserve report runs")
            everything = json.loads(report.stdout)
            rows = [r for r in everything if r["group"] != "TOTAL"]
            stored = sum(r.get("prompt_image_tokens") or 0 for r in rows)
            requests = sum(r.get("requests") or 0 for r in rows)
            if requests >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        _check(requests == 4 and stored == total_image, f"report: {requests} requests, {stored} image tokens")
        (total,) = [r for r in everything if r["group"] == "TOTAL"]
        _check(
            (total["usd_billed"] or 0) > 0, f"report shows dollars at the demo's example price: {total['usd_billed']}"
        )

        # /metrics of the installed gateway, read with the Prometheus client's own parser: the image tokens it
        # counted, dollars by kind, the engine's own series re-exported; and the installed `frugalserve gpus`.
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=10).text)}
        image_metric = sum(
            s.value for s in families["frugalserve_prompt_tokens"].samples if s.labels.get("kind") == "image"
        )
        _check(image_metric == total_image, f"/metrics: {image_metric:g} image tokens, as the responses said")
        cost = {s.labels["kind"]: s.value for s in families["frugalserve_cost_usd"].samples}
        _check(
            cost.get("cold_start", 0) > 0 and cost.get("busy", 0) > 0,
            f"/metrics: dollars billed by kind {', '.join(f'{k} {v:.6f}' for k, v in sorted(cost.items()))}",
        )
        deadline = time.monotonic() + 15
        while "frugalserve_upstream_generation_tokens" not in families and time.monotonic() < deadline:
            time.sleep(1)  # the gateway scrapes the engine every 5 s
            families = {
                f.name: f for f in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=10).text)
            }
        _check("frugalserve_upstream_generation_tokens" in families, "/metrics: the engine's own metrics re-exported")
        gpus = subprocess.run(
            [str(run_venv / "bin" / "frugalserve"), "gpus"], env=env, capture_output=True, text=True, timeout=60
        )
        _check(gpus.returncode == 0, f"frugalserve gpus: {gpus.stdout.strip().splitlines()[:1]}")
        planner(run_venv, env, work, requests)
        web_ui(base)
    finally:
        code = _stop(gateway, log, work / "gateway.log")
    _check(code == 0, "gateway stops cleanly on SIGTERM")
    scaled_pool(run_venv, env, work)
    return 0


def web_ui(base: str) -> None:
    """The installed gateway's web UI in Debian's chromium: a chat turn with its details, then the operator view."""
    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
    if chromium is None:
        print("skip: the web UI in a browser (Debian's chromium is not installed; .ci/run installs it)")
        return
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(base + "/ui/")
        expect(page.locator("#fs-banner")).to_contain_text("random weights")
        expect(page.locator("#fs-model input")).to_have_value("qwen3-vl-demo", timeout=15_000)
        page.fill("#fs-max-tokens input", "4")
        page.fill("#fs-input textarea", "Hello from a browser")
        page.press("#fs-input textarea", "Enter")
        page.wait_for_function(
            "() => / · cost \\$/.test(document.querySelector('#fs-chat').innerText)", timeout=120_000
        )
        shown = page.inner_text("#fs-chat")
        rid = shown.split("request ", 1)[1].split()[0]
        facts = httpx.get(f"{base}/v1/requests/{rid}", timeout=10).json()
        _check(
            f"Prompt {facts['usage']['prompt_tokens']:,} tokens" in shown and facts["pool"] == "demo",
            f"/ui: a chat turn answered, its details as GET /v1/requests/{rid[:8]}... stored them",
        )
        page.goto(base + "/ui/admin")
        expect(page.locator("#fs-pools")).to_contain_text("demo-0", timeout=15_000)
        expect(page.locator("#fs-pools")).to_contain_text("ready")
        expect(page.locator("#fs-spend")).to_contain_text("billed")
        _check(True, "/ui/admin: the pool's replica, ready, and the day's spend")
        browser.close()


def planner(run_venv: Path, env: dict[str, str], work: Path, requests: int) -> None:
    """The installed `frugalserve simulate`: the demo's own records replayed and its start measured, then seed
    000's case from docs/cost-planning.md with its plot."""
    sim = [str(run_venv / "bin" / "frugalserve"), "simulate", "--quiet"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*sim, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    replay = run("--from-db", "--since", "1h", "--format", "json")
    _check(
        replay.returncode == 0,
        "simulate --from-db runs" + (f": {replay.stderr.strip()[-300:]}" if replay.returncode else ""),
    )
    [row] = json.loads(replay.stdout)
    _check(row["requests"] == requests, f"simulate --from-db replays the {row['requests']} recorded requests")
    calibrated = run("--calibrate", "--since", "1h")
    _check(calibrated.returncode == 0 and "start_s:" in calibrated.stdout, "simulate --calibrate measures the start")
    examples = Path(__file__).resolve().parent.parent / "docs" / "examples"
    plot = work / "curve.png"
    seed000 = run(
        *("--config", str(examples / "seed000.yaml"), "--perf", str(examples / "seed000-perf.yaml")),
        *("--synthetic", "seed000,days=7,model=qwen3-vl", "--objective", "p95_ttft_s=10", "--plot", str(plot)),
        *("--sweep", "pools.vl.lifecycle.idle_stop_s=60,600"),
    )
    _check(
        seed000.returncode == 0 and "cheapest policy that meets p95_ttft_s<=10: idle_stop_s=600" in seed000.stdout,
        "simulate: seed 000's sweep names the cheapest setting that meets the objective",
    )
    _check(plot.read_bytes()[:4] == b"\x89PNG", "simulate --plot writes the trade-off curve")


def scaled_pool(run_venv: Path, env: dict[str, str], work: Path) -> None:
    """Two replicas of the built-in engine kept up by the autoscaler (replicas.min: 2), requests spread over
    them; and a Ray pool on an install without the ray extra refused at startup in one line."""
    frugalserve = str(run_venv / "bin" / "frugalserve")
    ray_cfg = work / "ray.yaml"
    ray_cfg.write_text("pools: [{name: r, model: r, backend: {command: 'x --port {port}', ray: {address: auto}}}]\n")
    refused = subprocess.run([frugalserve, "up", "--config", str(ray_cfg)], env=env, capture_output=True, text=True)
    _check(
        refused.returncode == 2 and "pip install 'frugalserve[ray]'" in refused.stderr,
        f"a Ray pool without the ray extra: exit {refused.returncode}, {refused.stderr.strip()}",
    )
    port = _free_port()
    cfg = work / "duo.yaml"
    cfg.write_text(
        f"gateway: {{port: {port}, database: 'sqlite:///{work}/duo.db'}}\n"
        "pools:\n"
        "  - name: duo\n"
        "    model: qwen3-vl-demo\n"
        "    backend: {command: '{python} -m frugalserve engine --model demo --served-model-name {model} --port {port}',"
        " startup_timeout_s: 180}\n"
        "    replicas: {min: 2, max: 2}\n"
    )
    log = open(work / "duo.log", "wb")
    gateway = subprocess.Popen(
        [frugalserve, "up", "--config", str(cfg)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        states: list[str] = []
        while time.monotonic() < deadline and states != ["ready", "ready"]:
            time.sleep(1)
            try:
                pool = httpx.get(base + "/admin/pools", timeout=5).json()["data"][0]
                states = [r["state"] for r in pool["replicas"]]
            except httpx.HTTPError:
                continue
        _check(states == ["ready", "ready"], f"replicas.min 2: both engine replicas up ({states})")
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
        from concurrent.futures import ThreadPoolExecutor

        def ask(_: int) -> str:
            out = client.chat.completions.create(
                model="qwen3-vl-demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            return out.choices[0].message.content or ""

        with ThreadPoolExecutor(4) as ex:
            answers = list(ex.map(ask, range(4)))
        _check(all(answers), "4 concurrent chats answered by the two replicas")
        pool = httpx.get(base + "/admin/pools", timeout=5).json()["data"][0]
        ups = [e for e in pool["autoscale"]["events"] if e["action"] == "scale_up"]
        _check(bool(ups) and ups[0]["signal"] == "min", f"/admin/pools: the autoscaler's reason: {ups[0]['reason']}")
    finally:
        code = _stop(gateway, log, work / "duo.log")
    _check(code == 0, "the scaled gateway stops cleanly on SIGTERM")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
