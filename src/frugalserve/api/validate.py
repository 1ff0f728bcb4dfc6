"""Checks of an OpenAI request body that every backend needs, each failure naming its parameter.

Only the shape is checked here (types and ranges); what a value costs (tokens, images) is the budget
stage's business. Unknown fields pass through untouched: backends such as vLLM accept extensions
(``top_k``, ``mm_processor_kwargs``, ...).
"""

from __future__ import annotations

from typing import Any

import orjson

from frugalserve.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content parts a pool passes through untouched (tokenizer: none) may be anything OpenAI defines; a pool whose
# prompts the budget stage counts (Qwen3-VL) takes the parts that model understands.
ALL_PARTS = frozenset({"text", "image_url", "input_audio", "video_url", "file", "refusal"})
COUNTED_PARTS = frozenset({"text", "image_url", "video_url"})
# Generous upper bounds: far past anything a model serves, small enough to refuse absurd numbers.
MAX_TOKENS_LIMIT = 10_000_000
# JSON nesting: the body is re-encoded before it is forwarded, and orjson encodes at most 254 levels; OpenAI's
# deepest shapes (tool parameter schemas) stay far below that.
MAX_DEPTH = 254


def _may_be_too_deep(body: bytes) -> bool:
    """Fewer brackets than MAX_DEPTH in the whole body cannot nest that deep (a byte count is C speed and
    holds the GIL briefly, where re-encoding a 20 MB body holds it for tens of milliseconds)."""
    count = 0
    for start in range(0, len(body), 1 << 20):
        end = start + (1 << 20)
        count += body.count(b"[", start, end) + body.count(b"{", start, end)
        if count >= MAX_DEPTH:
            return True
    return False


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The request body must be a JSON object, got {type(data).__name__}.", code="invalid_json")
    if _may_be_too_deep(body):
        _check_depth(data)
    return data


def _check_depth(data: dict[str, Any]) -> None:
    """Refuse bodies nested deeper than the gateway can forward, naming the top-level parameter that is.

    Encoding is the cheap test (C speed, stops at MAX_DEPTH); only a body that fails it is walked."""
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        pass
    else:
        return
    stack: list[tuple[Any, int, str]] = [(v, 2, k) for k, v in data.items() if isinstance(v, dict | list)]
    top = next(iter(data), "")
    while stack:
        value, depth, top = stack.pop()
        if depth >= MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1, top) for c in children if isinstance(c, dict | list))
    raise InvalidRequest(
        f"'{top}' is nested too deeply: at most {MAX_DEPTH - 1} levels of JSON arrays and objects are accepted.",
        param=top,
        code="invalid_value",
    )


def _show(value: Any) -> str:
    """A value for an error message, never more than a line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(param: str, expected: str, value: Any) -> InvalidRequest:
    got = "null" if value is None else type(value).__name__
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, got {got}.", param=param, code="invalid_type"
    )


def _number(data: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, "a number", value)
    if not lo <= value <= hi:
        raise InvalidRequest(
            f"'{name}' must be between {lo:g} and {hi:g}, got {value}.", param=name, code="invalid_value"
        )


def _integer(data: dict[str, Any], name: str, lo: int, hi: int) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}, got {value}.", param=name, code="invalid_value")


def _common(data: dict[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _type_error("model", "a non-empty string", model)
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _type_error("stream", "a boolean", stream)
    opts = data.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise _type_error("stream_options", "an object", opts)
        if "include_usage" in opts and not isinstance(opts["include_usage"], bool):
            raise _type_error("stream_options.include_usage", "a boolean", opts["include_usage"])
    _integer(data, "max_tokens", 1, MAX_TOKENS_LIMIT)
    _integer(data, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    _integer(data, "n", 1, 128)
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _type_error("seed", "an integer", seed)
    stop = data.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _type_error("stop", "a string or a list of strings", stop)
        if len(stop) > 16:
            raise InvalidRequest("'stop' takes at most 16 sequences.", param="stop", code="invalid_value")
    return model


def _content(content: Any, param: str, role: str, parts: frozenset[str]) -> None:
    if content is None:
        if role in ("assistant", "function"):
            return
        raise _type_error(param, "a string or a list of content parts", content)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _type_error(param, "a string or a list of content parts", content)
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(p, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in parts:
            raise InvalidRequest(
                f"Invalid value for '{p}.type': {_show(kind)}. Supported: {', '.join(sorted(parts))}.",
                param=f"{p}.type",
                code="invalid_value",
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _type_error(f"{p}.text", "a string", part.get("text"))
        if kind in ("image_url", "video_url"):
            ref = part.get(kind)
            if isinstance(ref, dict):
                ref = ref.get("url")
            if not isinstance(ref, str) or not ref:
                raise _type_error(f"{p}.{kind}.url", "a URL string", ref)


def chat(data: dict[str, Any]) -> str:
    """Validate a chat completion request's parameters; return its model name (the messages come next)."""
    model = _common(data)
    messages = data.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages", code="invalid_value")
    return model


def messages(data: dict[str, Any], parts: frozenset[str]) -> None:
    """Validate the shape of every message, with the content parts the chosen pool takes (ALL_PARTS or
    COUNTED_PARTS). The one place message shapes are checked: the budget stage relies on it."""
    for i, msg in enumerate(data["messages"]):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _type_error(param, "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value for '{param}.role': {_show(role)}. Supported: {', '.join(sorted(_ROLES))}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        if "content" not in msg and not msg.get("tool_calls"):
            raise InvalidRequest(
                f"Missing required parameter: '{param}.content'.",
                param=f"{param}.content",
                code="missing_required_parameter",
            )
        _content(msg.get("content"), f"{param}.content", role, parts)


def completion(data: dict[str, Any]) -> str:
    """Validate a (legacy) completion request; return its model name."""
    model = _common(data)
    prompt = data.get("prompt")
    if prompt is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and prompt
        and (
            all(isinstance(p, str) for p in prompt)
            or all(isinstance(p, int) and not isinstance(p, bool) for p in prompt)
            or all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt)
        )
    )
    if not ok:
        raise _type_error("prompt", "a string, a list of strings or a list of token ids", prompt)
    _integer(data, "logprobs", 0, 20)
    return model
