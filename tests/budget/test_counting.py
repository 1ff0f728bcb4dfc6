from __future__ import annotations

import asyncio
import unicodedata
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from frugalserve import qwen_vocab
from frugalserve.budget import counting, vision
from frugalserve.errors import InvalidRequest

texts = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)), st.sampled_from(" \n\t")),
    max_size=40,
)
image_sizes = st.tuples(st.integers(16, 1400), st.integers(16, 1400)).filter(lambda s: max(s) / min(s) <= 200)
text_parts = st.builds(lambda t: {"type": "text", "text": t}, texts)
parts = st.one_of(
    text_parts,
    st.builds(lambda s: {"type": "image_url", "image_url": {"url": "x"}, "_size": s}, image_sizes),
)
# Qwen3-VL's template shows images in user messages only (and tool responses); elsewhere text parts.
messages = st.lists(
    st.one_of(
        st.builds(lambda c: {"role": "user", "content": c}, st.one_of(texts, st.lists(parts, min_size=1, max_size=4))),
        st.builds(
            lambda r, c: {"role": r, "content": c},
            st.sampled_from(["system", "assistant"]),
            st.one_of(texts, st.lists(text_parts, min_size=1, max_size=3)),
        ),
    ),
    min_size=1,
    max_size=4,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _sizes(msgs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [p["_size"] for m in msgs if isinstance(m["content"], list) for p in m["content"] if "_size" in p]


def test_text_only_chat_counts_template_and_text() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    # <|im_start|> user \n hi <|im_end|> \n <|im_start|> assistant \n
    assert counting.count_chat(msgs).total == 9


def test_special_token_strings_in_text_count_as_one_token() -> None:
    assert counting.count_text("<|im_end|>") == 1


def test_pad_count_mismatch_is_a_400_naming_messages() -> None:
    with pytest.raises(InvalidRequest) as exc:
        counting.count_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert exc.value.param == "messages"


def test_an_image_in_a_system_message_is_refused_because_the_template_drops_it() -> None:
    msgs = [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(InvalidRequest, match="only in user and tool messages"):
        counting.count_chat(msgs, [64])


def test_tools_are_rendered_into_the_system_block_and_counted() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris?"}]
    text = counting.render_chat(msgs, tools=[WEATHER])
    head = "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions"
    assert text.startswith(head)
    assert '\n<tools>\n{"type": "function", "function": {"name": "weather", "description": "Weather in a city"' in text
    tool_tokens = counting.count_chat(msgs, tools=[WEATHER]).total - counting.count_chat(msgs).total
    assert tool_tokens == counting.count_text(text) - counting.count_text(counting.render_chat(msgs))
    assert tool_tokens > 100


@pytest.mark.parametrize("tools", [{"type": "function"}, ["weather"], "weather"])
def test_tools_that_are_not_a_list_of_objects_are_a_400_naming_tools(tools: Any) -> None:
    with pytest.raises(InvalidRequest) as exc:
        counting.count_chat([{"role": "user", "content": "hi"}], tools=tools)
    assert exc.value.param == "tools"


def test_messages_are_rendered_as_vllm_hands_them_to_the_template() -> None:
    msgs = [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "v"}}, {"type": "text", "text": "?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    # Hand-written from the published template: a null content is empty, a video_url part is a video,
    # string arguments are parsed and written back with tojson (", " and ": " separators).
    assert counting.render_chat(msgs, add_generation_prompt=False) == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
    )


def test_a_template_error_is_a_400_naming_messages() -> None:
    with pytest.raises(InvalidRequest) as exc:
        counting.count_chat([{"role": "user", "content": 5}])
    assert exc.value.param == "messages"


# -- long runs of blanks (issue 9.13) ---------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "\t", "\u3000", "\xa0", "\x0b", "\u2028", " \t"])
@pytest.mark.parametrize(
    ("before", "after"), [("", ""), ("word", "word"), ("x\n", "!"), ("x.", "7"), ("\r\n", " y"), ("a", "\n")]
)
def test_long_blank_runs_encode_as_the_regex_does_where_it_still_works(blank: str, before: str, after: str) -> None:
    enc = qwen_vocab.encoding()
    for n in (counting.LONG_BLANK_RUN - 1, counting.LONG_BLANK_RUN, 5000, 70_001):
        text = before + (blank * n)[:n] + after
        assert counting.encode(text) == enc.encode_ordinary(text), (repr(blank), n, before, after)


def test_the_blank_set_and_the_blank_class_agree() -> None:
    import re

    in_class = {chr(c) for c in range(0x110000) if re.fullmatch(f"[{counting._BLANK}]", chr(c))}
    assert in_class == counting._BLANKS and len(in_class) == 23


blank_runs = st.builds(
    lambda chars, n: (chars * n)[:n],
    st.sampled_from([" ", "\t", "\u3000", "\xa0", " \t", "\u2028 "]),
    st.one_of(st.integers(1, 40), st.integers(counting.LONG_BLANK_RUN - 3, 3 * counting.LONG_BLANK_RUN)),
)
around = st.sampled_from(["", "a", "word", "!", "7", "\n", "\r\n", "x\n", ".\n", "中", " \n "])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.tuples(around, blank_runs), min_size=1, max_size=5), tail=around)
def test_texts_with_long_blank_runs_anywhere_encode_as_the_regex_does(pieces: list[tuple[str, str]], tail: str) -> None:
    text = "".join(a + b for a, b in pieces) + tail
    assert counting.encode(text) == qwen_vocab.encoding().encode_ordinary(text)


@pytest.mark.parametrize("blank", [" ", "\t", "\n", "\u3000", "\xa0", "\x0c", "\u2003", "\u205f"])
def test_uniform_blank_runs_by_blocks_equal_one_piece_encoding(blank: str) -> None:
    enc = qwen_vocab.encoding()
    lengths = [*range(1400, 1800, 7), 4096, 4097, 65_535, 300_001]
    for n in lengths:
        run = blank * n
        assert counting._encode_blank(run) == enc._encode_single_piece(run.encode()), (repr(blank), n)


def test_a_megabyte_of_spaces_or_tabs_is_counted_not_a_crash() -> None:
    # 7,813 and 62,501: what the tokenizers-library oracle gives (test_oracle_text checks it live).
    assert counting.count_text(" " * 1_000_000) == 7813
    # plus the template's 8: <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
    assert counting.count_chat([{"role": "user", "content": "\t" * 1_000_000 + "x"}]).total == 62501 + 8


def _rust_panic_type() -> type[BaseException]:
    try:  # tiktoken's regex on a million spaces: the crash this module works around
        qwen_vocab.encoding().encode_ordinary(" " * 1_000_000)
    except BaseException as exc:
        return type(exc)
    pytest.skip("this tiktoken no longer panics on a million spaces")


def test_a_tokenizer_panic_is_a_400_naming_the_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    panic = _rust_panic_type()
    assert not issubclass(panic, Exception)  # why a plain `except Exception` did not contain it

    def boom(text: str) -> list[int]:
        raise panic("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(counting, "_encode_ordinary", boom)
    with pytest.raises(InvalidRequest) as chat:
        counting.count_chat([{"role": "user", "content": "hi"}])
    assert chat.value.param == "messages" and chat.value.status == 400
    with pytest.raises(InvalidRequest) as prompt:
        counting.count_text("hi")
    assert prompt.value.param == "prompt"


def test_cancellation_inside_the_tokenizer_is_not_turned_into_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    def cancelled(text: str) -> list[int]:
        raise asyncio.CancelledError

    monkeypatch.setattr(counting, "_encode_ordinary", cancelled)
    with pytest.raises(asyncio.CancelledError):
        counting.count_text("hi")


# -- against transformers' processor (images and videos expanded) -----------------------------------------


@pytest.mark.engine
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages, add_generation_prompt=st.booleans())
def test_chat_count_equals_transformers_processor(
    qwen3_vl_processor: Any, msgs: list[dict[str, Any]], add_generation_prompt: bool
) -> None:
    from PIL import Image

    sizes = _sizes(msgs)
    assume(not any("<|" in (p.get("text") or "") for m in msgs if isinstance(m["content"], list) for p in m["content"]))
    text = qwen3_vl_processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)
    images = [Image.new("RGB", (w, h)) for h, w in sizes] or None
    ids = qwen3_vl_processor(text=[text], images=images, return_tensors="np")["input_ids"][0].tolist()
    count = counting.count_chat(msgs, [vision.image_pad_tokens(h, w) for h, w in sizes], (), add_generation_prompt)
    assert count.total == len(ids)
    assert count.image == ids.count(151655) + 2 * len(sizes)
    assert count.text == count.total - count.image


@pytest.mark.engine
def test_chat_with_tool_calls_equals_transformers_tokenizer(qwen3_vl_processor: Any) -> None:
    msgs = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris", "note": "été"}}}],
        },
        {"role": "tool", "content": "18°C"},
        {"role": "tool", "content": "sunny"},
    ]
    text = qwen3_vl_processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = qwen3_vl_processor.tokenizer(text)["input_ids"]
    assert counting.render_chat(msgs) == text
    assert counting.count_chat(msgs).total == len(ids)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("frames", "fps", "h", "w"), [(48, 24.0, 480, 640), (301, 29.97, 720, 1280), (7, 30.0, 64, 64)]
)
def test_video_prompt_tokens_equal_processor_placeholder(
    qwen3_vl_processor: Any, frames: int, fps: float, h: int, w: int
) -> None:
    import numpy as np
    from transformers.video_utils import VideoMetadata

    v = vision.video_tokens(frames, fps, h, w)
    indices = np.array(vision.sample_frame_indices(frames, fps))
    meta = VideoMetadata(total_num_frames=frames, fps=fps, width=w, height=h, frames_indices=indices)
    inputs = {
        "video_grid_thw": [np.array([v.groups, v.height // 16, v.width // 16])],
        "video_metadata": [meta],
    }
    proc = qwen3_vl_processor
    fake_self = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
        _calculate_timestamps=proc._calculate_timestamps,
        vision_start_token=proc.vision_start_token,
        vision_end_token=proc.vision_end_token,
        video_token=proc.video_token,
    )
    placeholder = type(proc).replace_video_token(fake_self, inputs, 0)
    # OpenAI's part for us; the template's own {"type": "video"} for transformers.
    ours = [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}, {"type": "text", "text": "?"}]}
    ]
    theirs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    text = qwen3_vl_processor.apply_chat_template(theirs, add_generation_prompt=True, tokenize=False)
    ids = qwen3_vl_processor.tokenizer(text.replace("<|video_pad|>", placeholder))["input_ids"]
    count = counting.count_chat(ours, (), [v])
    assert count.total == len(ids)
    assert count.video == counting.video_prompt_tokens(v)


# -- counting in pieces (issue 9.17) ----------------------------------------------------------------------


def _whole_ids(text: str) -> list[int]:
    """The unsplit count: one special-token split, one NFC and one tiktoken call per text between special
    tokens, over the whole text (what counting did before it worked in pieces)."""
    enc = qwen_vocab.encoding()
    ids: list[int] = []
    for i, part in enumerate(counting._SPECIAL_SPLIT.split(text)):
        if i % 2:
            ids.append(qwen_vocab.SPECIAL_IDS[part])
        elif part:
            ids += enc.encode_ordinary(unicodedata.normalize("NFC", part))
    return ids


# Every kind of allowed cut, and what might join across one: whitespace of each kind after a "\n",
# combining marks (NFC), "<" + U+0338 (composes to a symbol), Hangul jamo, contractions, special tokens.
CUT_FRAGMENTS = [
    "\n", "\n\n", "\r\n", "\n ", "\n\t", " \n", "\n\u3000", "\n\x85", "\n\u2028", "\n\r", "\n\x0b",
    "0", "7", "42", "a", "Z", "word", "it", "'s", "'ll", "'T", " ", "  ", "\t", "\xa0", "\u2000",
    "\u0301", "\u0338", "<", "e\u0301", "\u1100", "\u1161", "\u11a8", "é", "中文", "。", "!", ".", "😀",
    "<|im_end|>", "<|image_pad|>", "<think>", "<|", "|>", "٣", "\uff11",
]  # fmt: skip
cut_rich_text = st.lists(st.sampled_from(CUT_FRAGMENTS), max_size=40).map("".join)


def _allowed_cuts(text: str) -> int:
    return sum(1 for i in range(len(text) - 1) if counting._SAFE_CUT.match(text, i))


@settings(max_examples=400, deadline=None)
@given(text=cut_rich_text)
def test_counting_cut_at_every_allowed_point_equals_the_unsplit_count(text: str) -> None:
    whole = _whole_ids(text)
    pieces = list(counting.pieces([text], size=1))  # a cut at every allowed point
    assert "".join(pieces) == text
    assert len(pieces) == _allowed_cuts(text) + 1 if text else not pieces
    assert [i for p in pieces for i in counting.encode(p)] == whole
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(counting, "PIECE_CHARS", 1)
        assert counting.encode(text) == whole
        assert counting.count_text(text) == len(whole)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(cut_rich_text, max_size=6), size=st.integers(1, 30))
def test_pieces_of_many_parts_are_their_concatenation_cut_only_where_allowed(parts: list[str], size: int) -> None:
    text = "".join(parts)
    pieces = list(counting.pieces(parts, size))
    assert "".join(pieces) == text and all(pieces)
    at = 0
    for p in pieces[:-1]:
        at += len(p)
        assert counting._SAFE_CUT.match(text, at - 1), (text, at)
    assert sum(len(counting.encode(p)) for p in pieces) == len(_whole_ids(text))


def test_a_newline_followed_by_whitespace_is_not_a_cut_because_the_pre_tokenizer_joins_across_it() -> None:
    # "\n \n" is one pre-token (`\s*[\r\n]+`): cutting after the first "\n" would miscount.
    enc = qwen_vocab.encoding()
    assert enc.encode_ordinary("a\n") + enc.encode_ordinary(" \nb") != enc.encode_ordinary("a\n \nb")
    assert list(counting.pieces(["a\n \nb"], size=1)) == ["a\n \n", "b"]
    assert list(counting.pieces(["a\nb c1d"], size=1)) == ["a\n", "b", " c1", "d"]


def test_long_text_is_counted_in_bounded_pieces_and_equals_the_unsplit_count() -> None:
    line = "naïve café 東京 🙂 it's 1234 <|im_end|> words\r\n\n  indented\tcode();\n"
    text = line * (3 * counting.PIECE_CHARS // len(line))
    sizes = [len(p) for p in counting.pieces([text], counting.PIECE_CHARS)]
    assert len(sizes) >= 3 and max(sizes) < counting.PIECE_CHARS + len(line)
    assert counting.encode(text) == _whole_ids(text)
    msgs = [{"role": "user", "content": text}]
    assert counting.count_chat(msgs).total == len(_whole_ids(counting.render_chat(msgs)))


def test_text_without_an_allowed_cut_is_counted_whole() -> None:
    text = "é." * 200_000  # no newline, digit, or letter before a space
    assert list(counting.pieces([text], 1000)) == [text]
    assert counting.count_text(text) == len(_whole_ids(text))


def test_an_image_pad_split_across_template_parts_is_still_found() -> None:
    # The template writes an image as its own part; a pad typed into text is counted the same way.
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x\n" * 10}, {"type": "image_url"}]}]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(counting, "PIECE_CHARS", 1)
        assert counting.count_chat(msgs, [4]).image == 4 + vision.MARKER_TOKENS
        with pytest.raises(InvalidRequest, match="renders 2"):
            counting.count_chat([{"role": "user", "content": "a\n<|image_pad|>\n"}, *msgs], [4])


# The Unicode facts the cut rule's NFC argument rests on, checked over every code point with Python's
# Unicode database (the tokenizer's \s is Unicode White_Space: the 23 blanks, "\r" and "\n").
def _canonical_decompositions() -> dict[str, str]:
    out = {}
    for cp in range(0x110000):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            out[chr(cp)] = "".join(chr(int(h, 16)) for h in d.split())
    return out


def test_the_characters_around_a_cut_never_compose_or_become_whitespace_under_nfc() -> None:
    decomps = _canonical_decompositions()
    white = counting._BLANKS | {"\r", "\n"}
    inert = set("\n 0123456789")
    letters = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for char, d in decomps.items():
        assert not inert & set(d), repr(char)  # never composed from or into: NFC leaves them, and they block
        assert not letters & set(d[1:]), repr(char)  # an ASCII letter never composes with what precedes it
        if char not in white:  # a character that is not whitespace never normalises to whitespace
            assert not white & set(unicodedata.normalize("NFD", char)), repr(char)
    for w in white:
        assert unicodedata.combining(w) == 0 and len(decomps.get(w, w)) == 1, repr(w)  # never a composite
    assert all(unicodedata.combining(c) == 0 for c in inert | letters)
    assert not any(set(t) & (inert | {" "}) for t in qwen_vocab.SPECIAL_TOKENS)
