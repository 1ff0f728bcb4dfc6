"""Large work leaves the event loop: what runs where, and base64 in pieces equal to the standard library's.

Which thread runs a step is observed by wrapping the step (the wrapper records ``threading.get_ident``), so
the tests do not depend on timing; benchmarks/loop_stall.py measures the loop's stalls themselves.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from frugalserve.budget import counting, fetch, images, offload, prepare
from frugalserve.budget.fetch import Fetcher, FetchError, decode_data_url
from frugalserve.budget.limits import FetchLimits, LimitsConfig

BIG = offload.INLINE_MAX_BYTES + 1


class Threads:
    """Wraps functions and records the thread each call ran in."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.seen.setdefault(name, []).append(threading.get_ident())
            return fn(*args, **kwargs)

        return wrapper

    def on_loop(self, name: str) -> bool:
        return set(self.seen[name]) == {threading.get_ident()}


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Threads:
    t = Threads()
    monkeypatch.setattr(counting, "count_chat", t.wrap("count_chat", counting.count_chat))
    monkeypatch.setattr(counting, "count_text", t.wrap("count_text", counting.count_text))
    monkeypatch.setattr(fetch, "decode_data_url", t.wrap("decode_data_url", fetch.decode_data_url))
    monkeypatch.setattr(images, "image_key", t.wrap("image_key", images.image_key))
    monkeypatch.setattr(prepare, "_visual_parts", t.wrap("_visual_parts", prepare._visual_parts))
    return t


def _chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}


async def test_a_long_prompt_is_checked_and_counted_in_a_worker_thread(threads: Threads) -> None:
    async with Fetcher(FetchLimits()) as f:
        p = await prepare.prepare_chat(_chat("word " * (BIG // 5 + 1)), LimitsConfig(), f)
    assert p.text_tokens > BIG // 5
    assert not threads.on_loop("count_chat") and not threads.on_loop("_visual_parts")


async def test_a_short_prompt_is_counted_on_the_loop(threads: Threads) -> None:
    async with Fetcher(FetchLimits()) as f:
        await prepare.prepare_chat(_chat("hello"), LimitsConfig(), f)
    assert threads.on_loop("count_chat") and threads.on_loop("_visual_parts")


async def test_long_text_anywhere_in_the_messages_moves_the_count_off_the_loop(threads: Threads) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "call it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "x" * BIG}}],
            },
        ]
    }
    async with Fetcher(FetchLimits()) as f:
        await prepare.prepare_chat(body, LimitsConfig(), f)
    assert not threads.on_loop("count_chat")


async def test_a_long_completion_prompt_is_counted_in_a_worker_thread(threads: Threads) -> None:
    p = await prepare.prepare_completion({"prompt": "word " * (BIG // 5 + 1)}, LimitsConfig())
    assert p.prompt_tokens > BIG // 5 and not threads.on_loop("count_text")
    await prepare.prepare_completion({"prompt": "hello"}, LimitsConfig())
    assert threads.seen["count_text"][-1] == threading.get_ident()


async def test_a_large_data_url_is_decoded_and_hashed_in_a_worker_thread(threads: Threads) -> None:
    buf = io.BytesIO()
    Image.effect_noise((400, 400), 64).convert("RGB").save(buf, "PNG")  # noise: about 480 KB
    assert len(buf.getvalue()) > BIG
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    async with Fetcher(FetchLimits()) as f:
        await prepare.prepare_chat(body, LimitsConfig(), f)
    assert not threads.on_loop("decode_data_url") and not threads.on_loop("image_key")


async def test_a_small_data_url_is_decoded_on_the_loop(threads: Threads) -> None:
    async with Fetcher(FetchLimits()) as f:
        assert await f.fetch("data:text/plain;base64,aGk=") == b"hi"
    assert threads.on_loop("decode_data_url")


def test_estimate_counts_items_and_string_lengths() -> None:
    assert offload.estimate("abc") == 16 + 3
    assert offload.estimate({"a": ["xy", 1]}, None) == 16 + 16 + 18 + 16 + 16
    assert offload.estimate(["x" * 100], limit=50) == 51


def test_estimate_stops_as_soon_as_the_limit_is_passed() -> None:
    assert offload.estimate([0] * 10_000_000) == offload.INLINE_MAX_BYTES + 1
    visited = 0

    class Counted(str):
        def __len__(self) -> int:
            nonlocal visited
            visited += 1
            return 1000

    assert offload.estimate([[Counted("x")] for _ in range(10_000)], limit=100_000) == 100_001
    assert visited < 100


wrapped = st.binary(max_size=200).flatmap(
    lambda data: st.sampled_from(
        [
            base64.b64encode(data).decode(),
            base64.encodebytes(data).decode(),  # 76-column lines, as the base64 tool writes
            base64.encodebytes(data).decode().replace("\n", "\r\n"),
            " ".join(base64.b64encode(data).decode()),
        ]
    ).map(lambda text: (data, text))
)


@settings(max_examples=300, deadline=None)
@given(case=wrapped, chunk=st.sampled_from([4, 8, 12, 64]))
def test_b64decode_in_pieces_equals_the_standard_library(case: tuple[bytes, str], chunk: int) -> None:
    data, text = case
    with mock.patch.object(offload, "B64_CHUNK", chunk):
        assert offload.b64decode(text) == data
        assert offload.b64decode("data:,xyz," + text, 10) == data


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200), chunk=st.sampled_from([3, 6, 9, 48]))
def test_b64encode_in_pieces_equals_the_standard_library(data: bytes, chunk: int) -> None:
    with mock.patch.object(offload, "B64_ENCODE_CHUNK", chunk):
        assert offload.b64encode(data, "p,") == "p," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "text",
    ["aGk", "aGk=aGk=", "aG!k", "aGk=\u00e9", "aGk-", "a===", "=aGk"],
)
@pytest.mark.parametrize("chunk", [4, offload.B64_CHUNK])
def test_b64decode_refuses_what_is_not_base64(text: str, chunk: int) -> None:
    with mock.patch.object(offload, "B64_CHUNK", chunk), pytest.raises(ValueError):
        offload.b64decode(text)


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("data:image/png;base64,aGVsbG8=", b"hello"),
        ("DATA:image/png;BASE64,aGVs\nbG8=", b"hello"),
        ("data:,hello%20world", b"hello world"),
        ("data:text/plain;charset=utf-8,%E2%9C%93", "\u2713".encode()),
        ("data:image/png;base64,", b""),
    ],
)
def test_data_urls_decode(url: str, data: bytes) -> None:
    assert decode_data_url(url, 100) == data


@pytest.mark.parametrize(
    ("url", "max_bytes", "message"),
    [
        ("http://example.com/x.png", 100, "not a data: URL"),
        ("data:image/png;base64", 100, "no ','"),
        ("data:image/png;base64,aGVsbG8", 100, "not valid base64"),
        ("data:image/png;base64,aGV!bG8=", 100, "not valid base64"),
        ("data:image/png;base64,aGVsbG8=", 4, "larger than the limit of 4 bytes"),
        ("data:image/png;base64," + "A" * 4000, 100, "larger than the limit of 100 bytes"),
        ("data:,hello", 4, "larger than the limit of 4 bytes"),
    ],
)
def test_bad_data_urls_say_what_is_wrong(url: str, max_bytes: int, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        decode_data_url(url, max_bytes, "image")
    with pytest.raises(FetchError, match="video"):
        decode_data_url(url, max_bytes, "video")


async def test_run_passes_keyword_arguments_inline_and_in_a_thread() -> None:
    def where(a: int, *, b: int) -> tuple[int, int]:
        return a + b, threading.get_ident()

    assert await offload.run(0, where, 1, b=2) == (3, threading.get_ident())
    total, ident = await offload.run(BIG, where, 1, b=2)
    assert total == 3 and ident != threading.get_ident()
