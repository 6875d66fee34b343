"""POPE under the four-stage template and CHAIR with a custom vocabulary (the shapes world's)."""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError
from prefopt.eval.common import EvalOptions
from prefopt.eval.pope import pope_prompt, yes_no_prediction
from prefopt.eval.runner import get_benchmark
from prefopt.prompts import build_prompt

SHAPES = {"circle": ["circles"], "square": ["squares"], "cross": ["crosses"]}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_four_stage_prompt_and_answer_extraction():
    assert pope_prompt("Is there a cat?", "four_stage") == build_prompt("Is there a cat?", "yes/no", (), "four_stage")
    assert pope_prompt("Is there a cat?", "plain").startswith("Is there a cat?\nAnswer the question")
    # the caption and think stages mention "no"/"not", but only the answer counts
    text = "<caption>There is no cat.</caption> <think>It is not there.</think> <answer>yes</answer>"
    assert yes_no_prediction(text, "four_stage") == "yes"
    assert yes_no_prediction(text, "plain") == "no"  # POPE's rule on the whole text
    assert yes_no_prediction("<answer>No.</answer>", "four_stage") == "no"
    assert yes_no_prediction("<think>unfinished", "four_stage") == "none"
    assert yes_no_prediction("<answer> </answer>", "four_stage") == "none"
    with pytest.raises(ValueError):
        pope_prompt("q", "fancy")


def test_pope_four_stage_scoring(tmp_path):
    """Rows: (yes, answer yes) TP; (no, answer no) TN; (yes, no tag) -> wrong, FN; (no, answer yes) FP.
    accuracy 2/4, precision 1/2, recall 1/2, F1 1/2, yes_ratio 2/4."""
    rows = [
        {"question_id": 1, "label": "yes", "text": "<caption>no</caption><answer>yes</answer>"},
        {"question_id": 2, "label": "no", "text": "<answer>no</answer>"},
        {"question_id": 3, "label": "yes", "text": "<prethink>yes"},
        {"question_id": 4, "label": "no", "text": "<think>not sure</think><answer>yes</answer>"},
    ]
    bench, opts = get_benchmark("pope"), EvalOptions(rounds=10, template="four_stage")
    metrics = bench.score(bench.read_predictions(_jsonl(tmp_path / "p.jsonl", rows), opts), opts)["metrics"]
    values = {k: v["value"] for k, v in metrics.items()}
    assert values == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5})


def test_pope_items_use_the_template(tmp_path):
    data = _jsonl(tmp_path / "pope.jsonl", [{"question_id": 0, "image": "a.png", "text": "Is there a dog?", "label": "no"}])
    (item,) = get_benchmark("pope").load_items(data, EvalOptions(template="four_stage"))
    assert "<prethink>" in item.prompt and item.prompt.startswith("Is there a dog?")


def test_chair_with_a_custom_vocabulary(tmp_path):
    """Caption 1 mentions circle, square (gt circle): 1 hallucinated of 2; caption 2 mentions crosses
    twice and a circle (gt cross, circle): none hallucinated. CHAIRi = 1/5, CHAIRs = 1/2, recall 3/3."""
    vocab = tmp_path / "world.json"
    vocab.write_text(json.dumps({"seed": 0, "synonyms": SHAPES}))
    rows = [
        {"id": 1, "text": "There is a red circle and a blue square.", "objects": ["circle"]},
        {"id": 2, "text": "Two crosses, a cross and circles.", "objects": ["crosses", "circle"]},
    ]
    bench, opts = get_benchmark("chair"), EvalOptions(rounds=10, vocabulary=str(vocab))
    result = bench.score(bench.read_predictions(_jsonl(tmp_path / "c.jsonl", rows), opts), opts)
    values = {k: v["value"] for k, v in result["metrics"].items()}
    assert values == pytest.approx({"chair_s": 0.5, "chair_i": 0.2, "recall": 1.0})
    assert result["n_mentions"] == 5


def test_chair_vocabulary_errors_name_the_culprit(tmp_path):
    vocab = tmp_path / "shapes.json"
    vocab.write_text(json.dumps(SHAPES))
    rows = _jsonl(tmp_path / "c.jsonl", [{"id": 1, "text": "a circle", "objects": ["circle"]},
                                         {"id": 2, "text": "a star", "objects": ["star"]}])
    bench = get_benchmark("chair")
    with pytest.raises(DataError, match=r"'star' is not a class of the vocabulary .*shapes.json") as err:
        bench.read_predictions(rows, EvalOptions(vocabulary=str(vocab)))
    assert "c.jsonl" in str(err.value) and "2" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"circle": "circles"}))
    with pytest.raises(DataError, match="bad.json"):
        bench.read_predictions(rows, EvalOptions(vocabulary=str(bad)))
