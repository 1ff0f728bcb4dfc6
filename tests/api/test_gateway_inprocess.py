"""The gateway app in-process (httpx's ASGI transport) in front of the fake upstream on a real port."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests import procs


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with procs.fake_upstream(tmp_path_factory.mktemp("up")) as url:
        yield url


def make_config(url: str, **gateway: object) -> cfg.Config:
    gw = "".join(f"  {k}: {v}\n" for k, v in gateway.items())
    return cfg.load_text(
        f"gateway:\n  port: 8080\n{gw}pools:\n"
        f"  - name: small\n    model: qwen3-vl-2b\n    aliases: [fast]\n    backend: {{url: '{url}'}}\n"
        f"  - name: dead\n    model: dead-model\n    backend: {{url: 'http://127.0.0.1:{procs.free_port()}'}}\n"
    )


@pytest.fixture
async def client(upstream_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_config(upstream_url, request_timeout_s=1.0, max_body_mb=0.05))
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c
    finally:
        await gateway.shutdown()


CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


async def test_chat_goes_to_pool_by_alias_and_names_it(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.headers["x-frugalserve-pool"] == "small"
    body = r.json()
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == 3


async def test_upstream_receives_served_model_name(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.json()["model"] == "qwen3-vl-2b"


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r2 = await client.post("/v1/chat/completions", json=CHAT)
    assert len(r2.headers["x-request-id"]) == 32


async def test_usage_is_recorded_for_accounting(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "rec-1"})
    gateway = client._transport.app.state.gateway  # type: ignore[attr-defined]
    rec = gateway.records.find("rec-1")
    assert rec is not None and rec.status == 200 and rec.pool == "small"
    assert rec.completion_tokens == r.json()["usage"]["completion_tokens"]
    assert rec.prompt_tokens == r.json()["usage"]["prompt_tokens"]


async def test_streaming_asks_upstream_for_usage_but_hides_it_from_client_that_did_not(
    client: httpx.AsyncClient,
) -> None:
    body = {**CHAT, "stream": True}
    r = await client.post("/v1/chat/completions", json=body, headers={"x-request-id": "s-1"})
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all('"choices": []' not in e for e in events)
    rec = client._transport.app.state.gateway.records.find("s-1")  # type: ignore[attr-defined]
    assert rec.completion_tokens == 3 and rec.stream


async def test_streaming_passes_usage_to_client_that_asked(client: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = await client.post("/v1/chat/completions", json=body)
    events = [json.loads(e.removeprefix("data: ")) for e in r.text.split("\n\n") if e and e != "data: [DONE]"]
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    # the gateway's own count of the prompt, by kind, rides along
    assert last["usage"]["prompt_tokens_details"]["text_tokens"] > 0


async def test_completions_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={"model": "small", "prompt": "Say", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["text"]


async def test_models_lists_each_pool_model_and_alias(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    ids = {m["id"] for m in r.json()["data"]}
    assert {"qwen3-vl-2b", "fast", "dead-model"} <= ids


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1,2]", None, "invalid_json"),
        (b'{"model": "fast"}', "messages", "missing_required_parameter"),
        (b'{"messages": []}', "model", "missing_required_parameter"),
        (b'{"model": 5, "messages": [{"role":"user","content":"x"}]}', "model", "invalid_type"),
        (b'{"model": "fast", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "fast", "messages": []}', "messages", "invalid_value"),
        (b'{"model": "fast", "messages": [{"role":"wizard","content":"x"}]}', "messages[0].role", "invalid_value"),
        (b'{"model": "fast", "messages": [{"role":"user","content":5}]}', "messages[0].content", "invalid_type"),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":[{"type":"image_url"}]}]}',
            "messages[0].content[0].image_url.url",
            "invalid_type",
        ),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":[{"type":"hologram"}]}]}',
            "messages[0].content[0].type",
            "invalid_value",
        ),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "max_tokens": -5}',
            "max_tokens",
            "invalid_value",
        ),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "max_tokens": "9"}',
            "max_tokens",
            "invalid_type",
        ),
        (b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "top_p": 1.5}', "top_p", "invalid_value"),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "temperature": 1e308}',
            "temperature",
            "invalid_value",
        ),
        (b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "stream": "yes"}', "stream", "invalid_type"),
        (
            b'{"model": "fast", "messages": [{"role":"user","content":"x"}], "max_tokens": 99999999999999}',
            "max_tokens",
            "invalid_value",
        ),
    ],
)
async def test_bad_requests_get_400_naming_the_parameter(
    client: httpx.AsyncClient, body: bytes, param: str | None, code: str
) -> None:
    r = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    err = _error(r, 400)
    assert err["param"] == param
    assert err["code"] == code
    assert err["type"] == "invalid_request_error"


async def test_completion_without_prompt_is_400(client: httpx.AsyncClient) -> None:
    err = _error(await client.post("/v1/completions", json={"model": "fast"}), 400)
    assert err["param"] == "prompt"


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    err = _error(await client.post("/v1/chat/completions", json=big), 413)
    assert "larger than the limit" in str(err["message"])


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    err = _error(await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"


async def test_upstream_4xx_passes_through_with_its_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={**CHAT, "x_fake": {"status": 422}})
    err = _error(r, 422)
    assert err["message"] == "fake error 422"
    assert r.headers["x-frugalserve-pool"] == "small"


async def test_upstream_connect_failure_is_502(client: httpx.AsyncClient) -> None:
    err = _error(await client.post("/v1/chat/completions", json={**CHAT, "model": "dead-model"}), 502)
    assert err["code"] == "upstream_unavailable"


async def test_upstream_timeout_is_504(client: httpx.AsyncClient) -> None:
    err = _error(await client.post("/v1/chat/completions", json={**CHAT, "x_fake": {"delay_s": 3}}), 504)
    assert err["type"] == "timeout_error"


async def test_upstream_5xx_is_a_502_naming_the_pool(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={**CHAT, "x_fake": {"status": 500}})
    assert r.status_code == 502 and r.json()["error"]["message"] == "pool 'small': the backend answered 500"


async def test_unknown_route_and_method_are_openai_errors(client: httpx.AsyncClient) -> None:
    assert _error(await client.get("/v1/nothing"), 404)["code"] == "not_found"
    assert _error(await client.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"


async def test_metrics_count_requests_by_pool_and_status(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=CHAT)
    await client.post("/v1/chat/completions", json={**CHAT, "model": "dead-model"})
    text = (await client.get("/metrics")).text
    assert 'frugalserve_requests_total{endpoint="chat",pool="small",status="200",tier="-"} 1.0' in text
    assert 'frugalserve_requests_total{endpoint="chat",pool="dead",status="502",tier="-"} 1.0' in text
    assert "frugalserve_request_duration_seconds_bucket" in text
    assert 'frugalserve_requests_in_flight{pool="small"} 0.0' in text


def _png(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_chat(url: str, **extra: object) -> dict[str, object]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]
    return {"model": "fast", "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


async def test_big_image_is_resized_to_budget_and_usage_shows_the_saving(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=_image_chat(_png(1920, 1080)))
    assert r.status_code == 200, r.text
    details = r.json()["usage"]["prompt_tokens_details"]
    # 1920x1080 is 2,040 + 2 tokens as it is; the default budget (1024 tokens, short edge 768) cuts it.
    assert details["image_tokens"] <= 1024 + 2
    assert details["image_tokens_saved"] >= 1000
    metrics = (await client.get("/metrics")).text
    assert (
        f'frugalserve_image_tokens_saved_total{{pool="small",tier="-"}} {details["image_tokens_saved"]:.1f}' in metrics
    )
    assert (
        f'frugalserve_prompt_tokens_total{{kind="image",pool="small",tier="-"}} {details["image_tokens"]:.1f}'
        in metrics
    )


async def test_corrupt_image_is_400_naming_the_part(client: httpx.AsyncClient) -> None:
    bad = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()
    err = _error(await client.post("/v1/chat/completions", json=_image_chat(bad)), 400)
    assert err["param"] == "messages[0].content[0].image_url"


async def test_image_url_to_loopback_is_refused(client: httpx.AsyncClient, upstream_url: str) -> None:
    err = _error(await client.post("/v1/chat/completions", json=_image_chat(upstream_url + "/health")), 400)
    assert err["param"] == "messages[0].content[0].image_url"
    assert err["code"] == "invalid_image_url"


async def test_max_tokens_over_pool_cap_is_clamped_and_said(upstream_url: str) -> None:
    config = cfg.load_text(
        "pools:\n  - name: capped\n    model: m\n"
        f"    backend: {{url: '{upstream_url}'}}\n"
        "    limits: {max_new_tokens: 4, max_context_tokens: 40}\n"
    )
    app = create_app(config)
    await app.state.gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={**CHAT, "model": "m", "max_tokens": 100})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
            assert r.headers["x-frugalserve-notes"] == "max_tokens clamped from 100 to 4"
            long = {**CHAT, "model": "m", "messages": [{"role": "user", "content": "word " * 100}]}
            err = _error(await c.post("/v1/chat/completions", json=long), 400)
            assert err["code"] == "context_length_exceeded"
            assert "40" in str(err["message"])
    finally:
        await app.state.gateway.shutdown()
