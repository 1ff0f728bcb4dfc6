"""Request validation: every bad value is a 400 that names the parameter (no torch, no process)."""

from __future__ import annotations

import pytest

from frugalserve.engine.requests import decode_image, parse_chat_request
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
