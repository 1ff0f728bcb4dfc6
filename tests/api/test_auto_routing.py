"""``model: "auto"`` through the gateway: the router's choice reaches the backend, the header, the record and /metrics.

Three warm tiers (static backends on a real loopback server that keeps every body) and the gateway in-process;
the decision rules themselves are table-tested in tests/routing, and spill, wait and wake with cold and busy
tiers run against real processes in tests/routing/test_tiers_live.py. Expected tiers are worked out by hand
from the weights (docs/routing.md); the prompt's length is weighted 0 so that only fit moves long prompts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from frugalserve import config as cfg
from frugalserve.accounting import keys
from frugalserve.accounting.store import create_engine, migrate
from frugalserve.api.app import Gateway, create_app
from tests import procs
from tests.api.conftest import Backend


def make_config(
    url: str,
    db: Path,
    auth: bool = False,
    large_ctx: int = 131072,
    small_url: str | None = None,
    routing: str = "",
    **gateway: Any,
) -> cfg.Config:
    extra = "".join(f", {k}: {v}" for k, v in gateway.items())
    return cfg.load_text(
        f"gateway: {{database: 'sqlite:///{db}'{extra}}}\n"
        f"auth: {{enabled: {str(auth).lower()}}}\n"
        f"routing: {{weights: {{long_prompt: 0}}{routing}}}\n"  # length alone never asks for a tier: fit decides
        "pools:\n"
        f"  - {{name: small, model: vl-2b, tier: S, backend: {{url: '{small_url or url}'}},\n"
        "      gpu: {usd_per_hour: 0.8}, limits: {max_context_tokens: 4096, max_new_tokens: 512}}\n"
        f"  - {{name: medium, model: vl-8b, tier: M, backend: {{url: '{url}'}},\n"
        "      gpu: {usd_per_hour: 1.9}, limits: {max_context_tokens: 32768}}\n"
        f"  - {{name: large, model: vl-32b, tier: L, backend: {{url: '{url}'}},\n"
        f"      gpu: {{usd_per_hour: 4.5}}, limits: {{max_context_tokens: {large_ctx}}}}}\n"
        f"  - {{name: plain, model: other, backend: {{url: '{url}'}}}}\n"
    )


@pytest.fixture
async def gateway(backend: Backend, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    app = create_app(make_config(backend.url, tmp_path / "usage.db"))
    gw: Gateway = app.state.gateway
    await gw.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
            yield c, gw
    finally:
        await gw.shutdown()


def route_of(r: httpx.Response) -> dict[str, str]:
    return dict(part.split("=", 1) for part in r.headers["x-frugalserve-route"].split())


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


async def test_models_lists_auto_with_the_tiers(gateway: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = gateway
    models = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert models["auto"]["tiers"] == ["S", "M", "L"]
    assert {"vl-2b", "vl-8b", "vl-32b", "other"} <= set(models)


async def test_a_greeting_goes_to_the_small_tier_and_says_why_everywhere(
    backend: Backend, gateway: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, gw = gateway
    r = await client.post("/v1/chat/completions", json=chat("hi there"), headers={"x-request-id": "a1"})
    assert r.status_code == 200, r.text
    route = route_of(r)
    assert route["tier"] == "S" and route["pool"] == "small" and route["action"] == "direct"
    assert route["reason"] == "score" and route["score"] == "0.000"
    assert r.headers["x-frugalserve-pool"] == "small"
    assert orjson.loads(backend.bodies[-1])["model"] == "vl-2b"  # the chosen pool's served model
    record = gw.records.find("a1")
    assert record is not None and record.tier == "S" and record.routing_reason == r.headers["x-frugalserve-route"]
    assert record.model == "auto" and record.pool == "small"
    metrics = (await client.get("/metrics")).text
    assert 'frugalserve_routing_decisions_total{action="direct",reason="score",tier="S"} 1.0' in metrics


async def test_a_prompt_too_long_for_the_small_tier_fits_the_next_and_gets_its_caps(
    backend: Backend, gateway: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, gw = gateway
    text = "hello world " * 2500  # 5,000 tokens of text: over S's 4,096 context, well inside M's
    r = await client.post("/v1/chat/completions", json=chat(text), headers={"x-request-id": "f1"})
    assert r.status_code == 200, r.text
    route = route_of(r)
    assert route["tier"] == "M" and route["reason"] == "fit"
    sent = orjson.loads(backend.bodies[-1])
    record = gw.records.find("f1")
    assert record is not None and record.counted_prompt_tokens is not None
    # M's cap, applied after the choice: no max_tokens given, so the room left in M's 32,768 context
    assert sent["max_tokens"] == 32768 - record.counted_prompt_tokens == record.max_tokens


async def test_nothing_fits_is_a_400_naming_messages_and_nothing_is_forwarded(
    backend: Backend, gateway: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, _ = gateway
    r = await client.post("/v1/chat/completions", json=chat("hello world " * 70_000))  # 140,000 tokens
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert backend.bodies == []


async def test_the_tier_header_and_priority_are_honoured_and_checked(
    backend: Backend, gateway: tuple[httpx.AsyncClient, Gateway]
) -> None:
    client, _ = gateway
    r = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-frugalserve-tier": "L"})
    assert route_of(r)["tier"] == "L" and route_of(r)["action"] == "hinted"
    assert orjson.loads(backend.bodies[-1])["model"] == "vl-32b"
    bad = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-frugalserve-tier": "XL"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-frugalserve-tier"
    bad = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-frugalserve-priority": "urgent"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-frugalserve-priority"
    assert bad.json()["error"]["code"] == "invalid_value"


async def test_a_named_model_is_pinned_and_explained(gateway: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gw = gateway
    r = await client.post("/v1/chat/completions", json={**chat("hi"), "model": "vl-32b"}, headers={"x-request-id": "p"})
    route = route_of(r)
    assert route["action"] == "pinned" and route["pool"] == "large" and route["tier"] == "L"
    untiered = await client.post("/v1/chat/completions", json={**chat("hi"), "model": "other"})
    assert route_of(untiered)["pool"] == "plain" and route_of(untiered)["tier"] == "-"
    record = gw.records.find("p")
    assert record is not None and record.tier == "L"


async def test_a_conversation_keeps_its_tier(backend: Backend, gateway: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = gateway
    session = {"x-frugalserve-session": "conv-1"}
    first = await client.post("/v1/chat/completions", json=chat("hi"), headers={**session, "x-frugalserve-tier": "M"})
    assert route_of(first)["tier"] == "M"
    follow = await client.post("/v1/chat/completions", json=chat("thanks"), headers=session)
    assert route_of(follow)["tier"] == "M" and route_of(follow)["reason"] == "session"
    other = await client.post("/v1/chat/completions", json=chat("thanks"), headers={"x-frugalserve-session": "conv-2"})
    assert route_of(other)["tier"] == "S"


async def test_a_large_auto_body_is_counted_in_the_worker_and_routed_by_fit(backend: Backend, tmp_path: Path) -> None:
    text = "hello world " * 90_000  # 1.08 MB (over large_body_mb): 180,000 tokens, more than S and M hold
    results = []
    for workers, ctx in ((1, 131072), (1, 300000), (0, 300000)):
        config = make_config(backend.url, tmp_path / "u.db", large_ctx=ctx, large_body_mb=1, large_body_workers=workers)
        app = create_app(config)
        gw: Gateway = app.state.gateway
        await gw.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
                r = await c.post("/v1/chat/completions", json=chat(text), headers={"x-request-id": "big"})
                record = gw.records.find("big")
                assert record is not None
                results.append((r.status_code, r.headers.get("x-frugalserve-route"), record.counted_prompt_tokens))
                assert gw.body_workers is None or gw.body_workers.started == 1
        finally:
            await gw.shutdown()
    (no_fit, _, _), (fit, worker_route, counted), in_process = results
    assert no_fit == 400  # 131,072 is too small everywhere
    assert fit == 200 and worker_route is not None and "tier=L" in worker_route and "reason=fit" in worker_route
    assert in_process == (200, worker_route, counted)  # the worker decides exactly as the gateway does
    assert orjson.loads(backend.bodies[-1])["max_tokens"] == 300000 - (counted or 0)
    assert backend.bodies[-1] == backend.bodies[-2]


async def test_a_key_may_set_its_default_model_and_the_tiers_auto_may_use(backend: Backend, tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    config = make_config(backend.url, db, auth=True)
    engine = create_engine(f"sqlite:///{db}")
    try:
        migrate(engine)
        _, small_only = keys.create_key(engine, "cheap", 0.0, default_model="auto", tiers=("S",))
    finally:
        engine.dispose()
    app = create_app(config)
    gw: Gateway = app.state.gateway
    await gw.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
            auth = {"authorization": f"Bearer {small_only}"}
            body = {"messages": [{"role": "user", "content": "hi"}]}  # no model: the key's default
            r = await c.post("/v1/chat/completions", json=body, headers={**auth, "x-frugalserve-tier": "M"})
            assert r.status_code == 403 and r.json()["error"]["param"] == "x-frugalserve-tier"
            long = {"messages": [{"role": "user", "content": "hello world " * 2500}]}  # would go to M by fit
            r = await c.post("/v1/chat/completions", json=long, headers=auth)
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
            r = await c.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 200 and route_of(r)["tier"] == "S"
            listed = {m["id"]: m for m in (await c.get("/v1/models", headers=auth)).json()["data"]}
            assert listed["auto"]["tiers"] == ["S"]
    finally:
        await gw.shutdown()


@pytest.mark.parametrize(
    ("yaml", "path"),
    [
        ("pools:\n  - {name: auto, model: m, backend: {url: 'http://x'}}\n", "pools[0].name"),
        (
            "pools:\n  - {name: a, model: m, tier: S, backend: {url: 'http://x'}}\n"
            "  - {name: b, model: n, tier: M, backend: {url: 'http://x'}, limits: {image: {max_tokens: 256}}}\n",
            "pools[1].limits.image",
        ),
        (
            "pools:\n  - {name: a, model: m, tier: S, tokenizer: none, backend: {url: 'http://x'}}\n",
            "pools[0].tokenizer",
        ),
    ],
)
def test_config_errors_for_auto_name_the_key(yaml: str, path: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load_text(yaml)
    assert str(err.value).startswith(path), str(err.value)


async def _started(config: cfg.Config) -> tuple[httpx.AsyncClient, Gateway]:
    app = create_app(config)
    gw: Gateway = app.state.gateway
    await gw.startup()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60), gw


async def test_a_tier_that_cannot_be_reached_falls_back_to_the_next_and_says_so(
    backend: Backend, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens: connection refused
    client, gw = await _started(make_config(backend.url, tmp_path / "u.db", small_url=dead))
    try:
        r = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-request-id": "fb"})
        assert r.status_code == 200, r.text
        route = route_of(r)
        assert route["reason"] == "fallback" and route["pool"] == "medium"
        assert "small failed before answering" in r.headers["x-frugalserve-notes"]
        assert [orjson.loads(b)["model"] for b in backend.bodies] == ["vl-8b"]
        record = gw.records.find("fb")
        assert record is not None and record.pool == "medium" and record.tier == "M" and record.status == 200
        metrics = (await client.get("/metrics")).text
        for pool in ("small", "medium"):  # nothing left counted in flight on either pool
            assert f'frugalserve_requests_in_flight{{pool="{pool}"}} 0.0' in metrics
        assert 'frugalserve_routing_decisions_total{action="direct",reason="fallback",tier="M"} 1.0' in metrics
        pinned = await client.post("/v1/chat/completions", json={**chat("hi"), "model": "vl-2b"})
        assert pinned.status_code == 502  # a named model is never swapped for another
    finally:
        await client.aclose()
        await gw.shutdown()


async def test_the_cascade_tries_the_cheapest_tier_and_escalates_a_cut_off_answer(
    backend: Backend, tmp_path: Path
) -> None:
    backend.finish["vl-2b"] = "length"  # the small model runs out of room
    config = make_config(backend.url, tmp_path / "u.db", routing=", cascade: {enabled: true}")
    client, gw = await _started(config)
    try:
        hard = chat("Prove that there are infinitely many primes, step by step.", max_tokens=64)
        r = await client.post("/v1/chat/completions", json=hard, headers={"x-request-id": "c1"})
        assert r.status_code == 200, r.text
        assert [orjson.loads(b)["model"] for b in backend.bodies] == ["vl-2b", "vl-8b"]
        assert r.json()["choices"][0]["finish_reason"] == "stop"  # the client gets the escalated answer
        route = route_of(r)
        assert route["pool"] == "medium" and route["reason"] == "cascade"
        assert "answer of small was flagged (length)" in r.headers["x-frugalserve-notes"]
        record = gw.records.find("c1")
        assert record is not None and record.pool == "medium"
        assert (record.prompt_tokens, record.completion_tokens) == (7 + 7, 2 + 2)  # both calls, summed
        backend.bodies.clear()
        streamed = await client.post("/v1/chat/completions", json={**hard, "stream": True})
        assert streamed.status_code == 200 and len(backend.bodies) == 1  # streams are never cascaded
        assert route_of(streamed)["reason"] != "cascade"
    finally:
        await client.aclose()
        await gw.shutdown()
