"""SSE through the gateway: every line end the SSE spec allows, usage kept, one event's size bounded.

The filter is checked against an independent SSE parser (the official openai client's decoder), and
end to end with a real gateway process, the fake upstream as a real process, and the openai client.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from frugalserve.api.proxy import MAX_EVENT_BYTES, SSEUsageFilter, Usage
from frugalserve.errors import UpstreamError
from tests import procs

EOLS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def chunk(i: int, usage: Any = None, choices: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "choices": []}
    if choices:
        obj["choices"] = [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]
    obj["usage"] = usage
    return obj


def encode(events: list[tuple[dict[str, Any] | str, bytes, bool]]) -> bytes:
    """SSE bytes: each event is (data, line end, with a comment line before it)."""
    out = b""
    for data, eol, comment in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out += (b": keep-alive" + eol if comment else b"") + b"data: " + text.encode() + eol + eol
    return out


def decoded(data: bytes) -> list[str]:
    """The events an independent SSE parser (the openai client's) finds in ``data``."""
    return [e.data for e in SSEDecoder().iter_bytes(iter([data]))]


def run_filter(f: SSEUsageFilter, data: bytes, cuts: list[int]) -> bytes:
    """Feed ``data`` cut at ``cuts``; what comes out before the end is always whole events."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    out = b""
    for a, b in itertools.pairwise(bounds):
        out += f.feed(data[a:b])
        assert decoded(out) == decoded(out + b"\n\n"), "a blank line more would end a partial event"
    return out + f.flush()


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    eols=st.lists(st.sampled_from(list(EOLS.values())), min_size=8, max_size=8),
    comments=st.lists(st.booleans(), min_size=8, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    drop=st.booleans(),
)
def test_filter_splits_events_like_an_independent_parser_for_any_line_end_and_chunking(
    n: int, eols: list[bytes], comments: list[bool], cuts: list[int], drop: bool
) -> None:
    events: list[tuple[dict[str, Any] | str, bytes, bool]] = [(chunk(i), eols[i], comments[i]) for i in range(n)]
    events.append((chunk(n, usage=USAGE, choices=False), eols[6], comments[6]))
    events.append(("[DONE]", eols[7], comments[7]))
    data = encode(events)
    f = SSEUsageFilter(drop_usage_only=drop)
    out = run_filter(f, data, cuts)
    assert f.usage == Usage(7, 3, None)
    expected = decoded(data)
    if drop:
        expected = [e for e in expected if '"usage"' not in e or json.loads(e)["choices"]]
        assert len(expected) == n + 1
    else:
        assert out == data, "without a change to make, the bytes pass through untouched"
    assert decoded(out) == expected


@settings(max_examples=100, deadline=None)
@given(eol=st.sampled_from(list(EOLS.values())), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_filter_merges_the_gateways_details_into_the_usage_for_any_line_end(eol: bytes, cuts: list[int]) -> None:
    data = encode([(chunk(0), eol, False), (chunk(1, usage=dict(USAGE), choices=False), eol, False)])
    f = SSEUsageFilter(drop_usage_only=False, details={"image_tokens": 5})
    out = decoded(run_filter(f, data, cuts))
    assert len(out) == 2 and json.loads(out[1])["usage"]["prompt_tokens_details"] == {"image_tokens": 5}
    assert f.usage == Usage(7, 3, None)


def test_a_crlf_split_across_chunks_is_one_line_end_not_a_blank_line() -> None:
    f = SSEUsageFilter(drop_usage_only=False)
    assert f.feed(b"data: 1\r") == b""  # could still be the first half of a CRLF
    assert f.feed(b"\nid: 2\r\n") == b"", "CR + LF across chunks is one line end"
    assert f.feed(b"\r\n") == b"data: 1\r\nid: 2\r\n\r\n"


def test_an_event_larger_than_the_bound_raises_and_nothing_grows_past_it() -> None:
    f = SSEUsageFilter(drop_usage_only=False, max_event=64 * 1024)
    line = b"data: " + b"x" * 1000 + b"\n"
    fed = 0
    with pytest.raises(UpstreamError, match="larger than"):
        while fed < 10 * 64 * 1024:
            fed += len(line)
            assert f.feed(line) == b""
    assert 64 * 1024 < fed <= 64 * 1024 + len(line), "cut off as soon as the bound is passed"


def test_a_whole_event_larger_than_the_bound_in_one_chunk_raises() -> None:
    f = SSEUsageFilter(drop_usage_only=False, max_event=1024)
    with pytest.raises(UpstreamError):
        f.feed(b"data: 1\n\n" + b"data: " + b"y" * 2000 + b"\n\n")


# -- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path, int]]:
    tmp = tmp_path_factory.mktemp("sse")
    db = tmp / "gw.db"
    with procs.fake_upstream(tmp) as up:
        config = (
            f"gateway: {{request_timeout_s: 30, database: 'sqlite:///{db}'}}\n"
            "accounting: {flush_interval_s: 0.1}\n"
            f"pools:\n  - {{name: p, model: m, backend: {{url: '{up}'}}}}\n"
        )
        with procs.gateway(tmp, config) as (gw, proc):
            yield gw, up, db, proc.pid


def client(gw: str, timeout: float = 10) -> openai.OpenAI:
    return procs.openai_client(gw + "/v1", "unused", timeout=timeout)


MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.mark.integration
@pytest.mark.parametrize("eol", ["crlf", "cr", "mixed"])
def test_stream_with_any_line_end_reaches_the_openai_client_chunk_by_chunk(
    stack: tuple[str, str, Path, int], eol: str
) -> None:
    gw, _, _, _ = stack
    # The backend sends 3 chunks, then nothing until the client hangs up: they must arrive as sent.
    body = {"x_fake": {"sse_eol": eol, "stall_after": 3, "tokens": 10}}
    stream = client(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True, extra_body=body)
    with stream:
        it = iter(stream)
        words = [next(it).choices[0].delta.content for _ in range(3)]
    assert words == ["frugal ", "serve ", "token "]


@pytest.mark.integration
@pytest.mark.parametrize("eol", ["crlf", "cr", "mixed"])
def test_usage_is_captured_and_the_usage_only_chunk_dropped_for_any_line_end(
    stack: tuple[str, str, Path, int], eol: str
) -> None:
    gw, _, db, _ = stack
    rid = f"sse-usage-{eol}"
    chunks = list(
        client(gw).chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            max_tokens=4,
            extra_body={"x_fake": {"sse_eol": eol}},
            extra_headers={"x-request-id": rid},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == [
        "frugal",
        "serve",
        "token",
        "gpu",
    ]
    assert all(c.choices for c in chunks), "the usage-only chunk the client did not ask for is dropped"
    row = procs.stored_record(db, rid)
    assert row["completion_tokens"] == 4 and row["prompt_tokens"] and row["usage_note"] is None

    asked = list(
        client(gw).chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            max_tokens=2,
            stream_options={"include_usage": True},
            extra_body={"x_fake": {"sse_eol": eol}},
        )
    )
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 2


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.integration
def test_an_endless_event_is_cut_off_with_an_error_event_and_memory_stays_bounded(
    stack: tuple[str, str, Path, int],
) -> None:
    gw, up, db, pid = stack
    cancelled = httpx.get(up + "/stats").json()["cancelled"]
    peak_before = vm_hwm_kib(pid)
    rid = "sse-endless"
    body = {"x_fake": {"endless_event": 160 * 1024 * 1024}}
    stream = client(gw, timeout=60).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body=body, extra_headers={"x-request-id": rid}
    )
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert err.value.message == f"pool 'p': the backend sent an SSE event larger than {MAX_EVENT_BYTES >> 20} MiB"
    growth_mib = (vm_hwm_kib(pid) - peak_before) / 1024
    assert growth_mib < 48, f"the gateway's peak memory grew by {growth_mib:.0f} MiB for a 160 MiB event"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and httpx.get(up + "/stats").json()["cancelled"] == cancelled:
        time.sleep(0.05)
    assert httpx.get(up + "/stats").json()["cancelled"] == cancelled + 1, "the upstream connection was closed"
    row = procs.stored_record(db, rid)
    assert row["error_code"] == "upstream_unavailable" and row["prompt_tokens"] is None
    assert row["usage_note"] == "the stream ended before the backend reported usage"


def test_a_usage_only_chunk_ending_in_crlf_is_dropped_and_its_usage_kept() -> None:
    raw = orjson.dumps(chunk(0, usage=USAGE, choices=False))
    f = SSEUsageFilter(drop_usage_only=True)
    assert f.feed(b"data: " + raw + b"\r\n\r\n") == b"" and f.usage == Usage(7, 3, None)
