"""The gateway's prompt rendering against transformers' ``apply_chat_template`` on Qwen3-VL's published chat
template, kept as a fixture (tests/budget/fixtures/qwen3_vl_instruct_chat_template.jinja).

Source of the fixture: the chat template of Qwen/Qwen3-VL-2B/4B/8B-Instruct (``chat_template.json``), as
shipped in ``tokenizer.chat_template`` of Qwen/Qwen3-VL-8B-Instruct-GGUF; 5,292 bytes, SHA-256 pinned below
(the same digest is recorded for that GGUF's template by github.com/zhongkaifu/TensorSharp, and the text
agrees with the "qwen3-vl-instruct" template other projects vendor). Licence: Apache-2.0, as the Qwen3-VL
model repositories. Messages are given to transformers in the form its docs ask for (tool-call arguments
as objects, ``{"type": "video"}`` parts, no null content); the gateway gets them as OpenAI clients send them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugalserve.budget import counting

pytestmark = pytest.mark.engine

FIXTURES = Path(__file__).parent / "fixtures"
PUBLISHED = FIXTURES / "qwen3_vl_instruct_chat_template.jinja"
PUBLISHED_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"


def published(tok: Any, msgs: list[dict[str, Any]], tools: Any = None, add_generation_prompt: bool = True) -> str:
    return str(
        tok.apply_chat_template(
            msgs,
            tools=tools,
            chat_template=PUBLISHED.read_text(encoding="utf-8"),
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    )


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city, in °C",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def _call(name: str, args: str) -> dict[str, Any]:
    return {"id": "call_" + name, "type": "function", "function": {"name": name, "arguments": args}}


def _native_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_" + name, "type": "function", "function": {"name": name, "arguments": args}}


# (name, what the gateway gets, what transformers gets, tools, add_generation_prompt)
CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], Any, bool]] = [
    (
        "system and user",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [],
        None,
        True,
    ),
    (
        "multi-turn without generation prompt",
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6"},
        ],
        [],
        None,
        False,
    ),
    (
        "content as parts",
        [
            {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "\nb"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        ],
        [],
        None,
        True,
    ),
    (
        "images",
        [{"role": "user", "content": [{"type": "text", "text": "Compare"}, IMG, IMG, {"type": "text", "text": "?"}]}],
        [],
        None,
        True,
    ),
    (
        "video",
        [
            {
                "role": "user",
                "content": [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, IMG],
            }
        ],
        [{"role": "user", "content": [{"type": "video"}, IMG]}],
        None,
        True,
    ),
    (
        "tools with a system prompt",
        [{"role": "system", "content": "You help."}, {"role": "user", "content": "Weather in Paris?"}],
        [],
        [WEATHER, SEARCH],
        True,
    ),
    ("tools without a system prompt", [{"role": "user", "content": "Weather in Paris?"}], [], [WEATHER], True),
    (
        "assistant tool calls and tool responses",
        [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("get_weather", '{"city":"Paris","unit":"c"}'),
                    _call("get_weather", '{"city": "Oslo"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_get_weather", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_get_weather", "content": [{"type": "text", "text": "-3 °C"}]},
            {"role": "assistant", "content": "Paris 21 °C, Oslo -3 °C."},
            {"role": "user", "content": "Thanks"},
        ],
        [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    _native_call("get_weather", {"city": "Paris", "unit": "c"}),
                    _native_call("get_weather", {"city": "Oslo"}),
                ],
            },
            {"role": "tool", "tool_call_id": "call_get_weather", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_get_weather", "content": [{"type": "text", "text": "-3 °C"}]},
            {"role": "assistant", "content": "Paris 21 °C, Oslo -3 °C."},
            {"role": "user", "content": "Thanks"},
        ],
        [WEATHER],
        True,
    ),
    (
        "tool call after text",
        [
            {"role": "user", "content": "Search"},
            {"role": "assistant", "content": "Searching.", "tool_calls": [_call("search", "{}")]},
            {"role": "tool", "content": [IMG, {"type": "text", "text": "a screenshot"}]},
        ],
        [
            {"role": "user", "content": "Search"},
            {"role": "assistant", "content": "Searching.", "tool_calls": [_native_call("search", {})]},
            {"role": "tool", "content": [IMG, {"type": "text", "text": "a screenshot"}]},
        ],
        [SEARCH],
        True,
    ),
    (
        "empty content",
        [{"role": "system", "content": ""}, {"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
        [],
        None,
        True,
    ),
    (
        "null user content",
        [{"role": "user", "content": None}],
        [{"role": "user", "content": ""}],
        None,
        True,
    ),
    (
        "a later system message and a developer message are not rendered",
        [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "late"},
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": "again"},
        ],
        [],
        None,
        True,
    ),
]


def test_the_fixture_is_the_published_template() -> None:
    data = PUBLISHED.read_bytes()
    assert len(data) == 5292 and hashlib.sha256(data).hexdigest() == PUBLISHED_SHA256


@pytest.mark.parametrize(("name", "ours", "theirs", "tools", "agp"), CASES, ids=[c[0] for c in CASES])
def test_rendering_equals_transformers_on_the_published_template(
    hf: Any, name: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tools: Any, agp: bool
) -> None:
    expected = published(hf, theirs or ours, tools, agp)
    assert counting.render_chat(ours, agp, tools) == expected


# One pad per image keeps the count comparable with the unexpanded text; a video's cost is checked in
# test_counting against the processor's own placeholder.
COUNT_CASES = [c for c in CASES if c[0] != "video"]


@pytest.mark.parametrize(("name", "ours", "theirs", "tools", "agp"), COUNT_CASES, ids=[c[0] for c in COUNT_CASES])
def test_token_count_equals_transformers_tokenizer_on_the_published_template(
    hf: Any, name: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tools: Any, agp: bool
) -> None:
    expected = hf(published(hf, theirs or ours, tools, agp), add_special_tokens=False)["input_ids"]
    count = counting.count_chat(ours, [1] * expected.count(151655), (), agp, tools)
    assert count.total == len(expected)


roles_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)), st.sampled_from(" \n\t{}\"'")),
    max_size=20,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | roles_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(roles_text, inner, max_size=3),
    max_leaves=6,
)
text_part = st.builds(lambda t: {"type": "text", "text": t}, roles_text)
visual_part = st.sampled_from([IMG, {"type": "image"}, {"type": "video"}])
user = st.builds(
    lambda c: {"role": "user", "content": c},
    st.one_of(roles_text, st.lists(st.one_of(text_part, visual_part), min_size=1, max_size=3)),
)
system = st.builds(lambda c: {"role": "system", "content": c}, st.one_of(roles_text, st.lists(text_part, max_size=2)))
calls = st.lists(
    st.builds(
        lambda n, a: {"type": "function", "function": {"name": n, "arguments": a}},
        st.sampled_from(["f", "get_weather", "lookup_ünïcode"]),
        st.dictionaries(st.sampled_from(["a", "city", "q"]), json_values, max_size=2),
    ),
    max_size=2,
)
assistant = st.builds(
    lambda c, tc: {"role": "assistant", "content": c, **({"tool_calls": tc} if tc else {})}, roles_text, calls
)
tool = st.builds(
    lambda c: {"role": "tool", "content": c},
    st.one_of(roles_text, st.lists(st.one_of(text_part, visual_part), max_size=2)),
)
conversations = st.lists(st.one_of(system, user, assistant, tool), min_size=1, max_size=6)
tool_lists = st.one_of(
    st.none(),
    st.lists(
        st.builds(
            lambda n, d, p: {"type": "function", "function": {"name": n, "description": d, "parameters": p}},
            st.sampled_from(["f", "g"]),
            roles_text,
            st.dictionaries(st.sampled_from(["type", "properties"]), json_values, max_size=2),
        ),
        min_size=1,
        max_size=2,
    ),
)


@settings(max_examples=150, deadline=None)
@given(msgs=conversations, tools=tool_lists, agp=st.booleans())
def test_any_conversation_renders_as_transformers_renders_the_published_template(
    hf: Any, msgs: list[dict[str, Any]], tools: Any, agp: bool
) -> None:
    assert counting.render_chat(msgs, agp, tools) == published(hf, msgs, tools, agp)
