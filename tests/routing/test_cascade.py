"""escalation_reason(): what sends an answer on to the next tier."""

from __future__ import annotations

from typing import Any

from frugalserve.routing.cascade import ESCALATIONS, escalation_reason
from frugalserve.routing.config import CascadeConfig

RULE = CascadeConfig(enabled=True)


def answer(content: Any = "Paris.", finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content, **message}}
        ]
    }


def test_a_plain_answer_is_kept() -> None:
    assert escalation_reason(answer(), RULE) is None


def test_an_answer_cut_off_by_length_escalates() -> None:
    assert escalation_reason(answer(finish="length"), RULE) == "length"
    assert escalation_reason(answer(finish="length"), CascadeConfig(on_length=False)) is None


def test_refusals_escalate_by_pattern_or_refusal_field() -> None:
    assert escalation_reason(answer("I'm sorry, but I can't help with that."), RULE) == "refusal"
    assert escalation_reason(answer("i cannot answer this question"), RULE) == "refusal"
    assert escalation_reason(answer(None, refusal="no"), RULE) == "refusal"
    assert escalation_reason(answer("Sorry for the wait: the answer is 4."), RULE) is None


def test_a_refusal_deep_in_a_long_answer_is_not_scanned() -> None:
    assert escalation_reason(answer("x" * 500 + "\nI can't help with that."), RULE) is None


def test_low_mean_logprob_escalates_when_logprobs_are_present() -> None:
    low = answer()
    low["choices"][0]["logprobs"] = {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -2.0}]}
    assert escalation_reason(low, RULE) == "low_logprob"  # mean -1.25 < -1.0
    assert escalation_reason(low, CascadeConfig(min_mean_logprob=None)) is None
    high = answer()
    high["choices"][0]["logprobs"] = {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.0}]}
    assert escalation_reason(high, RULE) is None  # mean -0.75


def test_completions_logprobs_are_read_too() -> None:
    text = {"choices": [{"text": "x", "finish_reason": "stop", "logprobs": {"token_logprobs": [-3.0, -1.0]}}]}
    assert escalation_reason(text, RULE) == "low_logprob"


def test_json_validator_escalates_an_answer_that_does_not_parse() -> None:
    rule = CascadeConfig(validator="json")
    assert escalation_reason(answer('{"a": 1}'), rule) is None
    assert escalation_reason(answer('```json\n{"a": 1}\n```'), rule) == "invalid_json"
    assert escalation_reason(answer(None, tool_calls=[{"id": "1"}]), rule) is None


def test_any_flagged_choice_escalates_and_every_reason_is_in_the_vocabulary() -> None:
    two = {"choices": [answer()["choices"][0], answer(finish="length")["choices"][0]]}
    assert escalation_reason(two, RULE) == "length" and "length" in ESCALATIONS
    assert escalation_reason({"error": {}}, RULE) is None
