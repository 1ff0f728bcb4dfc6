"""The per-pool ``limits:`` config section (add ``limits: LimitsConfig`` to ``PoolConfig``).

Parsed by :func:`frugalserve.config.parse` like every section; defaults live here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frugalserve.config_errors import ConfigError

MIN_IMAGE_TOKENS = 64  # the processor's minimum of 65,536 pixels


@dataclass(frozen=True)
class ImageLimits:
    # Most pad tokens one image may cost; larger images are resized (64 = the processor's minimum; a
    # budget of 64-69 can be exceeded by up to 6 tokens: no multiple-of-32 size fits most aspect ratios).
    max_tokens: int = 1024
    # Longest allowed short side in pixels; null = no limit.
    short_edge: int | None = 768
    # Most images in one request; null = no limit.
    max_count: int | None = 16
    # Re-encoding of resized images.
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = 85
    # Refused before decoding (decompression bombs).
    max_input_pixels: int = 50_000_000
    drop_duplicates: bool = True

    def validate(self, path: str) -> None:
        if self.max_tokens < MIN_IMAGE_TOKENS:
            raise ConfigError(f"{path}.max_tokens", f"must be >= {MIN_IMAGE_TOKENS}")
        if self.short_edge is not None and self.short_edge < 32:
            raise ConfigError(f"{path}.short_edge", "must be >= 32")
        if self.max_count is not None and self.max_count < 0:
            raise ConfigError(f"{path}.max_count", "must be >= 0")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"{path}.quality", "must be between 1 and 100")
        if self.max_input_pixels < 65_536:
            raise ConfigError(f"{path}.max_input_pixels", "must be >= 65536")


@dataclass(frozen=True)
class FetchLimits:
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    # Hosts fetched even when they resolve to a private or loopback address ("images.internal",
    # "*.corp.example", "127.0.0.1"). Everything else must resolve to public addresses only.
    allow_hosts: tuple[str, ...] = ()
    # false: only data: URLs are accepted.
    allow_http: bool = True

    def validate(self, path: str) -> None:
        if self.timeout_s <= 0:
            raise ConfigError(f"{path}.timeout_s", "must be > 0")
        if self.max_bytes <= 0:
            raise ConfigError(f"{path}.max_bytes", "must be > 0")
        if self.max_redirects < 0:
            raise ConfigError(f"{path}.max_redirects", "must be >= 0")


@dataclass(frozen=True)
class LimitsConfig:
    # Prompt tokens a request may have; null = no limit (e.g. chat 8K, summarisation 64K, code 32K).
    max_context_tokens: int | None = None
    # Cap on max_tokens / max_completion_tokens (e.g. 512); null = no cap.
    max_new_tokens: int | None = None
    # What to do with a max_tokens above the cap: lower it (the response says so) or refuse the request.
    max_tokens_policy: Literal["clamp", "reject"] = "clamp"
    # Image and video tokens of one request, after resizing; null = no limit.
    max_visual_tokens: int | None = None
    image: ImageLimits = field(default_factory=ImageLimits)
    fetch: FetchLimits = field(default_factory=FetchLimits)

    def validate(self, path: str) -> None:
        for name in ("max_context_tokens", "max_new_tokens", "max_visual_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{path}.{name}" if path else name, "must be >= 1")
