"""The cascade's test of an answer: should the next tier try again? A pure function of the response JSON.

Flags, in order: ``length`` (finish_reason "length": cut off), ``refusal`` (the message's ``refusal``
field, or a refusal pattern in the answer's first :data:`REFUSAL_WINDOW` characters), ``low_logprob``
(mean token log-probability below the threshold, when the backend returned logprobs), ``invalid_json``
(validator "json" and the answer does not parse). Every choice is checked; the first flag wins.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from frugalserve.routing.config import CascadeConfig

REFUSAL_WINDOW = 400  # refusals come first; the rest of a long answer is never scanned
ESCALATIONS = ("length", "refusal", "low_logprob", "invalid_json")  # the values escalation_reason returns


@functools.lru_cache(maxsize=16)
def _refusal_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.I)


def escalation_reason(answer: Mapping[str, Any], rule: CascadeConfig) -> str | None:
    """Why ``answer`` (a chat or text completion response body) should go to the next tier; None: keep it."""
    choices = answer.get("choices")
    if not isinstance(choices, Sequence) or isinstance(choices, str):
        return None
    refusal = _refusal_regex(rule.refusal_patterns)
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        if rule.on_length and choice.get("finish_reason") == "length":
            return "length"
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
        if isinstance(message, Mapping) and message.get("refusal"):
            return "refusal"
        if refusal is not None and isinstance(text, str) and refusal.search(text[:REFUSAL_WINDOW]):
            return "refusal"
        mean = _mean_logprob(choice.get("logprobs"))
        if rule.min_mean_logprob is not None and mean is not None and mean < rule.min_mean_logprob:
            return "low_logprob"
        if rule.validator == "json" and not (isinstance(message, Mapping) and message.get("tool_calls")):
            if not isinstance(text, str) or not _parses(text):
                return "invalid_json"
    return None


def _mean_logprob(logprobs: Any) -> float | None:
    """Chat (``content: [{logprob}]``) or completions (``token_logprobs: [...]``) logprobs; None if absent."""
    if not isinstance(logprobs, Mapping):
        return None
    values: list[float] = []
    content = logprobs.get("content")
    if isinstance(content, list):
        values = [t["logprob"] for t in content if isinstance(t, Mapping) and isinstance(t.get("logprob"), int | float)]
    else:
        tokens = logprobs.get("token_logprobs")
        if isinstance(tokens, list):
            values = [v for v in tokens if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
