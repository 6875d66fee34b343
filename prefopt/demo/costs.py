"""What each demo method cost to train and evaluate, assembled from the stages' ``cost.json`` files.

Every demo stage records its wall/CPU seconds, forward and generated tokens and judge requests in
``FOLDER/cost.json`` under ``"stage"`` (:meth:`prefopt.demo.pipeline.Demo.stage`); the trainers add a
``"train"`` section and SymMPO a ``"reference_cache"`` one (:mod:`prefopt.cost`).

A method's *training* cost is what it spent after the shared cold start: GRPO = variance-guided selection +
GRPO training (rollouts, judge calls, policy and reference forwards); SymMPO = reference-cache build +
SymMPO training. Making the preference pairs costs nothing here (the shapes world draws them), and on real
data it is an offline cost paid once. The cold start's own cost (SFT) is reported on its row and is shared
by both methods. The result is written to ``eval/<method>/cost.json`` under ``"method"``, where
:mod:`prefopt.eval.multiseed` finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.cost import add, read_cost, record_section
from prefopt.demo.profiles import BUDGET_RULE

#: The run folders (under OUT/runs) whose stage costs make up each method's training cost.
METHOD_STAGES = {"cold_start": ("sft",), "grpo": ("select", "grpo"), "symmpo": ("symmpo",)}


def method_cost(out: Path, method: str) -> dict[str, Any]:
    """``{"training": ..., "eval": ..., "parts": {...}}`` of one method of the demo run in ``out``."""
    parts: dict[str, Any] = {}
    for stage in METHOD_STAGES[method]:
        data = read_cost(out / "runs" / stage)
        parts[stage] = data.get("stage")
        if "reference_cache" in data:
            parts["reference_cache"] = data["reference_cache"]
    training = add(*(parts[s] for s in METHOD_STAGES[method]))
    evaluation = read_cost(out / "eval" / method).get("stage")
    return {"training": training, "eval": add(evaluation), "parts": parts, "stages": list(METHOD_STAGES[method])}


def write_method_costs(out: Path, methods: tuple[str, ...] = tuple(METHOD_STAGES)) -> dict[str, Any]:
    """Write each method's cost into ``eval/<method>/cost.json`` (section ``"method"``) and return them."""
    costs = {m: method_cost(out, m) for m in methods}
    for method, cost in costs.items():
        record_section(out / "eval" / method, "method", cost)
    return costs


def cost_markdown(out: Path) -> str:
    """A table of each method's training and evaluation cost, with the demo's budget rule."""

    fields = ("wall_s", "cpu_s", "forward_tokens", "generated_tokens", "judge_calls")
    lines = ["| cost | " + " | ".join(f"train {f}" for f in fields) + " | eval wall_s |", "|---" * (len(fields) + 2) + "|"]
    for method in METHOD_STAGES:
        cost = read_cost(out / "eval" / method).get("method") or {}
        train, ev = cost.get("training") or {}, cost.get("eval") or {}
        cells = [f"{train[f]:g}" if isinstance(train.get(f), int | float) else "–" for f in fields]
        cells.append(f"{ev['wall_s']:g}" if isinstance(ev.get("wall_s"), int | float) else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nBudget: {BUDGET_RULE}. Training cost counts what a method spent after the shared cold start (the cold_start row: its SFT)."
