"""Hostile images and data URLs through a real gateway process, driven by the official openai client.

The fake upstream (tests/fake_upstream.py) stands in for the model server; every case here is answered
by the gateway's budget stage before anything is sent to it.
"""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import openai
import pytest
from PIL import Image
from tests import procs
from tests.budget.hostile_images import SEEDS, gif_cut_in_second_frame

pytestmark = pytest.mark.integration


def _client(gw: str) -> openai.OpenAI:
    return procs.openai_client(gw + "/v1", "unused")


def _pillow_frame_error(data: bytes) -> Exception | None:
    """What Pillow itself raises reading the frames of ``data``, if it is not one of its usual errors."""
    try:
        img = Image.open(io.BytesIO(data))
        _ = img.is_animated
        img.seek(0)
        img.load()
    except (IndexError, TypeError, struct.error) as exc:
        return exc
    except Exception:
        return None
    return None


def _malformed_gif() -> bytes:
    """A GIF cut inside its second frame's header, on which Pillow raises IndexError or struct.error."""
    cuts = gif_cut_in_second_frame(SEEDS["gif"])
    return next((c for c in cuts if _pillow_frame_error(c) is not None), cuts[8])


def _ask(gw: str, url: str) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as err:
        _client(gw).chat.completions.create(
            model="qwen3-vl",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is it?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            max_tokens=4,
        )
    assert err.value.status_code == 400
    body = err.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "messages[0].content[1].image_url"
    return dict(body["error"])


def test_malformed_gif_is_a_400_invalid_image(gateway: str) -> None:
    data = _malformed_gif()
    error = _ask(gateway, "data:image/gif;base64," + base64.b64encode(data).decode())
    assert error["code"] == "invalid_image"
    assert "Traceback" not in error["message"] and " at 0x" not in error["message"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,iVBORw0KGgo!!!!", "not valid base64"),
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,iVBORw0KGgoAA", "not valid base64"),  # a truncated last group
    ],
)
def test_bad_data_urls_are_a_400_invalid_image_url(gateway: str, url: str, message: str) -> None:
    error = _ask(gateway, url)
    assert error["code"] == "invalid_image_url" and message in error["message"]


def test_a_tiff_whose_strip_offsets_are_rational_is_a_400(gateway: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 260), (9, 99, 199)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, 11)  # FLOAT
    error = _ask(gateway, "data:image/tiff;base64," + base64.b64encode(bytes(data)).decode())
    assert error["code"] == "invalid_image"
