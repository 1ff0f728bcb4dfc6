"""Video parts: metadata read with PyAV from small videos made here, counted like transformers' processor."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from frugalserve.budget import counting, videos, vision
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits, LimitsConfig
from frugalserve.budget.prepare import prepare_chat
from frugalserve.errors import InvalidRequest


def _video(frames: int = 6, fps: int = 10, w: int = 64, h: int = 48, fmt: str = "mp4", codec: str = "mpeg4") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 20 % 256, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


def _data_url(data: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(data).decode()


def _chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}


def _vid(url: str) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


@pytest.fixture
async def fetcher() -> Any:
    async with Fetcher(FetchLimits()) as f:
        yield f


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "mpeg4"), ("mp4", "libx264"), ("webm", "libvpx"), ("avi", "mpeg4")])
def test_probe_reads_frames_rate_and_size_from_the_container(fmt: str, codec: str) -> None:
    info = videos.probe(_video(7, 25, 96, 64, fmt, codec), max_pixels=10**8)
    assert (info.frames, info.fps, info.width, info.height) == (7, 25.0, 96, 64)


@pytest.mark.parametrize("data", [b"", b"not a video" * 50, _video()[:300]])
def test_unreadable_videos_are_refused(data: bytes) -> None:
    with pytest.raises(videos.VideoError):
        videos.probe(data, max_pixels=10**8)


def test_video_frames_over_the_pixel_limit_are_refused_before_decoding() -> None:
    with pytest.raises(videos.VideoError, match="more than the limit"):
        videos.probe(_video(w=640, h=480), max_pixels=640 * 479)


def test_a_video_with_one_frame_is_refused() -> None:
    with pytest.raises(videos.VideoError, match="at least 2 frames"):
        videos.probe(_video(frames=1), max_pixels=10**8).tokens()


async def test_video_part_is_counted_exactly_and_sent_unchanged(fetcher: Fetcher) -> None:
    url = _data_url(_video(frames=12, fps=4, w=96, h=64))
    body = _chat({"type": "text", "text": "what happens?"}, _vid(url))
    p = await prepare_chat(body, LimitsConfig(), fetcher)
    assert body["messages"][0]["content"][1] == _vid(url)
    v = vision.video_tokens(12, 4.0, 64, 96)
    assert p.video_tokens == counting.video_prompt_tokens(v)
    assert p.prompt_tokens == counting.count_chat(body["messages"], (), [v]).total
    assert p.text_tokens == p.prompt_tokens - p.video_tokens and p.image_tokens == 0
    assert p.videos == 1 and p.usage_details()["video_tokens"] == p.video_tokens


@pytest.mark.engine
@pytest.mark.parametrize(("frames", "fps", "w", "h"), [(12, 4, 96, 64), (9, 30, 64, 64), (40, 24, 160, 90)])
async def test_video_count_equals_the_processor_on_the_real_file(
    fetcher: Fetcher, qwen3_vl_processor: Any, qwen3_vl_video_module: Any, frames: int, fps: int, w: int, h: int
) -> None:
    """transformers reads the same file's metadata (read_video_pyav's fields) and samples, sizes and expands it."""
    from transformers.video_utils import VideoMetadata

    data = _video(frames, fps, w, h)
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        meta = VideoMetadata(total_num_frames=int(s.frames), fps=float(s.average_rate), width=s.width, height=s.height)
    module = qwen3_vl_video_module
    indices = module.Qwen3VLVideoProcessor.sample_frames(SimpleNamespace(fps=2, min_frames=4, max_frames=768), meta)
    rh, rw = module.smart_resize(len(indices), h, w, temporal_factor=2, factor=32, min_pixels=131072, max_pixels=786432)
    meta.frames_indices = np.array(indices)
    proc = qwen3_vl_processor
    fake_self = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
        _calculate_timestamps=proc._calculate_timestamps,
        vision_start_token=proc.vision_start_token,
        vision_end_token=proc.vision_end_token,
        video_token=proc.video_token,
    )
    groups = -(-len(indices) // 2)
    inputs = {"video_grid_thw": [np.array([groups, rh // 16, rw // 16])], "video_metadata": [meta]}
    placeholder = type(proc).replace_video_token(fake_self, inputs, 0)
    body = _chat({"type": "text", "text": "describe"}, _vid(_data_url(data)))
    text = proc.apply_chat_template(
        counting.template_messages(body["messages"]), add_generation_prompt=True, tokenize=False
    )
    expected = len(proc.tokenizer(text.replace("<|video_pad|>", placeholder))["input_ids"])
    p = await prepare_chat(body, LimitsConfig(), fetcher)
    assert p.prompt_tokens == expected


async def test_video_over_the_visual_token_cap_is_refused(fetcher: Fetcher) -> None:
    body = _chat(_vid(_data_url(_video(frames=12, fps=4, w=320, h=240))))
    with pytest.raises(InvalidRequest) as exc:
        await prepare_chat(body, LimitsConfig(max_visual_tokens=50), fetcher)
    assert exc.value.code == "visual_tokens_exceeded"


async def test_bad_video_error_names_the_part(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "?"}, _vid("data:video/mp4;base64," + base64.b64encode(b"junk").decode()))
    with pytest.raises(InvalidRequest) as exc:
        await prepare_chat(body, LimitsConfig(), fetcher)
    assert exc.value.param == "messages[0].content[1].video_url"
    assert exc.value.code == "invalid_video"


async def test_video_is_fetched_over_http_within_the_size_limit() -> None:
    data = _video(frames=8, fps=8)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=data, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/v.mp4", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}/v.mp4"
        async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
            p = await prepare_chat(_chat(_vid(url)), LimitsConfig(), f)
            assert p.video_tokens == counting.video_prompt_tokens(vision.video_tokens(8, 8.0, 48, 64))
        async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",), max_bytes=len(data) - 1)) as f:
            with pytest.raises(InvalidRequest) as exc:
                await prepare_chat(_chat(_vid(url)), LimitsConfig(), f)
            assert exc.value.code == "invalid_video_url" and "larger than" in str(exc.value)
    finally:
        await server.close()
