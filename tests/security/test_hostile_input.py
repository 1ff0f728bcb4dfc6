"""Hostile request bodies through a real gateway process: each gets a 4xx in OpenAI's error JSON naming the
parameter, never a 500, and the gateway keeps serving (and recording) afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests import procs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    with procs.fake_upstream(tmp) as up:
        config = f"pools:\n  - name: p\n    model: m\n    backend: {{url: '{up}'}}\n"
        with procs.gateway(tmp, config) as (url, _):
            yield url


def _post_raw(url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )


def _error(r: httpx.Response, status: int = 400) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    return err


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": ["user"], "content": "hi"}, "messages[0].role"),
        ({"role": {"a": 1}, "content": "hi"}, "messages[0].role"),
        ({"role": "user", "content": [{"type": {}}]}, "messages[0].content[0].type"),
        ({"role": "user", "content": [{"type": ["text"], "text": "x"}]}, "messages[0].content[0].type"),
    ],
)
def test_unhashable_roles_and_part_types_are_400_naming_the_parameter(
    gw: str, message: dict[str, object], param: str
) -> None:
    client = procs.openai_client(gw + "/v1", "unused")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[message])  # type: ignore[list-item]
    assert caught.value.param == param


@pytest.mark.parametrize("depth", [254, 300, 1023, 1024, 5000])
@pytest.mark.parametrize("where", ["messages", "metadata"])
def test_deep_nesting_anywhere_is_400(gw: str, depth: int, where: str) -> None:
    deep = b"[" * depth + b"]" * depth
    if where == "messages":
        body = b'{"model":"m","messages":[{"role":"user","content":"hi","x":' + deep + b"}]}"
    else:
        body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":' + deep + b"}"
    err = _error(_post_raw(gw, body))
    assert err["code"] in ("invalid_value", "invalid_json")
    if err["code"] == "invalid_value":
        assert err["param"] == where


def test_nesting_the_gateway_can_forward_still_works(gw: str) -> None:
    deep = b"[" * 100 + b"]" * 100
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"metadata":' + deep + b"}"
    assert _post_raw(gw, body).status_code == 200


def test_gateway_serves_normally_after_hostile_input(gw: str) -> None:
    for body in (
        b'{"model":"m","messages":[{"role":["x"]}]}',
        b"[" * 3000,
        b"\xff\xfe",
        b'{"model":' + b"9" * 5000 + b"}",
    ):
        assert 400 <= _post_raw(gw, body).status_code < 500
    client = procs.openai_client(gw + "/v1", "unused")
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert out.usage is not None and out.usage.completion_tokens == 2
