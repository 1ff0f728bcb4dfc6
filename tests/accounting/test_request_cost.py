"""A request's cost as ``GET /v1/requests/{id}`` tells it is the share the report gives it over a whole day.

The documented example (docs/accounting.md, "How GPU cost is attributed"): one replica of 2 GPUs at $3.60/h
($0.002 per replica-second) starts 0-10, is ready 10-60, sleeps 60-100. ``a`` arrives at 2, waits 8 s for the
start and runs 10-30 (200 tokens); ``b`` runs 20-40 (600 + 40 tokens); ``c`` is refused; ``d`` runs alone
45-50 (100 tokens). The rows are stored as a gateway writes them; a gateway on that database answers over
real HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.accounting import costs, report, store
from tests.api.conftest import gateway_on_loopback

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # a UTC midnight
PRICE = {"p": costs.Price(usd_per_hour=3.6, count=2)}


def ev(t: float, a: str, b: str) -> dict[str, object]:
    return {"time": T0 + t, "pool": "p", "replica": "p-0", "from_state": a, "to_state": b, "reason": "x"}


def row(rid: str, t: float, dur: float, prompt: int, completion: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "time": T0 + t,
        "duration_s": dur,
        "endpoint": "chat",
        "model": "m",
        "pool": "p",
        "replica": "p-0",
        "key_id": f"key-{rid}",
        "status": 200,
        "stream": False,
        "anomaly": False,
        "client_disconnected": False,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cold_start_wait_s": None,
        "error_code": None,
        **kw,
    }


EVENTS = [ev(0, "stopped", "starting"), ev(10, "starting", "ready"), ev(60, "ready", "sleeping")]
ROWS = [
    row("a", 2, 28, 200, cold_start_wait_s=8.0),
    row("b", 20, 20, 600, 40),
    row("c", 25, 0.01, 0, replica=None, status=429, error_code="rate_limit_exceeded"),
    row("d", 45, 5, 100),
]
# a alone 10-20; a and b together 20-30, by token density 200/20 : 640/20 = 10 : 32; b alone 30-40; d alone.
A_BUSY = 10 + 10 * 10 / 42
B_BUSY = 10 * 32 / 42 + 10
D_BUSY = 5.0


async def test_the_cost_of_one_request_is_its_share_in_the_days_report(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    engine = store.open_store(db)
    store.insert_batch(engine, ROWS, EVENTS)
    engine.dispose()
    config = cfg.load_text(
        f"gateway: {{database: '{db}'}}\naccounting: {{flush_interval_s: 0.05}}\n"
        "pools:\n  - {name: p, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6, count: 2}}\n"
    )
    async with gateway_on_loopback(config) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        got = {rid: (await c.get(f"/v1/requests/{rid}")).json() for rid in "abcd"}
    for rid, busy in (("a", A_BUSY), ("b", B_BUSY), ("d", D_BUSY)):
        assert got[rid]["cost"] == {
            "usd": pytest.approx(busy * 0.002),
            "busy_s": pytest.approx(busy),
            "gpu_s": pytest.approx(busy * 2),
        }, rid
        assert got[rid]["cost_note"] is None
    assert got["a"]["cost"]["usd"] == pytest.approx(0.024762, abs=1e-6)  # as docs/accounting.md says: $0.0248
    assert got["c"]["cost"] == {"usd": 0.0, "busy_s": 0.0, "gpu_s": 0.0} and got["c"]["status"] == 429
    assert got["a"]["timing"] == {"ttft_s": None, "latency_s": 28.0, "cold_start_wait_s": 8.0}
    assert got["a"]["usage"]["prompt_tokens_by_kind"] is None  # the stored row has no count of the gateway's
    # the report over the whole day, one key per request: each key's dollars are its request's share
    rows = report.build(ROWS, EVENTS, PRICE, T0, T0 + 86400, by="key")
    by_key = {r["group"]: r["usd_billed"] for r in rows}
    for rid in "abcd":
        assert by_key[f"key-{rid}"] == pytest.approx(got[rid]["cost"]["usd"], abs=1e-12), rid
