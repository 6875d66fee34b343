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

from prefopt.commands._outdir import add_folder_flags

NAME = "symmpo"
HELP = "offline SymMPO / mDPO / DPO preference training (one loss, three settings)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (see recipes/symmpo/ and recipes/tiny/*symmpo*)")
    parser.add_argument("--loss", choices=["symmpo", "dpo", "mdpo"], help="loss preset (sets loss.name)")
    add_folder_flags(parser)
    # REMAINDER (re-parsed in run) so that options may also follow the overrides: `x=1 --loss dpo`
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="dotted overrides, e.g. loss.beta=0.5 training.max_steps=10")


def _late_options(args: argparse.Namespace) -> tuple[str | None, str | None, list[str]]:
    """``--config`` / ``--loss`` / ``--resume`` / ``--overwrite`` given after the first override, and the overrides."""
    from prefopt.config import ConfigError

    late = argparse.ArgumentParser(prog="prefopt symmpo", add_help=False, exit_on_error=False)
    late.add_argument("--config")
    late.add_argument("--loss", choices=["symmpo", "dpo", "mdpo"])
    late.add_argument("--resume", action="store_true")
    late.add_argument("--overwrite", action="store_true")
    try:
        known, rest = late.parse_known_args(args.overrides)
    except argparse.ArgumentError as err:
        raise ConfigError(str(err)) from err
    stray = [item for item in rest if item.startswith("-")]
    if stray:
        raise ConfigError(f"unrecognised option(s) {stray}; overrides look like section.key=value")
    args.resume = args.resume or known.resume
    args.overwrite = args.overwrite or known.overwrite
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    return known.config or args.config, known.loss or args.loss, rest


def run(args: argparse.Namespace) -> int:
    from prefopt.commands._outdir import claim_output_dir, tracked_run
    from prefopt.data.paths import check_data_path
    from prefopt.dpo.collator import KEY_PARTS
    from prefopt.dpo.config import load_recipe
    from prefopt.dpo.losses import loss_keys
    from prefopt.dpo.trainer import train

    config_path, loss, overrides = _late_options(args)
    if loss:
        overrides.append(f"loss.name={loss}")
    if args.resume:
        overrides.append("training.resume=true")
    config = load_recipe(config_path, overrides)
    if not any(KEY_PARTS[k][0] == "contrastive_image" for k in loss_keys(config.loss.name)):
        config.contrastive = "none"  # as the trainer does: plain DPO never looks at m'
    out_dir = config.training.output_dir
    check_data_path(config.data.path, config.data.image_root, where=config_path or "config")
    claim_output_dir(out_dir, config, NAME, resume=config.training.resume, overwrite=args.overwrite)
    with tracked_run(out_dir):
        out = train(config)
    print(f"{config.loss.name} training finished: {out}")
    return 0
