"""`prefopt grpo` with the caption judge behind a faulty loopback server (prefopt.testing.JudgeServer):
every fault kind is retried and counted, answers are cached so a resumed run asks nothing twice, a judge
that is down gives caption reward 0 with a loud warning, and ``judge.fail_fast`` stops the run instead."""

from __future__ import annotations

import json
import logging
import shutil

from test_grpo_trainer import judge_knows, scripted_policy, write_prompts  # noqa: F401  (fixture)

from prefopt.cli import main
from prefopt.testing.judge_server import FAULTS, JudgeServer

#: every distinct judge request first meets each fault once, then gets its answer
SCHEDULE = ["500", "429", "timeout", "malformed", "empty", "ok"]


def _grpo(model_dir, data, out, server, *extra):
    return main(
        [
            "grpo",
            "--config",
            "recipes/tiny/qwen_grpo.yaml",
            f"model.name_or_path={model_dir}",
            f"data.path={data}",
            f"data.image_root={data.parent}",
            f"rewards.judge.base_url={server.base_url}",
            "rewards.judge.backoff=0.01",
            "rewards.judge.timeout=0.4",
            "ntk.enabled=false",
            "training.save_steps=1",
            f"training.output_dir={out}",
            *extra,
        ]
    )


def _steps(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [row for row in history if "loss" in row]


def test_every_fault_kind_is_retried_counted_and_cached(tiny_qwen_dir, tmp_path, scripted_policy):  # noqa: F811
    data, out, cache = write_prompts(tmp_path), tmp_path / "run", tmp_path / "judge-cache"
    judge = ("rewards.judge.max_retries=5", f"rewards.judge.cache_dir={cache}")
    with JudgeServer(answer=judge_knows, schedule=SCHEDULE, stall_s=1.0) as server:
        assert _grpo(tiny_qwen_dir, data, out, server, *judge) == 0
        outcomes, requests = dict(server.outcomes), server.requests
        steps = _steps(out)
        # two canned captions per step reach the judge: 4 distinct prompts, each failing 5 ways then answered
        assert outcomes == {**{fault: 4 for fault in FAULTS}, "ok": 4} and requests == 24
        last = steps[-1]
        assert (last["judge/calls"], last["judge/retries"], last["judge/failures"]) == (24, 20, 0)
        assert all(row["rewards/caption/mean"] == 0.5 for row in steps)  # every judgement arrived in the end
        assert len(list(cache.rglob("*.json"))) == 4

        # lose the last checkpoint and resume: step 2 is generated again and its judgements come from the cache
        shutil.rmtree(out / "checkpoint-2")
        assert _grpo(tiny_qwen_dir, data, out, server, *judge, "--resume") == 0
        assert server.requests == requests  # nothing was asked twice
    resumed = _steps(out)[-1]
    # the counters continue from checkpoint-1 (step 1: 2 prompts x 6 attempts = 12 calls, no cache hit); the
    # regenerated step 2 adds 2 cache hits and no call
    assert (resumed["judge/cache_hits"], resumed["judge/calls"]) == (2, 12)
    assert resumed["rewards/caption/mean"] == 0.5


def test_a_share_of_failing_calls_is_counted_and_logged(tiny_qwen_dir, tmp_path, scripted_policy, caplog):  # noqa: F811
    data, out = write_prompts(tmp_path), tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="prefopt.rewards.judge")
    with JudgeServer(
        answer=judge_knows, fail_rate=0.5, faults=["500", "malformed", "empty"], seed=1
    ) as server:
        assert _grpo(tiny_qwen_dir, data, out, server, "rewards.judge.max_retries=0") == 0
        failed = server.requests - server.outcomes["ok"]
    assert 0 < failed < server.requests == 4  # the seed gives a mix: some judgements fail, some arrive
    steps = _steps(out)
    assert steps[-1]["judge/failures"] == failed and steps[-1]["judge/calls"] == 4
    # a failed judgement is reward 0: the canned completions earn 1 each, 2 per step of 4 completions
    assert sum(row["rewards/caption/mean"] for row in steps) * 4 == 4 - failed
    assert "prompts failed after 0 retries (their rewards are 0)" in caplog.text


def test_judge_down_gives_zero_caption_reward_and_a_loud_warning(
    tiny_qwen_dir,
    tmp_path,
    scripted_policy,  # noqa: F811
    caplog,
):
    data, out = write_prompts(tmp_path), tmp_path / "run"
    caplog.set_level(logging.WARNING)
    down = ("rewards.judge.max_retries=1", "rewards.judge.down_after=2")
    with JudgeServer(answer=judge_knows, fail_rate=1.0, faults=["500"]) as server:
        assert _grpo(tiny_qwen_dir, data, out, server, *down) == 0
        assert server.outcomes["ok"] == 0
    steps = _steps(out)
    assert len(steps) == 2 and all(row["rewards/caption/mean"] == 0.0 for row in steps)
    assert all(row["rewards/format/mean"] == 0.5 for row in steps)  # the other rewards still work
    assert steps[-1]["judge/failures"] == 4
    assert caplog.text.count("JUDGE DOWN") == 1


def test_fail_fast_stops_the_run_with_a_clear_error(tiny_qwen_dir, tmp_path, scripted_policy, capsys):  # noqa: F811
    data, out = write_prompts(tmp_path), tmp_path / "run"
    fast = ("rewards.judge.max_retries=0", "rewards.judge.down_after=1", "rewards.judge.fail_fast=true")
    with JudgeServer(answer=judge_knows, fail_rate=1.0, faults=["429"]) as server:
        assert _grpo(tiny_qwen_dir, data, out, server, *fast) == 2
    err = capsys.readouterr().err
    assert "prefopt grpo: error: judge at" in err and "judge.fail_fast is set" in err
    assert not (out / "checkpoint-1").exists()
