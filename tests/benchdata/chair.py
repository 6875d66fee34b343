"""chair: what tests/unit/test_eval_chair.py and tests/integration/test_eval_chair_cli.py share (inputs, official numbers)."""

from __future__ import annotations

CAPTIONS = [
    ("A man riding a horse next to a dog.", ["person", "horse"]),
    ("Two hot dogs on a dining table.", ["hot dog", "dining table"]),
    ("A teddy bear sitting on a couch.", ["teddy bear"]),
    ("A sunny day.", ["car"]),
]


def _expected(m, chair_s=0.6667):
    assert m["n"] == 4 and m["n_mentions"] == 7
    assert {k: round(v["value"], 4) for k, v in m["metrics"].items()} == {
        "chair_s": chair_s,
        "chair_i": 0.2857,
        "recall": 0.8333,
    }
