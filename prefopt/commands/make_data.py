"""Write the synthetic shapes world: cold-start SFT conversations, GRPO prompts, SymMPO pairs, and held-out
POPE-style and CHAIR-style evaluation sets, with their images, under one folder."""

from __future__ import annotations

import argparse

NAME = "make-data"
USES_TORCH = False  # no thread pool to size
HELP = "write the synthetic shapes world (SFT, GRPO, SymMPO, POPE, CHAIR files)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=240, help="cold-start scenes")
    parser.add_argument("--grpo", type=int, default=64, help="GRPO prompts")
    parser.add_argument("--preference", type=int, default=160, help="SymMPO pairs")
    parser.add_argument("--eval", type=int, default=60, help="held-out scenes")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.6,
        help="chance a cold-start response also names the absent partner of a shown shape (default 0.6)",
    )


def run(args: argparse.Namespace) -> int:
    from prefopt.data.synthetic import WorldSizes, write_world
    from prefopt.errors import PrefoptError

    if not 0.0 <= args.noise <= 1.0:
        raise PrefoptError(f"--noise must lie in [0, 1], got {args.noise}")
    for name in ("train", "grpo", "preference", "eval"):
        if getattr(args, name) < 1:
            raise PrefoptError(f"--{name} must be at least 1")
    sizes = WorldSizes(args.train, args.grpo, args.preference, args.eval, args.noise)
    files = write_world(args.out, sizes, seed=args.seed)
    for name, path in files.items():
        print(f"{name:16s} {path}")
    return 0
