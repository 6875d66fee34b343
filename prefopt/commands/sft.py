"""Cold-start supervised fine-tuning (SPEC 1.7) on LLaVA conversations or LLaVA-CoT data.

The loss covers assistant tokens only (prompt and image tokens are masked). ``--convert four_stage`` rewrites
LLaVA-CoT answers (SUMMARY/CAPTION/REASONING/CONCLUSION) into <prethink>/<caption>/<think>/<answer>.
Defaults: lr 1e-6 cosine, 2 epochs.

Example:
  prefopt sft --config recipes/gwys/qwen2_5_vl_7b_sft.yaml data.path=llava_cot.json --convert four_stage
"""

from __future__ import annotations

import argparse

from prefopt.commands._outdir import add_folder_flags

NAME = "sft"
HELP = "supervised fine-tuning (cold start) on LLaVA conversations, assistant tokens only"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (see recipes/gwys/ and recipes/tiny/)")
    parser.add_argument(
        "--convert", choices=["none", "four_stage"], help="rewrite LLaVA-CoT answers (data.convert)"
    )
    parser.add_argument(
        "--reverse", action="store_true", help="REVERSE hallucination-aware labels (sets reverse=true)"
    )
    add_folder_flags(parser)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.num_train_epochs=1")


def run(args: argparse.Namespace) -> int:
    from prefopt.commands._outdir import claim_output_dir, tracked_run
    from prefopt.data.paths import check_data_path
    from prefopt.sft.config import load_recipe

    overrides = list(args.overrides)
    if args.convert:
        overrides.append(f"data.convert={args.convert}")
    if args.reverse:
        overrides.append("reverse=true")
    recipe = load_recipe(args.config, overrides)
    out_dir = recipe.training_args()["output_dir"]
    check_data_path(recipe.data.path, recipe.data.image_root, where=args.config or "config")
    claim_output_dir(out_dir, recipe, NAME, resume=args.resume, overwrite=args.overwrite)
    with tracked_run(out_dir):
        _train(recipe, out_dir, args.resume)
    print(f"SFT finished: {out_dir}")
    return 0


def _train(recipe, out_dir: str, resume: bool) -> None:
    from prefopt.sft.trainer import build_trainer
    from prefopt.training.common import last_checkpoint, plot_training_curves, write_run_config
    from prefopt.training.reliability import run_training

    adapter = None
    if recipe.reverse:
        # With LoRA the added tag rows only learn when named as new tokens (peft trainable_token_indices).
        from prefopt.models.tokens import REVERSE_TOKENS
        from prefopt.training.common import prepare_policy

        seed = recipe.training_args().get("seed", 42)
        adapter = prepare_policy(recipe.model, recipe.lora, new_tokens=REVERSE_TOKENS, seed=seed)
    trainer = build_trainer(recipe, adapter)
    write_run_config(recipe, out_dir)
    run_training(trainer, last_checkpoint(out_dir) if resume else None)
    trainer.save_model(out_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(out_dir)
        trainer.state.save_to_json(f"{out_dir}/trainer_state.json")
        plot_training_curves(out_dir)
