"""Parse and validate chat and text completion bodies into :class:`ChatRequest` / :class:`CompletionRequest`.

Everything a client can get wrong is caught here and raised as :class:`InvalidRequest` naming the
parameter (``messages[0].content[1].image_url``, ``top_p``...), so the model thread only sees valid input.
A parameter the engine cannot honour (``logprobs``, ``n > 1``, ``response_format`` json...) is a 400 naming
it rather than being ignored; see ``UNSUPPORTED`` and ``docs/engine.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from frugalserve.errors import InvalidRequest

ROLES = ("system", "user", "assistant", "tool")
# OpenAI's default for the legacy completions route (vLLM's too).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

# Accepted only at their neutral value: any other value asks for something this engine does not do.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "response_format": ({"type": "text"},),
    "parallel_tool_calls": (True,),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "functions": (),
    "function_call": (),
    "web_search_options": (),
    "reasoning_effort": (),
    "verbosity": (),
    "best_of": (1,),
    "echo": (False,),
    "suffix": (),
}
# Bookkeeping for the caller that does not change the answer: accepted and not used.
IGNORED = ("user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier")

_SAMPLING = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop")
_COMMON = ("model", "stream", "stream_options", *_SAMPLING, *IGNORED)
CHAT_PARAMS = frozenset(
    (
        "messages",
        "tools",
        "tool_choice",
        "n",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "response_format",
        "parallel_tool_calls",
        "modalities",
        "audio",
        "prediction",
        "functions",
        "function_call",
        "web_search_options",
        "reasoning_effort",
        "verbosity",
        *_COMMON,
    )
)
COMPLETION_PARAMS = frozenset(
    (
        "prompt",
        "n",
        "best_of",
        "echo",
        "suffix",
        "logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        *_COMMON,
    )
) - {"max_completion_tokens"}
UNSUPPORTED = tuple(sorted(_NEUTRAL))


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    max_tokens_param: str = "max_tokens"  # the request's name for it (max_completion_tokens in newer clients)


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    sampling: Sampling
    stream: bool
    include_usage: bool
    model: str | None
    # (param path, url) of each image in prompt order; filled with PIL images by images.load_images().
    image_refs: list[tuple[str, str]] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    # Tool definitions for the chat template, and whether <tool_call> output becomes tool_calls.
    tools: list[dict[str, Any]] | None = None
    parse_tool_calls: bool = False


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool
    model: str | None


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"'{key}' must be a number", param=key)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{key}' must be between {lo} and {hi}, got {value}", param=key)
    return float(value)


def _int(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{key}' must be an integer", param=key)
    if not lo <= value <= hi:
        raise InvalidRequest(f"'{key}' must be between {lo} and {hi}, got {value}", param=key)
    return value


def _same(value: Any, neutral: Any) -> bool:
    """Equal with JSON types respected (``True`` is not ``1``; ``0.0`` is ``0``)."""
    if isinstance(neutral, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(neutral, bool) and value == neutral
    if isinstance(neutral, int | float):
        return isinstance(value, int | float) and value == neutral
    return bool(type(value) is type(neutral) and value == neutral)


def check_parameters(body: dict[str, Any], known: frozenset[str]) -> None:
    """Refuse unknown parameters and known ones at a value this engine cannot honour."""
    for key, value in body.items():
        if key not in known:
            raise InvalidRequest(f"unrecognized request argument '{key}'", param=key, code="unsupported_parameter")
        allowed = _NEUTRAL.get(key)
        if allowed is None or value is None or any(_same(value, a) for a in allowed):
            continue
        shown = " or ".join(orjson.dumps(a).decode() for a in allowed)  # as the client wrote it: JSON
        raise InvalidRequest(
            f"'{key}' is not supported by this engine" + (f" (only {shown} is accepted)" if shown else ""),
            param=key,
            code="unsupported_parameter",
        )


def _sampling(body: dict[str, Any], default_max_tokens: int, *, chat: bool) -> Sampling:
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, key, default_max_tokens, 1, 1 << 20)
    assert max_tokens is not None
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
        stops = tuple(stop)
    else:
        raise InvalidRequest("'stop' must be a string or an array of at most 4 non-empty strings", param="stop")
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=_int(body, "seed", None, -(1 << 63), (1 << 63) - 1),
        stop=stops,
        max_tokens_param=key,
    )
    if sampling.top_p == 0.0:
        raise InvalidRequest("'top_p' must be greater than 0", param="top_p")
    return sampling


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("'include_usage' must be a boolean", param="stream_options.include_usage")
    return stream, include


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model")
    return model


def parse_chat_request(body: Any, *, default_max_tokens: int, vision: bool) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    check_parameters(body, CHAT_PARAMS)
    refs: list[tuple[str, str]] = []
    clean = [_message(m, f"messages[{i}]", refs, vision) for i, m in enumerate(messages)]
    tools = _tools(body.get("tools"))
    parse_calls = _tool_choice(body.get("tool_choice"), tools)
    stream, include_usage = _stream(body)
    return ChatRequest(
        messages=clean,
        sampling=_sampling(body, default_max_tokens, chat=True),
        stream=stream,
        include_usage=include_usage,
        model=_model(body),
        image_refs=refs,
        tools=tools,
        parse_tool_calls=parse_calls,
    )


def parse_completion_request(body: Any, *, vocab_size: int) -> CompletionRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    check_parameters(body, COMPLETION_PARAMS)
    stream, include_usage = _stream(body)
    return CompletionRequest(
        prompt=_prompt(body.get("prompt"), vocab_size),
        sampling=_sampling(body, COMPLETIONS_DEFAULT_MAX_TOKENS, chat=False),
        stream=stream,
        include_usage=include_usage,
        model=_model(body),
    )


def _prompt(prompt: Any, vocab_size: int) -> str | list[int]:
    """A string, a list of one string, token ids, or a list of one list of token ids."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequest("'prompt' must not be empty", param="prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        bad = next((t for t in prompt if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})", param="prompt")
        return list(prompt)
    raise InvalidRequest(
        "'prompt' must be a non-empty string or token id array (one prompt per request: n and batches of "
        "prompts are not supported)",
        param="prompt",
    )


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequest("each tool must be {'type': 'function', 'function': {...}}", param=f"tools[{i}]")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest("a function needs a 'name'", param=f"tools[{i}].function.name")
    return tools or None


def _tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> bool:
    """Whether <tool_call> output is parsed. The model cannot be forced to call, so only auto / none."""
    if choice is None or choice == "auto":
        return tools is not None
    if choice == "none":
        return False
    raise InvalidRequest(
        "only tool_choice 'auto' and 'none' are supported (this engine cannot force a tool call)",
        param="tool_choice",
        code="unsupported_parameter",
    )


def _message(m: Any, path: str, refs: list[tuple[str, str]], vision: bool) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise InvalidRequest(f"'{path}' must be an object", param=path)
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(f"'{path}.role' must be one of {', '.join(ROLES)}", param=f"{path}.role")
    content = m.get("content")
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"'{path}.tool_calls' must be an array", param=f"{path}.tool_calls")
    out: dict[str, Any] = {"role": role, "content": content, "tool_calls": calls}
    if content is None or isinstance(content, str):
        out["content"] = content or ""
        return out
    if not isinstance(content, list):
        raise InvalidRequest(f"'{path}.content' must be a string or an array", param=f"{path}.content")
    parts = []
    for j, part in enumerate(content):
        ppath = f"{path}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"'{ppath}.text' must be a string", param=f"{ppath}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            if not vision:
                raise InvalidRequest("this model takes no images", param=f"{ppath}.image_url")
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"'{ppath}.image_url.url' must be a string", param=f"{ppath}.image_url")
            refs.append((f"{ppath}.image_url", url))
            parts.append({"type": "image_url"})
        else:
            shown = kind if isinstance(kind, str) else type(kind).__name__
            raise InvalidRequest(
                f"unsupported content part type {shown!r} (this engine takes 'text' and 'image_url')",
                param=f"{ppath}.type",
            )
    out["content"] = parts
    return out
