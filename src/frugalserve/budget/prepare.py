"""The entry point the gateway calls before dispatch: validate, rewrite images, count, apply the caps.

:func:`prepare_chat` rewrites the request body in place (image URLs become data URLs of images resized
to the pool's budget; exact duplicates dropped; ``max_tokens`` clamped) and returns the exact prompt
token count with a breakdown. Every problem is an :class:`~frugalserve.errors.InvalidRequest` (or
:class:`~frugalserve.errors.ContextLengthExceeded`) naming the parameter.

The event loop is never held for long: a request larger than :data:`offload.INLINE_MAX_BYTES` has its
messages checked and its text counted in a worker thread; data URLs are decoded and image bytes hashed in
one above that size; images are always decoded in one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from frugalserve.budget import counting, images, offload, videos, vision
from frugalserve.budget.fetch import FetchError
from frugalserve.budget.limits import LimitsConfig
from frugalserve.errors import ContextLengthExceeded, InvalidRequest
from frugalserve.records import RequestRecord

_VISUAL_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
_SCAN_WINDOW = 1 << 20  # characters searched per call


class ImageSource(Protocol):
    async def fetch(self, url: str, what: str = "image") -> bytes: ...


@dataclass
class Prepared:
    """What a request costs, for ``usage``, accounting and /metrics."""

    prompt_tokens: int
    text_tokens: int
    image_tokens: int = 0
    video_tokens: int = 0
    image_tokens_saved: int = 0  # by resizing and by dropping duplicates
    images: int = 0
    videos: int = 0
    images_resized: int = 0
    duplicates_dropped: int = 0
    cache_hits: int = 0
    max_tokens: int | None = None  # what is sent upstream
    max_tokens_requested: int | None = None
    longest_prompt: int = 0  # completions with a list of prompts: each is checked against the context alone
    notes: list[str] = field(default_factory=list)  # what was changed, for a response header

    @property
    def max_tokens_clamped(self) -> bool:
        return self.max_tokens_requested is not None and self.max_tokens != self.max_tokens_requested

    def fill(self, record: RequestRecord) -> None:
        """Set the record's fields this stage knows (the contract with accounting)."""
        record.counted_prompt_tokens = self.prompt_tokens
        record.prompt_text_tokens = self.text_tokens
        record.prompt_image_tokens = self.image_tokens
        record.prompt_video_tokens = self.video_tokens
        record.image_tokens_saved = self.image_tokens_saved
        record.images_resized = self.images_resized
        record.duplicates_dropped = self.duplicates_dropped
        record.max_tokens_requested = self.max_tokens_requested
        record.max_tokens = self.max_tokens
        record.notes = "; ".join(self.notes) or None

    def usage_details(self) -> dict[str, int]:
        """Merged into the response's ``usage.prompt_tokens_details``."""
        return {
            "text_tokens": self.text_tokens,
            "image_tokens": self.image_tokens,
            "video_tokens": self.video_tokens,
            "image_tokens_saved": self.image_tokens_saved,
        }


async def prepare_chat(
    body: dict[str, Any],
    limits: LimitsConfig,
    fetcher: ImageSource,
    cache: images.PreprocessCache | None = None,
) -> Prepared:
    """Validate and rewrite a /v1/chat/completions body in place; count and cap it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    size = offload.estimate(messages, body.get("tools"))
    parts, video_parts = await offload.run(size, _visual_parts, messages)
    if limits.image.max_count is not None and len(parts) > limits.image.max_count:
        raise InvalidRequest(
            f"{len(parts)} images in the request; this model accepts at most {limits.image.max_count}",
            param="messages",
        )
    processed = await asyncio.gather(*(_process(p, path, limits, fetcher, cache) for p, path, _ in parts))
    video_costs = await asyncio.gather(*(_probe_video(p, path, limits, fetcher) for p, path in video_parts))
    result = Prepared(prompt_tokens=0, text_tokens=0, videos=len(video_parts))
    seen: dict[str, str] = {}  # image key -> the part that kept it
    pads: list[int] = []
    drop: list[tuple[list[Any], dict[str, Any]]] = []
    for (part, path, content), (key, item, hit) in zip(parts, processed, strict=True):
        result.cache_hits += hit
        if limits.image.drop_duplicates and key in seen:
            drop.append((content, part))
            result.duplicates_dropped += 1
            result.image_tokens_saved += item.tokens_before
            result.notes.append(f"{path}: duplicate of {seen[key]} dropped ({item.tokens_before} tokens saved)")
            continue
        seen[key] = path
        part.clear()
        part.update({"type": "image_url", "image_url": {"url": item.data_url}})
        pads.append(item.pad_tokens)
        result.images += 1
        result.images_resized += item.resized
        result.image_tokens_saved += item.tokens_saved
        if item.resized:
            result.notes.append(
                f"{path}: resized from {item.original_width}x{item.original_height} to {item.width}x{item.height} "
                f"({item.tokens_saved} tokens saved)"
            )
    for content, part in drop:
        content.remove(part)
    try:
        count = await offload.run(size, counting.count_chat, messages, pads, video_costs, tools=body.get("tools"))
    except InvalidRequest:
        raise
    except Exception as exc:  # a malformed message that the template could not render
        raise InvalidRequest(f"cannot render the messages: {exc}", param="messages") from None
    result.prompt_tokens, result.text_tokens = count.total, count.text
    result.image_tokens, result.video_tokens = count.image, count.video
    if limits.max_visual_tokens is not None and count.image + count.video > limits.max_visual_tokens:
        raise InvalidRequest(
            f"the images and videos cost {count.image + count.video} tokens after resizing; this model accepts at most "
            f"{limits.max_visual_tokens} per request",
            param="messages",
            code="visual_tokens_exceeded",
        )
    apply_caps(body, result, limits, "messages")
    return result


async def prepare_completion(body: dict[str, Any], limits: LimitsConfig) -> Prepared:
    """Count and cap a /v1/completions body (text or token-id prompts; no images)."""
    prompt = body.get("prompt")
    total, longest = await offload.run(offload.estimate(prompt), _count_prompts, prompt)
    result = Prepared(prompt_tokens=total, text_tokens=total, longest_prompt=longest)
    apply_caps(body, result, limits, "prompt")
    return result


def _count_prompts(prompt: Any) -> tuple[int, int]:
    """(total, longest) tokens of a completion prompt: a string, a list of strings, token ids or id lists."""
    prompts: list[Any] = prompt if isinstance(prompt, list) and prompt and not _is_ids(prompt) else [prompt]
    total = 0
    longest = 0
    for i, p in enumerate(prompts):
        path = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if isinstance(p, str):
            n = counting.count_text(p)
        elif isinstance(p, list) and _is_ids(p):
            n = len(p)
        else:
            raise InvalidRequest("'prompt' must be a string, a list of strings or a list of token ids", param=path)
        total += n
        longest = max(longest, n)
    return total, longest


def _is_ids(value: list[Any]) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def _visual_parts(
    messages: list[Any],
) -> tuple[list[tuple[dict[str, Any], str, list[Any]]], list[tuple[dict[str, Any], str]]]:
    """Each image part with its parameter path and its content list, and each video part with its parameter
    path, in order; text is checked for the vision tokens only the gateway may write. The messages' shapes
    were checked by ``api/validate.py`` (``messages`` with ``COUNTED_PARTS``), the one place that does."""
    found = []
    found_videos = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str):
            _check_text(content, f"messages[{i}].content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                path = f"messages[{i}].content[{j}]"
                kind = part["type"]
                if kind == "text":
                    _check_text(part["text"], f"{path}.text")
                elif kind == "image_url":
                    found.append((part, f"{path}.image_url", content))
                elif kind == "video_url":
                    found_videos.append((part, f"{path}.video_url"))
    return found, found_videos


def _check_text(text: str, path: str) -> None:
    # In windows: one scan of a 15 MB text holds the GIL for 10 ms (this runs in a thread for large texts).
    overlap = max(len(t) for t in _VISUAL_TOKENS) - 1
    for start in range(0, max(len(text), 1), _SCAN_WINDOW):
        end = start + _SCAN_WINDOW + overlap
        for tok in _VISUAL_TOKENS:
            if text.find(tok, start, end) >= 0:
                raise InvalidRequest(f"text must not contain the special token {tok}", param=path)


async def _fetch_part(part: dict[str, Any], kind: str, path: str, fetcher: ImageSource) -> bytes:
    """The bytes of an image or video part (``{kind}_url``: a URL, or an object with ``url``); fetch errors
    name the part."""
    ref = part[f"{kind}_url"]
    url: str = ref["url"] if isinstance(ref, dict) else ref
    try:
        return await fetcher.fetch(url, kind)
    except FetchError as exc:
        raise InvalidRequest(str(exc), param=path, code=f"invalid_{kind}_url") from None


async def _process(
    part: dict[str, Any],
    path: str,
    limits: LimitsConfig,
    fetcher: ImageSource,
    cache: images.PreprocessCache | None,
) -> tuple[str, images.ProcessedImage, int]:
    data = await _fetch_part(part, "image", path, fetcher)
    key = await offload.run(len(data), images.image_key, data, limits.image)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return key, hit, 1
    try:
        item = await asyncio.to_thread(images.preprocess, data, limits.image)
    except images.ImageError as exc:
        raise InvalidRequest(str(exc), param=path, code="invalid_image") from None
    if cache is not None:
        cache.put(key, item)
    return key, item, 0


async def _probe_video(
    part: dict[str, Any], path: str, limits: LimitsConfig, fetcher: ImageSource
) -> vision.VideoTokens:
    """A video part's cost from its container's metadata; the part itself is sent on unchanged."""
    data = await _fetch_part(part, "video", path, fetcher)
    try:
        info = await asyncio.to_thread(videos.probe, data, limits.image.max_input_pixels)
        return info.tokens()
    except videos.VideoError as exc:
        raise InvalidRequest(str(exc), param=path, code="invalid_video") from None


def apply_caps(body: dict[str, Any], result: Prepared, limits: LimitsConfig, param: str) -> None:
    """Check the counted prompt against the context cap and set (or clamp) ``max_tokens`` in ``body``.

    Idempotent for one ``result``: ``model: "auto"`` counts without caps, then applies the chosen pool's."""
    longest = result.longest_prompt
    prompt = max(result.prompt_tokens, longest) if longest else result.prompt_tokens
    ctx = limits.max_context_tokens
    if ctx is not None and prompt > ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {ctx} tokens. However, your prompt has {prompt} tokens. "
            "Please reduce the length of the messages or images.",
            param=param,
        )
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    requested = body.get(key)
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise InvalidRequest(f"'{key}' must be a positive integer", param=key)
    cap = limits.max_new_tokens
    if ctx is not None:
        room = ctx - prompt
        cap = room if cap is None else min(cap, room)
    result.max_tokens_requested = requested
    result.max_tokens = requested
    if cap is None:
        return
    if cap < 1:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {ctx} tokens and your prompt has {prompt}: "
            "no room is left for the completion.",
            param=param,
        )
    if requested is None:
        body[key] = result.max_tokens = cap
        return
    if requested > cap:
        if limits.max_tokens_policy == "reject":
            raise InvalidRequest(
                f"'{key}' is {requested}, more than this model allows ({cap})",
                param=key,
                code="max_tokens_exceeded",
            )
        body[key] = result.max_tokens = cap
        result.notes.append(f"{key} clamped from {requested} to {cap}")
