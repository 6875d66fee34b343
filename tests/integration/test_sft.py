"""Cold-start SFT: the weighted token loss, the collator's masks, and `prefopt sft` on both tiny families."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from prefopt.cli import main
from prefopt.sft.trainer import weighted_token_loss
from tests.helpers import assert_checkpoint_changed, assert_params_changed

COT = (
    "<SUMMARY>I will look for the circle.</SUMMARY><CAPTION>A red circle on grey.</CAPTION>"
    "<REASONING>The circle is there.</REASONING><CONCLUSION>yes</CONCLUSION>"
)


def test_weighted_token_loss_hand_computed():
    """Uniform logits over V=4 give NLL ln 4 per token; a peaked row gives a known NLL.

    Sequence of 3 tokens; labels[1] and labels[2] are supervised (predicted from positions 0 and 1).
    Position 0 logits (0,0,0,0): NLL = ln 4. Position 1 logits (ln 3,0,0,0) with target 0: p = 3/6, NLL = ln 2.
    Unweighted mean: (ln 4 + ln 2)/2 = 1.5 ln 2. Weights (1, 3): (ln 4 + 3 ln 2)/4 = 1.25 ln 2.
    """
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 0] = math.log(3.0)
    labels = torch.tensor([[-100, 2, 0]])
    assert weighted_token_loss(logits, labels).item() == pytest.approx(1.5 * math.log(2), rel=1e-6)
    weights = torch.tensor([[0.0, 1.0, 3.0]])
    assert weighted_token_loss(logits, labels, weights).item() == pytest.approx(1.25 * math.log(2), rel=1e-6)
    # masked positions never count, whatever their weight
    weights_bad = torch.tensor([[99.0, 1.0, 3.0]])
    assert weighted_token_loss(logits, labels, weights_bad).item() == pytest.approx(
        1.25 * math.log(2), rel=1e-6
    )


def _write_cot(tmp_path, n=4):
    rows = []
    for i in range(n):
        Image.new("RGB", (56, 56), (30 * i, 120, 60)).save(tmp_path / f"im{i}.png")
        rows.append(
            {
                "id": f"cot{i}",
                "image": f"im{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nIs there a circle?"},
                    {"from": "gpt", "value": COT},
                ],
            }
        )
    path = tmp_path / "cot.json"
    path.write_text(json.dumps(rows))
    return path


def test_collator_masks_prompt_and_image_tokens(tiny_dir, tmp_path):
    from prefopt.models.adapter import load_adapter
    from prefopt.sft.collator import ConversationCollator
    from prefopt.sft.config import SFTDataSettings
    from prefopt.sft.trainer import load_examples

    data = SFTDataSettings(path=str(_write_cot(tmp_path, 2)), image_root=str(tmp_path), convert="four_stage")
    examples = load_examples(data)
    adapter = load_adapter(str(tiny_dir))
    batch = ConversationCollator(adapter)(examples)
    labels, ids = batch["labels"], batch["input_ids"]
    supervised = adapter.tokenizer.decode(ids[0][labels[0] != -100]).strip()
    assert supervised.startswith("<prethink>I will look for the circle.</prethink>")
    assert "<answer>yes</answer>" in supervised and "Is there a circle" not in supervised
    for token in adapter.image_token_ids:
        assert not bool(((ids == token) & (labels != -100)).any())


def test_cli_sft_trains_and_reloads(family, tiny_model_dirs, tmp_path, param_spy):
    from prefopt.models.adapter import load_adapter

    data = _write_cot(tmp_path)
    out = tmp_path / "run"
    short = "llava" if family == "llava" else "qwen"
    rc = main(
        [
            "sft",
            "--config",
            f"recipes/tiny/{short}_sft.yaml",
            "--convert",
            "four_stage",
            f"model.name_or_path={tiny_model_dirs[family]}",
            f"data.path={data}",
            f"data.image_root={tmp_path}",
            f"training.output_dir={out}",
            "training.max_steps=2",
        ]
    )
    assert rc == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [row["loss"] for row in history if "loss" in row]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    assert (out / "prefopt_config.yaml").is_file() and (out / "training_curves.png").is_file()
    reloaded = load_adapter(str(out))
    assert reloaded.family == family
    assert_params_changed(param_spy.before, param_spy.model)
    assert_checkpoint_changed(out, tiny_model_dirs[family], len(param_spy.before))  # the vision tower is frozen


def test_cli_sft_bad_convert_names_the_row(tiny_qwen_dir, tmp_path, capsys):
    path = tmp_path / "bad.json"
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    path.write_text(
        json.dumps(
            [
                {
                    "id": "r0",
                    "image": "a.png",
                    "conversations": [
                        {"from": "human", "value": "<image>\nQ?"},
                        {"from": "gpt", "value": "no stages here"},
                    ],
                }
            ]
        )
    )
    rc = main(
        [
            "sft",
            "--config",
            "recipes/tiny/qwen_sft.yaml",
            "--convert",
            "four_stage",
            f"model.name_or_path={tiny_qwen_dir}",
            f"data.path={path}",
            f"data.image_root={tmp_path}",
            f"training.output_dir={tmp_path / 'run'}",
        ]
    )
    assert rc == 2
    assert "r0" in capsys.readouterr().err


def test_cli_sft_resume_continues_from_checkpoint(tiny_qwen_dir, tmp_path):
    data = _write_cot(tmp_path, 2)
    out = tmp_path / "run"
    common = [
        "sft",
        "--config",
        "recipes/tiny/qwen_sft.yaml",
        "--convert",
        "four_stage",
        f"model.name_or_path={tiny_qwen_dir}",
        f"data.path={data}",
        f"data.image_root={tmp_path}",
        f"training.output_dir={out}",
        "training.save_strategy=steps",
        "training.save_steps=1",
        "training.per_device_train_batch_size=1",
    ]
    assert main([*common, "training.max_steps=1"]) == 0
    assert (out / "checkpoint-1").is_dir()
    assert main([*common, "training.max_steps=2", "--resume"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [row["step"] for row in state["log_history"] if "loss" in row] == [1, 2]


def test_sft_recipes_parse_and_reject_unknown_keys():
    from prefopt.config import ConfigError
    from prefopt.sft.config import load_recipe

    for name in ("gwys/qwen2_5_vl_7b_sft.yaml", "tiny/qwen_sft.yaml", "tiny/llava_sft.yaml"):
        recipe = load_recipe(f"recipes/{name}")
        assert recipe.training_args()["output_dir"]
    gwys = load_recipe("recipes/gwys/qwen2_5_vl_7b_sft.yaml")
    assert gwys.data.convert == "four_stage" and gwys.training_args()["learning_rate"] == 1e-6
    assert gwys.training_args()["num_train_epochs"] == 2
    with pytest.raises(ConfigError, match="learning_rat"):
        load_recipe("recipes/tiny/qwen_sft.yaml", ["training.learning_rat=1e-5"])
    with pytest.raises(ConfigError, match="data.convert"):
        load_recipe("recipes/tiny/qwen_sft.yaml", ["data.convert=cot"])
