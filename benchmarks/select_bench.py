"""Target 5: variance-guided selection's sampling (k responses per prompt), batched against a per-sample loop.

- ``batched``: :func:`prefopt.grpo.select.sample_responses`: per prompt, one prefill (vision tower
  included) whose KV cache the k samples share, then one batched ``generate``;
- ``expanded``: one ``generate`` with ``num_return_sequences=k`` (k copies of prompt and image are
  prefilled; what ``sample_responses`` did before), reported for the before/after comparison;
- ``loop``: ``k`` separate ``generate`` calls of one response each per prompt (how a simple script does it).

Same tiny model, prompts (synthetic shapes world, GWYS four-stage template), sampling settings and
``max_new_tokens``; EOS is suppressed on both sides so every response has exactly ``max_new_tokens`` tokens.

    python -m benchmarks.select_bench [--quick] [--repeats N] [--k 64]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks import common


def per_sample_loop(adapter, rows, k: int, max_new_tokens: int) -> list[list[str]]:
    """The baseline: one ``generate`` call per response."""
    model = adapter.model
    out = []
    for row in rows:
        batch = adapter.encode_prompts([row["prompt"]], [list(row["images"])]).to(model.device)
        texts = []
        for _ in range(k):
            with torch.no_grad():
                ids = model.generate(
                    **batch,
                    do_sample=True,
                    temperature=1.0,
                    top_p=0.95,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=adapter.tokenizer.pad_token_id,
                )
            texts += adapter.decode(ids[:, batch["input_ids"].size(1) :])
        out.append(texts)
    return out


def expanded_prompts(adapter, rows, k: int, max_new_tokens: int) -> list[list[str]]:
    """What ``sample_responses`` did before sharing the prefill: ``num_return_sequences=k`` (k prompt copies)."""
    model = adapter.model
    out = []
    for row in rows:
        batch = adapter.encode_prompts([row["prompt"]], [list(row["images"])]).to(model.device)
        with torch.no_grad():
            ids = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                num_return_sequences=k,
                max_new_tokens=max_new_tokens,
                pad_token_id=adapter.tokenizer.pad_token_id,
            )
        out.append(adapter.decode(ids[:, batch["input_ids"].size(1) :]))
    return out


def load_rows(model_dir: str, folder: Path, n: int) -> list[dict]:
    """``n`` GRPO prompts of the shapes world, as selection reads them."""
    from prefopt.data.synthetic import WorldSizes, write_world
    from prefopt.grpo.config import load_recipe
    from prefopt.grpo.data import load_dataset_for_recipe

    files = write_world(folder, WorldSizes(train=2, grpo=n, preference=2, eval=2, grounded=0))
    recipe = load_recipe(
        common.ROOT / "recipes/tiny/qwen_select.yaml",
        [f"model.name_or_path={model_dir}", f"data.path={files['grpo.json']}", f"data.image_root={folder}"],
    )
    dataset = load_dataset_for_recipe(recipe.data)
    return [dataset[i] for i in range(n)]


def run_family(family: str, args, n: int) -> dict:
    """Interleaved batched vs loop timings on one family."""
    from prefopt.grpo.select import sample_responses
    from prefopt.models.adapter import load_adapter

    model_dir = common.model_dir(family, args)
    adapter = load_adapter(model_dir, dtype=args.dtype)
    adapter.model.to(args.device).eval()
    # no early stop: both sides write exactly max_new_tokens per response
    adapter.model.generation_config.eos_token_id = None
    prompts = 1 if args.quick else 2
    with tempfile.TemporaryDirectory() as tmp:
        rows = load_rows(model_dir, Path(tmp) / "world", prompts)
        sides = {
            "loop": lambda: common.timed(
                lambda: per_sample_loop(adapter, rows, args.k, args.tokens), args.device
            ),
            "batched": lambda: common.timed(
                lambda: sample_responses(adapter, rows, args.k, args.tokens), args.device
            ),
            "expanded": lambda: common.timed(
                lambda: expanded_prompts(adapter, rows, args.k, args.tokens), args.device
            ),
        }
        times = common.interleave(sides, n)
        peaks = {
            "loop": common.measure_peak(
                lambda: per_sample_loop(adapter, rows, args.k, args.tokens), args.device
            ),
            "batched": common.measure_peak(
                lambda: sample_responses(adapter, rows, args.k, args.tokens), args.device
            ),
        }
    print(
        f"{family}: batched {common.fmt_stats(times['batched'])}, loop {common.fmt_stats(times['loop'])}",
        flush=True,
    )
    return {
        "family": family,
        "k": args.k,
        "prompts": prompts,
        "max_new_tokens": args.tokens,
        "times": times,
        "peak_mib": peaks,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the families and print the speed-up and memory ratios."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=64, help="responses per prompt")
    p.add_argument("--tokens", type=int, default=None, help="max_new_tokens (default 16, quick 8)")
    args = p.parse_args(argv)
    args.tokens = args.tokens or (8 if args.quick else 16)
    n = common.repeats(args)
    runs = [run_family(f, args, n) for f in common.families(args)]
    ratios = []
    for r in runs:
        t = r["times"]
        ratios.append(
            (
                f"select {r['family']}: k={r['k']} loop / batched time",
                t["loop"]["median"] / t["batched"]["median"],
                ">= 5",
            )
        )
        ratios.append(
            (
                f"select {r['family']}: k={r['k']} expanded (num_return_sequences) / shared-prefill time",
                t["expanded"]["median"] / t["batched"]["median"],
                "report",
            )
        )
        ratios.append(
            (
                f"select {r['family']}: batched / loop peak memory",
                common.mem_ratio(r["peak_mib"]["batched"], r["peak_mib"]["loop"]),
                "report",
            )
        )
    common.emit("select", {"config": args.config, "runs": runs}, ratios)


if __name__ == "__main__":
    main()
