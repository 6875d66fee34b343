"""SFT, GWYS GRPO (against TRL's GRPOTrainer), grounded GRPO and REVERSE SFT on Qwen2.5-VL (full fine-tune)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from gpucheck import models
from gpucheck.context import ROOT, Context, Snapshot, check_training, step_stats

FAMILY = "qwen2_5_vl"
REVERSE_ANSWERS = [
    "<SPAN>A red circle</CN> and <SPAN>a blue square</CN>.",
    "<SPAN>A green triangle</CN> next to <SPAN>a yellow star</UN>",
    "<SPAN>One blue square</CN>.",
    "<SPAN>A red circle</CN> beside <SPAN>a purple cross</UN>",
]


def _train(trainer: Any, device: str) -> tuple[Snapshot, Any]:
    """Train with a step timer and a parameter snapshot taken just before."""
    from benchmarks.grpo_step import StepTimer

    timer = StepTimer(device)
    trainer.add_callback(timer.callback)
    snap = Snapshot(trainer.model)
    from prefopt.training.reliability import run_training

    run_training(trainer, None)
    return snap, timer


def _peak_reset(ctx: Context) -> None:
    if not ctx.cpu:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(ctx: Context) -> float | None:
    if ctx.cpu:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def _release(*objs: Any) -> None:
    import gc

    for obj in objs:
        del obj
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def sft(ctx: Context) -> dict[str, Any]:
    """Cold-start SFT, 3 steps; the checkpoint is saved, reloaded and must equal the trained weights."""
    import torch

    from prefopt.models.adapter import load_adapter
    from prefopt.sft.config import load_recipe
    from prefopt.sft.trainer import build_trainer

    out = ctx.work / "runs" / "sft"
    overrides = ctx.model_overrides(FAMILY) + ctx.common_training(out) + [
        f"data.path={ctx.world['sft.json']}", f"data.image_root={ctx.world['sft.json'].parent}",
        "lora.enabled=false", f"training.per_device_train_batch_size={ctx.sizes['sft_batch']}",
        "data.max_samples=null",
    ]
    _peak_reset(ctx)
    trainer = build_trainer(load_recipe(ROOT / "recipes/tiny/qwen_sft.yaml", overrides))
    snap, timer = _train(trainer, ctx.device)
    figures = check_training(trainer.state.log_history, snap.moved(), ctx.sizes["steps"])
    figures.update(step_stats(timer.times), peak_gib=_peak(ctx))
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(str(out))
    name, trained = next((n, p) for n, p in trainer.model.named_parameters() if "layers.0.mlp" in n)
    trained = trained.detach().float().cpu()
    _release(trainer)
    reloaded = load_adapter(str(out), dtype=ctx.dtype)
    again = dict(reloaded.model.named_parameters())[name].detach().float().cpu()
    assert torch.equal(trained, again), f"{name} differs after save + reload"
    figures["reload_equal"] = True
    _release(reloaded)
    shutil.rmtree(out, ignore_errors=True)  # 7.5 GB at the real size: the device disk is 64 GiB
    return figures


def grpo_recipe(ctx: Context, judge_url: str, out: Path, completion: int | None = None):
    """The GWYS recipe (accuracy + 0.1 format + caption judge, NTK gradient mode) at this run's sizes."""
    from prefopt.grpo.config import load_recipe

    s = ctx.sizes
    overrides = ctx.model_overrides(FAMILY) + ctx.common_training(out) + [
        f"data.path={ctx.world['grpo.json']}", f"data.image_root={ctx.world['grpo.json'].parent}",
        "data.max_samples=null", f"rewards.judge.base_url={judge_url}", "rewards.judge.max_retries=0",
        "rewards.caption=true", "ntk.enabled=true", "ntk.mode=gradient",
        f"training.per_device_train_batch_size={s['grpo_batch']}", f"training.num_generations={s['group']}",
        f"training.max_completion_length={completion or s['completion']}",
    ]
    return load_recipe(ROOT / "recipes/tiny/qwen_grpo.yaml", overrides)


def _grpo_figures(ctx: Context, trainer: Any, snap: Snapshot, timer: Any, check_loss: bool) -> dict[str, Any]:
    """Step time, tokens per step (TRL's ``num_tokens`` counter), tokens/s and MFU of one GRPO run."""
    history = trainer.state.log_history
    figures = check_training(history, snap.moved(), ctx.sizes["steps"]) if check_loss else {}
    figures.update(step_stats(timer.times))
    counts = [row["num_tokens"] for row in history if "num_tokens" in row]
    per_step = [b - a for a, b in zip([0.0, *counts], counts)]
    tokens = sorted(per_step[1:] or per_step)[len(per_step[1:] or per_step) // 2] if per_step else 0.0
    lengths = [row.get("completions/mean_length", 0.0) for row in history if "num_tokens" in row]
    figures.update(tokens_per_step=tokens, completion_mean_length=lengths,
                   tokens_per_s=tokens / figures["step_s"] if figures["step_s"] else None)
    shape = ctx.shapes[FAMILY]
    n = ctx.sizes["grpo_batch"]
    completion = (lengths[-1] if lengths else 0.0) or 1.0
    prompt = max(1.0, tokens / n - completion)
    # update (6N) + reference forward (2N, beta > 0) over prompt+completion, plus generation of the completion
    flops = models.train_flops(shape, [int(prompt + completion)] * n, 6)
    flops += models.train_flops(shape, [int(prompt + completion)] * n, 2)
    flops += models.generate_flops(shape, int(prompt), int(completion), n)
    figures["model_flops_per_step"] = flops
    peak, _ = models.peak_flops(ctx.device)
    figures["mfu"] = flops / figures["step_s"] / peak if peak else None
    figures["peak_gib"] = _peak(ctx)
    return figures


def gwys_grpo(ctx: Context) -> dict[str, Any]:
    """GWYS GRPO, 3 steps: all three rewards through the loopback judge, NTK gradient term; timed."""
    from benchmarks.grpo_step import scripted_policy
    from prefopt.demo.judge import start_judge
    from prefopt.grpo.trainer import build_trainer

    judge = start_judge(0)
    try:
        recipe = grpo_recipe(ctx, judge.base_url, ctx.work / "runs" / "grpo")
        _peak_reset(ctx)
        with scripted_policy():
            trainer = build_trainer(recipe)
            snap, timer = _train(trainer, ctx.device)
        figures = _grpo_figures(ctx, trainer, snap, timer, check_loss=True)
        requests = judge.requests
    finally:
        judge.stop()
    history = trainer.state.log_history
    ntk = [row[k] for row in history for k in row if k.startswith("ntk/") and "loss" in k]
    assert requests > 0, "the caption reward never reached the judge"
    figures.update(judge_requests=requests, ntk_logged=ntk,
                   reward_keys=sorted({k for row in history for k in row if k.startswith("rewards/")}))
    ctx.shared["grpo_prefopt"] = figures
    _release(trainer)
    return figures


def trl_grpo(ctx: Context) -> dict[str, Any]:
    """TRL's GRPOTrainer with the accuracy reward on the same model, data, batch, G and lengths; timed."""
    from benchmarks.grpo_step import build_side, scripted_policy
    from prefopt.demo.judge import start_judge

    judge = start_judge(0)
    try:
        recipe = grpo_recipe(ctx, judge.base_url, ctx.work / "runs" / "trl_grpo")
        _peak_reset(ctx)
        with scripted_policy():
            trainer = build_side("trl", recipe)
            snap, timer = _train(trainer, ctx.device)
    finally:
        judge.stop()
    figures = _grpo_figures(ctx, trainer, snap, timer, check_loss=False)
    mine = ctx.shared.get("grpo_prefopt")
    if mine:
        figures["prefopt_over_trl_step_time"] = mine["step_s"] / figures["step_s"]
    _release(trainer)
    return figures


@contextlib.contextmanager
def scripted_rounds():
    """The policy really generates (on the multi-image inputs), then even rows of round 1 become a box and
    every round-2 reply an answer, so that half the rollouts crop and take a second round and rewards vary."""
    from prefopt.grpo.trainer import GroundedGRPOTrainer

    original = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, ids, images, fields, num_generations, **kwargs):
        real = original(self, ids, images, fields, num_generations, **kwargs)
        if images is None:
            return real
        out = []
        for row, (imgs, generated) in enumerate(zip(images, real[0])):
            if len(imgs) > 1:
                text = "<think>the crop shows it</think><answer>yes</answer>"
            elif row % 2 == 0:
                text = "<think>look closer</think><box>[0,0,28,28]</box>"
            else:
                out.append(generated)
                continue
            out.append(self._tokenizer.encode(text, add_special_tokens=False) + [self.eos_token_ids[0]])
        return out, None

    GroundedGRPOTrainer._generate_single_turn = scripted
    try:
        yield
    finally:
        GroundedGRPOTrainer._generate_single_turn = original


def grounded_grpo(ctx: Context) -> dict[str, Any]:
    """Ground-R1 multi-round GRPO (at most 2 rounds, half the rollouts crop and take both), 3 steps."""
    from prefopt.grpo.config import load_recipe
    from prefopt.grpo.trainer import build_trainer

    s = ctx.sizes
    viscot = ctx.world["viscot.jsonl"]
    overrides = ctx.model_overrides(FAMILY) + ctx.common_training(ctx.work / "runs" / "grounded") + [
        f"data.path={viscot}", f"data.image_root={viscot.parent}", "data.max_samples=null",
        "grounded.max_rounds=2", f"training.per_device_train_batch_size={s['grpo_batch']}",
        f"training.num_generations={s['group']}", f"training.max_completion_length={s['grounded_completion']}",
    ]
    with scripted_rounds():
        trainer = build_trainer(load_recipe(ROOT / "recipes/tiny/qwen_grounded_grpo.yaml", overrides))
        snap, timer = _train(trainer, ctx.device)
    figures = check_training(trainer.state.log_history, snap.moved(), s["steps"])
    figures.update(step_stats(timer.times))
    history = trainer.state.log_history
    figures["rounds"] = [row["grounded/rounds"] for row in history if "grounded/rounds" in row]
    figures["box_rate"] = [row["grounded/box_rate"] for row in history if "grounded/box_rate" in row]
    assert max(figures["rounds"], default=0) > 1, f"no rollout took a second round: {figures['rounds']}"
    _release(trainer)
    return figures


def reverse_sft(ctx: Context) -> dict[str, Any]:
    """add-tokens (the REVERSE tags) then REVERSE SFT, 3 steps; the tag rows must learn."""
    from PIL import Image

    from prefopt.cli import main
    from prefopt.models.tokens import REVERSE_TOKENS
    from prefopt.sft.config import load_recipe
    from prefopt.sft.trainer import build_trainer
    from prefopt.training.common import prepare_policy

    root = ctx.work / "reverse"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, answer in enumerate(REVERSE_ANSWERS):
        Image.new("RGB", (ctx.sizes["image"],) * 2, (40 * i, 90, 200 - 40 * i)).save(root / f"img{i}.png")
        rows.append({"id": f"r{i}", "image": f"img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": answer}]})
    (root / "reverse.json").write_text(json.dumps(rows))
    base = ctx.work / "models" / "qwen-reverse"
    if not (base / "config.json").is_file():
        assert main(["add-tokens", "--model", str(ctx.models[FAMILY]), "--tokens", "reverse",
                     "--out", str(base)]) == 0
    ctx.shared["reverse_base"] = base
    overrides = ctx.model_overrides(FAMILY, base) + ctx.common_training(root / "run") + [
        f"data.path={root / 'reverse.json'}", f"data.image_root={root}",
        f"training.per_device_train_batch_size={ctx.sizes['sft_batch']}",
    ]
    recipe = load_recipe(ROOT / "recipes/tiny/qwen_reverse_sft.yaml", overrides)
    adapter = prepare_policy(recipe.model, recipe.lora, new_tokens=REVERSE_TOKENS, seed=0)
    ids = [adapter.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS]
    rows_before = adapter.model.get_input_embeddings().weight[ids].detach().float().cpu().clone()
    trainer = build_trainer(recipe, adapter)
    snap, timer = _train(trainer, ctx.device)
    figures = check_training(trainer.state.log_history, snap.moved(), ctx.sizes["steps"])
    rows_after = adapter.model.get_input_embeddings().weight[ids].detach().float().cpu()
    assert not rows_after.equal(rows_before), "the REVERSE tag embedding rows did not learn"
    figures.update(step_stats(timer.times), tag_ids=ids, tag_rows_moved=True)
    _release(trainer, adapter)
    return figures
