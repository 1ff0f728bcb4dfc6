"""A pool of several running servers (``backend.urls``): replica choice, affinity, and one retry elsewhere.

Real loopback servers (tests/api/conftest.py) stand for the replicas; a port nobody listens on is a replica
that is down. The gateway runs in-process.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests import procs
from tests.api.conftest import Backend, serving


@pytest.fixture
async def two() -> AsyncIterator[tuple[Backend, Backend]]:
    async with serving() as a, serving() as b:
        yield a, b


async def started(urls: list[str], tmp: Path, routing: str = "") -> tuple[httpx.AsyncClient, Gateway]:
    config = cfg.load_text(
        f"gateway: {{database: 'sqlite:///{tmp / 'u.db'}'}}\n{routing}"
        f"pools:\n  - {{name: p, model: m, backend: {{urls: {urls!r}}}}}\n"
    )
    app = create_app(config)
    gw: Gateway = app.state.gateway
    await gw.startup()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30), gw


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def png(color: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def test_a_replica_that_is_down_is_skipped_once_and_the_request_answered(
    two: tuple[Backend, Backend], tmp_path: Path
) -> None:
    alive, _ = two
    dead = f"http://127.0.0.1:{procs.free_port()}"
    client, gw = await started([dead, alive.url], tmp_path)  # p-0 is down; idle replicas tie, p-0 comes first
    try:
        r = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-request-id": "r1"})
        assert r.status_code == 200, r.text
        assert (
            "p-0 failed before answering (upstream_unavailable): retried on another replica"
            in r.headers["x-frugalserve-notes"]
        )
        record = gw.records.find("r1")
        assert record is not None and record.replica == "p-1" and record.status == 200
        assert record.notes is not None and "retried on another replica" in record.notes
        assert len(alive.bodies) == 1
        described = {rep["name"]: rep["in_flight"] for rep in gw.pools.pools["p"].describe()["replicas"]}
        assert described == {"p-0": 0, "p-1": 0}
    finally:
        await client.aclose()
        await gw.shutdown()


async def test_when_every_replica_is_down_the_answer_is_one_502_after_one_retry(tmp_path: Path) -> None:
    urls = [f"http://127.0.0.1:{procs.free_port()}" for _ in range(3)]
    client, gw = await started(urls, tmp_path)
    try:
        r = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-request-id": "r2"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        metrics = (await client.get("/metrics")).text
        assert 'frugalserve_upstream_errors_total{kind="connect",pool="p"} 2.0' in metrics  # tried twice, not 3x
    finally:
        await client.aclose()
        await gw.shutdown()


async def test_the_same_image_or_conversation_keeps_its_replica_and_different_ones_spread(
    two: tuple[Backend, Backend], tmp_path: Path
) -> None:
    a, b = two
    client, gw = await started([a.url, b.url], tmp_path)
    try:
        image = [{"type": "image_url", "image_url": {"url": png((200, 10, 10))}}, {"type": "text", "text": "what?"}]
        replicas = set()
        for i in range(6):  # sequential: each finds both replicas idle, so only affinity decides
            r = await client.post("/v1/chat/completions", json=chat(image), headers={"x-request-id": f"i{i}"})
            assert r.status_code == 200
            record = gw.records.find(f"i{i}")
            assert record is not None
            replicas.add(record.replica)
        assert len(replicas) == 1  # the vision cache of one server gets every repeat of this image
        for i in range(12):
            r = await client.post("/v1/chat/completions", json=chat("hi"), headers={"x-frugalserve-session": f"s{i}"})
            assert r.status_code == 200
        assert a.bodies and b.bodies  # twelve conversations: both replicas serve some
    finally:
        await client.aclose()
        await gw.shutdown()


@pytest.mark.parametrize(
    ("backend", "path"),
    [
        ("{url: 'http://a', urls: ['http://b']}", "pools[0].backend.urls"),
        ("{urls: ['http://a', 'http://a']}", "pools[0].backend.urls"),
        ("{urls: ['ftp://a']}", "pools[0].backend.urls[0]"),
        ("{urls: ['http://a', 'http://b'], command: 'x {port}'}", "pools[0].backend.command"),
        ("{urls: ['http://a'], startup_timeout_s: 5}", "pools[0].backend.startup_timeout_s"),
    ],
)
def test_replica_url_errors_name_the_key(backend: str, path: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load_text(f"pools:\n  - {{name: p, model: m, backend: {backend}}}\n")
    assert str(err.value).startswith(path), str(err.value)
