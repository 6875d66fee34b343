"""Reward-variance-guided sample selection (SPEC 1.4): draw k responses per prompt from the policy, score them
with the GRPO recipe's reward, and keep the top fraction of prompts by reward variance.

Writes under --out: selected.json (same layout as the input, so `prefopt grpo data.path=OUT/selected.json`
reads it), stats.jsonl (per-prompt mean, variance, rewards, kept) and selection.png (mean vs variance).

Example:
  prefopt select --config recipes/gwys/qwen2_5_vl_7b_grpo.yaml --k 64 --keep 0.5 --out runs/select
"""

from __future__ import annotations

import argparse

from prefopt.commands._outdir import add_folder_flags

NAME = "select"
HELP = "keep the prompts whose sampled rewards vary most (curation before GRPO)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the GRPO recipe (model, data, rewards, sampling)")
    parser.add_argument("--k", type=int, default=64, help="responses per prompt (default 64)")
    parser.add_argument("--keep", type=float, default=0.5, help="fraction of prompts to keep (default 0.5)")
    parser.add_argument("--out", required=True, help="output folder")
    add_folder_flags(parser, "redo the selection in the output folder (same recipe, k and keep)")
    parser.add_argument("overrides", nargs="*", help="dotted recipe overrides")


def run(args: argparse.Namespace) -> int:
    from prefopt.commands._outdir import claim_output_dir, tracked_run
    from prefopt.config import to_dict
    from prefopt.data.paths import check_data_path
    from prefopt.errors import PrefoptError
    from prefopt.grpo.config import load_recipe
    from prefopt.grpo.select import run_selection

    if args.k < 2:
        raise PrefoptError(f"--k must be at least 2 (a variance needs two rewards), got {args.k}")
    if not 0 < args.keep <= 1:
        raise PrefoptError(f"--keep must be in (0, 1] (the fraction of prompts kept), got {args.keep}")
    recipe = load_recipe(args.config, args.overrides)
    check_data_path(recipe.data.path, recipe.data.image_root, where=args.config)
    record = {**to_dict(recipe), "select": {"k": args.k, "keep": args.keep}}
    claim_output_dir(args.out, record, NAME, resume=args.resume, overwrite=args.overwrite, flag="--out")
    from prefopt.cost import measured

    with tracked_run(args.out), measured(args.out, "select"):
        files = run_selection(recipe, args.k, args.keep, args.out)
    for name, path in files.items():
        print(f"{name:9s} {path}")
    return 0
