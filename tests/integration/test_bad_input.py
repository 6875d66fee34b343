"""Bad input across recipes, datasets, images, checkpoints and command-line arguments.

Every case goes through the real CLI (``prefopt.cli.main``) and must end with exit status 2 and ONE line
on stderr, ``prefopt <cmd>: error: ...``, that names the culprit (file, row, key or argument) — never a
traceback. Row numbers are 1-based (the first data row is row 1). The SymMPO command reads its data before loading a model, so most data cases use it; GRPO and
checkpoint cases load the tiny Qwen2.5-VL checkpoint first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from prefopt.cli import main
from tests.helpers import cli_fails as fail

GRPO = "recipes/tiny/qwen_grpo.yaml"
SYMMPO = "recipes/tiny/qwen_symmpo.yaml"





def argparse_fail(argv: list[str], capsys, *culprits: str) -> None:
    """Argument errors caught by argparse: exit 2, usage, a message naming the argument."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    for culprit in culprits:
        assert culprit in err, err


def symmpo(world: Path, tmp_path: Path, *overrides: str, data: Path | None = None, model: Path | None = None):
    """``prefopt symmpo`` on the tiny recipe with the world's data (or ``data``); no model unless given."""
    return [
        "symmpo",
        "--config",
        SYMMPO,
        f"model.name_or_path={model or 'no-model-needed-before-the-data-checks'}",
        f"data.path={data or world / 'symmpo.parquet'}",
        f"data.image_root={world}",
        f"training.output_dir={tmp_path / 'run'}",
        *overrides,
    ]


def grpo(model: Path, world: Path, tmp_path: Path, *overrides: str, data: Path | None = None) -> list[str]:
    """``prefopt grpo`` on the tiny recipe with the world's prompts (or ``data``), no judge."""
    return [
        "grpo",
        "--config",
        GRPO,
        f"model.name_or_path={model}",
        f"data.path={data or world / 'grpo.json'}",
        f"data.image_root={world}",
        "rewards.caption=false",
        f"training.output_dir={tmp_path / 'run'}",
        *overrides,
    ]


def preference_rows(world: Path) -> pd.DataFrame:
    return pd.read_parquet(world / "symmpo.parquet")


def write_parquet(rows: pd.DataFrame, path: Path) -> Path:
    rows.to_parquet(path)
    return path


# ---- recipes -------------------------------------------------------------------------------------
def test_unknown_key_in_recipe(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(SYMMPO).read_text().replace("lora:", "lorra:"))
    fail(
        ["symmpo", "--config", str(recipe)], capsys, str(recipe), "unknown key 'lorra'", "did you mean 'lora'"
    )


def test_wrong_type_in_override(world, tmp_path, capsys):
    fail(symmpo(world, tmp_path, "lora.r=eight"), capsys, "lora.r", "expected an integer", "'eight'")


def test_unknown_trl_field_in_grpo_training(tmp_path, capsys):
    fail(["grpo", "--config", GRPO, "training.learnin_rate=1e-5"], capsys, GRPO, "training.learnin_rate")


def test_bad_choice(tmp_path, capsys):
    fail(["grpo", "--config", GRPO, "ntk.mode=fast"], capsys, "ntk.mode", "'fast'")


def test_missing_recipe(tmp_path, capsys):
    fail(["symmpo", "--config", str(tmp_path / "nope.yaml")], capsys, "recipe not found", "nope.yaml")


def test_recipe_not_yaml(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("model:\n  name_or_path: [unclosed\n")
    fail(["grpo", "--config", str(recipe)], capsys, str(recipe), "not valid YAML")


def test_override_without_equals(capsys):
    fail(["grpo", "--config", GRPO, "training.max_steps"], capsys, "'training.max_steps'", "key=value")


def test_unknown_loss(world, tmp_path, capsys):
    fail(symmpo(world, tmp_path, "loss.name=ppo"), capsys, "loss.name", "'ppo'")


# ---- datasets ------------------------------------------------------------------------------------
def test_missing_dataset_file(world, tmp_path, capsys):
    missing = tmp_path / "gone.parquet"
    fail(symmpo(world, tmp_path, data=missing), capsys, str(missing), "not found")


def test_empty_response(world, tmp_path, capsys):
    rows = preference_rows(world)
    rows.loc[2, "resp_1_w"] = "   "
    data = write_parquet(rows, tmp_path / "empty.parquet")
    fail(symmpo(world, tmp_path, data=data), capsys, str(data), "row 3", "empty")


def test_chosen_equals_rejected(world, tmp_path, capsys):
    rows = preference_rows(world)
    rows.loc[1, "resp_1_l"] = rows.loc[1, "resp_1_w"]
    data = write_parquet(rows, tmp_path / "same.parquet")
    fail(symmpo(world, tmp_path, data=data), capsys, str(data), "row 2", "chosen", "rejected")


def test_missing_field(world, tmp_path, capsys):
    rows = preference_rows(world).drop(columns=["question"])
    data = write_parquet(rows, tmp_path / "noquestion.parquet")
    fail(symmpo(world, tmp_path, "data.format=symmpo", data=data), capsys, str(data), "rows 1, 2", "'question'")


def test_truncated_json(world, tmp_path, tiny_qwen_dir, capsys):
    data = tmp_path / "cut.json"
    data.write_text((world / "grpo.json").read_text()[:300])
    fail(grpo(tiny_qwen_dir, world, tmp_path, data=data), capsys, str(data), "line")


def test_unknown_format(world, tmp_path, capsys):
    fail(symmpo(world, tmp_path, "data.format=csv"), capsys, "data.format", "'csv'")


def test_bad_problem_type(world, tmp_path, tiny_qwen_dir, capsys):
    rows = json.loads((world / "grpo.json").read_text())
    rows[3]["problem_type"] = "essay"
    data = tmp_path / "ptype.json"
    data.write_text(json.dumps(rows))
    fail(grpo(tiny_qwen_dir, world, tmp_path, data=data), capsys, str(data), "row 4", "'essay'")


@pytest.mark.parametrize(
    "box, why",
    [
        ([3, 30, 27, 99], "outside the 56x56 image"),
        ([30, 30, 10, 40], "x2 > x1"),
        ([1, 2, 3], "[x1, y1, x2, y2]"),
    ],
)
def test_out_of_range_box(world, tmp_path, tiny_qwen_dir, capsys, box, why):
    rows = [json.loads(line) for line in (world / "viscot.jsonl").read_text().splitlines()]
    rows[1]["bboxs"] = [box]
    data = tmp_path / "boxes.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    argv = grpo(
        tiny_qwen_dir,
        world,
        tmp_path,
        "data.format=viscot",
        "data.template=grounded",
        "rollout=grounded",
        data=data,
    )
    fail(argv, capsys, str(data), "row 2", "bboxs[0]", why)


# ---- images --------------------------------------------------------------------------------------
def test_missing_image(world, tmp_path, capsys):
    rows = preference_rows(world)
    rows.loc[3, "image_1"] = "images/not_there.png"
    data = write_parquet(rows, tmp_path / "noimage.parquet")
    fail(symmpo(world, tmp_path, data=data), capsys, str(data), "row 4", "not_there.png", "not found")


def test_corrupt_image(world, tmp_path, tiny_qwen_dir, capsys):
    root = tmp_path / "root"
    shutil.copytree(world / "images", root / "images")
    (root / "images" / "pref00001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    argv = symmpo(world, tmp_path, f"data.image_root={root}", model=tiny_qwen_dir)
    fail(argv, capsys, str(root / "images" / "pref00001.png"), "cannot decode")


def test_empty_image_file(world, tmp_path, tiny_qwen_dir, capsys):
    root = tmp_path / "root"
    shutil.copytree(world / "images", root / "images")
    (root / "images" / "pref00000.png").write_bytes(b"")
    argv = symmpo(world, tmp_path, f"data.image_root={root}", model=tiny_qwen_dir)
    fail(argv, capsys, str(root / "images" / "pref00000.png"), "empty")


def test_image_outside_root(world, tmp_path, capsys):
    rows = preference_rows(world)
    rows.loc[2, "image_2"] = "../../etc/passwd"
    data = write_parquet(rows, tmp_path / "escape.parquet")
    fail(symmpo(world, tmp_path, data=data), capsys, str(data), "row 3", "escapes the image root")


# ---- checkpoints ---------------------------------------------------------------------------------
def test_missing_model_dir(world, tmp_path, capsys):
    missing = tmp_path / "no-model"
    fail(grpo(missing, world, tmp_path), capsys, str(missing), "model directory does not exist")


def test_model_dir_without_config(world, tmp_path, capsys):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    fail(grpo(empty, world, tmp_path), capsys, str(empty), "config.json")


def test_model_of_another_family(world, tmp_path, tiny_qwen_dir, capsys):
    text_only = tmp_path / "gpt2ish"
    shutil.copytree(tiny_qwen_dir, text_only)
    config = json.loads((text_only / "config.json").read_text())
    (text_only / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    fail(grpo(text_only, world, tmp_path), capsys, str(text_only), "model_type 'gpt2'")


def test_corrupt_weights(world, tmp_path, tiny_qwen_dir, capsys):
    broken = tmp_path / "broken-weights"
    shutil.copytree(tiny_qwen_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    fail(grpo(broken, world, tmp_path), capsys, str(broken))


@pytest.fixture(scope="module")
def qwen_adapter(tiny_qwen_dir, tmp_path_factory):
    """A LoRA adapter saved on top of the tiny Qwen2.5-VL."""
    from prefopt.models.adapter import load_adapter
    from prefopt.models.lora import apply_lora, save_adapter
    from prefopt.models.settings import LoraSettings

    out = tmp_path_factory.mktemp("qwen-adapter")
    adapter = load_adapter(str(tiny_qwen_dir))
    peft_model = apply_lora(adapter, LoraSettings(enabled=True, r=4, alpha=8))
    save_adapter(peft_model, adapter.processor, out)
    return out


def test_lora_adapter_for_another_base(qwen_adapter, tiny_llava_dir, tiny_qwen_dir, tmp_path, capsys):
    argv = ["merge-lora", "--adapter", str(qwen_adapter), "--base", str(tiny_llava_dir)]
    line = fail([*argv, "--out", str(tmp_path / "merged")], capsys, str(tiny_llava_dir), str(tiny_qwen_dir))
    assert "trained on" in line


def test_not_an_adapter_folder(tiny_qwen_dir, tmp_path, capsys):
    argv = ["merge-lora", "--adapter", str(tiny_qwen_dir), "--out", str(tmp_path / "merged")]
    fail(argv, capsys, str(tiny_qwen_dir), "adapter_config.json")


# ---- command-line arguments ----------------------------------------------------------------------
def test_option_out_of_range(tmp_path, capsys):
    fail(["make-data", "--out", str(tmp_path), "--noise", "1.5"], capsys, "--noise", "1.5")


def test_bad_choice_argument(tmp_path, capsys):
    argparse_fail(["tiny-model", "--family", "gpt2", "--out", str(tmp_path)], capsys, "--family", "'gpt2'")


def test_stray_option_after_overrides(world, tmp_path, capsys):
    fail([*symmpo(world, tmp_path), "--lr", "3"], capsys, "--lr")
