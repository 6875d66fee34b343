"""IoU / GIoU against hand-computed values and box parsing."""

from __future__ import annotations

import pytest

from prefopt.rewards.grounding import giou, giou_score, iou, parse_box, parse_boxes


def test_iou_hand_worked():
    # [0,0,2,2] and [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7.
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert iou([2, 2, 0, 0], [0, 0, 2, 2]) == 1.0  # swapped corners are reordered
    assert iou([1, 1, 1, 1], [0, 0, 2, 2]) == 0.0  # degenerate box


def test_giou_hand_worked():
    # Overlapping: IoU 1/7, hull [0,0,3,3] = 9 -> 1/7 - (9 - 7)/9.
    assert giou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7 - 2 / 9)
    # Disjoint: IoU 0, union 2, hull [0,0,3,1] = 3 -> -(3 - 2)/3.
    assert giou([0, 0, 1, 1], [2, 0, 3, 1]) == pytest.approx(-1 / 3)
    # Far apart: GIoU tends to -1.
    assert giou([0, 0, 1, 1], [1000, 1000, 1001, 1001]) == pytest.approx(-1, abs=1e-5)
    assert giou_score([0, 0, 1, 1], [2, 0, 3, 1]) == pytest.approx((1 - 1 / 3) / 2)


def test_parse_boxes():
    text = "<think>look</think><box>[10, 20.5, 30,40]</box> and [1,2,3,4]"
    assert parse_boxes(text) == [(10.0, 20.5, 30.0, 40.0), (1.0, 2.0, 3.0, 4.0)]
    assert parse_box(text) == (1.0, 2.0, 3.0, 4.0)
    assert parse_box("[1, 2, 3]") is None
    with pytest.raises(ValueError, match="4 numbers"):
        iou([1, 2, 3], [1, 2, 3, 4])
