"""/metrics as Prometheus reads it: its own linter passes, labels are bounded, the catalogue is true.

After real traffic through the gateway (chats, a stream, a refused request, an auto-routed one), the
exposition is checked by ``promtool check metrics`` (Prometheus' own naming linter: ``_total`` on
counters, base units, help text), its label names against the small set docs/observability.md promises,
no label value holds a request id, and every family it serves is in the catalogue table.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests import procs

ALLOWED_LABELS = {
    "pool", "tier", "endpoint", "status", "reason", "kind", "state", "level", "key", "period", "replica",
    "gpu", "uuid", "model", "cache", "bound", "to", "action", "gpu_type", "billing", "le", "signal", "outcome",
}  # fmt: skip
CATALOGUE = Path(__file__).parents[2] / "docs" / "observability.md"


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with procs.fake_upstream(tmp_path_factory.mktemp("up")) as url:
        yield url


@pytest.fixture
async def client(upstream_url: str) -> AsyncIterator[httpx.AsyncClient]:
    config = cfg.load_text(
        "routing: {tiers: [S, L], thresholds: [0.5]}\npools:\n"
        f"  - {{name: small, model: qwen3-vl-2b, tier: S, backend: {{url: '{upstream_url}'}}, gpu: {{usd_per_hour: 1}}}}\n"
        f"  - {{name: big, model: qwen3-vl-32b, tier: L, backend: {{url: '{upstream_url}'}}, gpu: {{usd_per_hour: 4}}}}\n"
    )
    app = create_app(config)
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c
    finally:
        await gateway.shutdown()


async def _traffic(client: httpx.AsyncClient) -> tuple[str, set[str]]:
    ids: set[str] = set()
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for body in (
        {**chat, "model": "qwen3-vl-2b"},
        {**chat, "model": "auto"},
        {**chat, "model": "qwen3-vl-32b", "stream": True, "stream_options": {"include_usage": True}},
        {**chat, "model": "no-such-model"},
    ):
        r = await client.post("/v1/chat/completions", json=body)
        ids.add(r.headers["x-request-id"])
    return (await client.get("/metrics")).text, ids


def _catalogue() -> set[str]:
    return set(re.findall(r"^\| `(frugalserve_[a-z_]+)`", CATALOGUE.read_text(), flags=re.M))


async def test_exposition_passes_promtool_and_keeps_labels_bounded(client: httpx.AsyncClient) -> None:
    text, request_ids = await _traffic(client)
    families = list(text_string_to_metric_families(text))
    labels = {name for f in families for s in f.samples for name in s.labels}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS
    values = {v for f in families for s in f.samples for v in s.labels.values()}
    assert not values & request_ids, "a request id in a label"
    served = {f.name for f in families if f.name.startswith("frugalserve_")}
    # the families the request path and the collectors serve after this traffic (prometheus_client names a
    # counter's family without _total)
    for needed in ("frugalserve_requests", "frugalserve_generation_tokens", "frugalserve_prompt_tokens",
                   "frugalserve_cost_usd", "frugalserve_replicas", "frugalserve_pool_utilization_ratio",
                   "frugalserve_routing_decisions", "frugalserve_time_to_first_token_seconds"):  # fmt: skip
        assert needed in served, needed
    catalogue = _catalogue()
    missing = {n for n in served if n not in catalogue and f"{n}_total" not in catalogue}
    assert not missing, f"served but not in docs/observability.md: {sorted(missing)}"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed; .ci/run installs it")
    lint = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
