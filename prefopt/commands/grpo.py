"""Online GRPO with grounded rewards (SPEC 1): accuracy + 0.1·format + caption-judge reward, and the
conflict-aware NTK InfoNCE term (``ntk.enabled``, ``ntk.mode=gradient|hidden``).

Example:
  accelerate launch --config_file recipes/accelerate/zero3.yaml -m prefopt.cli grpo \\
      --config recipes/gwys/qwen2_5_vl_7b_grpo.yaml training.output_dir=runs/gwys
  prefopt grpo --config recipes/tiny/qwen_grpo.yaml model.name_or_path=/tmp/tiny-qwen data.path=grpo.json

Overrides are dotted ``key=value`` pairs; ``training.*`` accepts any TRL ``GRPOConfig`` field. The caption
judge's API key is read from the environment variable named by ``rewards.judge`` (never from the recipe).
"""

from __future__ import annotations

import argparse

from prefopt.commands._outdir import add_folder_flags

NAME = "grpo"
HELP = "online GRPO with accuracy/format/caption rewards and the NTK regulariser"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (see recipes/gwys/)")
    add_folder_flags(parser)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.learning_rate=1e-6")


def run(args: argparse.Namespace) -> int:
    from prefopt.commands._outdir import claim_output_dir, tracked_run
    from prefopt.data.paths import check_data_path
    from prefopt.grpo.config import load_recipe

    recipe = load_recipe(args.config, args.overrides)
    out_dir = recipe.training_args()["output_dir"]
    check_data_path(recipe.data.path, recipe.data.image_root, where=args.config or "config")
    claim_output_dir(out_dir, recipe, NAME, resume=args.resume, overwrite=args.overwrite)
    with tracked_run(out_dir):
        _train(recipe, out_dir, args.resume)
    print(f"GRPO finished: {out_dir}")
    return 0


def _train(recipe, out_dir: str, resume: bool) -> None:
    from prefopt.grpo.trainer import build_trainer
    from prefopt.training.common import last_checkpoint, plot_training_curves, write_run_config
    from prefopt.training.reliability import run_training

    trainer = build_trainer(recipe)
    write_run_config(recipe, out_dir)
    run_training(trainer, last_checkpoint(out_dir) if resume else None)
    trainer.save_model(out_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(out_dir)
        trainer.state.save_to_json(f"{out_dir}/trainer_state.json")
        plot_training_curves(out_dir)
