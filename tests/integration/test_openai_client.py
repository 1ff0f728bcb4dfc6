"""The gateway as a real process on a real port, driven by the official openai client."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests import procs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("stack")
    with procs.fake_upstream(tmp) as up:
        config = (
            "gateway: {request_timeout_s: 2, shutdown_grace_s: 10}\n"
            f"pools:\n  - {{name: small, model: qwen3-vl-2b, aliases: [fast], backend: {{url: '{up}'}}}}\n"
        )
        with procs.gateway(tmp, config) as (gw, _proc):
            yield gw, up


def _client(gw: str) -> openai.OpenAI:
    return procs.openai_client(gw + "/v1", "unused")


def _tiny_png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": _tiny_png()}},
        ],
    }
]


def test_sync_chat(stack: tuple[str, str]) -> None:
    gw, _ = stack
    raw = _client(gw).chat.completions.with_raw_response.create(model="fast", messages=MESSAGES, max_tokens=4)
    out = raw.parse()
    assert raw.headers["x-frugalserve-pool"] == "small"
    assert out.choices[0].message.content and out.usage and out.usage.completion_tokens == 4


def test_sync_streaming_chat(stack: tuple[str, str]) -> None:
    gw, _ = stack
    chunks = list(_client(gw).chat.completions.create(model="fast", messages=MESSAGES, max_tokens=5, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    assert all(c.choices for c in chunks), "no usage-only chunk when the client did not ask"


def test_streaming_with_usage_when_asked(stack: tuple[str, str]) -> None:
    gw, _ = stack
    chunks = list(
        _client(gw).chat.completions.create(
            model="fast", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_async_chat_and_stream(stack: tuple[str, str]) -> None:
    gw, _ = stack
    client = openai.AsyncOpenAI(base_url=gw + "/v1", api_key="unused", max_retries=0)
    out = await client.chat.completions.create(model="qwen3-vl-2b", messages=MESSAGES, max_tokens=2)
    assert out.choices[0].message.content
    n = 0
    async for chunk in await client.chat.completions.create(model="fast", messages=MESSAGES, max_tokens=3, stream=True):
        n += bool(chunk.choices and chunk.choices[0].delta.content)
    assert n == 3
    await client.close()


def test_completions_and_models(stack: tuple[str, str]) -> None:
    gw, _ = stack
    client = _client(gw)
    assert client.completions.create(model="fast", prompt="Once", max_tokens=2).choices[0].text
    streamed = list(client.completions.create(model="fast", prompt="Once", max_tokens=2, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices).strip()
    assert {m.id for m in client.models.list()} == {"qwen3-vl-2b", "fast"}


def test_errors_reach_the_client_as_openai_errors(stack: tuple[str, str]) -> None:
    gw, _ = stack
    client = _client(gw)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="fast", messages=MESSAGES, top_p=3)
    assert br.value.param == "top_p" if hasattr(br.value, "param") else True
    assert br.value.body["param"] == "top_p"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="fast", messages=MESSAGES, extra_body={"x_fake": {"status": 422}})


def test_client_disconnect_cancels_the_upstream_request(stack: tuple[str, str]) -> None:
    gw, up = stack
    before = httpx.get(up + "/stats").json()["cancelled"]
    body = {"model": "fast", "messages": MESSAGES, "stream": True, "max_tokens": 200, "x_fake": {"interval_s": 0.05}}
    with httpx.stream("POST", gw + "/v1/chat/completions", json=body, timeout=10) as r:
        for _ in r.iter_lines():
            break  # read one line, then hang up
    procs.wait_until(lambda: httpx.get(up + "/stats").json()["cancelled"] == before + 1, 5, "the upstream cancelled")
    assert httpx.get(up + "/stats").json()["running"] == 0


def test_client_disconnect_cancels_a_non_streaming_upstream_request(stack: tuple[str, str]) -> None:
    gw, up = stack
    before = httpx.get(up + "/stats").json()["cancelled"]
    body = json.dumps({"model": "fast", "messages": MESSAGES, "x_fake": {"delay_s": 1.5}}).encode()
    host, port = gw.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        procs.wait_until(lambda: httpx.get(up + "/stats").json()["running"] == 1, what="the upstream working on it")
    procs.wait_until(lambda: httpx.get(up + "/stats").json()["cancelled"] == before + 1, 5, "the upstream cancelled")


def test_backend_dying_mid_stream_ends_the_stream_with_an_error_event(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as up:
        config = f"pools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
        with procs.gateway(tmp_path, config) as (gw, _):
            body = {
                "model": "m",
                "messages": MESSAGES,
                "stream": True,
                "max_tokens": 10,
                "x_fake": {"die_after": 2, "interval_s": 0.1},
            }
            r = httpx.post(gw + "/v1/chat/completions", json=body, timeout=10)
            events = [e for e in r.text.split("\n\n") if e]
            assert len(events) == 3, r.text
            err = json.loads(events[-1].removeprefix("data: "))["error"]
            assert err["type"] == "upstream_error"
            # and the next request to the dead backend is a clean 502
            r2 = httpx.post(gw + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=10)
            assert r2.status_code == 502 and r2.json()["error"]["code"] == "upstream_unavailable"


def _refused_within(url: str, seconds: float) -> bool:
    """Poll until connections are refused. The server notices the signal on its next tick (100 ms), and a
    connection the kernel queued just before the socket closed is reset, not served: both are transient."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return True
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass
        time.sleep(0.02)
    return False


def test_first_sigterm_lets_open_streams_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as up:
        config = f"gateway: {{shutdown_grace_s: 10}}\npools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
        with procs.gateway(tmp_path, config) as (gw, proc):
            body = {
                "model": "m",
                "messages": MESSAGES,
                "stream": True,
                "max_tokens": 20,
                "x_fake": {"interval_s": 0.05},
            }
            result: dict[str, str] = {}

            def consume() -> None:
                result["text"] = httpx.post(gw + "/v1/chat/completions", json=body, timeout=10).text

            t = threading.Thread(target=consume)
            t.start()
            procs.wait_until(lambda: httpx.get(up + "/stats").json()["running"] == 1, what="the stream under way")
            proc.send_signal(signal.SIGTERM)
            assert _refused_within(gw + "/healthz", 5.0)
            t.join(10)
            assert result["text"].rstrip().endswith("data: [DONE]")
            assert proc.wait(10) == 0


def test_second_sigterm_forces_exit(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as up:
        config = f"gateway: {{shutdown_grace_s: 30}}\npools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
        with procs.gateway(tmp_path, config) as (gw, proc):
            body = {
                "model": "m",
                "messages": MESSAGES,
                "stream": True,
                "max_tokens": 400,
                "x_fake": {"interval_s": 0.05},
            }
            outcome: list[str] = []

            def consume() -> None:
                try:
                    httpx.post(gw + "/v1/chat/completions", json=body, timeout=30)
                    outcome.append("finished")
                except httpx.HTTPError:
                    outcome.append("cut off")

            t = threading.Thread(target=consume, daemon=True)
            t.start()
            procs.wait_until(lambda: httpx.get(up + "/stats").json()["running"] == 1, what="the stream under way")
            proc.send_signal(signal.SIGTERM)
            assert _refused_within(gw + "/healthz", 5.0), "the first SIGTERM stops accepting"
            assert proc.poll() is None, "still finishing the open stream"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)
            assert time.monotonic() - started < 5
            t.join(5)
            assert outcome == ["cut off"]
