"""MMHal-Bench scoring against llava-rlhf/LLaVA-RLHF ``Eval/summarize_gpt_mmhal.py`` on recorded judge replies.

tests/data/mmhal/response_template_sample.json is a structurally faithful stand-in for the official
96-record ``response_template.json`` (which lives on a model hub, not in a public repository; see
the README there); judge_replies.json holds one recorded judge reply per record, in the styles a
GPT-4 judge answers with (clean "Rating: N, ...", "**Rating:** N", a revised second rating, "rating:N",
"I would rate this a N", the rating scale quoted back, a bare digit).

Expected numbers: obtained once by running the official ``summarize_gpt_mmhal.py`` (commit 830a083)
in /tmp on the replies wrapped as ``[{"choices": [{"message": {"content": REPLY}}]}]``, with one
line appended that prints the unrounded mean, hallucination rate and per-type means (the script
prints them rounded: "Average score: 1.55", "Hallucination rate: 0.73", "Average score for each
question type: 2.25,1.33,2.25,1.92,1.42,0.58,1.83,0.83"); 42 of the 96 replies drew its
"multiple or zero scores found" warning.
"""

from __future__ import annotations

import json

import pytest

from prefopt.errors import DataError
from prefopt.eval.common import EvalOptions
from prefopt.eval.mmhal_prompt import JUDGE_TEMPLATE
from prefopt.eval.mmhal_scoring import (
    QUESTION_TYPES,
    judge_prompt,
    rating_official,
    rating_robust,
    score_mmhal,
)
from prefopt.eval.runner import get_benchmark
from prefopt.rewards.judge import JudgeConfig
from tests.benchdata.mmhal import (
    OFFICIAL_HALLUCINATION,
    OFFICIAL_SCORE,
    RECORDS,
    REPLIES,
    TEMPLATE,
)

OFFICIAL_PER_TYPE = [
    2.25,
    1.3333333333333333,
    2.25,
    1.9166666666666667,
    1.4166666666666667,
    0.5833333333333334,
]
OFFICIAL_PER_TYPE += [1.8333333333333333, 0.8333333333333334]


@pytest.mark.parametrize(
    ("reply", "official", "robust"),
    [
        ("Explanation.\n\nRating: 5, very informative, no hallucination", 5, 5),
        ("Rating: 4, somewhat informative. To restate: Rating: 4.", 4, 4),
        ("**Rating:** 4", None, 4),
        ("Rating: 5\nOn reflection ... Rating: 2", None, 2),
        ("rating:3", None, 3),
        ("I would rate this response a 3 out of 6.", None, None),
        ("- Rating: 6, very informative\n- Rating: 0, not informative\nMy choice: Rating: 4", None, 4),
        ("3", None, 3),
        (None, None, None),
    ],
)
def test_readings(reply, official, robust):
    assert rating_official(reply) == official and rating_robust(reply) == robust


def test_official_prompt():
    """The official template: in-context examples, then the four fields in its '### ...' sections."""
    prompt = judge_prompt(["Lynx", "Cat"], "How many cats?", "Two cats.", "One cat.")
    assert prompt.startswith("Please act as an impartial and objective judge")
    assert "### Example 5:" in prompt and JUDGE_TEMPLATE.count("{}") == 4
    assert prompt.endswith(
        "### Image Contents\nLynx, Cat\n\n### Question\nHow many cats?\n\n"
        "### Standard Human-Generated Answer\nTwo cats.\n\n### LMM Response to Evaluate\nOne cat.\n"
    )


def _rows(records=RECORDS):
    bench = get_benchmark("mmhal")
    parsed = [bench.parse_prediction(r, "t.json", i + 1, EvalOptions()) for i, r in enumerate(records)]
    return [{**r, "question_type": r["category"]} for r in parsed]


def test_official_matches_summarize_script():
    items, m = score_mmhal(_rows(), REPLIES, "official")
    assert m["score"] == pytest.approx(OFFICIAL_SCORE, abs=1e-9)
    assert m["hallucination_rate"] == pytest.approx(OFFICIAL_HALLUCINATION, abs=1e-9)
    assert list(m["per_type"]) == list(QUESTION_TYPES)
    assert [m["per_type"][t]["score"] for t in QUESTION_TYPES] == pytest.approx(OFFICIAL_PER_TYPE, abs=1e-9)
    assert m["n_unparsed"] == 42 and m["n"] == 96 and m["scoring"] == "official"
    assert all(it["score"] == 0 for it in items if it["rating"] is None)


def test_robust_hand_computed_on_sample():
    """Robust reads more ratings and leaves the unreadable ones out; checked against a direct computation."""
    items, m = score_mmhal(_rows(), REPLIES, "robust")
    rated = [rating_robust(r) for r in REPLIES]
    kept = [x for x in rated if x is not None]
    assert m["n_unparsed"] == rated.count(None)
    assert m["score"] == pytest.approx(sum(kept) / len(kept))
    assert m["hallucination_rate"] == pytest.approx(sum(x < 3 for x in kept) / len(kept))
    assert m["parse_disagreements"] == sum(rating_official(r) != rating_robust(r) for r in REPLIES)
    assert m["score"] > OFFICIAL_SCORE


def test_order_is_checked():
    with pytest.raises(ValueError, match="needs all 96 questions in the official order.*got 95"):
        score_mmhal(_rows(RECORDS[:95]), REPLIES[:95], "official")
    swapped = [RECORDS[1], RECORDS[0], *RECORDS[2:]]
    with pytest.raises(
        ValueError, match="record 1: question_type 'adversarial' where the official order has 'attribute'"
    ):
        score_mmhal(_rows(swapped), REPLIES, "official")
    _, m = score_mmhal(_rows(swapped), REPLIES, "robust")  # robust groups by each record's own type
    assert m["n"] == 96








def test_bad_template_row_names_file_and_row(tmp_path):
    bench = get_benchmark("mmhal")
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps([{"question": "q", "gt_answer": "g"}]))
    judge = JudgeConfig(base_url="http://127.0.0.1:9", model="fake")
    with pytest.raises(DataError, match=r"t.json, row 1: missing key \(one of 'text', 'model_answer'\)"):
        bench.read_predictions(bad, EvalOptions(judge=judge))


@pytest.mark.parametrize("cap,sent", [(None, None), (256, 1024), (4096, 4096)])
def test_judge_gets_room_for_explanation_and_rating(monkeypatch, cap, sent):
    """No cap stays no cap (as the official script); a cap below 1024 is raised to 1024, a larger one kept."""
    import prefopt.eval.mmhal as mmhal

    seen = {}

    def fake_ask(judge, prompts, ids, **kw):
        seen["max_tokens"], seen["system"] = judge.max_tokens, kw.get("system")
        return REPLIES, {}

    monkeypatch.setattr(mmhal, "ask_judge", fake_ask)
    bench = get_benchmark("mmhal")
    judge = JudgeConfig(base_url="http://127.0.0.1:9", model="fake", max_tokens=cap)
    opts = EvalOptions(rounds=5, judge=judge)
    m = bench.score(bench.read_predictions(TEMPLATE, opts), opts)
    assert seen == {"max_tokens": sent, "system": None}
    assert m["metrics"]["score"]["value"] == pytest.approx(OFFICIAL_SCORE)
