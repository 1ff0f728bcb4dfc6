"""extract(): counts come from the budget stage; text signals, language, headers and sessions are cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from frugalserve.errors import InvalidRequest
from frugalserve.routing.features import ASK_HEAD, ASK_TAIL, MESSAGE_WINDOW, extract, language


@dataclass
class Counts:
    prompt_tokens: int = 10
    text_tokens: int = 10
    image_tokens: int = 0
    video_tokens: int = 0
    images: int = 0
    videos: int = 0
    max_tokens_requested: int | None = None


def chat(*texts: str, **body: Any) -> dict[str, Any]:
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)], **body}


def test_counts_come_from_the_budget_stage() -> None:
    counts = Counts(1200, 200, 1000, 0, 1, 0, 300)
    f = extract(chat("hello"), counts, {})
    assert (f.prompt_tokens, f.text_tokens, f.image_tokens, f.images, f.max_tokens) == (1200, 200, 1000, 1, 300)
    assert f.depth == 1 and f.priority == "normal" and f.tier_hint is None


def test_code_counts_fenced_blocks_and_code_like_lines() -> None:
    text = "Fix this:\n```python\ndef f(x):\n    return x\n```\nand this:\n```\nint main() {\n```"
    # 2 fenced blocks; "def f(x):", "    return x", "int main() {" are code-like lines
    assert extract(chat(text), Counts(), {}).code_blocks == 5


def test_prose_has_no_code_or_math() -> None:
    f = extract(chat("Tell me a story about a cat who loves the sea, please."), Counts(), {})
    assert (f.code_blocks, f.math, f.reasoning) == (0, 0, 0)


def test_math_notation_and_vocabulary_are_counted() -> None:
    f = extract(chat(r"Compute \frac{1}{2} + \sum_i x_i and the integral ∫ of x^2"), Counts(), {})
    assert f.math == 5  # \frac, \sum, integral, ∫, x^2


def test_reasoning_words_are_counted() -> None:
    assert extract(chat("Prove it step by step, then analyze the trade-offs."), Counts(), {}).reasoning == 4


def test_reasoning_words_count_as_whole_words_only() -> None:
    # "improves" holds "prove", "disproof" holds "proof", "analysts" holds "analys": none is the word
    text = "The new cache improves latency; a disproof was never found; analysts agree."
    assert extract(chat(text), Counts(), {}).reasoning == 0
    assert extract(chat("Prove it. Then, the proof."), Counts(), {}).reasoning == 2


def test_a_reasoning_word_used_as_an_identifier_is_not_counted() -> None:
    text = "Why is this slow?\n```python\nlog.debug(x)\nanalyze_later = debug_mode\n```"
    assert extract(chat(text), Counts(), {}).reasoning == 0


def test_cjk_reasoning_words_count_inside_running_text() -> None:
    # No spaces between Chinese words: a substring is the word.
    assert extract(chat("请证明这个不等式，并分析它何时取等号"), Counts(), {}).reasoning == 2  # noqa: RUF001


def test_reasoning_words_deep_inside_pasted_material_are_not_counted() -> None:
    filler = "The results hold for every dataset we tried. " * 60  # 2,700 characters, no reasoning word
    middle = "We derive the bound and prove it. "
    pasted = filler + middle + filler  # the words sit 2,700 characters in, past ASK_HEAD and ASK_TAIL
    assert len(filler) > ASK_HEAD + ASK_TAIL
    assert extract(chat("Summarise this paper in one paragraph.\n\n" + pasted), Counts(), {}).reasoning == 0
    # The ask itself is read at either end of the message: derive, prove
    assert extract(chat("Derive and prove the bound in:\n" + pasted), Counts(), {}).reasoning == 2
    assert extract(chat(pasted + "\nWhere does the proof fail?"), Counts(), {}).reasoning == 1
    # Text parts are one message: the ask in the first part, the material in the second
    parts = [{"type": "text", "text": "Analyse this log."}, {"type": "text", "text": pasted}]
    assert extract({"messages": [{"role": "user", "content": parts}]}, Counts(), {}).reasoning == 1


def test_reasoning_words_count_in_the_last_user_message_and_the_system_prompt_only() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Reason step by step."},
            {"role": "user", "content": "Can you prove this lemma?"},
            {"role": "assistant", "content": "Here is the proof. We derive it from the analysis."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Thanks. Now debug this:"}, {"type": "text", "text": "x=1"}],
            },
        ]
    }
    # "step by step" (system) and "debug" (last user); the earlier turns are context, not the ask
    assert extract(body, Counts(), {}).reasoning == 2


def test_work_asking_words_count_as_reasoning() -> None:
    text = "Implement a B-tree from scratch in Rust, with tests."
    assert extract(chat(text), Counts(), {}).reasoning == 3  # implement, from scratch, with tests


def test_signals_scan_a_bounded_window_of_a_huge_message() -> None:
    filler = "word " * (MESSAGE_WINDOW // 5)
    hidden = filler + "\\frac{a}{b}\n" + filler  # in the middle, outside the head and tail windows
    tail = filler + "\\frac{a}{b}"
    assert extract(chat(hidden), Counts(), {}).math == 0
    assert extract(chat(tail), Counts(), {}).math == 1


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Hello, how are you today? What is the weather like?", "en"),
        ("你好，请帮我写一首关于秋天的诗", "zh"),  # noqa: RUF001
        ("東京は日本の首都です。よろしくお願いします", "ja"),
        ("안녕하세요, 오늘 날씨가 어때요?", "ko"),
        ("Привет, как дела? Расскажи мне о погоде", "ru"),  # noqa: RUF001
        ("مرحبا، كيف حالك اليوم؟", "ar"),
        ("Bonjour, je voudrais une table pour deux dans le jardin", "fr"),
        ("Ich habe eine Frage: wie ist das Wetter und was ist die Lösung?", "de"),
        ("Explain this: 这个函数是做什么的", "zh"),
        ("12345 + 678 = ?", "other"),
    ],
)
def test_language_from_the_script_and_common_words(text: str, code: str) -> None:
    assert language(text) == code


def test_language_is_read_from_the_last_user_message() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "请解释一下"},
        ]
    }
    assert extract(body, Counts(), {}).language == "zh"


def test_tools_json_schema_and_depth() -> None:
    body = chat("a", "b", "c", tools=[{"type": "function"}], response_format={"type": "json_schema", "json_schema": {}})
    f = extract(body, Counts(), {})
    assert f.tools and f.json_schema and f.depth == 3
    assert not extract(chat("a", response_format={"type": "json_object"}), Counts(), {}).json_schema


def test_text_parts_of_a_content_list_are_read() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "prove that x^2 >= 0"}]}]}
    f = extract(body, Counts(), {})
    assert f.reasoning == 1 and f.math == 1


def test_completions_prompt_is_read_as_one_user_message() -> None:
    f = extract({"prompt": "def f():\n    return 1\n"}, Counts(), {})
    assert f.code_blocks == 2 and f.depth == 1


def test_hint_and_priority_headers() -> None:
    f = extract(chat("x"), Counts(), {"x-frugalserve-tier": " L ", "x-frugalserve-priority": "High"})
    assert (f.tier_hint, f.priority) == ("L", "high")


def test_bad_priority_names_the_header() -> None:
    with pytest.raises(InvalidRequest) as err:
        extract(chat("x"), Counts(), {"x-frugalserve-priority": "urgent"})
    assert err.value.param == "x-frugalserve-priority"


def test_session_from_header_then_user_then_the_opening_messages() -> None:
    assert extract(chat("x", user="bob"), Counts(), {"x-frugalserve-session": "c1"}).session == "h:c1"
    assert extract(chat("x", user="bob"), Counts(), {}).session == "u:bob"
    first = extract({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}, Counts(), {})
    later = extract(
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "more"},
            ]
        },
        Counts(),
        {},
    )
    other = extract(
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "bye"}]}, Counts(), {}
    )
    assert first.session == later.session and first.session is not None and first.session.startswith("m:")
    assert other.session != first.session


def test_affinity_is_the_first_images_hash_else_the_session() -> None:
    def body(url: str) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            "user": "u",
        }

    a = extract(body("data:image/jpeg;base64," + "A" * 5000), Counts(), {}).affinity
    b = extract(body("data:image/jpeg;base64," + "A" * 2500 + "B" + "A" * 2499), Counts(), {}).affinity
    assert a is not None and a.startswith("i:") and a != b
    assert a == extract(body("data:image/jpeg;base64," + "A" * 5000), Counts(), {}).affinity
    assert extract(chat("x", user="u"), Counts(), {}).affinity == "u:u"
