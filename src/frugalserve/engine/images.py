"""Images of a chat request: fetched with the gateway's guarded :class:`Fetcher`, decoded off the event loop.

A model server is usually reached through the gateway, which already inlines every image as a ``data:``
URL, so by default the engine fetches nothing (``--allow-remote-images`` turns http(s) fetching on, with
the gateway's protections: public addresses only after DNS, every redirect checked again, size and time
limits enforced while streaming). Base64 and image decoding run in a worker thread: a 20 MB picture takes
tens of milliseconds to decode, which would stall every other request's stream.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from frugalserve.budget.fetch import Fetcher, FetchError, decode_data_url
from frugalserve.engine.requests import ChatRequest
from frugalserve.errors import InvalidRequest

REMOTE_REFUSED = (
    "this engine does not fetch image URLs (start it with --allow-remote-images); send the image as a data: URL"
)


async def load_images(request: ChatRequest, fetcher: Fetcher) -> None:
    """Fill ``request.images`` with one decoded RGB picture per image part, in prompt order."""
    request.images = [await _load_image(param, url, fetcher) for param, url in request.image_refs]


async def _load_image(param: str, url: str, fetcher: Fetcher) -> Any:
    try:
        if url.startswith("data:"):
            return await asyncio.to_thread(_decode_data_url_image, url, fetcher.limits.max_bytes, param)
        if not url.startswith(("http://", "https://")):
            raise FetchError("image URLs must be data: or http(s):// URLs")
        if not fetcher.limits.allow_http:
            raise FetchError(REMOTE_REFUSED)
        data = await fetcher.fetch(url, "image")
    except FetchError as exc:
        raise InvalidRequest(str(exc), param=param, code="invalid_image_url") from None
    return await asyncio.to_thread(decode_image, data, param)


def _decode_data_url_image(url: str, max_bytes: int, param: str) -> Any:
    return decode_image(decode_data_url(url, max_bytes, "image"), param)


def decode_image(data: bytes, param: str) -> Any:
    """A fully decoded RGB picture; any decoder failure is the client's 400 ``invalid_image``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: a truncated file fails here, not in the model thread
            return img.convert("RGB")
    except Exception as exc:  # Pillow raises many types for malformed files (struct.error, IndexError...)
        raise InvalidRequest(
            f"the image could not be decoded ({exc.__class__.__name__})", param=param, code="invalid_image"
        ) from None
