"""The GRPO reward functions of a recipe, and the trainer-side hooks of the caption judge (SPEC 1.3).

Judge latency: reward functions with a ``start`` method (the caption judge) send their requests right after
generation (:func:`start_rewards`), so their latency overlaps TRL's old / reference log-prob forwards; the
reward call collects the answers. Their counters are logged as ``judge/*`` and saved with checkpoints.
"""

from __future__ import annotations

from typing import Any

from prefopt.grpo.config import reward_terms
from prefopt.rewards.judge import JudgeClient, counter_stats, summed_counters
from prefopt.rewards.registry import RewardContext, build_rewards


def build_reward_funcs(recipe: Any, cache_root: str | None = None) -> tuple[list[Any], list[float]]:
    """The recipe's reward functions and weights, built from the reward table (SPEC 1.3; Ground-R1: SPEC 2).

    The fixed layout gives accuracy + format (by template) + caption when on; Ground-R1's rollout scores the
    final round's answer and the mean per-round format. The judge's answer cache goes to
    ``<cache_root>/judge_cache`` (default: the recipe's output folder) unless the judge's ``cache_dir`` names
    another folder or its ``cache`` is false."""
    root = cache_root or recipe.training_args().get("output_dir") or "."
    context = RewardContext(template=recipe.data.template, multi_round=recipe.rollout == "grounded",
                            cache_root=str(root))
    return build_rewards(reward_terms(recipe), context)


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
