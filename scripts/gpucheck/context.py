"""The shared state of one gpu_check run: sizes per ``--config``, folders, recipes, instrumentation."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Per ``--config``: batch sizes, group size and lengths. Both configs run the same checks and code.
SIZES = {
    "tiny": dict(steps=3, sft_batch=2, group=4, grpo_batch=4, completion=32, grounded_completion=12,
                 pref_batch=2, image=56, ntk_batch=4, ntk_tokens=64, resample_slots=6, lr=1e-4),
    "real": dict(steps=3, sft_batch=4, group=8, grpo_batch=8, completion=256, grounded_completion=64,
                 pref_batch=2, image=224, ntk_batch=8, ntk_tokens=256, resample_slots=20, lr=1e-4),
}


@dataclass
class Context:
    """Everything a check may read or leave for a later check."""

    device: str
    size: str
    work: Path
    sizes: dict[str, Any]
    models: dict[str, Path] = field(default_factory=dict)  # family -> base checkpoint
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> model_shape()
    world: dict[str, Path] = field(default_factory=dict)  # synthetic data files
    shared: dict[str, Any] = field(default_factory=dict)  # results a later check compares with

    @property
    def cpu(self) -> bool:
        return not self.device.startswith("cuda")

    @property
    def dtype(self) -> str:
        return "float32" if self.cpu else "bfloat16"

    def common_training(self, out: Path, steps: int | None = None) -> list[str]:
        """Dotted ``training.*`` overrides every GRPO/SFT recipe of the run shares."""
        return [
            f"training.output_dir={out}",
            f"training.max_steps={steps or self.sizes['steps']}",
            f"training.learning_rate={self.sizes['lr']}",
            'training.save_strategy="no"',
            "training.logging_steps=1",
            "training.report_to=none",
            f"training.use_cpu={str(self.cpu).lower()}",
            f"training.bf16={str(not self.cpu).lower()}",
            "training.gradient_checkpointing=true",
            'training.gradient_checkpointing_kwargs={"use_reentrant": false}',
            "training.seed=0",
        ]

    def model_overrides(self, family: str, path: Path | None = None) -> list[str]:
        """``model.*`` overrides: the checkpoint, the run's dtype and sdpa attention."""
        return [
            f"model.name_or_path={path or self.models[family]}",
            f"model.dtype={self.dtype}",
            "model.attn_implementation=sdpa",
        ]


class Snapshot:
    """The first elements of every trainable tensor, to tell afterwards whether training moved them."""

    def __init__(self, model: Any, limit: int = 1 << 16):
        self.model = model
        self.limit = limit
        self.before = {
            n: _head(p, limit) for n, p in model.named_parameters() if p.requires_grad
        }

    def moved(self) -> dict[str, Any]:
        """Share of trainable tensors (and of sampled elements) that changed; names of unchanged ones."""
        params = dict(self.model.named_parameters())
        changed, elements, total, still = 0, 0, 0, []
        for name, old in self.before.items():
            new = _head(params[name], self.limit)
            diff = int((new != old).sum())
            elements += diff
            total += old.numel()
            if diff:
                changed += 1
            else:
                still.append(name)
        n = max(1, len(self.before))
        return {
            "trainable_tensors": len(self.before),
            "tensors_moved": changed / n,
            "elements_moved": elements / max(1, total),
            "unmoved_examples": still[:5],
        }


def _head(param: Any, limit: int) -> Any:
    """The first ``limit`` elements as float32 on the CPU (exact for bf16; the model may move devices)."""
    return param.detach().reshape(-1)[:limit].float().cpu().clone()


def losses(history: list[dict[str, Any]], key: str = "loss") -> list[float]:
    """The per-step training losses of a trainer's log history."""
    return [float(row[key]) for row in history if key in row and "train_runtime" not in row]


def check_training(history: list[dict[str, Any]], moved: dict[str, Any], steps: int, key: str = "loss") -> dict:
    """Assert finite losses for every step and moved parameters; return the figures."""
    values = losses(history, key)
    assert len(values) >= steps, f"{len(values)} logged losses for {steps} steps"
    assert all(math.isfinite(v) for v in values), f"non-finite loss: {values}"
    assert moved["tensors_moved"] > 0, f"no trainable tensor moved: {moved}"
    return {"losses": values, **moved}


def step_stats(times: list[float]) -> dict[str, float]:
    """Median of the steps after the first (warm-up), and every step time."""
    timed = times[1:] or times
    return {"step_s": statistics.median(timed), "all_steps_s": times}
