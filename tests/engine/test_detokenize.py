"""Incremental detokenisation equals decoding everything at once; stop strings split across steps are cut.

The oracle is the checkpoint's own Hugging Face tokenizer (the `tokenizers` library's byte-level decoder),
which did not write the incremental code: ``tokenizer.decode(all ids, skip_special_tokens=True)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugalserve.engine.detokenize import IncrementalDetokenizer, StopMatcher

pytestmark = pytest.mark.engine

SAMPLES = [
    "你好\uff0c世界\uff01",
    "日本語のテキスト",
    "😀👍🏽🇫🇷 emoji",
    "mixed 中文 and English 123",
    "a\u0301 café",
    "def f(x):\n    return x",
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def run_incremental(tokenizer, ids: list[int]) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(lambda window: tokenizer.decode(window, skip_special_tokens=True))
    pieces = [detok.push(i) for i in ids]
    return pieces, detok.flush()


def ids_strategy(tokenizer) -> st.SearchStrategy[list[int]]:
    words = [tokenizer.encode(s) for s in SAMPLES]
    single = st.one_of(
        st.integers(0, 255),  # single byte tokens: lone UTF-8 lead and continuation bytes
        st.integers(0, 151642),  # any ordinary token
        st.integers(151643, 151668),  # special tokens (skipped) and tool / think tags (kept)
    )
    chunk = st.one_of(st.sampled_from(words), st.lists(single, max_size=6))
    return st.lists(chunk, max_size=12).map(lambda chunks: [i for c in chunks for i in c])


def test_incremental_text_equals_decoding_all_ids(tokenizer) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ids=ids_strategy(tokenizer))
    def check(ids: list[int]) -> None:
        pieces, tail = run_incremental(tokenizer, ids)
        expected = tokenizer.decode(ids, skip_special_tokens=True)
        assert "".join(pieces) + tail == expected
        # What was streamed is never taken back: every prefix is a prefix of the final text.
        assert expected.startswith("".join(pieces))

    check()


def byte_token_ids(tokenizer) -> dict[int, int]:
    """Byte value -> id of its single-byte token (GPT-2's byte-to-unicode table, as byte-level BPE uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {b: tokenizer.convert_tokens_to_ids(c) for b, c in chars.items()}


def test_multibyte_characters_split_over_byte_tokens_come_out_whole(tokenizer) -> None:
    by_byte = byte_token_ids(tokenizer)
    ids = [by_byte[b] for b in "中😀".encode()]  # 3 + 4 single-byte tokens
    assert tokenizer.decode(ids) == "中😀"  # the oracle agrees these are the right tokens
    pieces, tail = run_incremental(tokenizer, ids)
    assert pieces == ["", "", "中", "", "", "", "😀"] and tail == ""


def test_garbage_bytes_keep_the_decoded_window_small(tokenizer) -> None:
    by_byte = byte_token_ids(tokenizer)
    ids = [by_byte[0xE4]] * 300  # lead bytes that never complete: every step ends in U+FFFD
    widths: list[int] = []

    def decode(window) -> str:
        widths.append(len(window))
        return tokenizer.decode(window, skip_special_tokens=True)

    detok = IncrementalDetokenizer(decode)
    text = "".join(detok.push(i) for i in ids) + detok.flush()
    assert text == tokenizer.decode(ids)
    assert max(widths) <= 2 * IncrementalDetokenizer.MAX_WINDOW + 4


@pytest.mark.parametrize(
    ("pieces", "stops", "emitted", "stopped"),
    [
        (["Hello wo", "rld, E", "ND here"], ["END"], "Hello world, ", True),
        (["ab", "c", "d"], ["xyz"], "abcd", False),  # held text is released by flush
        (["a<", "/s", "> tail"], ["</s>", "tail"], "a", True),  # earliest stop wins
        (["xx", "S"], ["S"], "xx", True),
        (["no stops"], [], "no stops", False),
    ],
)
def test_stop_string_split_across_steps_is_found_and_cut(
    pieces: list[str], stops: list[str], emitted: str, stopped: bool
) -> None:
    matcher = StopMatcher(stops)
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            break
    if not hit:
        out += matcher.flush()
    assert (out, hit) == (emitted, stopped)


def test_stop_matcher_searches_only_new_text_plus_overlap() -> None:
    matcher = StopMatcher(["STOP"])
    seen: list[int] = []
    for _ in range(1000):
        text, hit = matcher.feed("abcdefgh")
        seen.append(len(matcher._pending) + len("abcdefgh"))
        assert not hit and text
    assert max(seen) == 3 + 8  # hold (len - 1) plus the new piece: constant, not growing


def test_long_runs_of_invalid_and_split_bytes_still_decode_exactly(tokenizer) -> None:
    """Byte tokens only: long invalid runs force the window split (MAX_WINDOW), valid characters cross it."""
    by_byte = byte_token_ids(tokenizer)
    # Lead and continuation bytes in any order (mostly invalid, so steps end in U+FFFD for long runs), with
    # whole characters now and then.
    loose = st.sampled_from([0xE4, 0xF0, 0x9F, 0x98, 0x80, 0xB8, 0xAD, 0xC3, 0xA9]).map(lambda b: bytes([b]))
    chars = st.sampled_from(["中", "😀", "é", "a"]).map(str.encode)
    data = st.lists(st.one_of(loose, loose, loose, loose, chars), min_size=20, max_size=160)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(pieces=data)
    def check(pieces: list[bytes]) -> None:
        ids = [by_byte[b] for b in b"".join(pieces)]
        streamed, tail = run_incremental(tokenizer, ids)
        expected = tokenizer.decode(ids, skip_special_tokens=True)
        assert "".join(streamed) + tail == expected
        assert expected.startswith("".join(streamed))

    check()
