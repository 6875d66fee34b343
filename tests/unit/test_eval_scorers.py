"""Scorers on small hand-made files; expected metrics worked out by hand in each docstring."""

from __future__ import annotations

import numpy as np
import pytest

from prefopt.errors import DataError
from prefopt.eval.bootstrap import bootstrap
from prefopt.eval.common import EvalOptions
from prefopt.eval.runner import get_benchmark
from tests.benchdata.scorers import OPTS, POPE_ROWS, score, write_jsonl


def values(metrics):
    return {k: round(v["value"], 4) for k, v in metrics.items()}






def test_pope_metrics(tmp_path):
    """TP=2 (rows 1, 5), TN=2 (2, 6), FN=1 (3), FP=1 (4).

    accuracy 4/6 = .6667; precision 2/(2+1) = .6667; recall 2/(2+1) = .6667; F1 .6667;
    yes_ratio = 3 yes answers (1, 4, 5) / 6 = .5.
    random: TP, TN, FN -> acc 2/3, precision 1/1, recall 1/2, F1 2*.5/1.5 = .6667, yes_ratio 1/3.
    adversarial: FP, TP, TN -> acc 2/3, precision 1/2, recall 1/1, F1 .6667, yes_ratio 2/3.
    """
    m = score("pope", write_jsonl(tmp_path / "p.jsonl", POPE_ROWS))
    assert m["n"] == 6
    assert values(m["metrics"]) == {
        "accuracy": 0.6667,
        "precision": 0.6667,
        "recall": 0.6667,
        "f1": 0.6667,
        "yes_ratio": 0.5,
    }
    assert values(m["categories"]["random"]) == {
        "accuracy": 0.6667,
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "yes_ratio": 0.3333,
    }
    assert values(m["categories"]["adversarial"]) == {
        "accuracy": 0.6667,
        "precision": 0.5,
        "recall": 1.0,
        "f1": 0.6667,
        "yes_ratio": 0.6667,
    }
    for iv in m["metrics"].values():
        assert 0.0 <= iv["ci_low"] <= iv["ci_high"] <= 1.0


def test_bootstrap_deterministic_and_matches_brute_force():
    """Same seed -> same interval; the interval equals percentiles of means over the same index draws."""
    rows = [{"x": float(v)} for v in [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]]

    def mean(rs):
        return {"m": sum(r["x"] for r in rs) / len(rs)}

    a = bootstrap(rows, mean, rounds=100, seed=7)
    assert a == bootstrap(rows, mean, rounds=100, seed=7)
    assert a != bootstrap(rows, mean, rounds=100, seed=8)
    rng = np.random.default_rng(7)
    xs = np.array([r["x"] for r in rows])
    means = [xs[rng.integers(0, 10, size=10)].mean() for _ in range(100)]
    assert a["m"]["value"] == pytest.approx(0.7)
    assert a["m"]["ci_low"] == pytest.approx(np.percentile(means, 2.5))
    assert a["m"]["ci_high"] == pytest.approx(np.percentile(means, 97.5))
    constant = bootstrap([{"x": 1.0}] * 5, mean, rounds=20, seed=0)["m"]
    assert constant == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}






def test_mcq_letters_and_accuracy(tmp_path):
    """Predictions B (from "B"), C (from "(C) dog"), D (from "The answer is D."), B (the text "dog" equals
    option B), None ("I do not know") against answers B, C, A, B, A: 3 correct of 5 -> accuracy .6.
    Category x: rows 1-2 both correct -> 1.0; category y: rows 3-5 -> 1/3."""
    opts = {"A": "cat", "B": "dog", "C": "cow", "D": "pig"}
    rows = [
        {"text": "B", "answer": "B", "category": "x"},
        {"text": "(C) dog", "answer": "C", "category": "x"},
        {"text": "The answer is D.", "answer": "A", "category": "y"},
        {"text": "dog", "answer": "B", "options": opts, "category": "y"},
        {"text": "I do not know", "answer": "A", "options": opts, "category": "y"},
    ]
    m = score("mcq", write_jsonl(tmp_path / "mcq.jsonl", rows))
    assert values(m["metrics"]) == {"accuracy": 0.6}
    assert values(m["categories"]["x"]) == {"accuracy": 1.0}
    assert values(m["categories"]["y"]) == {"accuracy": 0.3333}
    assert m["n_unparsed"] == 1


def test_mcq_reads_mmbench_tsv(tmp_path):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    tsv = tmp_path / "mmbench.tsv"
    tsv.write_text(
        "index\tquestion\thint\tA\tB\tC\tanswer\tcategory\timage\n"
        f"0\tWhat colour?\tLook closely\tred\tblue\tnan\tA\tcolour\t{b64}\n"
        "1\tIs it red?\tnan\tyes\tno\tnan\tA\tcolour\t0\n"
    )
    items = get_benchmark("mcq").load_items(tsv, OPTS)
    assert items[0].prompt.splitlines()[:4] == ["Hint: Look closely", "What colour?", "A. red", "B. blue"]
    assert items[1].images[0] == buf.getvalue()  # MMBench: image given as another row's index
    assert items[1].meta["options"] == {"A": "yes", "B": "no"}


def test_refcoco_acc_at_half(tmp_path):
    """Ground truth [0, 0, 10, 10] (row 4 written as xywh [2, 2, 4, 4] -> [2, 2, 6, 6]).

    IoUs: identical box 1; [0,0,10,5] 50/100 = .5 (counts); [5,5,15,15] 25/175 = 1/7; no box 0;
    row 5 relative [0, 0, .5, .5] of a 20x20 image -> [0, 0, 10, 10] vs xywh-converted [0,0,10,10] -> 1.
    With pixel scale (rows 1-4): acc 2/4 = .5; mean IoU (1 + .5 + 1/7 + 0)/4 = .4107.
    """
    rows = [
        {"text": "[0, 0, 10, 10]", "bbox": [0, 0, 10, 10]},
        {"text": '{"bbox_2d": [0, 0, 10, 5]}', "bbox": [0, 0, 10, 10]},
        {"text": "[5,5,15,15]", "bbox": [0, 0, 10, 10]},
        {"text": "somewhere on the left", "bbox": [0, 0, 10, 10]},
    ]
    m = score("refcoco", write_jsonl(tmp_path / "ref.jsonl", rows))
    assert values(m["metrics"]) == {"acc_iou50": 0.5, "mean_iou": 0.4107}
    assert m["n_unparsed"] == 1
    rel = write_jsonl(
        tmp_path / "rel.jsonl",
        [{"text": "[0.0, 0.0, 0.5, 0.5]", "bbox": [0, 0, 10, 10], "width": 20, "height": 20}],
    )
    m = score("refcoco", rel, EvalOptions(rounds=5, bbox_format="xywh", box_scale="unit"))
    assert values(m["metrics"]) == {"acc_iou50": 1.0, "mean_iou": 1.0}
    with pytest.raises(DataError, match="row 1: 'bbox' must be a list of 4 numbers"):
        score("refcoco", write_jsonl(tmp_path / "bad.jsonl", [{"text": "[1,2,3,4]", "bbox": [1, 2]}]))


