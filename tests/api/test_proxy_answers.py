"""What a client sees of a backend's answers: checked usage, 502 for unusable bodies, errors without internals.

A real gateway process in front of the fake upstream (a real process), driven by the official openai
client; the records are read back from the gateway's SQLite database.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from frugalserve.api.proxy import Usage, parse_usage, upstream_status_error
from tests import procs

MESSAGES: Any = [{"role": "user", "content": "hi"}]


class Stack:
    def __init__(self, gw: str, up: str, dead: str, db: Path, log: Path) -> None:
        self.gw, self.up, self.dead, self.db, self.log = gw, up, dead, db, log

    def client(self) -> openai.OpenAI:
        return procs.openai_client(self.gw + "/v1", "unused", timeout=20)

    def record(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        """The usage record the gateway wrote, polled until it is there."""
        return procs.stored_record(self.db, request_id, timeout)

    def logged(self, request_id: str, timeout: float = 5) -> str:
        """The gateway's log lines about one request, polled until there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.log.read_text().splitlines() if f"request {request_id}" in line]
            if lines:
                return "\n".join(lines)
            time.sleep(0.05)
        raise AssertionError(f"nothing logged for {request_id}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("answers")
    db = tmp / "gw.db"
    dead = f"http://127.0.0.1:{procs.free_port()}"
    with procs.fake_upstream(tmp) as up:
        config = (
            f"gateway: {{request_timeout_s: 1, database: 'sqlite:///{db}'}}\n"
            "accounting: {flush_interval_s: 0.1}\n"
            f"pools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
            f"  - {{name: dead, model: gone, backend: {{url: '{dead}'}}}}\n"
        )
        with procs.gateway(tmp, config) as (gw, _):
            log = next(tmp.glob("gateway-*.log"))
            yield Stack(gw, up, dead, db, log)


# -- usage ---------------------------------------------------------------------------------------

IMPOSSIBLE = [
    ({"prompt_tokens": -5, "completion_tokens": 3}, "usage.prompt_tokens is negative"),
    ({"prompt_tokens": 5, "completion_tokens": True}, "usage.completion_tokens is a boolean, not an integer"),
    ({"prompt_tokens": 1.5, "completion_tokens": 3}, "usage.prompt_tokens is a number, not an integer"),
    ({"prompt_tokens": "7", "completion_tokens": 3}, "usage.prompt_tokens is a string, not an integer"),
    ({"prompt_tokens": 2**31, "completion_tokens": 3}, "usage.prompt_tokens is above 2**31-1"),
    ({"prompt_tokens": 5, "completion_tokens": 2**64 - 1}, "usage.completion_tokens is above 2**31-1"),
    ("lots", "usage is a string, not an object"),
]


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("usage", "note"), IMPOSSIBLE, ids=[n for _, n in IMPOSSIBLE])
def test_impossible_usage_is_recorded_as_unknown_with_a_note(stack: Stack, usage: Any, note: str, stream: bool) -> None:
    rid = f"usage-{stream}-{abs(hash(note))}"
    extra = {"x_fake": {"usage": usage}}
    raw = stack.client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, max_tokens=3, stream=stream, extra_body=extra, extra_headers={"x-request-id": rid}
    )
    assert raw.status_code == 200
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices).split() == [
            "frugal",
            "serve",
            "token",
        ]
    row = stack.record(rid)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, None, None)
    assert row["usage_note"] == note


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_largest_possible_usage_is_stored_as_reported(stack: Stack, stream: bool) -> None:
    rid = f"usage-max-{stream}"
    raw = stack.client().chat.completions.with_raw_response.create(
        model="m",
        messages=MESSAGES,
        max_tokens=3,
        stream=stream,
        extra_body={"x_fake": {"usage": {"prompt_tokens": 2**31 - 1, "completion_tokens": 0}}},
        extra_headers={"x-request-id": rid},
    )
    if stream:
        list(raw.parse())
    row = stack.record(rid)
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_note"]) == (2**31 - 1, 0, None)


def test_usage_parse_keeps_a_count_when_the_other_is_missing() -> None:
    assert parse_usage({"prompt_tokens": 4}) == Usage(4, None, "usage has no completion_tokens")
    assert parse_usage({}) == Usage(None, None, "usage has no prompt_tokens and no completion_tokens")
    assert parse_usage([1]) == Usage(None, None, "usage is an array, not an object")


@pytest.mark.integration
@pytest.mark.parametrize("fake", [{"raw": "Hello <b>world</b>"}, {"json_body": [1, 2]}, {"json_body": "text"}])
def test_a_200_that_is_not_a_json_object_is_a_502(stack: Stack, fake: dict[str, Any]) -> None:
    rid = f"invalid-{abs(hash(json.dumps(fake)))}"
    with pytest.raises(openai.InternalServerError) as err:
        stack.client().chat.completions.create(
            model="m", messages=MESSAGES, extra_body={"x_fake": fake}, extra_headers={"x-request-id": rid}
        )
    assert err.value.status_code == 502
    assert err.value.body == {
        "message": "pool 'p': the backend's answer is not a JSON object",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_invalid_response",
    }
    assert stack.record(rid)["status"] == 502
    assert stack.up in stack.logged(rid), "the address goes to the log"


# -- errors without internals ----------------------------------------------------------------------


def assert_no_internals(text: str, stack: Stack) -> None:
    for leak in ("127.0.0.1", "localhost", stack.up.rsplit(":", 1)[1], stack.dead.rsplit(":", 1)[1]):
        assert leak not in text, f"{leak!r} leaked into {text!r}"
    assert not re.search(r"<[a-zA-Z!/]|Traceback|Internal Server Error", text), text


def error_of(stack: Stack, model: str, fake: dict[str, Any], rid: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": stream, "x_fake": fake}
    return httpx.post(stack.gw + "/v1/chat/completions", json=body, headers={"x-request-id": rid}, timeout=20)


CASES = [
    ("gone", {}, False, 502, "pool 'dead': the backend refused the connection"),
    ("m", {"delay_s": 3}, False, 504, "pool 'p': the backend did not answer within 1 s"),
    ("m", {"html_status": 500}, False, 502, "pool 'p': the backend answered 500"),
    ("m", {"html_status": 503}, True, 502, "pool 'p': the backend answered 503"),
    ("m", {"html_status": 404}, False, 404, "pool 'p': the backend answered 404"),
    ("m", {"status": 500}, False, 502, "pool 'p': the backend answered 500"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("model", "fake", "stream", "status", "message"), CASES, ids=[c[4] for c in CASES])
def test_backend_failures_name_the_pool_and_never_the_address_or_the_page(
    stack: Stack, model: str, fake: dict[str, Any], stream: bool, status: int, message: str
) -> None:
    rid = f"err-{abs(hash(message))}-{stream}"
    r = error_of(stack, model, fake, rid, stream)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["message"] == message and set(err) == {"message", "type", "param", "code"}
    assert_no_internals(r.text, stack)
    logged = stack.logged(rid)
    assert (stack.dead if model == "gone" else stack.up) in logged, "the address goes to the log"


def _upstream_errors(stack: Stack) -> float:
    text = httpx.get(stack.gw + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("frugalserve_upstream_errors_total{")
    )


@pytest.mark.integration
def test_a_4xx_the_backend_explains_in_openais_shape_passes_through(stack: Stack) -> None:
    before = _upstream_errors(stack)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        stack.client().chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, extra_body={"x_fake": {"status": 422}}, extra_headers={"x-request-id": "c4xx"}
        )
    assert err.value.body == {
        "message": "fake error 422",
        "type": "invalid_request_error",
        "param": "x_fake",
        "code": "fake",
    }
    # the client's mistake, explained by the backend: not counted as a backend failure, not a warning
    assert _upstream_errors(stack) == before
    line = stack.logged("c4xx")
    assert " INFO " in line and "b'" not in line and "fake error 422" in line


def test_backend_messages_with_markup_are_not_shown() -> None:
    page = b'{"detail": "<html><body>nginx at 10.0.0.5:8000</body></html>"}'
    assert upstream_status_error("p", 400, page).message == "pool 'p': the backend answered 400"
    flat = b'{"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "code": 400}'
    err = upstream_status_error("p", 400, flat)
    assert (err.message, err.type, err.code, err.status) == ("max_tokens is too large", "BadRequestError", "400", 400)
    assert upstream_status_error("p", 500, flat).message == "pool 'p': the backend answered 500"


@pytest.mark.integration
def test_a_backend_dying_mid_stream_is_an_in_band_error_naming_the_pool(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as up:
        config = f"pools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
        with procs.gateway(tmp_path, config) as (gw, _):
            client = procs.openai_client(gw + "/v1", "unused", timeout=20)
            stream = client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                max_tokens=10,
                extra_body={"x_fake": {"die_after": 2, "interval_s": 0.1}},
            )
            seen = []
            with pytest.raises(openai.APIError) as err:
                for c in stream:
                    seen.append(c.choices[0].delta.content)
            assert seen == ["frugal ", "serve "]
            assert err.value.message == "pool 'p': the backend broke off its answer"
            assert up.rsplit(":", 1)[1] not in json.dumps(err.value.body)
            log = next(tmp_path.glob("gateway-*.log")).read_text()
            assert up in log and "broke off" in log
