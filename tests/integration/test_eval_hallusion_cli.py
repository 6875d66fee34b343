"""HallusionBench scoring against tianyi-lab/HallusionBench ``evaluation.py`` on recorded judge replies (the CLI end; the pure tests are in tests/unit/test_eval_hallusion.py)."""

from __future__ import annotations

import json

import pytest

from prefopt.eval.common import EvalOptions
from prefopt.eval.hallusion_scoring import judge_prompt
from prefopt.eval.runner import get_benchmark
from prefopt.rewards.judge import JudgeConfig
from prefopt.testing.judge_server import JudgeServer
from tests.helpers import DATA as TEST_DATA

DATA = TEST_DATA / "hallusion"


PREDICTIONS = DATA / "predictions_sample.json"


ROWS = json.loads(PREDICTIONS.read_text())


REPLIES = json.loads((DATA / "judge_replies.json").read_text())


# evaluation.py leaderboard / tables on the recorded replies (percent / 100)
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


def test_judged_through_prefopt_client(tmp_path):
    """The benchmark asks prefopt's judge client (here a loopback fake replaying the recorded replies)."""
    recorded = {}
    for row, reply in zip(ROWS, REPLIES, strict=True):
        recorded[judge_prompt(row["question"], row["gt_answer_details"], row["model_prediction"])] = reply
    seen_system = []

    def answer(messages):
        seen_system.append(any(m["role"] == "system" for m in messages))
        return recorded[messages[-1]["content"]]

    bench = get_benchmark("hallusion")
    with JudgeServer(answer=answer) as server:
        judge = JudgeConfig(base_url=server.base_url, model="fake", api_key_env="FAKE_JUDGE_KEY")
        opts = EvalOptions(rounds=10, judge=judge)
        m = bench.score(bench.read_predictions(PREDICTIONS, opts), opts, tmp_path)
    assert not any(seen_system)  # the official script sends the prompt as the only (user) message
    _close({k: v["value"] for k, v in m["metrics"].items()}, OFFICIAL)
    _close({k: v["value"] for k, v in m["categories"]["VS"].items()}, OFFICIAL_VS)
    assert m["correctness"] == "judge" and m["scoring"] == "official"
    assert len((tmp_path / "judgements.jsonl").read_text().splitlines()) == len(ROWS)
