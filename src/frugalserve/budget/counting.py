"""Exact prompt token counts: render THE chat template, tokenize, expand each visual pad to its count.

The template (``templates/qwen3_vl_chat.jinja``) is the file the engine and the demo checkpoint use, so
the count before dispatch is what the model sees. Each image or video stands in the rendered text as one
pad token between vision markers; the processor later repeats that pad, which is what we add here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalserve import qwen_vocab
from frugalserve.budget.vision import MARKER_TOKENS, VideoTokens

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "templates" / "qwen3_vl_chat.jinja"
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in qwen_vocab.SPECIAL_TOKENS) + ")")


@functools.cache
def chat_template() -> Any:
    """The compiled template (immutable; compiled once per process)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    return env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))


def _tojson(value: Any) -> str:
    # transformers' chat templates render tojson with json.dumps(ensure_ascii=False).
    import json

    return json.dumps(value, ensure_ascii=False)


def render_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    return str(chat_template().render(messages=messages, add_generation_prompt=add_generation_prompt))


def encode(text: str) -> list[int]:
    """Token ids as Hugging Face's Qwen tokenizer gives them: special tokens split out first, then each
    ordinary piece NFC-normalised and byte-pair encoded."""
    enc = qwen_vocab.encoding()
    ids: list[int] = []
    for i, piece in enumerate(_SPECIAL_SPLIT.split(text)):
        if i % 2:
            ids.append(qwen_vocab.SPECIAL_IDS[piece])
        elif piece:
            ids.extend(enc.encode_ordinary(unicodedata.normalize("NFC", piece)))
    return ids


def count_text(text: str) -> int:
    return len(encode(text))


@dataclass(frozen=True)
class TokenCount:
    """A prompt's tokens by kind. Image and video tokens include their vision markers (and a video's
    timestamps); ``text`` is everything else, template tokens included."""

    total: int
    text: int
    image: int
    video: int


def video_prompt_tokens(video: VideoTokens) -> int:
    """Tokens one video adds in place of its pad: per frame pair a timestamp text, markers and pads;
    plus the outer markers the template writes."""
    stamps = sum(count_text(t) for t in video.timestamp_texts())
    return MARKER_TOKENS + stamps + video.groups * (MARKER_TOKENS + video.tokens_per_group)


def count_chat(
    messages: Sequence[Mapping[str, Any]],
    image_pads: Sequence[int] = (),
    videos: Sequence[VideoTokens] = (),
    add_generation_prompt: bool = True,
) -> TokenCount:
    """Count a chat prompt whose image and video parts appear, in order, with these costs.

    ``image_pads[i]`` is the pad count of the i-th image part (``vision.image_pad_tokens`` or the budget
    size); ``videos[i]`` the i-th video part's cost.
    """
    ids = encode(render_chat(messages, add_generation_prompt))
    n_images = ids.count(qwen_vocab.IMAGE_PAD)
    n_videos = ids.count(qwen_vocab.VIDEO_PAD)
    if n_images != len(image_pads) or n_videos != len(videos):
        raise ValueError(
            f"the prompt has {n_images} image and {n_videos} video pads but {len(image_pads)} image "
            f"and {len(videos)} video costs were given (a text part may contain a pad token)"
        )
    image = sum(image_pads) + MARKER_TOKENS * n_images
    video = sum(video_prompt_tokens(v) for v in videos)
    # Each visual part rendered as 3 tokens (markers + one pad); replace those with the real cost.
    total = len(ids) - 3 * (n_images + n_videos) + image + video
    return TokenCount(total=total, text=total - image - video, image=image, video=video)
