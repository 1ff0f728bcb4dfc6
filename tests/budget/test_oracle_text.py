"""The gateway's text token ids against an independent Qwen tokenizer (tests/budget/fixtures/qwen_oracle.py):
golden ids made once by the oracle, and the oracle run live on generated mixed-script text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugalserve import qwen_vocab
from frugalserve.budget import counting

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = json.loads((FIXTURES / "qwen_text_golden.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_ids_equal_the_golden_ids_of_the_independent_tokenizer(case: dict[str, Any]) -> None:
    assert counting.encode(case["text"]) == case["ids"]


@pytest.mark.engine
def test_the_oracle_still_gives_the_golden_ids(oracle: Any) -> None:
    assert [oracle.encode(c["text"]) for c in GOLDEN["cases"]] == [c["ids"] for c in GOLDEN["cases"]]


@pytest.mark.engine
def test_our_split_pattern_is_the_one_qwen_publishes() -> None:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert qwen_vocab.PATTERN == PRETOKENIZE_REGEX


# Fragments chosen where tokenizers disagree when they differ: digits, whitespace of every kind,
# contractions, punctuation runs, scripts, combining marks, emoji sequences, special-token look-alikes.
FRAGMENTS = [
    "0", "7", "42", "2024", "3.14", "1,000", "٣", "½", "²", "Ⅻ", "\uff11\uff10", "\uff12\uff10", "\uff12", "\uff10",
    " ", "  ", "\t", "\n", "\r\n", "\n\n   \n", "\u3000", "\xa0", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2003",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "\u2019s", "'",
    "...", "!!!", "?!", "--", "();", "{}", "<>", "/*", "**", "#", "@", "$", "%", "&&", "||", "=>", "\\",
    "the", "Hello", "WORLD", "naïve", "café", "e\u0301", "A\u030a", "Ωμέγα", "Привет", "مرحبا", "שלום", "नमस्ते",
    "中文", "分词", "日本語", "한국어", "😀", "🚀", "👍🏽", "👩‍👩‍👧‍👦", "🇫🇷", "\u200b", "\ufeff",
    "<|im_end|>", "<tool_call>", "<think>", "<|", "|>", "<|im_start", "def", "return", "x+=1",
]  # fmt: skip
mixed_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
    ),
    max_size=24,
).map("".join)


@pytest.mark.engine
@settings(max_examples=300, deadline=None)
@given(text=mixed_text)
def test_ids_equal_the_oracle_on_mixed_script_text(oracle: Any, text: str) -> None:
    assert counting.encode(text) == oracle.encode(text)


@pytest.mark.engine
@pytest.mark.parametrize(
    "text",
    [
        " " * 1_000_000,
        "x" + "\t" * 1_000_000 + "y",
        "a\n" + " " * 1_000_000 + "!",
        "end." + " \t\u3000" * 333_334 + "7",
    ],
    ids=["spaces", "tabs before a word", "after a newline before punctuation", "mixed blanks before a digit"],
)
def test_a_megabyte_of_blanks_counts_as_the_oracle_says(oracle: Any, text: str) -> None:
    assert counting.count_text(text) == len(oracle.encode(text))


# Text dense in the places where counting may cut it into pieces (budget/counting.py, _SAFE_CUT), and in
# what could join across a cut: whitespace after a "\n", combining marks, contractions, special tokens.
cut_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(["\n", "\n ", "\n\t", "\n\u3000", "\n\r", "1", "a", "a ", "Z ", "\u0301", "\u0338", "<"]),
    ),
    max_size=40,
).map("".join)


@pytest.mark.engine
@settings(max_examples=300, deadline=None)
@given(text=cut_text)
def test_ids_counted_in_the_smallest_pieces_equal_the_oracle(oracle: Any, text: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(counting, "PIECE_CHARS", 1)  # a cut at every allowed point
        assert counting.encode(text) == oracle.encode(text)
        assert counting.count_text(text) == len(oracle.encode(text))
