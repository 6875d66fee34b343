"""The GRPO reward functions of a recipe, and the trainer-side hooks of the caption judge (SPEC 1.3).

Judge latency: reward functions with a ``start`` method (the caption judge) send their requests right after
generation (:func:`start_rewards`), so their latency overlaps TRL's old / reference log-prob forwards; the
reward call collects the answers. Their counters are logged as ``judge/*`` and saved with checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.grpo.config import judge_config
from prefopt.rewards import format as fmt
from prefopt.rewards.answers import accuracy_reward
from prefopt.rewards.caption import CaptionReward
from prefopt.rewards.judge import JudgeClient, counter_stats, summed_counters
from prefopt.rewards.registry import final_round


def build_reward_funcs(recipe: Any, cache_root: str | None = None) -> tuple[list[Any], list[float]]:
    """Accuracy, format (by template) and, if on, caption reward functions with their weights (SPEC 1.3).

    The judge's answer cache goes to ``<cache_root>/judge_cache`` (default: the recipe's output folder)
    unless ``rewards.judge.cache_dir`` names another folder or ``rewards.judge.cache`` is false."""
    rewards = recipe.rewards
    if recipe.rollout == "grounded":
        # Ground-R1: answer rewards on the final round, 2 · mean per-round format (SPEC 2); no caption stage
        return [final_round(accuracy_reward), fmt.grounded_format_reward], [
            rewards.accuracy_weight,
            rewards.format_weight,
        ]
    format_fn = fmt.four_stage_format_reward if recipe.data.template == "four_stage" else fmt.r1_format_reward
    funcs: list[Any] = [accuracy_reward, format_fn]
    weights = [rewards.accuracy_weight, rewards.format_weight]
    if rewards.caption:
        config = judge_config(recipe)
        if config.cache and not config.cache_dir:
            # on by default, inside the run: a resumed run (or a rerun into the folder) never pays twice
            root = cache_root or recipe.training_args().get("output_dir") or "."
            config.cache_dir = str(Path(root) / "judge_cache")
        funcs.append(CaptionReward(JudgeClient(config), prompt=rewards.caption_prompt))
        weights.append(rewards.caption_weight)
    return funcs, weights


def start_rewards(reward_funcs: list[Any], rows: list[dict[str, Any]] | None, prompts: list,
                  completions: list) -> None:
    """Call ``start`` on every reward function that has one, with TRL's reward-function arguments."""
    if not rows or len(rows) != len(completions):
        return
    skip = ("prompt", "completion", "completion_ids")
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in skip}
    for func in reward_funcs:
        start = getattr(func, "start", None)
        if callable(start):
            start(prompts=prompts, completions=completions, **columns)


def judges_of(reward_funcs: list[Any]) -> list[JudgeClient]:
    """The judge clients behind the reward functions (the caption reward's)."""
    return [f.judge for f in reward_funcs if isinstance(getattr(f, "judge", None), JudgeClient)]


def judge_logs(reward_funcs: list[Any], device: Any) -> dict[str, float]:
    """The reward functions' own stats and the judges' counters summed over ranks (a collective)."""
    logs: dict[str, float] = {}
    for func in reward_funcs:
        stats = getattr(func, "stats", None)
        if callable(stats):
            for key, value in stats().items():
                if isinstance(value, int | float):
                    logs[key if "/" in key else f"judge/{key}"] = float(value)
    for judge in judges_of(reward_funcs):  # every rank logs at the same steps, so the all-reduce is safe here
        logs.update(counter_stats(summed_counters(judge.counters(), device)))
    return logs


def judge_state(reward_funcs: list[Any], device: Any) -> dict[str, Any]:
    """The judge counters summed over ranks, for a checkpoint (a collective: every rank calls it)."""
    return {"judge": [summed_counters(j.counters(), device) for j in judges_of(reward_funcs)]}


def restore_judge_state(reward_funcs: list[Any], state: dict[str, Any], main_process: bool) -> None:
    """Continue the judge counters of a resumed run; the saved values are totals, so rank 0 holds them."""
    for judge, counters in zip(judges_of(reward_funcs), state.get("judge") or [], strict=False):
        judge.load_counters(counters if main_process else {})
