"""Large bodies go to a body worker process (api/worker.py) and come out exactly as the gateway would make them.

The oracle is the gateway's own in-process path (large_body_workers: 0), itself checked against transformers'
processor and the published template in tests/budget: the same request through both paths must reach the
backend as the same bytes, with the same counts, notes, answer and record. The backend is a real HTTP server
on loopback (aiohttp) that keeps every body it receives; the worker is a real process.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests.api.conftest import Backend

WORDS = "the quick brown fox jumps over a lazy dog while 42 cats count tokens; naïve café 東京 🙂".split()


def long_text(megabytes: float) -> str:
    line = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(40)) + "\n"
    return line * int(megabytes * 1_000_000 / len(line.encode()) + 1)


def png_data_url(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_config(url: str, workers: int) -> cfg.Config:
    return cfg.load_text(
        f"gateway: {{max_body_mb: 40, large_body_mb: 1, large_body_workers: {workers}}}\n"
        "pools:\n"
        f"  - {{name: vl, model: qwen3-vl, backend: {{url: '{url}'}},\n"
        "      limits: {max_context_tokens: 3000000}}\n"
        f"  - {{name: raw, model: raw, tokenizer: none, backend: {{url: '{url}'}}}}\n"
    )


@pytest.fixture
async def gateways(backend: Backend) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways in front of the same backend: one without body workers (the oracle), one with."""
    apps = [create_app(make_config(backend.url, workers)) for workers in (0, 1)]
    for app in apps:
        await app.state.gateway.startup()
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://gw", timeout=60) as plain,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://gw", timeout=60) as worker,
        ):
            yield plain, worker
    finally:
        for app in apps:
            await app.state.gateway.shutdown()


def gateway_of(client: httpx.AsyncClient) -> Gateway:
    gateway: Gateway = client._transport.app.state.gateway  # type: ignore[attr-defined]
    return gateway


def started(client: httpx.AsyncClient) -> int:
    workers = gateway_of(client).body_workers
    return 0 if workers is None else workers.started


COUNTED = ("counted_prompt_tokens", "prompt_text_tokens", "prompt_image_tokens", "image_tokens_saved", "images_resized")
COUNTED += ("max_tokens", "max_tokens_requested", "notes", "stream", "model", "pool")


async def both(
    backend: Backend, plain: httpx.AsyncClient, worker: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> list[httpx.Response]:
    raw = orjson.dumps(body)
    assert len(raw) > 1024 * 1024  # over large_body_mb: the second gateway hands it to its worker
    answers = []
    for i, client in enumerate((plain, worker)):
        r = await client.post(path, content=raw, headers={"content-type": "application/json", "x-request-id": f"r{i}"})
        answers.append(r)
    return answers


async def test_a_large_chat_reaches_the_backend_as_the_same_bytes_with_the_same_counts(
    backend: Backend, gateways: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    plain, worker = gateways
    body = {
        "model": "qwen3-vl",
        "max_tokens": 5_000_000,  # clamped to the context's room: a note, and a changed body
        "messages": [
            {"role": "system", "content": "You summarise."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": long_text(1.5)},
                    {"type": "image_url", "image_url": {"url": png_data_url(1600, 1200)}},
                ],
            },
        ],
    }
    a, b = await both(backend, plain, worker, "/v1/chat/completions", body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert started(worker) == 1 and started(plain) == 0
    assert backend.bodies[0] == backend.bodies[1]
    assert backend.lengths[1] == str(len(backend.bodies[1]))  # pieces sent with their total length
    assert a.json()["usage"] == b.json()["usage"]
    assert a.headers["x-frugalserve-notes"] == b.headers["x-frugalserve-notes"]
    assert "resized from 1600x1200 to 1024x768" in b.headers["x-frugalserve-notes"]
    records = [gateway_of(c).records.find(f"r{i}") for i, c in enumerate((plain, worker))]
    assert records[0] is not None and records[1] is not None
    for name in COUNTED:
        assert getattr(records[0], name) == getattr(records[1], name), name
    assert records[1].prompt_image_tokens == 770  # 1024x768 / 1024 + 2, by hand
    assert records[1].prompt_text_tokens > 300_000


async def test_a_large_stream_a_completion_and_an_uncounted_pool_go_through_the_worker_alike(
    backend: Backend, gateways: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    plain, worker = gateways
    text = long_text(1.2)
    cases = [
        (
            "/v1/chat/completions",
            {"model": "qwen3-vl", "stream": True, "messages": [{"role": "user", "content": text}]},
        ),
        ("/v1/completions", {"model": "qwen3-vl", "prompt": text, "max_tokens": 4}),
        ("/v1/chat/completions", {"model": "raw", "messages": [{"role": "user", "content": text}], "seed": 1}),
    ]
    for path, body in cases:
        backend.bodies.clear()
        a, b = await both(backend, plain, worker, path, body)
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        assert backend.bodies[0] == backend.bodies[1], path
        assert a.text == b.text, path
        for i, client in enumerate((plain, worker)):
            assert gateway_of(client).records.find(f"r{i}") is not None
    assert started(worker) == 1  # one worker served all three


@pytest.mark.parametrize(
    ("change", "status", "param", "code"),
    [
        (lambda b: b.update(model="nope"), 404, "model", "model_not_found"),  # refused between the two steps
        (lambda b: b.update(temperature="hot"), 400, "temperature", "invalid_type"),
        (lambda b: b["messages"][0].update(role="wizard"), 400, "messages[0].role", "invalid_value"),
        (
            lambda b: b["messages"][0].update(
                content=[
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": long_text(1.1)},
                ]
            ),
            400,
            "messages[0].content[0].image_url",
            "invalid_image",
        ),
        (lambda b: b.update(max_tokens=0), 400, "max_tokens", None),
    ],
)
async def test_errors_found_in_the_worker_are_the_same_openai_errors_and_the_worker_stays(
    backend: Backend,
    gateways: tuple[httpx.AsyncClient, httpx.AsyncClient],
    change: Any,
    status: int,
    param: str,
    code: str | None,
) -> None:
    plain, worker = gateways
    body: dict[str, Any] = {"model": "qwen3-vl", "messages": [{"role": "user", "content": long_text(1.1)}]}
    change(body)
    a, b = await both(backend, plain, worker, "/v1/chat/completions", body)
    assert a.status_code == b.status_code == status, b.text
    assert a.json() == b.json()
    assert b.json()["error"]["param"] == param
    if code is not None:
        assert b.json()["error"]["code"] == code
    assert backend.bodies == []  # nothing was forwarded
    ok = await worker.post(
        "/v1/chat/completions", json={"model": "qwen3-vl", "messages": [{"role": "user", "content": long_text(1.1)}]}
    )
    assert ok.status_code == 200
    assert started(worker) == 1  # the same worker answered the error and the next request


async def test_invalid_json_over_the_threshold_is_a_400_from_the_worker(
    gateways: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, worker = gateways
    r = await worker.post("/v1/chat/completions", content=b'{"model": "qwen3-vl", "x": "' + b"a" * 2_000_000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert started(worker) == 1


async def test_a_client_that_leaves_while_the_worker_counts_costs_that_worker_only(
    backend: Backend, gateways: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    _, worker = gateways
    body = {"model": "qwen3-vl", "messages": [{"role": "user", "content": long_text(8)}]}
    task = asyncio.ensure_future(worker.post("/v1/chat/completions", json=body))
    workers = gateway_of(worker).body_workers
    assert workers is not None
    for _ in range(200):  # until the worker has the request
        await asyncio.sleep(0.01)
        if workers.started:
            break
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    small = {"model": "qwen3-vl", "messages": [{"role": "user", "content": long_text(1.1)}]}
    r = await worker.post("/v1/chat/completions", json=small)
    assert r.status_code == 200
    assert workers.started == 2  # the abandoned one was killed, a fresh one served the next
    assert len(backend.bodies) == 1


async def test_shutdown_stops_the_worker_processes(backend: Backend) -> None:
    app = create_app(make_config(backend.url, 1))
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60) as c:
        r = await c.post(
            "/v1/chat/completions", json={"model": "raw", "messages": [{"role": "user", "content": long_text(1.1)}]}
        )
        assert r.status_code == 200
    assert gateway.body_workers is not None
    procs = gateway.body_workers.processes()
    assert len(procs) == 1 and procs[0].returncode is None
    await gateway.shutdown()
    assert procs[0].returncode == 0  # it read the end of its input and exited by itself
