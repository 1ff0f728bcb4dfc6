"""A real gateway process, the official openai client, and counts checked against the independent oracles:
transformers' apply_chat_template on Qwen3-VL's published template, tokenized by the independent Qwen
tokenizer. The backend is the fake upstream (no GPU here); the gateway's own count is in
``usage.prompt_tokens_details``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.engine]

FIXTURES = Path(__file__).parent / "fixtures"
PUBLISHED = (FIXTURES / "qwen3_vl_instruct_chat_template.jinja").read_text(encoding="utf-8")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {"name": "search", "description": "Web search", "parameters": {"type": "object"}},
    },
]


def _client(gw: str) -> openai.OpenAI:
    return procs.openai_client(gw + "/v1", "unused", timeout=120)


def _oracle_count(hf: Any, messages: list[dict[str, Any]], tools: Any = None) -> int:
    text = hf.apply_chat_template(
        messages, tools=tools, chat_template=PUBLISHED, add_generation_prompt=True, tokenize=False
    )
    return len(hf(text, add_special_tokens=False)["input_ids"])


def _counted(usage: Any) -> int:
    d = usage.prompt_tokens_details.model_dump()
    return int(d["text_tokens"] + d["image_tokens"] + d["video_tokens"])


def test_a_request_with_tools_is_counted_as_transformers_counts_it(gateway: str, hf: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the weather in Paris?"},
    ]
    out = _client(gateway).chat.completions.create(model="qwen3-vl", messages=messages, tools=TOOLS, max_tokens=2)
    assert out.usage is not None
    with_tools = _oracle_count(hf, messages, TOOLS)
    assert _counted(out.usage) == with_tools
    assert with_tools - _oracle_count(hf, messages) > 150  # what ignoring the tools used to miss


def test_a_tool_calling_turn_is_counted_as_transformers_counts_it(gateway: str, hf: Any) -> None:
    sent = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 21}'},
    ]
    # As transformers' docs ask: arguments as an object, no null content.
    native = [
        sent[0],
        {
            **sent[1],
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        sent[2],
    ]
    out = _client(gateway).chat.completions.create(model="qwen3-vl", messages=sent, tools=TOOLS, max_tokens=2)  # type: ignore[arg-type]
    assert out.usage is not None and _counted(out.usage) == _oracle_count(hf, native, TOOLS)


@pytest.mark.parametrize("blank", [" ", "\t"])
def test_a_megabyte_of_blanks_is_answered_and_counted_exactly(gateway: str, hf: Any, blank: str) -> None:
    messages = [{"role": "user", "content": blank * 1_000_000}]
    out = _client(gateway).chat.completions.create(model="qwen3-vl", messages=messages, max_tokens=2)  # type: ignore[arg-type]
    assert out.usage is not None and _counted(out.usage) == _oracle_count(hf, messages)


def test_a_megabyte_of_spaces_in_a_completion_prompt_is_answered(gateway: str) -> None:
    out = _client(gateway).completions.create(model="qwen3-vl", prompt="x" + " " * 1_000_000 + "y", max_tokens=2)
    assert out.choices[0].text
