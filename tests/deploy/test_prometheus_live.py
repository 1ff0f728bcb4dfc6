"""A real Prometheus scraping a real gateway: every query of the dashboard and of the recording rules answers.

The gateway (`frugalserve up`, a real process) manages the built-in engine (the demo model on CPU) and has
two pools that fail on purpose (a URL nobody listens on, a command that exits), so that errors, failed
replicas and refused requests exist. Prometheus (/usr/bin/prometheus) runs with our
deploy/prometheus/prometheus.yml, changed only where a test must (1 s intervals, this gateway as target,
absolute paths): so the scrape authenticates with the bearer token file as a user's would. Traffic is sent
with the official openai client; Prometheus' counts must equal what the client saw.

Not every series can exist here: the list below names those and says why (no GPU on this machine, events
the scenario does not cause). Nothing else may answer empty.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from PIL import Image

from tests import procs
from tests.deploy import promql

pytest.importorskip("frugalserve.engine")
pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "scrape-me-please"
MODEL = "qwen3-vl-demo"

# Series that need a GPU found by NVML: without one the gateway exports none of frugalserve_gpu_*.
# Checked, not skipped, when the gateway does export frugalserve_gpu_info.
NEEDS_GPU = {
    "record gpu_pool:frugalserve_gpu_utilization_ratio:avg5m",
    "record gpu:frugalserve_gpu_memory_used:ratio",
    "GPU duty cycle and VRAM A",
    "GPU duty cycle and VRAM B",
    "GPU power A",
}
# Events this scenario does not cause, so their labelled counters have no child yet (unless the gateway
# creates the children at zero, in which case they answer and that is fine too).
NOT_CAUSED = {
    "Upstream errors and client disconnects B": "no client leaves before its answer ends",
    "Token count anomalies A": "anomalies need anomaly_min_history requests per key and pool first",
}


def _png(width: int, height: int, seed: int) -> str:
    buf = io.BytesIO()
    Image.effect_noise((width, height), 40 + seed).convert("RGB").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Sent:
    """What the client sent and saw."""

    requests: int = 0
    completion_tokens: int = 0  # pool demo: the only pool that answers
    prompt_tokens: int = 0
    prompt_by_kind: Counter[str] = field(default_factory=Counter)


@dataclass
class Stack:
    gateway: str
    prometheus: str
    sent: Sent
    gateway_metrics: str = field(repr=False)  # the gateway's own /metrics after the traffic

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.prometheus + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def answers(self, expr: str) -> bool:
        return bool(self.query(expr))

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def _prometheus_config(tmp: Path, gateway: str) -> Path:
    """Our prometheus.yml, pointed at this gateway, with 1 s intervals and absolute paths."""
    config = yaml.safe_load((promql.PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(promql.PROMETHEUS / f) for f in config["rule_files"]]
    (job,) = config["scrape_configs"]
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    job["authorization"]["credentials_file"] = str(token)
    job["static_configs"] = [{"targets": [gateway.removeprefix("http://")]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _prometheus(tmp: Path, gateway: str) -> Iterator[str]:
    port = procs.free_port()
    proc = procs.spawn(
        [
            "prometheus",
            f"--config.file={_prometheus_config(tmp, gateway)}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / "prometheus.log",
    )
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/-/ready", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc)


def _traffic(client: openai.OpenAI) -> Sent:
    """Text and image chats, a stream, model auto, and two requests to the failing pools."""
    sent = Sent()

    def count(usage: dict[str, Any]) -> None:
        details = usage["prompt_tokens_details"]
        sent.completion_tokens += usage["completion_tokens"]
        sent.prompt_tokens += usage["prompt_tokens"]
        sent.prompt_by_kind.update({kind: details.get(f"{kind}_tokens") or 0 for kind in ("text", "image", "video")})

    def chat(model: str, content: Any, max_tokens: int) -> None:
        sent.requests += 1
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens
        )
        assert r.usage is not None
        count(r.usage.model_dump())

    chat(MODEL, "Hello there", 4)  # the cold start
    image = _png(1600, 1200, 0)
    twice = [{"type": "image_url", "image_url": {"url": image}}] * 2  # resized, and the duplicate dropped
    chat(MODEL, [*twice, {"type": "text", "text": "What is this?"}], 3)
    chat(MODEL, [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Again?"}], 3)
    chat("auto", "Say hi", 3)  # routed to tier S

    sent.requests += 1  # a stream; max_tokens 100 is clamped to the pool's 6
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        chunks = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: {")]
    count(next(c["usage"] for c in chunks if c.get("usage")))

    for model, status in (("gone", 502), ("broken", 503)):
        sent.requests += 1
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert refused.value.status_code == status, model
    return sent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: Path) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("live")
    model_dir = tmp / "demo-model"
    subprocess.run([sys.executable, "-m", "frugalserve", "demo-model", str(model_dir)], check=True, timeout=180)
    db = f"sqlite:///{tmp / 'usage.db'}"
    key = json.loads(
        procs.cli(
            tmp,
            "keys",
            "create",
            "--database",
            db,
            "--name",
            "team-a",
            "--budget-usd-per-day",
            "50",
            "--budget-usd-per-month",
            "500",
            "--json",
        )
    )
    python = shlex.quote(sys.executable)
    engine = f"{python} -m frugalserve engine --model {model_dir} --served-model-name {{model}} --port {{port}}"
    crash = f"{python} -c {shlex.quote('raise SystemExit(3)')} {{port}}"  # a backend that exits at once
    config = (
        f"gateway: {{database: '{db}', metrics_token: {TOKEN}, upstream_metrics_interval_s: 1}}\n"
        "auth: {enabled: true}\n"
        "accounting: {flush_interval_s: 0.05}\n"
        "routing: {tiers: [S], thresholds: [], per_tier: [{tier: S, slo_ms: 30000, utilisation: [0.5, 0.65]}]}\n"
        "pools:\n"
        f"  - name: demo\n    model: {MODEL}\n    tier: S\n"
        f"    backend: {{command: {engine!r}, log_dir: {str(tmp)!r}, startup_timeout_s: 120}}\n"
        "    gpu: {usd_per_hour: 36, type: L4}\n"
        "    limits: {max_new_tokens: 6, max_tokens_policy: clamp}\n"
        f"  - {{name: unreachable, model: gone, backend: {{url: 'http://127.0.0.1:{procs.free_port()}'}}}}\n"
        "  - name: crashing\n    model: broken\n"
        f"    backend: {{command: {crash!r}, log_dir: {str(tmp)!r}}}\n"
    )
    with procs.gateway(tmp, config) as (gateway, _), _prometheus(tmp, gateway) as prometheus:
        client = procs.openai_client(gateway + "/v1", key["secret"], timeout=180)
        sent = _traffic(client)
        live = Stack(gateway, prometheus, sent, gateway_metrics="")
        # Scrapes and rule evaluations every second: wait for the last request to be scraped, then for
        # the upstream telemetry (the gateway scrapes the engine on its own interval) and the rules.
        procs.wait_until(
            lambda: live.scalar("sum(frugalserve_requests_total)") == sent.requests, 60, "the requests scraped"
        )
        # A rate needs two samples of a series, and the series a request creates appear at its end (the
        # last one is a stream) or on the gateway's next scrape of the engine: wait until every expression
        # that can answer here does (at most 30 s); the test below reports those that never do.
        waiting = [e for n, e in _expressions() if n not in NEEDS_GPU and n not in NOT_CAUSED]
        deadline = time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            waiting = [e for e in waiting if not live.answers(e)]
            if waiting:
                time.sleep(1)
        live.gateway_metrics = httpx.get(
            gateway + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ).text
        yield live


def test_prometheus_scrapes_the_gateway_with_the_bearer_token_file(stack: Stack) -> None:
    targets = httpx.get(stack.prometheus + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("frugalserve", "up")], targets
    assert httpx.get(stack.gateway + "/metrics", timeout=10).status_code == 401, "the token is needed"


def test_request_and_token_counts_in_prometheus_equal_what_the_client_saw(stack: Stack) -> None:
    sent = stack.sent
    assert stack.scalar("sum(frugalserve_requests_total)") == sent.requests
    assert stack.scalar('sum(frugalserve_generation_tokens_total{pool="demo"})') == sent.completion_tokens
    assert stack.scalar('sum(frugalserve_prompt_tokens_total{pool="demo"})') == sent.prompt_tokens
    by_kind = {
        r["metric"]["kind"]: float(r["value"][1])
        for r in stack.query('sum by (kind) (frugalserve_prompt_tokens_total{pool="demo"})')
    }
    assert {k: v for k, v in by_kind.items() if v} == {k: v for k, v in sent.prompt_by_kind.items() if v}
    assert sent.prompt_by_kind["image"] > 0 and sent.prompt_by_kind["text"] > 0


def _expressions() -> list[tuple[str, str]]:
    """(name, PromQL) of every dashboard query and recording rule, as Prometheus receives them."""
    dashboard = [(f"{q.panel} {q.ref}", q.promql) for q in promql.dashboard_queries()]
    recording = [(f"record {r['record']}", r["expr"]) for r in promql.rules(promql.RECORDING)]
    return dashboard + recording


def test_every_expression_answers(stack: Stack) -> None:
    has_gpu = "frugalserve_gpu_info" in stack.gateway_metrics
    exported = {line.split("{")[0].split(" ")[0] for line in stack.gateway_metrics.splitlines() if line[:1].isalpha()}
    known, recorded = promql.catalogue(), promql.recorded_names()
    sources = {r["record"]: promql.metric_names(r["expr"]) for r in promql.rules(promql.RECORDING)}
    empty = []
    for name, expr in _expressions():
        if name in NEEDS_GPU and not has_gpu:
            continue  # no GPU here (see NEEDS_GPU)
        if stack.answers(expr) or name in NOT_CAUSED:
            continue
        used = promql.metric_names(expr)
        catalogued = {n for n in used if ":" not in n} | {m for n in used if n in recorded for m in sources[n]}
        absent = sorted(n for n in catalogued if n not in exported)
        why = (
            f"missing from the gateway's /metrics: {', '.join(absent)}"
            if absent
            else "all its metrics are exported: the expression selects nothing"
        )
        empty.append(f"{name}: {' '.join(expr.split())}\n    {why}")
    assert known and not empty, "expressions without data:\n" + "\n".join(empty)


def test_every_rule_evaluates_without_error_on_real_series(stack: Stack) -> None:
    # A join that matches many-to-many, or a recording rule that yields duplicate series, only fails here.
    groups = httpx.get(stack.prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for g in groups for rule in g["rules"]}
    expected = {r.get("record") or r["alert"] for path in (promql.RECORDING, promql.ALERTS) for r in promql.rules(path)}
    assert set(health) == expected
    assert {name: h for name, h in health.items() if h[0] != "ok"} == {}
