"""The engine against a real process running the demo model: chat, usage, metrics, cache, batching, sleep."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from .conftest import EngineProcess, image_message, metric, png_data_url

pytestmark = [pytest.mark.engine, pytest.mark.integration]


def chat(engine: EngineProcess, body: dict) -> httpx.Response:
    return httpx.post(engine.url + "/v1/chat/completions", json=body, timeout=60)


def expected_prompt_tokens(model_dir: Path, messages: list[dict], images: list) -> int:
    from frugalserve.engine.model import load_processor

    processor = load_processor(model_dir)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(processor(text=[text], images=images or None)["input_ids"][0])


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line:
            assert line.startswith("data: ")
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_models_says_it_is_a_demo_model(engine: EngineProcess) -> None:
    card = httpx.get(engine.url + "/v1/models").json()["data"][0]
    assert card["id"] == "demo"
    assert card["frugalserve"]["demo"] is True and "meaningless" in card["frugalserve"]["note"]


def test_chat_with_image_reports_the_processors_exact_prompt_tokens(
    engine: EngineProcess, demo_model_dir: Path
) -> None:
    from PIL import Image

    messages = image_message(png_data_url(300, 200))
    r = chat(engine, {"model": "demo", "messages": messages, "max_tokens": 4, "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "length"
    expected = expected_prompt_tokens(demo_model_dir, messages, [Image.new("RGB", (300, 200))])
    # 300x200 -> smart_resize 320x224 -> 70 image tokens + the text around them
    assert body["usage"] == {"prompt_tokens": expected, "completion_tokens": 4, "total_tokens": expected + 4}


def test_streaming_matches_non_streaming_and_ends_with_usage(engine: EngineProcess) -> None:
    body = {"messages": image_message(png_data_url(64, 64)), "max_tokens": 6, "seed": 11, "temperature": 0.9}
    whole = chat(engine, body).json()
    with httpx.stream(
        "POST",
        engine.url + "/v1/chat/completions",
        timeout=60,
        json=body | {"stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]  # same seed, same tokens
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_repeated_image_hits_the_vision_cache(engine: EngineProcess) -> None:
    url = png_data_url(640, 480, (10, 120, 240))
    before = httpx.get(engine.url + "/metrics").text
    assert chat(engine, {"messages": image_message(url), "max_tokens": 1}).status_code == 200
    assert chat(engine, {"messages": image_message(url, "again?"), "max_tokens": 1}).status_code == 200
    after = httpx.get(engine.url + "/metrics").text
    hits = "frugalserve_engine_vision_cache_hits_total"
    misses = "frugalserve_engine_vision_cache_misses_total"
    assert metric(after, misses) - metric(before, misses) == 1
    assert metric(after, hits) - metric(before, hits) == 1


async def test_concurrent_requests_queue_then_decode_together(engine: EngineProcess) -> None:
    seen_waiting, seen_running = [], []
    async with httpx.AsyncClient(base_url=engine.url, timeout=60) as client:
        before = metric((await client.get("/metrics")).text, "vllm:generation_tokens_total")

        async def one(i: int) -> httpx.Response:
            await asyncio.sleep(0.05 * i)
            body = {
                "messages": [{"role": "user", "content": f"count to {i}"}],
                "max_tokens": 60 if i == 0 else 8,
            }
            return await client.post("/v1/chat/completions", json=body)

        async def watch() -> None:
            while True:  # until cancelled, so a slow machine cannot outlast the watcher
                text = (await client.get("/metrics")).text
                seen_waiting.append(metric(text, "vllm:num_requests_waiting"))
                seen_running.append(metric(text, "vllm:num_requests_running"))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        responses = await asyncio.gather(*(one(i) for i in range(5)))
        watcher.cancel()
        after = metric((await client.get("/metrics")).text, "vllm:generation_tokens_total")
    assert [r.status_code for r in responses] == [200] * 5
    assert sum(r.json()["usage"]["completion_tokens"] for r in responses) == after - before
    assert max(seen_waiting) >= 1  # requests queued behind the first group
    assert max(seen_running) >= 2  # and were then decoded as one batch


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {"messages": image_message(png_data_url()[:121])},  # base64 cut mid-quantum
            "messages[0].content[1].image_url",
            "invalid_image_url",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
            None,
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, "max_tokens", None),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p", None),
        ({"messages": [{"role": "user", "content": "word " * 5000}]}, "messages", "context_length_exceeded"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
            "max_tokens",
            "context_length_exceeded",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(engine: EngineProcess, body: dict, param: str, code) -> None:
    r = chat(engine, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code


def test_truncated_png_is_a_400(engine: EngineProcess) -> None:
    import base64

    raw = base64.b64decode(png_data_url(400, 400).split(",", 1)[1])
    url = "data:image/png;base64," + base64.b64encode(raw[: len(raw) // 2]).decode()
    r = chat(engine, {"messages": image_message(url)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[1].image_url"
    assert r.json()["error"]["code"] == "invalid_image"


def test_invalid_json_and_unknown_model_are_openai_errors(engine: EngineProcess) -> None:
    r = httpx.post(engine.url + "/v1/chat/completions", content=b"{nope", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = chat(engine, {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def test_sleep_waits_for_in_flight_requests_then_drops_memory(engine: EngineProcess) -> None:
    async with httpx.AsyncClient(base_url=engine.url, timeout=60) as client:
        # An in-flight request finishes before the engine sleeps (unlike vLLM's default abort).
        running = asyncio.create_task(
            client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "long"}], "max_tokens": 80},
            )
        )
        await asyncio.sleep(0.3)
        awake_rss = engine.rss_mb()
        assert (await client.post("/sleep", params={"level": "1"})).status_code == 200
        finished = await running
        assert finished.status_code == 200 and finished.json()["usage"]["completion_tokens"] == 80
        assert (await client.get("/is_sleeping")).json()["is_sleeping"] is True
        refused = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_sleeping"
        level1_rss = engine.rss_mb()

        assert (await client.post("/wake_up")).status_code == 200
        assert (await client.get("/is_sleeping")).json()["is_sleeping"] is False
        ok = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        )
        assert ok.status_code == 200
        before_level2 = engine.rss_mb()
        assert (await client.post("/sleep", params={"level": "2"})).status_code == 200
        level2_rss = engine.rss_mb()
        assert (await client.post("/wake_up")).status_code == 200
        again = await client.post(
            "/v1/chat/completions", json={"messages": image_message(png_data_url()), "max_tokens": 2}
        )
        assert again.status_code == 200, again.text
        text = (await client.get("/metrics")).text
    print(
        f"RSS MB: awake {awake_rss:.0f}, level1 {level1_rss:.0f}, before level2 {before_level2:.0f}, "
        f"level2 {level2_rss:.0f}"
    )
    # On CPU, level 1 keeps the weights resident (they already live in CPU memory): no growth.
    assert level1_rss <= awake_rss + 5
    # Level 2 drops the weights (~58 MB of float32 in the demo model).
    assert before_level2 - level2_rss >= 25
    assert metric(text, "frugalserve_engine_is_sleeping") == 0
    assert metric(text, "frugalserve_engine_wake_seconds_count") >= 1


def test_sleep_level_must_be_1_or_2(engine: EngineProcess) -> None:
    r = httpx.post(engine.url + "/sleep", params={"level": "3"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "level"
