"""Ground-R1 crop geometry (issue 16, item 13): the final box lies inside the image, each side is at least
min(28, image side), and the crop's pixel size equals the box's.

Seed rule (zzzhhzzz/Ground-R1, SPEC 2): a box in the resized input's coordinates is rescaled to the original
image, forced to at least 28 px per side and cropped; the input size is Qwen2.5-VL's ``smart_resize`` of the
image (factor 28, max_pixels 401408), so rescaling by W / w_in is inexact in floating point.
"""

from __future__ import annotations

import random

import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from prefopt.grpo import grounded


def _input_size(width, height, max_pixels=401408):
    h, w = smart_resize(height, width, factor=28, min_pixels=4 * 28 * 28, max_pixels=max_pixels)
    return w, h


BUDGETS = (401408, 344 * 28 * 28, 128 * 28 * 28)  # the recipes' max_pixels, and two smaller budgets


def test_full_image_box_on_200_by_1758():
    # with max_pixels 344·28² the model sees 168 x 1512; 1512 * (1758 / 1512) = 1758.0000000000002 in floating
    # point, whose ceiling made the crop box (0, 0, 200, 1759): one row past the image
    assert _input_size(200, 1758, 344 * 28 * 28) == (168, 1512)
    assert 1512 * (1758 / 1512) > 1758
    region = grounded.locate("<box>[0,0,168,1512]</box>", (168, 1512), (200, 1758))
    assert region.reason == "ok" and region.crop_box == (0, 0, 200, 1758)
    image = Image.new("RGB", (200, 1758))
    assert grounded.crop(image, region.crop_box).size == (200, 1758)


SIZES = [(w, h) for w in range(30, 2000, 43) for h in range(30, 2000, 43)] + [(20, 300), (300, 20), (5, 60)]


def _check(box, size):
    W, H = size
    x1, y1, x2, y2 = box
    assert all(isinstance(v, int) for v in box), box
    assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, (box, size)
    assert x2 - x1 >= min(28, W) and y2 - y1 >= min(28, H), (box, size)


def test_full_image_box_is_the_whole_image_for_every_size_pair():
    bad = []
    for budget in BUDGETS:
        for size in SIZES:
            w_in, h_in = _input_size(*size, budget)
            region = grounded.locate(f"<box>[0,0,{w_in},{h_in}]</box>", (w_in, h_in), size)
            if region.crop_box != (0, 0, *size):
                bad.append((size, budget, region.crop_box))
    assert not bad, f"{len(bad)} of {len(SIZES) * len(BUDGETS)} cases: {bad[:5]}"


def test_random_boxes_stay_inside_with_min_sides():
    rng = random.Random(0)
    for size in SIZES:
        w_in, h_in = _input_size(*size)
        for _ in range(4):
            xs = sorted(rng.uniform(-5, w_in + 5) for _ in range(2))
            ys = sorted(rng.uniform(-5, h_in + 5) for _ in range(2))
            text = f"<box>[{xs[0]:.1f},{ys[0]:.1f},{xs[1]:.1f},{ys[1]:.1f}]</box>"
            region = grounded.locate(text, (w_in, h_in), size, max_aspect=float("inf"))
            _check(region.crop_box, size)


@pytest.mark.parametrize("size, text, input_size, expected", [
    ((100, 100), "<box>[96,96,100,100]</box>", (100, 100), (72, 72, 100, 100)),  # 4 px grown to 28, shifted back
    ((20, 100), "<box>[5,5,6,6]</box>", (20, 100), (0, 0, 20, 28)),  # narrower than 28: the whole width
    # x rounds out to [10, 21] (11 px), 17 more: 8 left, 9 right -> [2, 30]; y to [5, 15] (10 px), 18 more:
    # 9 up and 9 down -> [-4, 24], shifted down by 4 -> [0, 28]
    ((64, 48), "<box>[10.2,5.7,20.1,15.0]</box>", (64, 48), (2, 0, 30, 28)),
])
def test_hand_worked_final_boxes(size, text, input_size, expected):
    region = grounded.locate(text, input_size, size)
    assert region.crop_box == expected
    crop = grounded.crop(Image.new("RGB", size), region.crop_box)
    assert crop.size == (expected[2] - expected[0], expected[3] - expected[1])
