"""Reward-variance-guided sample selection before RL (SPEC 1.4).

For every prompt the current policy draws ``k`` responses; each is scored with the recipe's total reward
(accuracy + 0.1·format [+ caption]). Prompts are ranked by the variance of their ``k`` rewards and the top
``keep`` fraction is kept: easy (high mean, low variance) and hard (low mean, low variance) prompts give GRPO
groups with no advantage signal, medium prompts (high variance) do.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import PrefoptError
from prefopt.models.registry import adapter_for_model


def reward_stats(rewards: Sequence[Sequence[float]]) -> list[dict[str, float]]:
    """Mean and population variance of each prompt's rewards.

    Worked example: rewards (1, 0, 1, 0) give mean 0.5 and variance ((0.5²)·4)/4 = 0.25.
    """
    stats = []
    for row in rewards:
        if not row:
            raise PrefoptError("every prompt needs at least one reward")
        mean = sum(row) / len(row)
        stats.append({"mean": mean, "variance": sum((r - mean) ** 2 for r in row) / len(row)})
    return stats


def select_by_variance(stats: Sequence[dict[str, float]], keep: float) -> tuple[list[int], float]:
    """Indices (in input order) of the ``ceil(keep·N)`` highest-variance prompts, and the variance cut.

    Ties are broken by input order so the selection is deterministic. The cut is the smallest kept variance.
    """
    if not 0.0 < keep <= 1.0:
        raise PrefoptError(f"--keep must lie in (0, 1], got {keep}")
    n_keep = max(1, math.ceil(keep * len(stats)))
    order = sorted(range(len(stats)), key=lambda i: (-stats[i]["variance"], i))
    kept = sorted(order[:n_keep])
    cut = min(stats[i]["variance"] for i in kept) if kept else 0.0
    return kept, cut


def sample_responses(
    adapter: Any,
    rows: Sequence[dict[str, Any]],
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 0.95,
    load_video: Any = None,
) -> list[list[str]]:
    """``k`` sampled responses per dataset row (one batched ``generate`` per prompt, progress bar).

    Image and text prompts are prefilled once and their KV cache shared by the ``k`` samples
    (:func:`generate_shared_prefix`); video prompts go through ``num_return_sequences``.
    ``load_video(path)`` turns a row's video paths into frame lists (needed only when rows have videos).
    """
    import torch
    from tqdm.auto import tqdm

    model = adapter.model
    model.eval()
    pad_id = adapter.tokenizer.pad_token_id
    out: list[list[str]] = []
    for row in tqdm(rows, desc="sampling", unit="prompt"):
        images = [list(row["images"])] if row["images"] else None
        videos = [[load_video(v) for v in row["videos"]]] if row.get("videos") else None
        batch = adapter.encode_prompts([row["prompt"]], images, videos).to(model.device)
        sampling = dict(
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
        )
        with torch.no_grad():
            if videos:
                generated = model.generate(**batch, num_return_sequences=k, **sampling)
            else:
                generated = generate_shared_prefix(model, batch, k, adapter=adapter, **sampling)
        out.append(adapter.decode(generated[:, batch["input_ids"].size(1) :]))
    return out


def generate_shared_prefix(model: Any, batch: Any, k: int, adapter: Any = None, **generate_kwargs: Any) -> Any:
    """``k`` continuations of ONE prompt whose prefill (vision tower included) runs once.

    ``num_return_sequences=k`` copies the prompt and its image k times before the prefill; here the prompt
    minus its last token goes through the model once, the KV cache is repeated k times and ``generate``
    continues from it (feeding only the last prompt token). Pixel values are not passed again: the image
    tokens are already in the cache; the per-prompt tensors the family still needs (e.g. the image grids of
    3-D positions) come from ``adapter.repeat_for_cache`` (the adapter of ``model``'s family when not given).
    """
    import torch

    length = batch["input_ids"].shape[1]
    per_token = {
        key for key, v in batch.items() if torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == length
    }
    prefill = {key: (v[:, :-1] if key in per_token else v) for key, v in batch.items()}
    with torch.no_grad():
        cache = model(**prefill, use_cache=True).past_key_values
    cache.batch_repeat_interleave(k)
    rest = {key: batch[key].repeat_interleave(k, dim=0) for key in per_token}
    rest.update((adapter or adapter_for_model(model)).repeat_for_cache(batch, k))
    return model.generate(**rest, past_key_values=cache, **generate_kwargs)


def score_responses(
    reward_funcs: Sequence[Any], weights: Sequence[float], row: dict[str, Any], responses: Sequence[str]
) -> list[float]:
    """Weighted total reward of each response, calling the TRL reward functions as GRPO does."""
    n = len(responses)
    columns = {key: [row[key]] * n for key in row if key not in ("prompt", "images")}
    completions = [[{"role": "assistant", "content": text}] for text in responses]
    totals = [0.0] * n
    for func, weight in zip(reward_funcs, weights, strict=True):
        values = func(prompts=[row["prompt"]] * n, completions=completions, **columns)
        totals = [t + weight * (0.0 if v is None else float(v)) for t, v in zip(totals, values, strict=True)]
    return totals


def plot_selection(
    stats: Sequence[dict[str, float]], kept: Sequence[int], cut: float, path: str | Path
) -> Path:
    """Scatter of mean vs variance per prompt, kept prompts highlighted and the variance cut drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept_set = set(kept)
    fig, ax = plt.subplots(figsize=(5, 4))
    for flag, colour, label in ((False, "tab:gray", "dropped"), (True, "tab:blue", "kept")):
        xs = [s["mean"] for i, s in enumerate(stats) if (i in kept_set) == flag]
        ys = [s["variance"] for i, s in enumerate(stats) if (i in kept_set) == flag]
        ax.scatter(xs, ys, s=14, c=colour, label=f"{label} ({len(xs)})")
    ax.axhline(cut, color="tab:red", linestyle="--", linewidth=1, label=f"cut = {cut:.3g}")
    ax.set_xlabel("mean reward")
    ax.set_ylabel("reward variance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_outputs(
    out_dir: str | Path,
    raw_rows: Sequence[dict[str, Any]],
    ids: Sequence[str],
    rewards: Sequence[Sequence[float]],
    stats: Sequence[dict[str, float]],
    kept: Sequence[int],
    cut: float,
) -> dict[str, Path]:
    """Write ``selected.json`` (input layout), ``stats.jsonl`` and ``selection.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selected = out / "selected.json"
    selected.write_text(
        json.dumps([raw_rows[i] for i in kept], ensure_ascii=False, indent=1), encoding="utf-8"
    )
    kept_set = set(kept)
    stats_path = out / "stats.jsonl"
    with stats_path.open("w", encoding="utf-8") as fh:
        for i, (row_id, row_rewards, row_stats) in enumerate(zip(ids, rewards, stats, strict=True)):
            record = {
                "index": i,
                "id": row_id,
                **row_stats,
                "kept": i in kept_set,
                "rewards": list(row_rewards),
            }
            fh.write(json.dumps(record) + "\n")
    plot = plot_selection(stats, kept, cut, out / "selection.png")
    return {"selected": selected, "stats": stats_path, "plot": plot}


def raw_rows(path: str | Path) -> list[dict[str, Any]]:
    """The input rows exactly as written (JSON list or JSONL), so the kept subset keeps the input layout."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix == ".json":
        return json.loads(text)
    from prefopt.data.loaders import load_rows

    # other formats go through the shared loader, which fills absent columns with None: drop those again
    return [{k: v for k, v in dict(r).items() if v is not None} for r in load_rows(str(path))]


def run_selection(
    recipe: Any, k: int, keep: float, out_dir: str | Path, adapter: Any = None
) -> dict[str, Path]:
    """Sample, score, rank by variance and write the kept subset for a GRPO recipe's data."""
    from prefopt.data.video import load_video_frames
    from prefopt.grpo.data import load_checked
    from prefopt.grpo.trainer import build_reward_funcs
    from prefopt.training.common import prepare_policy

    if k < 2:
        raise PrefoptError(f"--k must be at least 2 (a variance needs two rewards), got {k}")
    if not 0.0 < keep <= 1.0:  # checked before any sampling, not after it
        raise PrefoptError(f"--keep must lie in (0, 1], got {keep}")
    from prefopt.data.lengths import model_length_check

    train = recipe.training_args()
    check = model_length_check(recipe.model.name_or_path, int(train.get("max_completion_length") or 0),
                               getattr(recipe.data, "overlong", "truncate"))
    dataset, tracker = load_checked(recipe.data, check)  # before the model: bad data is reported in seconds
    written = raw_rows(recipe.data.path)
    rows_as_written = [written[i] for i in tracker.rows]  # bad rows were skipped: keep the two aligned
    if adapter is None:
        adapter = prepare_policy(recipe.model, recipe.lora)
    funcs, weights = build_reward_funcs(recipe, cache_root=str(out_dir))
    rows = [dataset[i] for i in range(len(dataset))]
    data = recipe.data
    responses = sample_responses(
        adapter,
        rows,
        k,
        int(train["max_completion_length"]),
        float(train.get("temperature", 1.0)),
        float(train.get("top_p", 0.95)),
        functools.partial(
            load_video_frames,
            num_frames=data.video_frames,
            fps=data.video_fps,
            max_pixels=data.video_max_pixels,
        ),
    )
    rewards = [score_responses(funcs, weights, row, resp) for row, resp in zip(rows, responses, strict=True)]
    stats = reward_stats(rewards)
    kept, cut = select_by_variance(stats, keep)
    warn_if_flat(stats)
    files = write_outputs(out_dir, rows_as_written, [r["id"] for r in rows], rewards, stats, kept, cut)
    from prefopt.training.common import update_run_info

    update_run_info(out_dir, data=tracker.summary(), zero_variance=sum(s["variance"] == 0 for s in stats))
    return files


def warn_if_flat(stats: Sequence[dict[str, float]]) -> bool:
    """Warn (and return True) when every prompt's rewards have zero variance: the ranking is then by index."""
    if not stats or any(s["variance"] > 0 for s in stats):
        return False
    logging.getLogger(__name__).warning(
        "all %d prompts have zero reward variance (every sample of a prompt scored alike), so the prompts "
        "are kept by their index, not by any signal; check the rewards (judge, answer format) or raise --k",
        len(stats),
    )
    return True
