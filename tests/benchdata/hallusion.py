"""hallusion: what tests/unit/test_eval_hallusion.py and tests/integration/test_eval_hallusion_cli.py share (inputs, official numbers)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "hallusion"

PREDICTIONS = DATA / "predictions_sample.json"

ROWS = json.loads(PREDICTIONS.read_text())

REPLIES = json.loads((DATA / "judge_replies.json").read_text())

OFFICIAL = {
    "aAcc": 0.663265,
    "qAcc": 0.402439,
    "fAcc": 0.301887,
    "easy_aAcc": 0.646341,
    "hard_aAcc": 0.483871,
}

OFFICIAL_VS = {"aAcc": 0.677966, "qAcc": 0.422222, "fAcc": 0.227273, "easy_aAcc": 0.488889, "hard_aAcc": 0.56}


def _close(got, want):
    assert set(want) <= set(got)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-4), k
