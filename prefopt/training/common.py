"""Pieces every training command shares: building the policy, saving the recipe, plotting curves, resuming."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.config import save_config
from prefopt.models.settings import LoraSettings, ModelSettings

logger = logging.getLogger(__name__)

CONFIG_NAME = "prefopt_config.yaml"
CURVES_NAME = "training_curves.png"


def prepare_policy(
    model: ModelSettings, lora: LoraSettings, new_tokens: Sequence[str] = (), seed: int | None = None
) -> Any:
    """Load the policy through its adapter, freeze vision parts as asked, and wrap it with LoRA if enabled.

    ``seed`` seeds the LoRA initialisation (Trainer seeds only after the model exists), so two runs of one
    recipe start from the same adapter weights.
    """
    from prefopt.models.adapter import load_adapter

    if not model.name_or_path:
        from prefopt.errors import ModelError

        raise ModelError("model.name_or_path is empty: give a hub id or a local model directory")
    adapter = load_adapter(
        model.name_or_path,
        family=model.family,
        dtype=model.dtype,
        attn_implementation=model.attn_implementation,
        quantization=model.quantization,
        trust_remote_code=model.trust_remote_code,
    )
    adapter.freeze_vision(freeze_tower=model.freeze_vision_tower, freeze_projector=model.freeze_projector)
    if lora.enabled:
        from prefopt.models.lora import apply_lora

        if seed is not None:
            from transformers import set_seed

            set_seed(seed)

        token_ids = [adapter.tokenizer.convert_tokens_to_ids(t) for t in new_tokens] or None
        adapter.model = apply_lora(adapter, lora, new_token_ids=token_ids)
    elif model.quantization:
        from prefopt.errors import ModelError

        raise ModelError("a quantised (4bit/8bit) base can only be trained with LoRA: set lora.enabled=true")
    trainable = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in adapter.model.parameters())
    logger.info("policy %s: %d of %d parameters trainable", model.name_or_path, trainable, total)
    return adapter


def write_run_config(config: Any, out_dir: str | Path) -> Path:
    """Save the resolved recipe next to the run (it holds environment-variable names, never secrets)."""
    path = Path(out_dir) / CONFIG_NAME
    save_config(config, path)
    return path


RUN_INFO = "run_info.json"


def readable_modes(folder: str | Path, recursive: bool = False) -> int:
    """Give every file under ``folder`` the read bits the umask allows (0644 under the usual 022).

    safetensors writes its files mode 0600 (a private temporary file renamed into place), so a model saved
    for others to load or serve was unreadable to them. Returns how many files were changed.
    """
    mask = os.umask(0)
    os.umask(mask)
    wanted = 0o644 & ~mask
    root = Path(folder)
    if not root.is_dir():
        return 0
    changed = 0
    for path in root.rglob("*") if recursive else root.iterdir():
        try:
            if path.is_file() and not path.is_symlink():
                mode = path.stat().st_mode & 0o777
                if mode & wanted != wanted:
                    os.chmod(path, mode | wanted)
                    changed += 1
        except OSError:
            continue  # a file another process removed or owns: leave it
    return changed


def update_run_info(out_dir: str | Path, **fields: Any) -> Path:
    """Merge ``fields`` into the run's ``run_info.json`` (created when absent; other keys are kept)."""
    path = Path(out_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
    info.update(fields)
    tmp = path.with_name(f".{RUN_INFO}.tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def last_checkpoint(out_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder of a run (its completion marker checked), or None."""
    from prefopt.training.reliability import checkpoint_complete

    out = Path(out_dir)
    if not out.is_dir():
        return None
    found = []
    for child in out.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and checkpoint_complete(child):
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None


def _log_history(out_dir: Path) -> list[dict[str, Any]]:
    candidates = [out_dir / "trainer_state.json"]
    ckpt = last_checkpoint(out_dir)
    if ckpt:
        candidates.append(Path(ckpt) / "trainer_state.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()).get("log_history", [])
    return []


#: What a reader looks for first, in this order; every other metric follows alphabetically.
PANEL_ORDER = (
    lambda k: k == "reward",
    lambda k: k == "reward_std",
    lambda k: "accuracy" in k,
    lambda k: "format" in k,
    lambda k: "caption" in k and not k.startswith("judge/"),
    lambda k: k == "loss",
    lambda k: "loss" in k and not k.startswith(("ntk/", "judge/")),
    lambda k: k == "kl" or k.endswith("/kl"),
    lambda k: k.startswith("ntk/"),
    lambda k: k.startswith("judge/"),
)


def panel_order(key: str) -> tuple[int, str]:
    """Sort key of a metric's panel: rewards, accuracy, format, caption, loss, KL, NTK, judge, then the rest."""
    rank = next((i for i, rule in enumerate(PANEL_ORDER) if rule(key)), len(PANEL_ORDER))
    return rank, key


def curve_series(history: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """``{metric: (steps, values)}`` in panel order, without all-zero metrics and bookkeeping keys."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    skip = {"step", "epoch", "total_flos", "train_runtime", "train_samples_per_second",
            "train_steps_per_second", "learning_rate", "grad_norm"}
    for row in history:
        step = row.get("step")
        for key, value in row.items():
            if key in skip or not isinstance(value, int | float) or step is None or not math.isfinite(value):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(step)
            ys.append(float(value))
    # a panel whose values are all zero (unused counters, a reward that is off) says nothing: leave it out
    kept = [k for k, v in series.items() if any(y != 0 for y in v[1])]
    return {k: series[k] for k in sorted(kept, key=panel_order)}


def plot_training_curves(out_dir: str | Path, history: list[dict[str, Any]] | None = None) -> Path | None:
    """Plot the numeric metrics of the run's log history against the step into ``training_curves.png``.

    Panels come in :func:`panel_order` (rewards, accuracy, format, caption, loss, KL, NTK, judge first); a metric
    that is zero at every logged step gets no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    history = history if history is not None else _log_history(out)
    series = curve_series(history)
    if not series:
        return None
    keys = list(series)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs, ys = series[key]
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path = out / CURVES_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
