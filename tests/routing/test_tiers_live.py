"""``model: "auto"`` through real processes: the gateway (``frugalserve up``) in front of three tiers.

S is a warm static server, M a managed pool whose command runs the fake upstream with a start delay (cold
until a request starts it), L a warm static server with ``capacity: 1`` that a test saturates by keeping
one slow request in flight. The per-tier objectives make each rule of docs/routing.md fire: spill up and
down, wait for a start under way, wake, low priority never waking, fit, and a pinned model. Every answer's
``x-frugalserve-route`` is checked against the usage record (its ``tier`` and ``routing_reason`` columns)
and against ``/metrics``.

Hand-computed values used below (docs/routing.md), with the weights and thresholds the config spells out:
- the M request (``MEDIUM_BODY``) scores code 0.25 (a fenced block, ``def`` and ``return`` lines: 3
  signals) + tools 0.15 = 0.400, wanting M (thresholds 0.30, 0.60; 0.05 from neither);
- M's expected wait while cold is its default start, ``min(startup_timeout_s, 30)`` = 20 s, over its
  ``slo_ms`` of 5 s: a cold M is never served "direct";
- waking M commits (20 s start + max(min_warm_s 0, idle_sleep_s 300)) x $3.60/h = $0.3200, under the
  normal priority's $1.00;
- L with one request in flight of capacity 1 waits (1 + 1 - 1) / 1 x service_s 8 = 8 s, over its 2 s
  objective, and 2 / 1 is over the top of its band (1.0): not a spill target; free, it is (1 / 1 <= 1.0);
- "hello " x N renders to N + 9 tokens (the chat template's role markers and generation prompt).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shlex
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(45)]

CODE = "Make this function shorter:\n```python\ndef total(items):\n    return sum(items)\n```"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run the unit tests",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
MEDIUM_BODY: dict[str, Any] = {
    "model": "auto",
    "messages": [{"role": "user", "content": CODE}],
    "tools": TOOLS,
    "max_tokens": 3,
}
TOP = "top=code,tools"
WOKE = f"tier=M pool=medium score=0.400 action=woke reason=wake wait_s=20.0 wake_usd=0.3200 {TOP}"
START_DELAY_S = 2.0  # M's fake upstream sleeps this long before it opens its port


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("tiers")
    with (
        procs.fake_upstream(tmp, "--model", "qwen3-vl-2b") as small,
        procs.fake_upstream(tmp, "--model", "qwen3-vl-32b") as large,
    ):
        yield small, large


def config(small: str, large: str, log_dir: Path, m_spill: str) -> str:
    command = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}}"
        f" --model qwen3-vl-8b --start-delay {START_DELAY_S}"
    )
    return f"""
gateway: {{database: 'sqlite:///{log_dir / "usage.db"}', shutdown_grace_s: 2}}
accounting: {{flush_interval_s: 0.05}}
routing:
  tiers: [S, M, L]
  thresholds: [0.30, 0.60]
  # the weights the values above were computed with, spelled out: the test is about warmth, not the defaults
  weights: {{code: 0.25, tools: 0.15, long_prompt: 0.0}}
  per_tier:
    - {{tier: S, slo_ms: 2000}}
    - {{tier: M, slo_ms: 5000, spill: {m_spill}}}
    - {{tier: L, slo_ms: 2000, utilisation: [0.5, 1.0], service_s: 8}}
pools:
  - name: small
    model: qwen3-vl-2b
    tier: S
    backend: {{url: '{small}'}}
    gpu: {{usd_per_hour: 0.8}}
    limits: {{max_context_tokens: 512}}
  - name: medium
    model: qwen3-vl-8b
    tier: M
    backend: {{command: {command!r}, log_dir: '{log_dir}', startup_timeout_s: 20}}
    gpu: {{usd_per_hour: 3.6}}
    limits: {{max_context_tokens: 1024}}
    lifecycle: {{idle_sleep_s: 300, idle_stop_s: 1800, min_warm_s: 0}}
  - name: large
    model: qwen3-vl-32b
    tier: L
    capacity: 1
    backend: {{url: '{large}'}}
    gpu: {{usd_per_hour: 4.0}}
    limits: {{max_context_tokens: 4096}}
"""


@dataclass
class Stack:
    """A gateway process and what the test saw of its decisions."""

    url: str
    db: Path
    log_dir: Path
    client: httpx.AsyncClient
    seen: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    _ids: int = 0

    async def chat(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        """POST a chat request with its own request id and session (sessions would lift later tiers)."""
        self._ids += 1
        rid = f"tiers-{self._ids}"
        hdrs = {"x-request-id": rid, "x-frugalserve-session": rid, **headers}
        return await self.client.post(self.url + "/v1/chat/completions", json=body, headers=hdrs)

    def explained(self, r: httpx.Response) -> str:
        """The route line of a 200 answer, once the pool header and the stored record agree with it; counted
        for the test's final comparison with /metrics."""
        assert r.status_code == 200, r.text
        line = r.headers["x-frugalserve-route"]
        route = fields(line)
        assert r.headers["x-frugalserve-pool"] == route["pool"]
        record = procs.stored_record(self.db, r.headers["x-request-id"])
        assert (record["tier"], record["routing_reason"], record["pool"]) == (route["tier"], line, route["pool"])
        self.seen[(route["tier"], route["reason"], route["action"])] += 1
        return line

    def state(self, pool: str) -> dict[str, Any]:
        data = httpx.get(self.url + "/admin/pools").json()["data"]
        replica: dict[str, Any] = next(p for p in data if p["name"] == pool)["replicas"][0]
        return replica

    def starts(self) -> int:
        log = self.log_dir / "medium-0.log"
        return log.read_text().count("=== frugalserve: starting") if log.exists() else 0

    def decisions(self) -> collections.Counter[tuple[str, str, str]]:
        text = httpx.get(self.url + "/metrics").text
        out: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "frugalserve_routing_decisions_total" and s.value:
                    out[(s.labels["tier"], s.labels["reason"], s.labels["action"])] = int(s.value)
        return out

    @contextlib.asynccontextmanager
    async def saturated_large(self) -> AsyncIterator[None]:
        """L's one slot taken by a slow pinned request, for as long as the block runs."""
        body = {
            "model": "qwen3-vl-32b",
            "messages": [{"role": "user", "content": "slow"}],
            "max_tokens": 2,
            "x_fake": {"delay_s": 30},
        }
        task = asyncio.ensure_future(self.chat(body))
        await procs.eventually(lambda: self.state("large")["in_flight"] == 1, 10, "L saturated")
        self.seen[("L", "pinned", "pinned")] += 1  # its answer never comes: the client hangs up below
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split())


@contextlib.asynccontextmanager
async def stack(tmp: Path, upstreams: tuple[str, str], m_spill: str) -> AsyncIterator[Stack]:
    small, large = upstreams
    with procs.gateway(tmp, config(small, large, tmp, m_spill)) as (url, _):
        async with httpx.AsyncClient(timeout=30) as client:
            yield Stack(url, tmp / "usage.db", tmp, client)


def hello(n: int) -> dict[str, Any]:
    """A prompt of n + 9 tokens that scores 0 (plain English, nothing else)."""
    return {"model": "auto", "messages": [{"role": "user", "content": "hello " * n}], "max_tokens": 4}


async def test_cold_m_spills_up_to_free_l_then_low_priority_spills_to_s_and_normal_wakes_m_once(
    tmp_path: Path, upstreams: tuple[str, str]
) -> None:
    async with stack(tmp_path, upstreams, m_spill="up") as s:
        # L free: the official client, the header read through with_raw_response.
        with procs.openai_client(s.url + "/v1") as client:
            raw = client.chat.completions.with_raw_response.create(
                model="auto",
                messages=MEDIUM_BODY["messages"],
                tools=TOOLS,  # type: ignore[arg-type]
                max_tokens=3,
                extra_headers={"x-request-id": "openai-1", "x-frugalserve-session": "openai-1"},
            )
        assert raw.parse().choices[0].message.content
        line = raw.headers["x-frugalserve-route"]
        assert line == f"tier=L pool=large score=0.400 action=spilled reason=spill_up wanted=M {TOP}"
        assert raw.headers["x-frugalserve-pool"] == "large"
        record = procs.stored_record(s.db, "openai-1")
        assert (record["tier"], record["routing_reason"]) == ("L", line)
        s.seen[("L", "spill_up", "spilled")] += 1
        assert s.state("medium")["state"] == "stopped" and s.starts() == 0

        async with s.saturated_large():
            low = await s.chat(MEDIUM_BODY, **{"x-frugalserve-priority": "low"})
            assert (
                s.explained(low) == f"tier=S pool=small score=0.400 action=spilled reason=priority_low wanted=M {TOP}"
            )
            assert s.state("medium")["state"] == "stopped" and s.starts() == 0, "low priority never wakes a pool"

            # Normal priority may pay $0.32 to wake M: L is saturated, so nothing warm meets M's objective.
            waking = asyncio.ensure_future(s.chat(MEDIUM_BODY))
            await procs.eventually(lambda: s.state("medium")["state"] == "starting", 10, "M starting")
            # While M starts (START_DELAY_S), the next M request waits for it: the start is already paid for.
            waiting = await s.chat(MEDIUM_BODY)
            woke = await waking
            assert s.explained(woke) == WOKE
            line = s.explained(waiting)
            assert re.fullmatch(rf"tier=M pool=medium score=0.400 action=waited reason=wait wait_s=\S+ {TOP}", line)
            assert 15.0 <= float(fields(line)["wait_s"]) <= 20.0  # 20 s expected start, less what has passed
            assert s.starts() == 1
            assert s.decisions() == s.seen


async def test_cold_m_spills_down_to_s_but_high_priority_wakes_it_then_fit_and_pinned(
    tmp_path: Path, upstreams: tuple[str, str]
) -> None:
    async with stack(tmp_path, upstreams, m_spill="down") as s:
        down = await s.chat(MEDIUM_BODY)
        assert s.explained(down) == f"tier=S pool=small score=0.400 action=spilled reason=spill_down wanted=M {TOP}"
        assert s.state("medium")["state"] == "stopped" and s.starts() == 0

        # High priority never spills down, and has no wake limit.
        high = await s.chat(MEDIUM_BODY, **{"x-frugalserve-priority": "high"})
        assert s.explained(high) == WOKE
        assert s.state("medium")["state"] == "ready" and s.starts() == 1

        # 709 tokens + 4: over S's 512, within M's 1024 -> M; 1509 + 4: within L's 4096 only -> L.
        assert s.explained(await s.chat(hello(700))) == "tier=M pool=medium score=0.000 action=direct reason=fit"
        assert s.explained(await s.chat(hello(1500))) == "tier=L pool=large score=0.000 action=direct reason=fit"
        too_long = await s.chat(hello(6000))  # 6009 tokens: no tier holds it
        assert too_long.status_code == 400, too_long.text
        error = too_long.json()["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
        assert "6009" in error["message"] and "4096" in error["message"]

        pinned = fields(s.explained(await s.chat({**MEDIUM_BODY, "model": "qwen3-vl-8b"})))
        assert (pinned["tier"], pinned["pool"], pinned["action"], pinned["reason"]) == (
            "M",
            "medium",
            "pinned",
            "pinned",
        )
        assert s.decisions() == s.seen
