"""SymMPO and ``--loss dpo`` with the reference cache (against TRL's DPOTrainer) on LLaVA-1.5 with the seed's
LoRA recipe (r 128, alpha 256), then merge-lora of the SymMPO adapter and generation from the merged model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gpucheck import models
from gpucheck.context import ROOT, Context, Snapshot, check_training, step_stats
from gpucheck.grpo_checks import _peak, _peak_reset, _release

FAMILY = "llava"


def symmpo_config(ctx: Context, loss: str, out: Path) -> Any:
    """The seed LoRA recipe (recipes/symmpo/llava15_7b_lora.yaml) at this run's sizes and paths."""
    from prefopt.config import load_config
    from prefopt.dpo.config import SymMPOConfig

    data = ctx.world["symmpo.parquet"]
    overrides = ctx.model_overrides(FAMILY) + [
        f"loss.name={loss}", f"data.path={data}", f"data.image_root={data.parent}",
        "contrastive=none", "reference=precomputed", f"reference_batch_size={ctx.sizes['pref_batch']}",
        f"reference_cache_dir={ctx.work / 'refcache'}", "lora.enabled=true", "lora.r=128", "lora.alpha=256",
        f"training.output_dir={out}", f"training.max_steps={ctx.sizes['steps']}",
        f"training.per_device_train_batch_size={ctx.sizes['pref_batch']}", "training.gradient_accumulation_steps=1",
        f"training.learning_rate={ctx.sizes['lr']}", "training.logging_steps=1", "training.save_steps=100000",
        f"training.use_cpu={str(ctx.cpu).lower()}", f"training.bf16={str(not ctx.cpu).lower()}",
        "training.gradient_checkpointing=true", "training.resume=false", "training.report_to=[none]",
        "training.dataloader_num_workers=0", "training.seed=0",
    ]
    return load_config(SymMPOConfig, ROOT / "recipes/symmpo/llava15_7b_lora.yaml", overrides)


class _Probe:
    """Collects the trainer built inside ``prefopt.dpo.trainer.train`` with a timer, token counter, snapshot."""

    def __init__(self, device: str):
        self.device = device
        self.trainer: Any = None

    def instrument(self, trainer: Any) -> None:
        from benchmarks.grpo_step import StepTimer
        from benchmarks.symmpo_throughput import CountingCollator

        self.trainer = trainer
        self.timer = StepTimer(self.device)
        trainer.add_callback(self.timer.callback)
        self.counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = self.counter
        self.snapshot = Snapshot(trainer.model)


def _run_symmpo(ctx: Context, loss: str) -> tuple[dict[str, Any], Path]:
    """``prefopt.dpo.trainer.train`` (the symmpo command's function) with its trainer instrumented."""
    import time

    from prefopt.dpo import trainer as t

    out = ctx.work / "runs" / loss
    probe = _Probe(ctx.device)
    original = t.SymMPOTrainer

    class Probed(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            probe.instrument(self)

    _peak_reset(ctx)
    t.SymMPOTrainer = Probed
    start = time.perf_counter()
    try:
        t.train(symmpo_config(ctx, loss, out))
    finally:
        t.SymMPOTrainer = original
    wall = time.perf_counter() - start
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    figures = check_training(history, probe.snapshot.moved(), ctx.sizes["steps"])
    figures.update(_throughput(ctx, probe.timer.times, probe.counter.tokens, 5 if loss == "symmpo" else 2), run_wall_s=wall,
                   peak_gib=_peak(ctx), adapter_saved=(out / "adapter_config.json").is_file())
    assert figures["adapter_saved"], f"{out}: no adapter_config.json"
    _release(probe)
    return figures, out


def _throughput(ctx: Context, times: list[float], tokens: list[int], sequences: int) -> dict[str, Any]:
    """Examples/s, tokens/s and MFU over the steps after the first (``sequences`` per example)."""
    stats = step_stats(times)
    timed_tokens = tokens[1 : len(times)] or tokens[: len(times)]
    timed = times[1:] or times
    seconds = sum(timed)
    n_seq = ctx.sizes["pref_batch"] * sequences
    shape = ctx.shapes[FAMILY]
    # policy update only (6N per token + attention): the cached or TRL-recomputed reference is not counted
    flops = sum(models.train_flops(shape, [int(t / n_seq)] * n_seq, 6) for t in timed_tokens)
    peak, _ = models.peak_flops(ctx.device)
    stats.update(
        examples_per_s=ctx.sizes["pref_batch"] * len(timed) / seconds,
        tokens_per_s=sum(timed_tokens) / seconds,
        mfu=flops / seconds / peak if peak else None,
    )
    return stats


def symmpo(ctx: Context) -> dict[str, Any]:
    """SymMPO (five sequences per example), LoRA r 128, reference cache; adapter kept for merge-lora."""
    figures, out = _run_symmpo(ctx, "symmpo")
    ctx.shared["symmpo_adapter"] = out
    ctx.shared["symmpo"] = figures
    return figures


def dpo(ctx: Context) -> dict[str, Any]:
    """``--loss dpo`` (two sequences per example) through the same trainer and cache."""
    figures, _ = _run_symmpo(ctx, "dpo")
    ctx.shared["dpo"] = figures
    return figures


def trl_dpo(ctx: Context) -> dict[str, Any]:
    """TRL's DPOTrainer on the same LoRA policy, pairs, batch and learning rate; timed."""
    from benchmarks.grpo_step import StepTimer
    from benchmarks.symmpo_throughput import CountingCollator, build_trl, dpo_dataset

    config = symmpo_config(ctx, "dpo", ctx.work / "runs" / "trl_dpo")
    config.training.extra = {"gradient_checkpointing": True}
    _peak_reset(ctx)
    trainer = build_trl(config, dpo_dataset(config))
    trainer.args.gradient_checkpointing = True
    trainer.args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    timer = StepTimer(ctx.device)
    trainer.add_callback(timer.callback)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    snap = Snapshot(trainer.model)
    trainer.train()
    figures = check_training(trainer.state.log_history, snap.moved(), ctx.sizes["steps"])
    figures.update(_throughput(ctx, timer.times, counter.tokens, 2), peak_gib=_peak(ctx))
    for name in ("symmpo", "dpo"):
        if name in ctx.shared:
            figures[f"{name}_over_trl_examples_per_s"] = ctx.shared[name]["examples_per_s"] / figures["examples_per_s"]
    _release(trainer)
    return figures


def merge_and_generate(ctx: Context) -> dict[str, Any]:
    """``prefopt merge-lora`` of the SymMPO adapter; the merged folder loads with plain transformers and generates."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from prefopt.cli import main

    adapter = ctx.shared.get("symmpo_adapter")
    assert adapter is not None, "no SymMPO adapter (the symmpo check failed or was skipped)"
    merged = ctx.work / "models" / "llava-merged"
    shutil.rmtree(merged, ignore_errors=True)  # left over from an interrupted run in the same --work
    assert main(["merge-lora", "--adapter", str(adapter), "--base", str(ctx.models[FAMILY]), "--out", str(merged),
                 "--dtype", ctx.dtype, "--allow-other-base"]) == 0
    processor = AutoProcessor.from_pretrained(merged)
    model = AutoModelForImageTextToText.from_pretrained(merged, dtype=getattr(torch, ctx.dtype),
                                                        attn_implementation="sdpa").to(ctx.device)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = Image.new("RGB", (ctx.sizes["image"],) * 2, (200, 30, 30))
    batch = processor(text=[prompt], images=[image], return_tensors="pt").to(ctx.device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    new = out.shape[1] - batch["input_ids"].shape[1]
    assert new > 0, "the merged model generated nothing"
    _release(model)
    files = sorted(p.name for p in merged.iterdir())
    shutil.rmtree(merged, ignore_errors=True)  # 14 GB at the real size
    return {"merged_dir": str(merged), "generated_tokens": int(new), "files": files[:20]}
