"""Target 3: SymMPO training throughput (prompt + response tokens per second) against TRL's DPOTrainer.

Both sides train the same LoRA policy (tiny recipe ``recipes/tiny/<family>_symmpo.yaml``) on the same
preference pairs of the synthetic shapes world, same batch size and learning rate:

- ``prefopt``: :class:`prefopt.dpo.trainer.SymMPOTrainer`, five sequences per example (SymMPO), reference
  log-probs read from the on-disk cache (computed once before timing; that one-off cost is reported too);
- ``trl``: ``trl.DPOTrainer`` (two sequences per example; for vision data TRL cannot precompute reference
  log-probs, so its reference forward runs every step with the LoRA adapter disabled).

Throughput = tokens that went through the policy (``attention_mask`` sum of every collated batch) divided
by the step time, first step dropped. Repeats build fresh trainers and are interleaved A B A B.

    python -m benchmarks.symmpo_throughput [--quick] [--repeats N] [--device cuda --dtype bfloat16 --config 3b]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.grpo_step import StepTimer


class CountingCollator:
    """Wraps a collator and records the number of non-pad tokens of every batch it builds."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.tokens: list[int] = []

    def __call__(self, items: Any) -> Any:
        batch = self.inner(items)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def symmpo_config(model: str, data: Path, args, steps: int, out: str) -> Any:
    """The tiny SymMPO recipe of the model's family with the benchmark's paths, dtype and steps."""
    from prefopt.config import load_config
    from prefopt.dpo.config import SymMPOConfig

    short = "qwen" if "qwen" in Path(model).name or args.config == "3b" else "llava"
    overrides = [
        f"model.name_or_path={model}",
        f"model.dtype={args.dtype}",
        f"data.path={data}",
        f"data.image_root={data.parent}",
        f"training.output_dir={out}",
        f"training.max_steps={steps}",
        f"training.per_device_train_batch_size={args.batch}",
        "training.save_steps=100000",
        f"training.use_cpu={str(args.device == 'cpu').lower()}",
        f"training.bf16={str(args.dtype == 'bfloat16').lower()}",
        "training.resume=false",
        f"reference_cache_dir={Path(out).parent / 'refcache'}",
    ]
    return load_config(SymMPOConfig, common.ROOT / f"recipes/tiny/{short}_symmpo.yaml", overrides)


def build_prefopt(config: Any) -> Any:
    """A SymMPOTrainer as ``prefopt.dpo.trainer.train`` builds it (reference cache read or made first)."""
    from prefopt.dpo import trainer as t
    from prefopt.dpo.collator import PreferenceCollator, PreferenceDataset
    from prefopt.dpo.contrastive import ContrastiveImages
    from prefopt.dpo.losses import loss_keys
    from prefopt.training.common import prepare_policy

    keys = loss_keys(config.loss.name)
    examples = t.read_examples(config)
    contrastive = ContrastiveImages(examples, config.contrastive, config.contrastive_seed)
    reference = t.precomputed_reference(config, examples, contrastive)
    adapter = prepare_policy(config.model, config.lora)
    return t.SymMPOTrainer(
        model=adapter.model,
        args=t.training_arguments(config),
        train_dataset=PreferenceDataset(examples, reference),
        data_collator=PreferenceCollator(adapter, keys, contrastive),
        processing_class=adapter.processor,
        loss_settings=config.loss,
    )


def dpo_dataset(config: Any) -> Any:
    """The same pairs in TRL's conversational vision-preference layout (prompt, chosen, rejected, images)."""
    from datasets import Dataset

    from prefopt.data.images import load_image
    from prefopt.dpo.trainer import read_examples

    rows = []
    for ex in read_examples(config):
        rows.append(
            {
                "prompt": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ex.question}]}
                ],
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": ex.chosen}]}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": ex.rejected}]}],
                "images": [load_image(ex.image)],
            }
        )
    return Dataset.from_list(rows)


def build_trl(config: Any, dataset: Any) -> Any:
    """TRL's DPOTrainer on the same LoRA policy and training settings."""
    from trl import DPOConfig, DPOTrainer

    from prefopt.training.common import prepare_policy

    tr = config.training
    args = DPOConfig(
        output_dir=tr.output_dir,
        learning_rate=tr.learning_rate,
        lr_scheduler_type=tr.lr_scheduler_type,
        per_device_train_batch_size=tr.per_device_train_batch_size,
        max_steps=tr.max_steps,
        beta=config.loss.beta,
        max_length=None,
        use_cpu=tr.use_cpu,
        bf16=tr.bf16,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=tr.seed,
        dataloader_num_workers=0,
    )
    adapter = prepare_policy(config.model, config.lora)
    return DPOTrainer(
        model=adapter.model, args=args, train_dataset=dataset, processing_class=adapter.processor
    )


def run_side(
    side: str, config: Any, dataset: Any, device: str, memory: bool
) -> tuple[float, float, float | None]:
    """(tokens per wall s, per CPU s, median step s, peak MiB or None, examples per wall s) of one fresh run."""
    import statistics

    trainer = build_prefopt(config) if side == "prefopt" else build_trl(config, dataset)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    timer = StepTimer(device)
    trainer.add_callback(timer.callback)
    peak = None
    if memory:
        with common.peak_memory(device) as mem:
            trainer.train()
        peak = mem["peak_mib"]
    else:
        trainer.train()
    steps = len(timer.times)
    tokens = counter.tokens[1:steps]
    tps, cpu_tps = sum(tokens) / sum(timer.times[1:]), sum(tokens) / sum(timer.cpu[1:])
    # examples per second: what a run over a dataset pays (SymMPO's 5 sequences and DPO's 2 count alike)
    eps = (steps - 1) * config.training.per_device_train_batch_size / sum(timer.times[1:])
    return tps, cpu_tps, statistics.median(timer.times[1:]), peak, eps


def charged(eps: float, n_examples: int, cache_s: float) -> float:
    """Examples per second over one epoch of ``n_examples`` with the reference-cache build charged to it."""
    return n_examples / (n_examples / eps + cache_s)


def run_family(family: str, args, n: int, loss: str = "symmpo") -> dict:
    """Interleaved repeats of both sides on one model family (prefopt with ``loss``)."""
    from prefopt.data.synthetic import WorldSizes, write_world

    model = common.model_dir(family, args)
    steps = 3 if args.quick else 6
    with tempfile.TemporaryDirectory() as tmp:
        files = write_world(
            Path(tmp) / "world",
            WorldSizes(train=2, grpo=2, preference=args.batch * steps + 2, eval=2, grounded=0),
        )
        config = symmpo_config(model, files["symmpo.parquet"], args, steps, str(Path(tmp) / "run"))
        config.loss.name = loss
        if loss == "dpo":
            config.contrastive = "none"
        start = time.perf_counter()
        build_prefopt(config)  # fills the reference cache (one-off, reused by every later run)
        cache_s = time.perf_counter() - start
        dataset = dpo_dataset(config)
        res: dict[str, dict[str, list[float]]] = {
            s: {"tps": [], "cpu_tps": [], "step": [], "eps": []} for s in ("prefopt", "trl")
        }
        peaks, loads = {}, []
        for rep in range(n):
            for side in res:
                tps, cpu_tps, step, peak, eps = run_side(side, config, dataset, args.device, memory=rep == 0)
                res[side]["eps"].append(eps)
                res[side]["tps"].append(tps)
                res[side]["step"].append(step)
                res[side]["cpu_tps"].append(cpu_tps)
                if peak is not None:
                    peaks[side] = peak
            loads.append(common.load_avg())
    out = {
        "family": family,
        "steps": steps,
        "batch": args.batch,
        "reference_cache_build_s": cache_s,
        "loss": loss,
        "examples_per_s": {s: common.summary(v["eps"]) for s, v in res.items()},
        # prefopt's one-off cache build charged to one epoch of the benchmark's pairs (TRL builds none)
        "examples_per_s_cache_charged": {
            "prefopt": common.summary([charged(e, len(dataset), cache_s) for e in res["prefopt"]["eps"]]),
            "trl": common.summary(res["trl"]["eps"]),
        },
        "tokens_per_s": {s: common.summary(v["tps"]) for s, v in res.items()},
        "step_s": {s: common.summary(v["step"]) for s, v in res.items()},
        "tokens_per_cpu_s": {s: common.summary(v["cpu_tps"]) for s, v in res.items()},
        "peak_mib": peaks,
        "load": common.summary(loads),
    }
    print(
        f"{family}: prefopt {common.fmt_stats(out['tokens_per_s']['prefopt'], 'tok/s')}, "
        f"trl {common.fmt_stats(out['tokens_per_s']['trl'], 'tok/s')}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    """Run both families and print the throughput and memory ratios."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2, help="examples per step")
    p.add_argument("--loss", action="append", choices=("symmpo", "dpo"), help="prefopt loss (default both)")
    args = p.parse_args(argv)
    n = common.repeats(args)
    ratios, runs = [], []
    for loss in args.loss or ["dpo", "symmpo"]:
        rows = [run_family(f, args, n, loss) for f in common.families(args)]
        goal = ">= 1.3" if loss == "dpo" else "report"
        ratios += common.family_ratios(
            f"{loss}",
            rows,
            [
                ("examples_per_s", "prefopt / TRL DPO examples per second (cached reference)", goal),
                ("examples_per_s_cache_charged", "prefopt / TRL DPO examples/s, cache build charged to 1 epoch",
                 "report"),
                ("tokens_per_s", "prefopt / TRL DPO tokens per second", "report"),
            ],
            baseline="TRL DPO",
        )
        runs += rows
    for fam in common.families(args):
        by = {r["loss"]: r for r in runs if r["family"] == fam}
        if {"dpo", "symmpo"} <= set(by):
            # cost per example = 1 / examples per second; linear in sequences would be 5/2 = 2.5
            ratio = by["dpo"]["examples_per_s"]["prefopt"]["median"] / by["symmpo"]["examples_per_s"]["prefopt"]["median"]
            ratios.append((f"symmpo {fam}: SymMPO / DPO cost per example", ratio, "<= 2.5 (5/2 sequences)"))
    common.emit(
        "symmpo", {"config": args.config, "device": args.device, "dtype": args.dtype, "runs": runs}, ratios
    )


if __name__ == "__main__":
    main()
