"""A video's token cost from its container's metadata, read with PyAV (no frame is kept).

The model server decodes the video itself; the gateway only needs what transformers' loader reads to
sample it (``video_utils.read_video_pyav``): the first video stream's frame count, average frame rate,
width and height. CPU-bound and blocking: the gateway runs :func:`probe` in a worker thread. Every
failure is a :class:`VideoError` whose message is safe to show a client.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

from frugalserve.budget import vision


class VideoError(ValueError):
    """A video that cannot be used; the message is for the client."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float | None  # None: the container states none (the processor then assumes 24)
    width: int
    height: int

    def tokens(self) -> vision.VideoTokens:
        try:
            return vision.video_tokens(self.frames, self.fps, self.height, self.width)
        except ValueError as exc:  # too few frames, aspect ratio over 200
            raise VideoError(f"unusable video ({exc})") from None


def probe(data: bytes, max_pixels: int) -> VideoInfo:
    """Read the first video stream's metadata and decode its first frame (a corrupt stream fails here, not in
    the model server). ``max_pixels`` bounds one frame, checked before decoding."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoError("not a video (no video stream)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width < 1 or height < 1:
                raise VideoError("video has no pixels")
            if width * height > max_pixels:
                raise VideoError(f"video frames have {width}x{height} pixels, more than the limit of {max_pixels}")
            rate = stream.average_rate
            fps = float(rate) if rate else None
            frames = stream.frames
            if next(container.decode(stream), None) is None:
                raise VideoError("video has no decodable frame")
            if frames <= 0:
                # Containers that do not state it (WebM, Matroska): count the packets, without decoding.
                container.seek(0)
                frames = sum(1 for p in container.demux(stream) if p.size)
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError) as exc:
        raise VideoError(f"not a readable video ({exc})") from None
    return VideoInfo(frames=frames, fps=fps, width=width, height=height)
