"""Tool calls, stop strings and multi-byte text end to end, with the model's output forced.

The random-weight demo model never writes a tool call by itself, so these tests force its choices: a
logits processor added to the real ``ModelRunner`` (the only change) lets through one scripted token per
step. Everything else is real: the demo checkpoint's weights run, transformers' ``generate`` loop, the
tokenizer, the incremental detokenizer, stop matching, the tool-call parser, the HTTP server on loopback,
and the official ``openai`` client.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.integration]
pytest.importorskip("torch")

from .conftest import free_port  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
USER = [{"role": "user", "content": "Weather in Paris and the time in Tokyo?"}]
TWO_CALLS = (
    "Let me check.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}\n</tool_call>'
)


class Forced:
    """Holds the script; the runner's extra logits processor reads it."""

    def __init__(self) -> None:
        self.ids: list[int] = []


def forced_runner_factory(forced: Forced) -> Any:
    from frugalserve.engine.model import ModelRunner

    class ForceScript:
        def __init__(self) -> None:
            self.width: int | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if not forced.ids:
                raise RuntimeError("model exploded at /srv/secret/weights.bin")
            if self.width is None:
                self.width = input_ids.shape[1]
            step = input_ids.shape[1] - self.width
            token = forced.ids[step] if step < len(forced.ids) else forced.ids[-1]
            scores.fill_(float("-inf"))
            scores[:, token] = 0.0
            return scores

    class ForcedRunner(ModelRunner):
        def logits_processors(self, rows: list) -> list:
            return [*super().logits_processors(rows), ForceScript()]

    return ForcedRunner


@pytest.fixture(scope="module")
def served(demo_model_dir: Path) -> Iterator[tuple[str, Forced, Any]]:
    import uvicorn
    from transformers import AutoTokenizer

    from frugalserve.engine.server import EngineSettings, create_engine_app

    forced = Forced()
    app = create_engine_app(
        EngineSettings(model=demo_model_dir, served_model_name="demo", batch_window_ms=0),
        runner_factory=forced_runner_factory(forced),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process engine did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", forced, AutoTokenizer.from_pretrained(demo_model_dir)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def client(served):
    from openai import OpenAI

    with OpenAI(base_url=served[0], api_key="unused", max_retries=0) as c:
        yield c


def script(served, text: str | list[int]) -> None:
    _, forced, tok = served
    ids = tok.encode(text) if isinstance(text, str) else text
    forced.ids = [*ids, tok.convert_tokens_to_ids("<|im_end|>")]


def test_tool_calls_come_back_as_openai_tool_calls(served, client) -> None:
    script(served, TWO_CALLS)
    r = client.chat.completions.create(model="demo", messages=USER, tools=TOOLS, temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    calls = choice.message.tool_calls
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_time", {"tz": "Asia/Tokyo"}),
    ]
    assert len({c.id for c in calls}) == 2
    # usage counts every generated token: the script plus the final <|im_end|>
    assert r.usage.completion_tokens == len(served[1].ids)


def test_streamed_tool_calls_add_up_to_the_same_calls(served, client) -> None:
    script(served, TWO_CALLS)
    stream = client.chat.completions.create(
        model="demo", messages=USER, tools=TOOLS, temperature=0, max_tokens=200, stream=True
    )
    content, calls, finish = "", {}, None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == "Let me check."
    assert [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "Asia/Tokyo"}),
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_malformed_call_stays_content(served, client) -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'
    script(served, text)
    r = client.chat.completions.create(model="demo", messages=USER, tools=TOOLS, temperature=0, max_tokens=100)
    assert r.choices[0].message.content == text and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"


def test_without_tools_the_tags_are_plain_content(served, client) -> None:
    script(served, TWO_CALLS)
    r = client.chat.completions.create(model="demo", messages=USER, temperature=0, max_tokens=200)
    assert r.choices[0].message.content == TWO_CALLS and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"


def test_a_stop_string_spanning_two_tokens_is_cut(served, client) -> None:
    _, _, tok = served
    text = "Hello world, and more words after it"
    assert len(tok.encode("Hello")) == 1 and tok.encode(text)[1] == tok.encode(" world")[0]
    script(served, text)
    r = client.chat.completions.create(model="demo", messages=USER, temperature=0, max_tokens=50, stop=["o w"])
    assert r.choices[0].message.content == "Hell" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 2  # stopped at the step that completed the stop string


def test_characters_split_over_byte_tokens_stream_whole(served, client) -> None:
    from .test_detokenize import byte_token_ids

    by_byte = byte_token_ids(served[2])
    script(served, [by_byte[b] for b in "中文😀!".encode()])
    stream = client.chat.completions.create(model="demo", messages=USER, temperature=0, max_tokens=50, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "中文😀!"
    assert "\ufffd" not in "".join(pieces)


def test_a_model_failure_is_a_500_without_internals(served, client) -> None:
    from openai import InternalServerError

    served[1].ids = []  # the forcing processor raises inside generate
    with pytest.raises(InternalServerError) as err:
        client.chat.completions.create(model="demo", messages=USER, temperature=0, max_tokens=5)
    assert err.value.status_code == 500 and err.value.type == "server_error"
    assert "secret" not in err.value.message and "RuntimeError" not in err.value.message
    script(served, "still serving")  # the engine serves the next request
    r = client.chat.completions.create(model="demo", messages=USER, temperature=0, max_tokens=20)
    assert r.choices[0].message.content == "still serving"
