"""amber: what tests/unit/test_eval_amber.py and tests/integration/test_eval_amber_cli.py share (inputs, official numbers)."""

from __future__ import annotations

from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "amber"

ANSWERS, QUERIES, ANNOTATIONS = (
    DATA / f for f in ("answers_sample.json", "query_all_sample.json", "annotations_sample.json")
)
