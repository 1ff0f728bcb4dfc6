"""Request validation: every bad value is a 400 that names the parameter (no torch, no process)."""

from __future__ import annotations

import pytest

from frugalserve.engine.images import decode_image
from frugalserve.engine.requests import UNSUPPORTED, parse_chat_request, parse_completion_request
from frugalserve.errors import InvalidRequest

from .conftest import png_data_url

USER = [{"role": "user", "content": "hi"}]


def parse(body: dict, vision: bool = True):
    return parse_chat_request(body, default_max_tokens=16, vision=vision)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER, "max_tokens": -1}, "max_tokens"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_completion_tokens": "5"}, "max_completion_tokens"),
        ({"messages": USER, "top_p": 1.5}, "top_p"),
        ({"messages": USER, "top_p": 0}, "top_p"),
        ({"messages": USER, "temperature": -0.1}, "temperature"),
        ({"messages": USER, "temperature": True}, "temperature"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "seed": 1.5}, "seed"),
        ({"messages": USER, "stop": ["a", 3]}, "stop"),
        ({"messages": USER, "stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url",
        ),
    ],
)
def test_bad_values_name_their_parameter(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(body)
    assert err.value.param == param
    assert err.value.status == 400


def test_images_to_a_text_model_are_refused() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}
    with pytest.raises(InvalidRequest) as err:
        parse(body, vision=False)
    assert err.value.param == "messages[0].content[0].image_url"


def test_valid_request_keeps_sampling_and_image_order() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:a"}},
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": "data:b"},
                ],
            }
        ],
        "max_tokens": 7,
        "temperature": 0,
        "top_p": 0.5,
        "seed": 3,
        "stop": "END",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = parse(body)
    assert (req.sampling.max_tokens, req.sampling.temperature, req.sampling.top_p) == (7, 0.0, 0.5)
    assert req.sampling.stop == ("END",) and req.sampling.seed == 3
    assert req.stream and req.include_usage
    assert [u for _, u in req.image_refs] == ["data:a", "data:b"]
    assert req.image_refs[1][0] == "messages[0].content[2].image_url"


def test_truncated_image_is_refused_with_its_parameter() -> None:
    import base64

    data = base64.b64decode(png_data_url().split(",", 1)[1])
    with pytest.raises(InvalidRequest) as err:
        decode_image(data[: len(data) // 2], "messages[0].content[1].image_url")
    assert err.value.param == "messages[0].content[1].image_url"
    assert decode_image(data, "p").size == (300, 200)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("n", 2),
        ("n", True),  # not 1: booleans are not integers here
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("logit_bias", {"42": 10}),
        ("parallel_tool_calls", False),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("functions", [{"name": "f"}]),
        ("reasoning_effort", "high"),
        ("tool_choice", "required"),
        ("tool_choice", {"type": "function", "function": {"name": "f"}}),
        ("top_k", 5),  # vLLM's extension: not honoured here, so refused
        ("made_up", 1),
    ],
)
def test_parameters_the_engine_cannot_honour_are_refused_by_name(key: str, value) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse({"messages": USER, key: value})
    assert err.value.param == key and err.value.status == 400


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "text"}},
        {"logprobs": False, "top_logprobs": 0, "n": 1},
        {"presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}},
        {"user": "u1", "metadata": {"a": "b"}, "store": False, "parallel_tool_calls": True},
        {"response_format": None, "logprobs": None, "n": None},
    ],
)
def test_neutral_values_and_bookkeeping_are_accepted(extra: dict) -> None:
    assert parse({"messages": USER, **extra}).sampling.max_tokens == 16


def test_every_unsupported_parameter_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    missing = [p for p in UNSUPPORTED if f"`{p}`" not in doc]
    assert not missing, missing


def test_tools_are_validated_and_switch_on_tool_call_parsing() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert parse({"messages": USER, "tools": tools}).parse_tool_calls
    assert not parse({"messages": USER, "tools": tools, "tool_choice": "none"}).parse_tool_calls
    assert not parse({"messages": USER}).parse_tool_calls
    with pytest.raises(InvalidRequest) as err:
        parse({"messages": USER, "tools": [{"type": "function", "function": {}}]})
    assert err.value.param == "tools[0].function.name"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("Once upon", "Once upon"), (["Once upon"], "Once upon"), ([1, 2, 3], [1, 2, 3]), ([[4, 5]], [4, 5])],
)
def test_completion_prompts_in_each_accepted_shape(prompt, expected) -> None:
    req = parse_completion_request({"prompt": prompt}, vocab_size=100)
    assert req.prompt == expected and req.sampling.max_tokens == 16  # OpenAI's default for this route


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [1, 100]}, "prompt"),
        ({"prompt": [True]}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "suffix": "end"}, "suffix"),
        ({"prompt": "x", "max_completion_tokens": 5}, "max_completion_tokens"),
    ],
)
def test_bad_completion_bodies_name_their_parameter(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_completion_request(body, vocab_size=100)
    assert err.value.param == param
