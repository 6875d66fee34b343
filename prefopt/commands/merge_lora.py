"""Merge a LoRA adapter into its base model and save a plain transformers model folder.

Merges the LoRA weights (language model, and vision tower / projector where they were trained), the
trainable rows of added special tokens and any ``modules_to_save`` into the full-precision base (also
for adapters trained on a 4-bit/8-bit QLoRA base). Tokens the adapter's saved tokenizer has beyond the
base are added first, with the same ids. The output (safetensors, processor, tokenizer, chat template)
loads with AutoModelForImageTextToText + AutoProcessor. A base that does not match the adapter (other
model, other shapes, other vocabulary) is refused.

  prefopt merge-lora --adapter runs/symmpo-lora --base llava-hf/llava-1.5-7b-hf --out runs/symmpo-merged
  prefopt merge-lora --adapter runs/reverse-lora --base runs/qwen-reverse-base --out merged --dtype bfloat16
"""

from __future__ import annotations

import argparse

NAME = "merge-lora"
HELP = "merge a LoRA adapter (incl. new token rows and vision weights) into its base model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="LoRA adapter folder (adapter_config.json)")
    parser.add_argument("--base", default=None, help="base model; default: base_model_name_or_path of the adapter")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="dtype of the saved weights (default: the base's)")
    parser.add_argument("--allow-other-base", action="store_true",
                        help="accept a base whose name differs from the adapter's record (shapes are still checked)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prefopt.errors import ModelError
    from prefopt.models.lora import merge_lora

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: output folder exists and is not empty")
    path = merge_lora(args.adapter, args.base, out, dtype=args.dtype, allow_other_base=args.allow_other_base)
    print(f"merged model saved to {path}")
    return 0
