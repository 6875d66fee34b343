"""Add special tokens to a model and save the result as a new model folder.

The tokens become special tokens of the tokenizer (never split), the input and output embeddings get
a row for each (spare rows are reused where the embedding is already larger than the tokenizer), and
each new row starts at the mean of the existing rows. Model, tokenizer, processor and chat template
are saved to --out, and the new ids are printed.

  prefopt add-tokens --model llava-hf/llava-1.5-7b-hf --tokens reverse --out runs/llava-reverse-base
  prefopt add-tokens --model Qwen/Qwen2.5-VL-7B-Instruct --tokens "<obj>,</obj>" --out runs/qwen-obj
"""

from __future__ import annotations

import argparse

from prefopt.models.registry import families

NAME = "add-tokens"
HELP = "add special tokens (e.g. the REVERSE tags) with mean-initialised embedding rows"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="source model: hub id or local folder")
    parser.add_argument(
        "--tokens", required=True, help="'reverse' (<SPAN>, </CN>, </UN>) or a comma list of tokens"
    )
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument(
        "--family", default=None, choices=families(), help="model family (detected from config.json when omitted)"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prefopt.errors import ModelError
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import add_special_tokens, parse_token_list, save_model_dir

    tokens = parse_token_list(args.tokens)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: output folder exists and is not empty")
    adapter = load_adapter(args.model, family=args.family, dtype=args.dtype)
    ids = add_special_tokens(adapter, tokens)
    save_model_dir(adapter.model, adapter.processor, out)
    for token, token_id in ids.items():
        print(f"{token}\t{token_id}")
    print(f"saved to {out}")
    return 0
