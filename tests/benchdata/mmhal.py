"""mmhal: what tests/unit/test_eval_mmhal.py and tests/integration/test_eval_mmhal_cli.py share (inputs, official numbers)."""

from __future__ import annotations

import json

from prefopt.eval.mmhal_scoring import (
    judge_prompt,
)
from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "mmhal"

TEMPLATE = DATA / "response_template_sample.json"

RECORDS = json.loads(TEMPLATE.read_text())

REPLIES = json.loads((DATA / "judge_replies.json").read_text())

OFFICIAL_SCORE = 1.5520833333333333

OFFICIAL_HALLUCINATION = 0.7291666666666666


def _replay_judge():
    recorded = {}
    for rec, reply in zip(RECORDS, REPLIES, strict=True):
        recorded[
            judge_prompt(rec["image_content"], rec["question"], rec["gt_answer"], rec["model_answer"])
        ] = reply
    return recorded
