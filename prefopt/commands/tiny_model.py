"""Write a tiny random-init checkpoint (LLaVA-1.5, Qwen2.5-VL or Qwen3-VL architecture) for tests and CPU demos.

The directory loads with plain ``AutoModelForImageTextToText`` / ``AutoProcessor`` and generates from an
image (random weights: the text is gibberish). The same --seed gives byte-identical files.

Example:
  prefopt tiny-model --family qwen2_5_vl --out runs/tiny-qwen --hidden-size 128
"""

from __future__ import annotations

import argparse

from prefopt.models.tiny import TINY_FAMILIES

NAME = "tiny-model"
HELP = "write a tiny random-init checkpoint of a registered model family"

_SIZE_FLAGS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vision_hidden_size",
    "vision_intermediate_size",
    "vision_depth",
    "vision_heads",
    "image_size",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register --family, --out, --seed and the size overrides."""
    parser.add_argument("--family", required=True, choices=TINY_FAMILIES, help="architecture")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    for name in _SIZE_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override {name}")


def run(args: argparse.Namespace) -> int:
    """Build the checkpoint and print where it was written."""
    from prefopt.models.tiny import build_tiny

    overrides = {name: getattr(args, name) for name in _SIZE_FLAGS if getattr(args, name) is not None}
    out = build_tiny(args.family, args.out, seed=args.seed, **overrides)
    print(f"wrote tiny {args.family} checkpoint to {out}")
    return 0
