"""The error boundary and the request's bookkeeping when a stage dies of something that is not an Exception.

A tokenizer written in Rust panics with ``pyo3_runtime.PanicException``, a ``BaseException``. A native
panic cannot be provoked on purpose here, so an Upstream stand-in raises a ``BaseException`` subclass of our
own at the same point of the request path (it says so).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from frugalserve.upstream import UpstreamResponse


class NativePanic(BaseException):
    """Stands in for pyo3_runtime.PanicException."""


class PanickingUpstream:
    async def send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> UpstreamResponse:
        raise NativePanic("thread panicked")

    async def aclose(self) -> None:
        return None


CONFIG = "pools:\n  - name: p\n    model: m\n    backend: {url: 'http://127.0.0.1:9'}\n"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def test_a_base_exception_is_a_json_500_with_its_record_and_counters_released() -> None:
    app = create_app(cfg.load_text(CONFIG), upstream_factory=PanickingUpstream)
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            for _ in range(3):
                r = await c.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "panic-1"})
                assert r.status_code == 500
                err = r.json()["error"]
                assert err["type"] == "server_error" and "panic-1" in err["message"]
                assert "panicked" not in r.text  # no internals
                assert r.headers["x-request-id"] == "panic-1"
            assert (await c.get("/healthz")).status_code == 200
    finally:
        await gateway.shutdown()
    records = [r for r in gateway.records.records if r.request_id == "panic-1"]
    assert [(r.status, r.pool) for r in records] == [(500, "p")] * 3
    # each was alone in flight: nothing leaked from the one before
    assert [r.concurrency for r in records] == [1, 1, 1]
    assert gateway.metrics.registry.get_sample_value("frugalserve_requests_in_flight", {"pool": "p"}) == 0
