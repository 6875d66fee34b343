"""Judge calls overlap the forwards (issue 21 item 3): requests start right after generation and the reward
call collects them; results, cache and counters equal the synchronous path. Ordering is checked with an
event log, never with wall-clock thresholds."""

from __future__ import annotations

import json
import threading

from PIL import Image

from prefopt.rewards.caption import CaptionReward
from prefopt.rewards.judge import JudgeClient, JudgeConfig
from prefopt.testing.judge_server import JudgeServer

PROBLEMS = ["Is there a circle?", "Is there a star?", "Which shape is red?"]
SOLUTIONS = ["<answer>yes</answer>", "<answer>no</answer>", "<answer>A</answer>"]
TYPES = ["yes/no", "yes/no", "multiple choice"]
COMPLETIONS = [
    [{"role": "assistant", "content": "<caption>a red circle</caption><answer>yes</answer>"}],
    [{"role": "assistant", "content": "no caption here"}],
    [{"role": "assistant", "content": "<caption>a red circle and a star</caption><answer>A</answer>"}],
]


def _answer(messages):
    text = json.dumps(messages)
    return "<answer>yes</answer>" if "circle" in text and "Is there a circle" in text else "<answer>A</answer>"


def _reward(server, cache):
    return CaptionReward(JudgeClient(JudgeConfig(base_url=server.base_url, max_retries=0, cache_dir=str(cache))))


def _call(reward, completions=COMPLETIONS):
    prompts = [[{"role": "user", "content": q}] for q in PROBLEMS]
    return reward(prompts=prompts, completions=completions, solution=SOLUTIONS, problem_type=TYPES,
                  problem=PROBLEMS, options=[[], [], ["A. circle", "B. star"]])


def _start(reward, completions=COMPLETIONS):
    prompts = [[{"role": "user", "content": q}] for q in PROBLEMS]
    reward.start(prompts=prompts, completions=completions, solution=SOLUTIONS, problem_type=TYPES,
                 problem=PROBLEMS, options=[[], [], ["A. circle", "B. star"]])


def _cache_files(folder):
    return sorted((p.relative_to(folder), p.read_text()) for p in folder.rglob("*.json"))


def test_started_requests_give_the_synchronous_results_cache_and_counters(tmp_path):
    with JudgeServer(answer=_answer) as server:
        sync, early = _reward(server, tmp_path / "a"), _reward(server, tmp_path / "b")
        want = _call(sync)
        _start(early)
        got = _call(early)
        assert server.requests == 4  # two captions per path, each asked exactly once
    assert got == want and got[1] == 0.0 and got[0] == 1.0
    assert _cache_files(tmp_path / "a") == _cache_files(tmp_path / "b")
    keys = ("judge/calls", "judge/cache_hits", "judge/failures", "caption/completions", "caption/empty",
            "caption/mean")
    assert {k: early.stats()[k] for k in keys} == {k: sync.stats()[k] for k in keys}


def test_a_reward_call_for_other_completions_asks_synchronously(tmp_path):
    with JudgeServer(answer=_answer) as server:
        reward = _reward(server, tmp_path / "c")
        _start(reward, COMPLETIONS[::-1])  # started for another batch: must not be used for this one
        got = _call(reward)
        want = _call(_reward(server, tmp_path / "d"))
    assert got == want


def test_grpo_judge_requests_start_before_the_log_prob_forwards(tiny_qwen_dir, tmp_path, monkeypatch):
    """With a reference model (beta > 0) TRL runs a log-prob forward between generation and the rewards.
    The forward waits (bounded) for the judge to have received a request and logs itself after that; on a
    synchronous path the judge is only asked after the forward, and the log order is reversed."""
    from prefopt.cli import main
    from prefopt.grpo.trainer import GroundedGRPOTrainer

    events: list[str] = []
    received = threading.Event()
    canned = "<prethink>look</prethink><caption>a red circle</caption><think>so</think><answer>yes</answer>"

    def answer(messages):
        events.append("judge")
        received.set()
        return "<answer>yes</answer>"

    original_generate = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, *args, **kwargs):
        ids, logprobs = original_generate(self, *args, **kwargs)
        events.append("generated")
        received.clear()
        text = self._tokenizer.encode(canned, add_special_tokens=False) + [self.eos_token_ids[0]]
        return [text for _ in ids], logprobs

    original_logps = GroundedGRPOTrainer._get_per_token_logps_and_entropies

    def logged(self, *args, **kwargs):
        import torch

        if not torch.is_grad_enabled():  # the old / reference forwards before the rewards
            received.wait(timeout=20)  # a deadlock guard only; the assertion is on the order below
            events.append("forward")
        return original_logps(self, *args, **kwargs)

    monkeypatch.setattr(GroundedGRPOTrainer, "_generate_single_turn", scripted)
    monkeypatch.setattr(GroundedGRPOTrainer, "_get_per_token_logps_and_entropies", logged)
    rows = []
    for i, q in enumerate(PROBLEMS[:2] * 2):
        Image.new("RGB", (56, 56), (60 * i, 90, 120)).save(tmp_path / f"p{i}.png")
        rows.append({"problem": q, "solution": "<answer>yes</answer>", "problem_type": "yes/no",
                     "data_type": "image", "path": f"p{i}.png", "problem_id": i})
    (tmp_path / "grpo.json").write_text(json.dumps(rows))
    with JudgeServer(answer=answer) as server:
        assert main(["grpo", "--config", "recipes/tiny/qwen_grpo.yaml", f"model.name_or_path={tiny_qwen_dir}",
                     f"data.path={tmp_path / 'grpo.json'}", f"data.image_root={tmp_path}",
                     f"rewards.judge.base_url={server.base_url}", "rewards.judge.max_retries=0",
                     "training.beta=0.04", "training.max_steps=1", "ntk.enabled=false",
                     f"training.output_dir={tmp_path / 'run'}"]) == 0
    first_generation = events.index("generated")
    step = events[first_generation:]
    assert "forward" in step and "judge" in step
    assert step.index("judge") < step.index("forward"), events
