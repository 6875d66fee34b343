"""Tiny checkpoints: plain transformers loads them, they generate from an image, and builds are deterministic."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from prefopt.errors import ModelError
from prefopt.models.registry import adapter_class
from prefopt.models.tiny import _mrope_section, build_tiny


def _image(w=56, h=56, colour=(200, 30, 30)):
    return Image.new("RGB", (w, h), colour)


def test_auto_classes_load_and_generate_from_image(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert model.generation_config.pad_token_id == processor.tokenizer.pad_token_id is not None
    eos = model.generation_config.eos_token_id
    assert processor.tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos])


def test_special_tokens_match_config_and_vocab_size(tiny_dir):
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(tiny_dir)
    tokenizer = AutoProcessor.from_pretrained(tiny_dir).tokenizer
    image_token = adapter_class(config.model_type).media_tokens[0]
    assert tokenizer.convert_tokens_to_ids(image_token) == config.image_token_id
    assert len(tokenizer(image_token, add_special_tokens=False)["input_ids"]) == 1
    assert 2000 <= len(tokenizer) <= 4000
    assert config.get_text_config().vocab_size >= len(tokenizer)
    # Project tags and shape words are cheap: each tag is at most three tokens.
    for tag in ("<prethink>", "</caption>", "<answer>", "</box>"):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) <= 3
    assert len(tokenizer(" triangle", add_special_tokens=False)["input_ids"]) == 1


def test_same_seed_gives_identical_files(tiny_qwen_dir, tmp_path):
    again = build_tiny("qwen2_5_vl", tmp_path / "again", seed=0)
    other = build_tiny("qwen2_5_vl", tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_qwen_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_qwen_dir / "model.safetensors").read_bytes()


def test_mrope_section_halves_head_dim():
    """Qwen2.5-VL-7B uses head_dim 128 -> [16, 24, 24]; the tiny default head_dim 16 -> [2, 3, 3]."""
    assert _mrope_section(128) == [16, 24, 24]
    assert _mrope_section(16) == [2, 3, 3]
    assert sum(_mrope_section(32)) == 16


def test_cli_writes_checkpoint_with_overrides(tmp_path, capsys):
    from prefopt.cli import main

    out = tmp_path / "llava128"
    assert (
        main(["tiny-model", "--family", "llava", "--out", str(out), "--hidden-size", "128", "--seed", "3"])
        == 0
    )
    assert str(out) in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 128
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[1] == 128


def test_qwen_hidden_override_keeps_rope_consistent(tmp_path):
    out = build_tiny("qwen2_5_vl", tmp_path / "q", hidden_size=128, num_attention_heads=4)
    text = json.loads((out / "config.json").read_text())["text_config"]
    assert sum(text["rope_parameters"]["mrope_section"]) == 128 // 4 // 2
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(out)
    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape[:2] == (1, 3)


def test_bad_family_and_overrides_raise(tmp_path):
    with pytest.raises(ModelError, match="unknown model family 'gpt'"):
        build_tiny("gpt", tmp_path / "x")
    with pytest.raises(ModelError, match="hidden_sise"):
        build_tiny("llava", tmp_path / "x", hidden_sise=32)
    with pytest.raises(ModelError, match="divide"):
        build_tiny("llava", tmp_path / "x", hidden_size=66)
