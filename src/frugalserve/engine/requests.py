"""Parse and validate a chat-completion request body into a :class:`ChatRequest`.

Everything a client can get wrong is caught here and raised as :class:`InvalidRequest` naming the
parameter (``messages[0].content[1].image_url``, ``top_p``...), so the model thread only sees valid input.
Images are fetched and decoded here too (``load_images``), before the request queues for the model.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field
from typing import Any

from frugalserve.errors import InvalidRequest

MAX_IMAGE_BYTES = 20 * 1024 * 1024
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    sampling: Sampling
    stream: bool
    include_usage: bool
    model: str | None
    # (param path, url) of each image in prompt order; filled with PIL images by load_images().
    image_refs: list[tuple[str, str]] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)


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


def parse_chat_request(body: Any, *, default_max_tokens: int, vision: bool) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    refs: list[tuple[str, str]] = []
    clean = [_message(m, f"messages[{i}]", refs, vision) for i, m in enumerate(messages)]

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _int({key: max_tokens}, key, default_max_tokens, 1, 1 << 20)
    n = _int(body, "n", 1, 1, 1)
    assert max_tokens is not None and n == 1
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
    )
    if sampling.top_p == 0.0:
        raise InvalidRequest("'top_p' must be greater than 0", param="top_p")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model")
    return ChatRequest(
        messages=clean,
        sampling=sampling,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        model=model,
        image_refs=refs,
    )


def _message(m: Any, path: str, refs: list[tuple[str, str]], vision: bool) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise InvalidRequest(f"'{path}' must be an object", param=path)
    role = m.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"'{path}.role' must be one of {', '.join(ROLES)}", param=f"{path}.role")
    content = m.get("content")
    out: dict[str, Any] = {"role": role, "content": content, "tool_calls": m.get("tool_calls") or []}
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
            raise InvalidRequest(
                f"unsupported content part type {kind!r} (this engine takes 'text' and 'image_url')",
                param=f"{ppath}.type",
            )
    out["content"] = parts
    return out


async def load_images(request: ChatRequest, http: Any) -> None:
    """Fetch (http/https) or decode (data URLs) every image and check it is a readable picture."""
    request.images = [await _load_image(param, url, http) for param, url in request.image_refs]


async def _load_image(param: str, url: str, http: Any) -> Any:
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidRequest("image data URLs must be base64 ('data:image/png;base64,...')", param=param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("the image data URL is not valid base64", param=param) from None
    elif url.startswith(("http://", "https://")):
        import httpx

        try:
            response = await http.get(url, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"could not fetch the image: {type(exc).__name__}", param=param) from None
        if response.status_code != 200:
            raise InvalidRequest(f"fetching the image answered HTTP {response.status_code}", param=param)
        data = response.content
    else:
        raise InvalidRequest("image URLs must be data: or http(s):// URLs", param=param)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"the image is over {MAX_IMAGE_BYTES} bytes", param=param)
    return decode_image(data, param)


def decode_image(data: bytes, param: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: a truncated file fails here, not in the model thread
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"the image could not be decoded ({exc.__class__.__name__})", param=param) from None
