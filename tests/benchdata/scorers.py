"""scorers: what tests/unit/test_eval_scorers.py and tests/integration/test_eval_scorers_cli.py share (inputs, official numbers)."""

from __future__ import annotations

import json

from prefopt.eval.common import EvalOptions
from prefopt.eval.runner import get_benchmark

OPTS = EvalOptions(rounds=50, seed=0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def score(bench, path, opts=OPTS):
    b = get_benchmark(bench)
    return b.score(b.read_predictions(path, opts), opts)


POPE_ROWS = [
    {"text": "Yes, there is a dog.", "label": "yes", "category": "random"},  # TP
    {"text": "No.", "label": "no", "category": "random"},  # TN
    {"text": "There is not a cat.", "label": "yes", "category": "random"},  # FN
    {"text": "Yes", "label": "no", "category": "adversarial"},  # FP
    {"text": "Yes. But no cat is visible", "label": "yes", "category": "adversarial"},  # TP (first sentence)
    {"text": "I see no car. Yes.", "label": "no", "category": "adversarial"},  # TN
]
