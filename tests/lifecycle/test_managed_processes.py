"""Managed backends as real processes (the fake upstream) behind the gateway app, in-process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests import procs

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def fake_command(start_delay: float = 0.0) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(procs.FAKE_UPSTREAM))} --port {{port}} --start-delay {start_delay}"


def pool_yaml(name: str, log_dir: Path, start_delay: float = 0.0, gpu: str = "", **lifecycle: object) -> str:
    lc = ", ".join(f"{k}: {'null' if v is None else v}" for k, v in lifecycle.items())
    return (
        f"  - name: {name}\n    model: m-{name}\n"
        f"    backend: {{command: {fake_command(start_delay)!r}, log_dir: {str(log_dir)!r}, startup_timeout_s: 30}}\n"
        f"    lifecycle: {{{lc}}}\n" + (f"    gpu: {gpu}\n" if gpu else "")
    )


def starts(log_dir: Path, pool: str) -> int:
    log = log_dir / f"{pool}-0.log"
    return log.read_text().count("=== frugalserve: starting") if log.exists() else 0


Client = Callable[..., AsyncIterator[tuple[httpx.AsyncClient, Gateway]]]


@pytest.fixture
def gateway_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    import contextlib

    @contextlib.asynccontextmanager
    async def make(pools: str, devices: str = "") -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
        config = cfg.load_text(f"{devices}pools:\n{pools}")
        app = create_app(config)
        gateway: Gateway = app.state.gateway
        await gateway.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60) as client:
                yield client, gateway
        finally:
            await gateway.shutdown()

    return make


def state(gateway: Gateway, pool: str) -> str:
    return gateway.pools.pools[pool].describe()["replicas"][0]["state"]


async def backend_stats(gateway: Gateway, pool: str) -> dict[str, int]:
    url = gateway.pools.pools[pool].describe()["replicas"][0]["url"]
    async with httpx.AsyncClient() as real:  # the gateway's client is in-process; this one uses the network
        return (await real.get(url + "/stats")).json()  # type: ignore[no-any-return]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_burst_of_50_against_cold_pool_all_succeed_with_one_start(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    async with gateway_for(pool_yaml("a", tmp_path, start_delay=0.5)) as (client, gateway):
        rs = await asyncio.gather(
            *(client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"}) for _ in range(50))
        )
        assert [r.status_code for r in rs] == [200] * 50
        assert starts(tmp_path, "a") == 1
        assert all(int(r.headers["x-frugalserve-cold-start-ms"]) >= 500 for r in rs)
        admin = (await client.get("/admin/pools")).json()["data"][0]
        assert admin["replicas"][0]["state"] == "ready" and admin["replicas"][0]["last_cold_start_s"] >= 0.5
        metrics = (await client.get("/metrics")).text
        assert 'frugalserve_cold_starts_total{kind="start",level="0",pool="a"} 1.0' in metrics
        pid = (await backend_stats(gateway, "a"))["pid"]
    assert not pid_alive(pid), "the backend's process group is stopped with the gateway"


async def test_streaming_request_for_cold_pool_gets_keepalives_then_the_stream(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    pool = pool_yaml("a", tmp_path, start_delay=0.6, keepalive_s=0.2) + "    limits: {max_new_tokens: 2}\n"
    async with gateway_for(pool) as (client, _):
        body = {**CHAT, "model": "m-a", "stream": True, "max_tokens": 5}
        r = await client.post("/v1/chat/completions", json=body, headers={"x-request-id": "held-1"})
        assert r.status_code == 200 and r.headers["x-frugalserve-cold-start"] == "waiting"
        # a held stream's headers say what the gateway changed, as a warm one's do
        assert r.headers["x-frugalserve-notes"] == "max_tokens clamped from 5 to 2"
        assert r.headers["x-frugalserve-pool"] == "a" and r.headers["x-request-id"] == "held-1"
        assert r.text.count(": waiting for a replica") >= 2
        assert ": x-frugalserve-cold-start-ms:" in r.text and r.text.endswith("data: [DONE]\n\n")
        # each keep-alive says how the wait stands: the pool, its state, the time left, the time waited
        waits = [json.loads(line.split(" replica ", 1)[1]) for line in r.text.splitlines() if "waiting for" in line]
        assert {w["pool"] for w in waits} == {"a"} and "starting" in {w["state"] for w in waits}
        assert waits[0]["waited_s"] == 0.0
        assert all(a["waited_s"] < b["waited_s"] for a, b in itertools.pairwise(waits))
        assert all(w["eta_s"] is None or w["eta_s"] >= 0 for w in waits)


async def test_idle_ladder_sleeps_then_stops_and_a_request_wakes_it(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    async with gateway_for(pool_yaml("a", tmp_path, idle_sleep_s=0.5, idle_stop_s=2.0)) as (client, gateway):
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})).status_code == 200
        await procs.eventually(lambda: state(gateway, "a") == "sleeping", 5, "idle sleep")
        assert (await backend_stats(gateway, "a"))["sleeping"] == 1  # detected vLLM sleep API, level 1
        r = await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})
        assert r.status_code == 200 and "x-frugalserve-cold-start-ms" in r.headers  # woken, not restarted
        assert starts(tmp_path, "a") == 1
        await procs.eventually(lambda: state(gateway, "a") == "stopped", 8, "idle stop")
        reasons = [(e.to_state, e.reason) for e in gateway.recent_events.events]
        assert ("sleeping", "idle_sleep") in reasons and ("stopped", "idle_stop") in reasons


async def test_backend_killed_mid_stream_gives_clean_error_and_next_request_restarts(
    tmp_path: Path, gateway_for
) -> None:  # type: ignore[no-untyped-def]
    async with gateway_for(pool_yaml("a", tmp_path)) as (client, gateway):
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})).status_code == 200
        t0 = time.monotonic()
        body = {**CHAT, "model": "m-a", "stream": True, "max_tokens": 50, "x_fake": {"die_after": 2, "tokens": 50}}
        r = await client.post("/v1/chat/completions", json=body)
        assert time.monotonic() - t0 < 5
        assert '"error"' in r.text and "upstream_error" in r.text
        await procs.eventually(lambda: state(gateway, "a") == "failed", 5, "the crash noticed")
        r = await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})
        assert r.status_code == 200 and starts(tmp_path, "a") == 2


async def test_long_stream_survives_an_idle_deadline(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    async with gateway_for(pool_yaml("a", tmp_path, idle_sleep_s=0.3, idle_stop_s=0.6)) as (client, gateway):
        body = {**CHAT, "model": "m-a", "stream": True, "max_tokens": 15, "x_fake": {"tokens": 15, "interval_s": 0.1}}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and '"error"' not in r.text
        assert r.text.count("chat.completion.chunk") >= 15
        transitions = [e.to_state for e in gateway.recent_events.events]
        assert transitions == ["starting", "ready"], "nothing was put down while the stream ran"


async def test_two_pools_on_one_device_take_turns(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    pools = pool_yaml("a", tmp_path, gpu="{device: gpu0, memory_gb: 16}") + pool_yaml(
        "b", tmp_path, gpu="{device: gpu0, memory_gb: 16}"
    )
    async with gateway_for(pools, devices="devices: [{name: gpu0, memory_gb: 24}]\n") as (client, gateway):
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "m-b"})).status_code == 200
        assert state(gateway, "a") == "sleeping" and state(gateway, "b") == "ready"
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})).status_code == 200
        assert state(gateway, "a") == "ready" and state(gateway, "b") == "sleeping"
        assert starts(tmp_path, "a") == 1 and starts(tmp_path, "b") == 1


async def test_admin_wakes_and_sleeps_a_pool(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    async with gateway_for(pool_yaml("a", tmp_path)) as (client, _):
        r = await client.post("/admin/pools/a/wake?wait=true")
        assert r.status_code == 200 and r.json()["replicas"][0]["state"] == "ready"
        r = await client.post("/admin/pools/a/sleep")
        assert r.json()["result"] == "sleeping"
        r = await client.post("/admin/pools/a/sleep?stop=true")
        assert r.json()["replicas"][0]["state"] == "stopped"
        r = await client.post("/admin/pools/nope/wake")
        assert r.status_code == 404 and r.json()["error"]["code"] == "pool_not_found"


async def test_backend_that_never_gets_healthy_fails_waiters_with_503(tmp_path: Path, gateway_for) -> None:  # type: ignore[no-untyped-def]
    bad = (
        f"  - name: a\n    model: m-a\n    backend: {{command: '{sys.executable} -c \"import sys; sys.exit(3)\" {{port}}',"
        f" log_dir: {str(tmp_path)!r}}}\n"
    )
    async with gateway_for(bad) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "model": "m-a"})
        assert r.status_code == 503 and "exited with code 3" in r.json()["error"]["message"]
        assert "retry-after" in r.headers
