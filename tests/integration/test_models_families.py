"""The family registry and the facts each adapter gives algorithm code, on every registered tiny family;
plus the suites that had no family parameter: SymMPO training and ``prefopt eval`` through the CLI.

Run one family with ``-k qwen3_vl``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from prefopt.cli import main
from prefopt.data.schema import user_message
from prefopt.errors import ModelError
from prefopt.models.adapter import load_adapter
from prefopt.models.registry import (
    adapter_class,
    adapter_for_model,
    detect_family,
    families,
    read_model_type,
)
from prefopt.models.tiny import TINY_FAMILIES
from tests.helpers import assert_checkpoint_changed, assert_params_changed, write_symmpo_pairs


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs):
    return {family: load_adapter(str(path), dtype="float32") for family, path in tiny_model_dirs.items()}


def test_registry_lists_every_builtin_family_with_a_tiny_model():
    assert families()[:3] == ("llava", "qwen2_5_vl", "qwen3_vl")
    assert TINY_FAMILIES == families()
    for family in families():
        assert adapter_class(family).family == family
        assert all(adapter_class(t) is adapter_class(family) for t in adapter_class(family).model_types)
    with pytest.raises(ModelError, match="unknown model family 'gpt2'"):
        adapter_class("gpt2")


@pytest.mark.parametrize(
    "hub_id,family",
    [
        ("llava-hf/llava-1.5-7b-hf", "llava"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
        ("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl"),
    ],
)
def test_detect_family_from_hub_names(hub_id, family):
    assert detect_family(hub_id) == family


def test_read_model_type_and_its_errors(tiny_model_dirs, tmp_path):
    for family, path in tiny_model_dirs.items():
        assert read_model_type(path) == family  # the tiny folders are named by model_type
        assert detect_family(str(path)) == family
    with pytest.raises(ModelError, match="no config.json"):
        read_model_type(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable or without model_type"):
        read_model_type(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="model_type 'gpt2' is not supported"):
        detect_family(str(tmp_path))


def test_cli_family_choices_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["tiny-model", "--help"])
    assert "{" + ",".join(families()) + "}" in capsys.readouterr().out


def test_input_size_is_what_the_vision_tower_sees(family, adapters):
    """``input_size`` (the size boxes refer to) times the patch grid gives the image's token count."""
    adapter = adapters[family]
    image = Image.new("RGB", (100, 60), "red")
    width, height = adapter.input_size(image)
    batch = adapter.encode_prompts([[user_message("Where?", 1)]], [[image]])
    tokens = int((batch["input_ids"] == adapter.image_token_id).sum())
    patch = int(getattr(adapter.image_processor, "patch_size", None) or 14)
    merge = int(getattr(adapter.image_processor, "merge_size", None) or 1)
    assert tokens == (width // (patch * merge)) * (height // (patch * merge))
    assert adapter_for_model(adapter.model) is type(adapter)


def test_modality_map_and_cache_repeat(family, adapters):
    adapter = adapters[family]
    image = Image.new("RGB", (56, 56), "blue")
    batch = adapter.encode_prompts([[user_message("Colour?", 1)]], [[image]])
    modality = adapter.modality_map(batch["input_ids"])
    if adapter.modality_map_key is None:
        assert modality is None and adapter.with_modality_map(batch["input_ids"], {}) == {}
    else:
        # the processor's own map and the adapter's, rebuilt from the ids, agree
        assert torch.equal(modality, batch[adapter.modality_map_key])
        rows = adapter.modality_rows(batch["input_ids"].tolist())[adapter.modality_map_key]
        assert rows == batch[adapter.modality_map_key].tolist()
    repeated = adapter.repeat_for_cache(batch, 3)
    assert set(repeated) == {k for k in adapter.cache_repeat_keys if k in batch}
    for key, value in repeated.items():
        assert value.shape[0] == 3 * batch[key].shape[0]
    tensors = adapter.image_tensors([image, image])
    assert set(tensors) <= set(adapter.image_input_keys) and "pixel_values" in tensors


def test_video_inputs_carry_exactly_the_video_keys(family, adapters):
    adapter = adapters[family]
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue", "white")]
    prompt = [user_message("What happens?", 0, 1)]
    if not adapter.supports_video:
        assert adapter.video_input_keys == ()
        return
    prompt[0]["content"] = [
        {"type": "video", "video": frames} if p["type"] == "video" else p for p in prompt[0]["content"]
    ]
    encoded = adapter.video_inputs(prompt)
    assert set(encoded) and set(encoded) <= set(adapter.video_input_keys)
    batch = adapter.encode_prompts([prompt], None, [[frames]])
    for key, value in encoded.items():
        torch.testing.assert_close(value, batch[key])
    assert adapter.strip_video_inputs(dict(batch)).keys().isdisjoint(adapter.video_input_keys)


def test_symmpo_trains_on_every_family(family, tiny_model_dirs, tmp_path, param_spy):
    """Two SymMPO steps through the CLI; the saved weights differ from the start."""
    data = write_symmpo_pairs(tmp_path, n=4)
    out = tmp_path / "run"
    short = "llava" if family == "llava" else "qwen"
    rc = main(
        [
            "symmpo",
            "--config",
            f"recipes/tiny/{short}_symmpo.yaml",
            "--loss",
            "symmpo",
            f"model.name_or_path={tiny_model_dirs[family]}",
            f"data.path={data}",
            f"training.output_dir={out}",
            f"reference_cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert rc == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [row for row in history if "loss" in row]
    assert len(logged) == 2 and all(math.isfinite(row["loss"]) for row in logged)
    assert logged[1]["rewards/margins"] > 0  # one step along the loss gradient widens the margin
    assert_params_changed(param_spy.before, param_spy.model)
    assert_checkpoint_changed(out, tiny_model_dirs[family], len(param_spy.before))


def test_eval_pope_on_every_family(family, tiny_model_dirs, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rows = []
    for i, colour in enumerate(["red", "green"]):
        Image.new("RGB", (40, 32), colour).save(root / f"{i}.png")
        rows.append({"question_id": i, "image": f"{i}.png", "text": f"Is there a {colour} square?", "label": "yes"})
    data = tmp_path / "coco_pope_random.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    args = ["eval", "pope", "--model", str(tiny_model_dirs[family]), "--data", str(data), "--image-root", str(root)]
    args += ["--out", str(out), "--batch-size", "2", "--max-new-tokens", "3", "--bootstrap-rounds", "5"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2 and {"accuracy", "f1"} <= set(metrics["metrics"])
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == ["0", "1"] and all(isinstance(p["text"], str) for p in predictions)
