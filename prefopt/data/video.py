"""Video frame sampling through PyAV (``av``), for Video-R1 / GWYS prompts with ``data_type: video``.

Frames are sampled at ``fps`` frames per second of video time; a video longer than
``num_frames / fps`` seconds gets ``num_frames`` frames spread evenly over its whole length instead
(the Video-R1 recipe: 2 fps, at most 16 frames). Each frame is shrunk, keeping its aspect ratio, so
that width x height stays within ``max_pixels``; the model's processor then does its own patch-aligned
resize. Frames are decoded in one sequential pass, which works for every container and codec that
FFmpeg reads, including streams whose index does not allow seeking.
"""

from __future__ import annotations

import math
import os

from PIL import Image

from prefopt.data.images import resolve_media_path
from prefopt.errors import ImageError, PrefoptError


def sample_times(duration: float, num_frames: int, fps: float) -> list[float]:
    """Timestamps (seconds) to sample: every ``1/fps`` s, or ``num_frames`` evenly spaced if that is fewer."""
    n_at_fps = max(1, math.floor(duration * fps + 1e-6))
    if n_at_fps <= num_frames:
        return [k / fps for k in range(n_at_fps)]
    step = duration / num_frames
    return [k * step for k in range(num_frames)]


def fit_pixels(img: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink ``img`` keeping its aspect ratio so that width x height <= ``max_pixels`` (never enlarges)."""
    width, height = img.size
    if width * height <= max_pixels:
        return img
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        import av

        return container.duration / av.time_base
    return None


def _frame_time(frame, index: int, rate: float) -> float:
    """Presentation time in seconds; raw streams without timestamps fall back to index / frame rate."""
    return float(frame.time) if frame.time is not None else index / rate


def _frame_times(path: str) -> tuple[list[float], float]:
    """Every frame's timestamp, and the video length, for containers that do not record a duration."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        times = [_frame_time(f, i, rate) for i, f in enumerate(container.decode(stream))]
    if not times:
        raise ImageError(f"video has no decodable frames: {path}")
    return times, times[-1] + 1.0 / rate


def _decode_at(path: str, targets: list[float]) -> list[Image.Image]:
    """The frame on screen at each target time (the last frame starting at or before it)."""
    import av

    frames: list[Image.Image] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        previous = None
        j = 0
        for index, frame in enumerate(container.decode(stream)):
            t = _frame_time(frame, index, rate)
            while j < len(targets) and t > targets[j] + 1e-6:
                frames.append((previous if previous is not None else frame).to_image())
                j += 1
            if j == len(targets):
                break
            previous = frame
        if previous is not None:
            # The last frame stays on screen until the end of the video.
            frames.extend(previous.to_image() for _ in range(len(targets) - j))
    return frames


def load_video_frames(
    path: str | os.PathLike,
    num_frames: int = 16,
    fps: float = 2.0,
    max_pixels: int = 128 * 28 * 28,
    root: str | os.PathLike | None = None,
) -> list[Image.Image]:
    """Decode ``path`` (resolved under ``root``) into at most ``num_frames`` RGB frames sampled at ``fps``."""
    import av

    if num_frames < 1 or fps <= 0 or max_pixels < 1:
        raise PrefoptError(f"video sampling needs num_frames >= 1, fps > 0, max_pixels >= 1 "
                           f"(got {num_frames}, {fps}, {max_pixels})")
    resolved = resolve_media_path(path, root)
    if not os.path.isfile(resolved):
        where = f" (image root {os.fspath(root)!r})" if root is not None else ""
        raise ImageError(f"video file not found: {resolved}{where}")
    try:
        with av.open(resolved) as container:
            if not container.streams.video:
                raise ImageError(f"no video stream in {resolved}")
            duration = _duration(container, container.streams.video[0])
        if not duration or duration <= 0:
            _, duration = _frame_times(resolved)
        frames = _decode_at(resolved, sample_times(duration, num_frames, fps))
    except av.FFmpegError as exc:
        raise ImageError(f"cannot decode video {resolved}: {exc}") from exc
    if not frames:
        raise ImageError(f"video has no decodable frames: {resolved}")
    return [fit_pixels(f.convert("RGB"), max_pixels) for f in frames]
