"""/v1/completions and the refusal of unsupported parameters, through the official openai client against a real
engine process running the demo model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EngineProcess

pytestmark = [pytest.mark.engine, pytest.mark.integration]

PROMPT = "Once upon a time, in a small village by the sea,"


@pytest.fixture
def client(engine: EngineProcess) -> Iterator:
    from openai import OpenAI

    with OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def test_text_completion_has_openais_shape_and_exact_usage(client, tokenizer) -> None:
    r = client.completions.create(model="demo", prompt=PROMPT, max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "demo"
    (choice,) = r.choices
    assert choice.index == 0 and isinstance(choice.text, str) and choice.finish_reason == "length"
    prompt_tokens = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])  # no chat template here
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        prompt_tokens,
        5,
        prompt_tokens + 5,
    )


def test_streamed_completion_matches_the_whole_one_and_ends_with_usage(client) -> None:
    whole = client.completions.create(model="demo", prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model="demo",
            prompt=PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_token_id_prompt_and_seeded_sampling(client, tokenizer) -> None:
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    by_ids = client.completions.create(model="demo", prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model="demo", prompt=PROMPT, max_tokens=6, temperature=0)
    assert by_ids.usage.prompt_tokens == len(ids) and by_ids.choices[0].text == by_text.choices[0].text
    a, b = (
        client.completions.create(model="demo", prompt=PROMPT, max_tokens=6, temperature=1.0, top_p=0.9, seed=42)
        for _ in range(2)
    )
    assert a.choices[0].text == b.choices[0].text


def test_default_max_tokens_is_openais_16(client) -> None:
    r = client.completions.create(model="demo", prompt=PROMPT, temperature=0)
    assert r.usage.completion_tokens <= 16
    assert r.usage.completion_tokens == 16 or r.choices[0].finish_reason == "stop"


def test_a_stop_string_cuts_the_greedy_answer_where_it_first_appears(client) -> None:
    full = client.completions.create(model="demo", prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    stop = next((full[i : i + 3] for i in range(4, len(full) - 3) if full[i : i + 3].strip()), None)
    assert stop is not None, full
    r = client.completions.create(model="demo", prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


def test_unknown_model_is_404(client) -> None:
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as err:
        client.completions.create(model="gpt-5", prompt="x", max_tokens=1)
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
        ({"extra_body": {"top_k": 5}}, "top_k"),
    ],
)
def test_chat_parameters_it_cannot_honour_raise_bad_request_naming_them(client, kwargs: dict, param: str) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kwargs
        )
    assert err.value.param == param and err.value.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"echo": True}, "echo"), ({"logprobs": 2}, "logprobs"), ({"best_of": 2}, "best_of"), ({"suffix": "!"}, "suffix")],
)
def test_completion_parameters_it_cannot_honour_raise_bad_request(client, kwargs: dict, param: str) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as err:
        client.completions.create(model="demo", prompt="x", max_tokens=2, **kwargs)
    assert err.value.param == param


def test_a_prompt_with_image_placeholders_is_refused(client) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as err:
        client.completions.create(model="demo", prompt="look <|image_pad|>", max_tokens=2)
    assert err.value.param == "prompt"
    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "look <|image_pad|>"}], max_tokens=2
        )
    assert err.value.param == "messages"
