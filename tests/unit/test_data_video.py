"""Video frame sampling on small videos written here with PyAV."""

from __future__ import annotations

import numpy as np
import pytest

from prefopt.data.video import fit_pixels, load_video_frames, sample_times
from prefopt.errors import ImageError, PrefoptError
from tests.helpers import write_clip

av = pytest.importorskip("av")


def _write_video(path, n_frames=20, rate=10, size=(64, 32)):
    """Frame i is a flat grey of value 12*i, so a sampled frame's mean tells which frame it was."""
    return write_clip(path, n_frames=n_frames, rate=rate, size=size, step=12)


def _which_frame(img) -> int:
    return round(float(np.asarray(img).mean()) / 12)


def test_sample_times_hand_computed():
    # 2 s at 2 fps: every 0.5 s -> 4 frames (under the cap of 16).
    assert sample_times(2.0, 16, 2.0) == [0.0, 0.5, 1.0, 1.5]
    # 2 s at 10 fps would be 20 frames; capped at 4, spread evenly: step 2/4 = 0.5 s.
    assert sample_times(2.0, 4, 10.0) == [0.0, 0.5, 1.0, 1.5]
    # A clip shorter than one sampling interval still gives one frame.
    assert sample_times(0.2, 16, 2.0) == [0.0]


def test_fit_pixels_keeps_aspect_and_budget():
    from PIL import Image

    img = fit_pixels(Image.new("RGB", (400, 100)), 10_000)
    # scale = sqrt(10000 / 40000) = 0.5 -> 200 x 50 = 10000 pixels, aspect 4:1 kept.
    assert img.size == (200, 50)
    small = Image.new("RGB", (10, 10))
    assert fit_pixels(small, 10_000) is small  # never enlarged


def test_frames_sampled_at_fps(tmp_path):
    _write_video(tmp_path / "clip.mp4")  # 20 frames at 10 fps = 2 s
    frames = load_video_frames("clip.mp4", num_frames=16, fps=2.0, root=tmp_path)
    # Targets 0, 0.5, 1.0, 1.5 s are frames 0, 5, 10, 15.
    assert [_which_frame(f) for f in frames] == [0, 5, 10, 15]
    assert all(f.mode == "RGB" and f.size == (64, 32) for f in frames)


def test_frames_capped_and_resized(tmp_path):
    _write_video(tmp_path / "clip.mp4")
    frames = load_video_frames(tmp_path / "clip.mp4", num_frames=3, fps=10.0, max_pixels=512)
    # Capped at 3 frames over 2 s: step 2/3 s -> targets 0, 0.667, 1.333 -> frames 0, 6, 13.
    assert [_which_frame(f) for f in frames] == [0, 6, 13]
    # 64x32 into 512 pixels: scale sqrt(512/2048) = 0.5 -> 32x16.
    assert all(f.size == (32, 16) for f in frames)


def test_video_errors(tmp_path):
    with pytest.raises(ImageError, match="video file not found"):
        load_video_frames("missing.mp4", root=tmp_path)
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 20)
    with pytest.raises(ImageError, match="junk.mp4"):
        load_video_frames(tmp_path / "junk.mp4")
    with pytest.raises(ImageError, match="escapes"):
        load_video_frames("../x.mp4", root=tmp_path)
    with pytest.raises(PrefoptError, match="num_frames"):
        load_video_frames(tmp_path / "junk.mp4", num_frames=0)


def test_stream_without_duration(tmp_path):
    """A raw MJPEG stream records no duration: it is measured by decoding (PyAV assumes 25 fps)."""
    path = tmp_path / "raw.mjpeg"
    with av.open(str(path), "w", format="mjpeg") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuvj420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((32, 64, 3), 12 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = load_video_frames(path, num_frames=16, fps=10.0)
    # 20 frames at 0.04 s -> 0.8 s -> 8 targets 0, 0.1, ..., 0.7 s; the frame on screen at t is
    # frame floor(t / 0.04): 0, 2, 5, 7, 10, 12, 15, 17.
    assert [_which_frame(f) for f in frames] == [0, 2, 5, 7, 10, 12, 15, 17]
