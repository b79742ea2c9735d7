"""Video files as sampled frames (PyAV, the `video` extra), with the same bounded, typed errors
as images.py: a video that cannot be used is a `VideoError` whose `.reason` is the item's error.

    read_video(source, video, limits)   -> VideoFrames (sampled PIL frames + timestamps + facts)
    aggregate(scores)                   -> the video's score from its frames' scores (the rule below)

Sampling: `VideoLimits.frames` evenly spaced frames (at the middle of N equal slices of the
duration), or, with `fps` > 0, one frame every 1/fps seconds; never more than `max_frames`.
Far-apart targets are reached by seeking to the nearest key frame, not by decoding everything.

Limits (each a per-item error): file bytes (`max_bytes`, from the stat before anything is
read), duration (`max_seconds`, from the container, or from the packets when it declares none),
frame size (`limits.max_pixels`, from the stream header before decoding). Errors: `too_large`,
`too_many_pixels`, `unreadable`, `empty`, `video_unsupported` (no video stream, unknown codec,
PyAV not installed), `video_corrupt`, `video_empty` (no decodable frame), `video_too_long`.

The aggregate rule: the video's score is the mean of its top-k frame scores, k = ceil(n / 4)
(`topk_mean`). The max alone turns a real video fake on one noisy frame; the mean dilutes a
video whose generated part is short. The mean and max are reported beside it.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..images import (DEFAULT_LIMITS, DecompressionBombError, EmptyFileError, FileTooLargeError, ImageError,
                      ImageLimits, UnreadableFileError, check_file, sha256_hex, to_rgb)
from .samples import VIDEO_SUFFIXES, is_video_name

SEEK_GAP = 4.0  # seconds between targets beyond which seeking beats decoding through


def looks_like_video(data: bytes) -> bool:
    """By content, for uploads without a trustworthy name: MP4/MOV (ftyp, not HEIF/AVIF), Matroska/WebM, AVI."""
    if data[4:8] == b"ftyp":
        return data[8:12] not in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")
    return data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


@dataclass(frozen=True)
class VideoLimits:
    frames: int = 16                  # evenly spaced frames per video (when fps is 0)
    fps: float = 0.0                  # > 0: sample this many frames per second instead
    max_frames: int = 256             # sampled frames per video, at most
    max_bytes: int = 2 * 2**30        # file size
    max_seconds: float = 3 * 3600.0   # duration


DEFAULT_VIDEO_LIMITS = VideoLimits()


class VideoError(ImageError):
    code = "video_error"


class UnsupportedVideoError(VideoError):
    code = "video_unsupported"


class CorruptVideoError(VideoError):
    code = "video_corrupt"


class EmptyVideoError(VideoError):
    code = "video_empty"


class VideoTooLongError(VideoError):
    code = "video_too_long"


@dataclass
class VideoFrames:
    sha256: str
    duration: float
    times: list[float] = field(default_factory=list)
    frames: list = field(default_factory=list)   # PIL RGB images, one per time
    width: int = 0
    height: int = 0
    codec: str = ""

    def info(self) -> dict:
        return {"duration": round(self.duration, 3), "width": self.width, "height": self.height, "codec": self.codec,
                "sampled": len(self.frames)}


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_source(source, video: VideoLimits, name) -> tuple[object, str]:
    """(what av.open reads, sha256), refused by size before a byte of a file is read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise EmptyFileError("file is empty (0 bytes)", name)
        if len(data) > video.max_bytes:
            raise FileTooLargeError(f"video is {len(data):,} bytes, over the limit of {video.max_bytes:,} bytes", name)
        return io.BytesIO(data), sha256_hex(data)
    path = os.fspath(source)
    if check_file(path, ImageLimits(max_bytes=video.max_bytes), name).st_size == 0:
        raise EmptyFileError("file is empty (0 bytes)", name)
    try:
        return path, _file_sha256(path)
    except OSError as e:
        raise UnreadableFileError(f"cannot read: {e.strerror or e}", name) from None


def sample_times(duration: float, video: VideoLimits) -> list[float]:
    """Seconds from the stream's start at which a frame is taken."""
    if video.fps > 0:
        n = min(video.max_frames, max(1, math.ceil(duration * video.fps)))
        return [min(duration, (i + 0.5) / video.fps) for i in range(n)]
    n = max(1, min(video.frames, video.max_frames))
    return [duration * (i + 0.5) / n for i in range(n)]


def read_video(source, video: VideoLimits = DEFAULT_VIDEO_LIMITS, limits: ImageLimits = DEFAULT_LIMITS,
               name: object = None) -> VideoFrames:
    """A video file (path) or its bytes -> sampled RGB frames, or a VideoError / ImageError."""
    name = name if name is not None else (os.fspath(source) if isinstance(source, (str, os.PathLike)) else None)
    try:
        import av
    except ImportError:
        raise UnsupportedVideoError("reading video needs PyAV: pip install 'fakescope[video]'", name) from None
    src, sha = _open_source(source, video, name)
    try:
        container = av.open(src, mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise CorruptVideoError(f"not a video fakescope can open ({_av_message(e)})", name) from None
    try:
        return _read(av, container, sha, video, limits, name)
    except av.FFmpegError as e:
        raise CorruptVideoError(f"cannot decode: {_av_message(e)}", name) from None
    finally:
        container.close()


def _av_message(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__)[:160]


def _read(av, container, sha: str, video: VideoLimits, limits: ImageLimits, name) -> VideoFrames:
    if not container.streams.video:
        raise UnsupportedVideoError("no video stream in this file", name)
    stream = container.streams.video[0]
    ctx = stream.codec_context
    w, h = int(ctx.width or 0), int(ctx.height or 0)
    if w * h > limits.max_pixels:
        raise DecompressionBombError(f"{w}x{h} = {w * h:,} pixels per frame, over the limit of {limits.max_pixels:,}", name)
    if ctx.codec is None or not getattr(ctx.codec, "name", None):
        raise UnsupportedVideoError("unknown video codec", name)
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    duration = _duration(container, stream, video, name)
    if duration > video.max_seconds:
        raise VideoTooLongError(f"video lasts {duration:,.0f} s, over the limit of {video.max_seconds:,.0f} s", name)
    out = VideoFrames(sha, duration, width=w, height=h, codec=ctx.codec.name)
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    tol = 0.5 / rate
    decoder, last = None, -math.inf
    for target in sample_times(duration, video):
        target += start
        if decoder is None or target - last > SEEK_GAP:
            if decoder is not None or target - start > SEEK_GAP:
                try:
                    container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
                except av.FFmpegError:  # a stream that cannot seek: decode on from here
                    pass
            decoder = container.decode(stream)
        for frame in decoder:
            t = float(frame.time) if frame.time is not None else last + 1.0 / rate
            last = t
            if t >= target - tol:
                out.times.append(round(t - start, 3))
                out.frames.append(to_rgb(frame.to_image()))
                break
        else:  # the stream ended before this target: the later ones cannot be reached either
            break
    if not out.frames:
        raise EmptyVideoError("no frame could be decoded (zero-length or empty video stream)", name)
    return out


def _duration(container, stream, video: VideoLimits, name) -> float:
    """Seconds, from the stream or the container header, else from the packets' timestamps (demuxed
    only, never decoded) while they stay under the limit."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000
    end, tb = 0.0, stream.time_base
    for packet in container.demux(stream):
        if packet.pts is not None and tb:
            end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
            if end > video.max_seconds:
                break
    container.seek(0, stream=stream)
    return end


def aggregate(scores: list[float]) -> dict:
    """The video's score from its frames' P(fake): mean, max and the mean of the top k = ceil(n/4)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    k = max(1, math.ceil(len(s) / 4))
    return {"rule": "topk_mean", "k": k, "mean": float(s.mean()), "max": float(s[0]), "topk_mean": float(s[:k].mean())}


__all__ = ["VIDEO_SUFFIXES", "VideoLimits", "DEFAULT_VIDEO_LIMITS", "VideoError", "UnsupportedVideoError",
           "CorruptVideoError", "EmptyVideoError", "VideoTooLongError", "VideoFrames", "is_video_name",
           "looks_like_video", "read_video", "sample_times", "aggregate"]
