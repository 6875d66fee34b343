"""HallusionBench scoring against tianyi-lab/HallusionBench ``evaluation.py`` on recorded judge replies (the CLI end; the pure tests are in tests/unit/test_eval_hallusion.py)."""

from __future__ import annotations

from prefopt.eval.common import EvalOptions
from prefopt.eval.hallusion_scoring import judge_prompt
from prefopt.eval.runner import get_benchmark
from prefopt.rewards.judge import JudgeConfig
from prefopt.testing.judge_server import JudgeServer
from tests.benchdata.hallusion import OFFICIAL, OFFICIAL_VS, PREDICTIONS, REPLIES, ROWS, _close

# evaluation.py leaderboard / tables on the recorded replies (percent / 100)






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
