"""HallusionBench scoring against tianyi-lab/HallusionBench ``evaluation.py`` on recorded judge replies.

tests/data/hallusion/predictions_sample.json: 196 rows of the official ``HallusionBench.json`` (the
first three figure sets of each category/subcategory) with ``model_prediction`` added (144 from the
official ``HallusionBench_result_sample.json``, the rest messy made-up answers); judge_replies.json:
one recorded judge reply per row (see the README there).

Expected numbers: obtained once by running the official ``evaluation.py`` (commit 744007c) in /tmp
on predictions_sample.json saved as ``HallusionBench_result.json``, with a stand-in ``openai``
module whose ``ChatCompletion.create`` returns the recorded reply of each prompt (and "different"
to the consistency question, which feeds only the LH/VI/Mixed analysis), and ``print(tab1)``,
``print(tab3)``, ``print(tab2)`` appended to print its per-question, per-pair and per-figure tables.
Printed percentages are stored / 100.  The robust numbers come from the same official metric code
fed the robust verdict of each reply (the stand-in returned "correct"/"incorrect"/"unclear").
"""

from __future__ import annotations

import json

import pytest

from prefopt.errors import PrefoptError
from prefopt.eval.common import EvalOptions
from prefopt.eval.hallusion_scoring import judge_prompt, score_hallusion, verdict_official, verdict_robust
from prefopt.eval.runner import get_benchmark
from tests.benchdata.hallusion import OFFICIAL, OFFICIAL_VS, PREDICTIONS, REPLIES, ROWS, _close

# evaluation.py leaderboard / tables on the recorded replies (percent / 100)
OFFICIAL_VD = {
    "aAcc": 0.641026,
    "qAcc": 0.378378,
    "fAcc": 0.354839,
    "easy_aAcc": 0.837838,
    "hard_aAcc": 0.432432,
}
OFFICIAL_FIGURES = {"correct": 0.301887, "inconsistent": 0.584906, "wrong": 0.113208, "score": 0.6297}
OFFICIAL_BIAS = {"pct_diff": 0.10204081632653056, "fp_ratio": 0.6515151515151515}
ROBUST = {"aAcc": 0.688776, "qAcc": 0.390244, "fAcc": 0.339623, "easy_aAcc": 0.707317, "hard_aAcc": 0.451613}
ROBUST_BIAS = {"pct_diff": 0.13775510204081626, "fp_ratio": 0.7213114754098361}




def test_official_prompt_text():
    """The prompt equals what the official utils.py builds for question "Q?", reference "REF", answer "PRED"."""
    expected = (
        "Imagine you are an intelligent teacher. Thoroughly read the question, reference answer and the "
        "prediction answer to ensure a clear understanding of the information provided. Assess the correctness "
        "of the predictions. If the prediction answer does not conflict with the reference answer, please "
        "generate \u201ccorrect\u201d. If the prediction answer conflict with the reference answer, please generate "
        '\u201cincorrect\u201d. If the prediction answer is unclear about the answer, please generate "unclear". '
        "\n\n Question:Q?\nReference answer: REF\nPrediction answer:PRED\nOutput:"
    )
    assert judge_prompt("Q?", "REF", "PRED") == expected


@pytest.mark.parametrize(
    ("reply", "official", "robust"),
    [
        ("Correct", "1", "1"),
        ("“incorrect”", "0", "0"),
        ("The prediction is not incorrect.", "0", "1"),
        ("Unclear; I cannot say it is correct.", "1", "2"),
        ("Correct. It would be incorrect only if the figure were edited.", "0", "1"),
        ("The prediction is not correct.", "1", "0"),
        ("The answer does not commit to yes or no.", "2", "2"),
        (None, "2", "2"),
    ],
)
def test_readings(reply, official, robust):
    assert verdict_official(reply) == official and verdict_robust(reply) == robust


def _parsed(rows=ROWS):
    bench = get_benchmark("hallusion")
    return [bench.parse_prediction(r, "p.json", i + 1, EvalOptions()) for i, r in enumerate(rows)]


def test_official_matches_evaluation_py():
    """Unclear counts right on the 45 figure-less VS questions; fAcc skips them (53 figures)."""
    _, m = score_hallusion(_parsed(), REPLIES, "official")
    _close(m["overall"], OFFICIAL)
    _close(m["by_category"]["VD"], OFFICIAL_VD)
    _close(m["by_category"]["VS"], OFFICIAL_VS)
    _close(m["figures"], OFFICIAL_FIGURES)
    # the official per-figure "Wrong" column is inconsistent + wrong: VD 64.5161, VS 77.2727
    for cat, wrong in (("VD", 0.645161), ("VS", 0.772727)):
        f = m["by_category"][cat]["figures"]
        assert f["inconsistent"] + f["wrong"] == pytest.approx(wrong, abs=1e-4)
    assert m["yes_no_bias"] == pytest.approx(OFFICIAL_BIAS, abs=1e-9)
    # 8 "not incorrect" + 5 "Correct. It would be incorrect..." + 14 "Unclear; ... correct." replies
    assert m["parse_disagreements"] == 27 and m["n_unparsed"] == 17 and m["scoring"] == "official"


def test_robust_reading_same_definitions():
    _, m = score_hallusion(_parsed(), REPLIES, "robust")
    _close(m["overall"], ROBUST)
    assert m["yes_no_bias"] == pytest.approx(ROBUST_BIAS, abs=1e-9)
    assert m["n_unparsed"] == 31 and m["parse_disagreements"] == 27




def test_without_judge(tmp_path):
    bench = get_benchmark("hallusion")
    rows = bench.read_predictions(PREDICTIONS, EvalOptions())
    with pytest.raises(PrefoptError, match="needs an LLM judge.*--scoring robust"):
        bench.score(rows, EvalOptions(rounds=5))
    m = bench.score(rows, EvalOptions(rounds=5, scoring="robust"))
    assert m["correctness"] == "yes/no rule" and m["parse_disagreements"] == 0


def test_rule_based_hand_computed(tmp_path):
    """Robust, no judge.  Set (VD, illusion, 0): f0q0 gt yes "Yes" ok; f0q1 gt no "No" ok; f1q0 gt no
    "Yes" wrong; f1q1 gt yes ok.  Set (VS, chart, 1): f0q0 gt yes "Yes" ok (asked without figure).

    aAcc 4/5 = .8.  qAcc: (VD,0,q0) has a wrong answer, (VD,0,q1) and (VS,1,q0) are right -> 2/3.
    fAcc: (VD,0,f0) right, (VD,0,f1) wrong; the figure-less (VS,1,f0) is left out -> 1/2.
    """

    def row(cat, sub, s, f, q, gt, text, vi):
        keys = ("category", "subcategory", "set_id", "figure_id", "question_id", "gt_answer", "text")
        return {
            **dict(zip(keys, (cat, sub, s, f, q, gt, text), strict=True)),
            "question": "?",
            "visual_input": vi,
        }

    rows = [
        row("VD", "illusion", 0, 0, 0, "1", "Yes", "1"),
        row("VD", "illusion", 0, 0, 1, "0", "No", "1"),
        row("VD", "illusion", 0, 1, 0, "0", "Yes", "2"),
        row("VD", "illusion", 0, 1, 1, "1", "Yes", "2"),
        row("VS", "chart", 1, 0, 0, "1", "Yes", "0"),
    ]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = get_benchmark("hallusion")
    opts = EvalOptions(rounds=20, scoring="robust")
    m = bench.score(bench.read_predictions(path, opts), opts)
    values = {k: round(v["value"], 4) for k, v in m["metrics"].items()}
    assert values == {"aAcc": 0.8, "qAcc": 0.6667, "fAcc": 0.5, "easy_aAcc": 1.0, "hard_aAcc": 0.5}


def test_failed_judge_call_counts_wrong():
    """A VS question without its figure: "unclear" is right there, but a failed call must not be."""
    row = {"category": "VS", "subcategory": "chart", "set_id": "0", "figure_id": "0", "question_id": "0"}
    row |= {"visual_input": "0", "gt_answer": "0"}
    items, m = score_hallusion([row, row | {"question_id": "1"}], ["unclear", None], "official")
    assert [it["correct"] for it in items] == [True, False] and m["n_judge_failed"] == 1
