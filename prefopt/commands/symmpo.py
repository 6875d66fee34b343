"""Offline preference optimisation: SymMPO (SPEC 3), with plain DPO and mDPO as settings of the same loss.

Compare the three methods on the same data and model with one flag:
  prefopt symmpo --config recipes/symmpo/llava15_7b_lora.yaml --loss symmpo
  prefopt symmpo --config recipes/symmpo/llava15_7b_lora.yaml --loss mdpo training.output_dir=runs/mdpo
  prefopt symmpo --config recipes/symmpo/llava15_7b_lora.yaml --loss dpo training.output_dir=runs/dpo

Reference log-probs are computed once before training and cached next to the dataset (a second run or a
resume reuses them); `reference=online` recomputes them each step with the LoRA adapter disabled.
Rows without a contrastive image get one with `contrastive=similar` (nearest dataset image) or
`contrastive=corrupt` (mDPO-style crop + noise). Multi-GPU / ZeRO-3:
  accelerate launch --config_file recipes/accelerate/zero3.yaml -m prefopt.cli symmpo \\
      --config recipes/symmpo/llava15_7b.yaml
"""

from __future__ import annotations

import argparse

NAME = "symmpo"
HELP = "offline SymMPO / mDPO / DPO preference training (one loss, three settings)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (see recipes/symmpo/ and recipes/tiny/*symmpo*)")
    parser.add_argument("--loss", choices=["symmpo", "dpo", "mdpo"], help="loss preset (sets loss.name)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.beta=0.5 training.max_steps=10")


def run(args: argparse.Namespace) -> int:
    from prefopt.config import load_config
    from prefopt.dpo.config import SymMPOConfig
    from prefopt.dpo.trainer import train

    overrides = list(args.overrides)
    if args.loss:
        overrides.append(f"loss.name={args.loss}")
    config = load_config(SymMPOConfig, args.config, overrides)
    out = train(config)
    print(f"{config.loss.name} training finished: {out}")
    return 0
