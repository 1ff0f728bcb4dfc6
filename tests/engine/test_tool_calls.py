"""Qwen's <tool_call> output parsed into OpenAI tool_calls, on hand-written model outputs (no model)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugalserve.engine.tool_calls import ToolCall, ToolCallStream, parse_tool_calls

WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>'


def summary(text: str) -> tuple[str | None, list[tuple[str, dict]]]:
    parsed = parse_tool_calls(text)
    return parsed.content, [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls]


def test_one_call_with_no_text_has_no_content() -> None:
    assert summary(WEATHER) == (None, [("get_weather", {"city": "Paris", "unit": "celsius"})])


def test_several_calls_with_text_around_them() -> None:
    text = f"Let me look both up.\n{WEATHER}\n{TIME}\nDone."
    assert summary(text) == (
        "Let me look both up.\nDone.",
        [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"tz": "Europe/Paris"})],
    )


def test_malformed_json_stays_in_the_content_and_good_calls_still_count() -> None:
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>'
    content, calls = summary(f"{bad}\n{TIME}")
    assert content == bad
    assert calls == [("get_time", {"tz": "Europe/Paris"})]


@pytest.mark.parametrize(
    "body",
    [
        '{"arguments": {"city": "Paris"}}',  # no name
        '{"name": "", "arguments": {}}',  # empty name
        '["get_weather", {}]',  # not an object
        '{"name": "f", "arguments": [1, 2]}',  # arguments not an object
        "not json at all",
    ],
)
def test_blocks_that_are_not_calls_are_left_as_content(body: str) -> None:
    text = f"<tool_call>{body}</tool_call>"
    assert summary(text) == (text, [])


def test_arguments_are_a_json_string_with_unicode_kept() -> None:
    parsed = parse_tool_calls('<tool_call>{"name": "say", "arguments": {"text": "你好 😀"}}</tool_call>')
    (call,) = parsed.tool_calls
    assert call.arguments == '{"text": "你好 😀"}'
    assert call.to_openai(0) == {
        "index": 0,
        "id": call.id,
        "type": "function",
        "function": {"name": "say", "arguments": '{"text": "你好 😀"}'},
    }
    assert call.id.startswith("call_")


def test_arguments_given_as_a_json_string_are_accepted() -> None:
    assert summary('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>') == (None, [("f", {"x": 1})])


def test_an_unclosed_call_counts_only_if_its_json_is_complete() -> None:
    assert summary('<tool_call>\n{"name": "f", "arguments": {}}\n') == (None, [("f", {})])
    truncated = '<tool_call>\n{"name": "f", "argum'
    assert summary(truncated) == (truncated, [])


def test_text_without_calls_is_unchanged() -> None:
    text = "  plain answer with <tool and </tool_call> and trailing space  "
    assert summary(text) == (text, [])


def stream(pieces: list[str]) -> list[str | ToolCall]:
    s = ToolCallStream()
    out: list[str | ToolCall] = []
    for p in pieces:
        out += s.feed(p)
    return out + s.finish()


def normalised(items: list[str | ToolCall]) -> list:
    merged: list = []
    for item in items:
        if isinstance(item, str) and merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item if isinstance(item, str) else (item.name, item.arguments))
    return merged


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=12))
def test_streaming_in_any_pieces_gives_what_the_whole_text_gives(cuts: list[int]) -> None:
    text = f"Checking.\n{WEATHER}\n<tool_call>oops</tool_call> {TIME}\n"
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    assert normalised(stream(pieces)) == normalised(stream([text]))
    parsed = parse_tool_calls(text)
    assert parsed.content == "Checking.\n<tool_call>oops</tool_call>"
    assert [c.name for c in parsed.tool_calls] == ["get_weather", "get_time"]


def test_a_tag_split_across_pieces_is_not_streamed_as_content() -> None:
    items = stream(["Hi <tool", "_ca", 'll>{"name": "f", "arguments": {}}</tool', "_call>"])
    assert [i if isinstance(i, str) else i.name for i in items] == ["Hi", "f"]
