"""LoRA set-up and merging on both tiny families: trainable new-token rows, merge equality, vision weights,
mismatch refusal, QLoRA (where bitsandbytes quantises on this machine) and the merge-lora CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from prefopt.errors import ModelError
from prefopt.models.lora import apply_lora, merge_lora, save_adapter
from prefopt.models.settings import LoraSettings
from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens, save_model_dir

SETTINGS = LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0)


def _load(path, **kw):
    from prefopt.models.adapter import load_adapter

    return load_adapter(str(path), dtype="float32", **kw)


def _image(color=(200, 30, 30)):
    from PIL import Image

    return Image.new("RGB", (56, 56), color)


def _batch(adapter):
    """Two image conversations whose answers use the REVERSE tags, so the loss covers the new rows."""
    from prefopt.data.schema import assistant_message, user_message

    conversations = [
        [user_message("Describe the image.", n_images=1), assistant_message("<SPAN>A red square</CN>.")],
        [user_message("What is it?", n_images=1), assistant_message("<SPAN>A blue dog</UN>")],
    ]
    return adapter.encode_conversations(conversations, [[_image()], [_image((20, 20, 220))]])


def _train(model, batch, steps=3, lr=0.05):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _vision_state(model, adapter):
    prefixes = tuple(p + "." for p in adapter.vision_tower_prefixes + adapter.projector_prefixes)
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.replace("base_model.model.", "")
        if name.startswith(prefixes) and "lora_" not in name:
            state[name.replace(".base_layer", "")] = tensor.detach().clone()
    return state


@pytest.fixture(scope="module")
def token_bases(tiny_model_dirs, tmp_path_factory):
    """``{family: folder}`` of the tiny models after ``add_special_tokens(REVERSE_TOKENS)``."""
    root = tmp_path_factory.mktemp("reverse-bases")
    out = {}
    for family, path in tiny_model_dirs.items():
        adapter = _load(path)
        add_special_tokens(adapter, REVERSE_TOKENS)
        out[family] = save_model_dir(adapter.model, adapter.processor, root / family)
    return out


def _train_and_save(base_dir, out_dir, settings=SETTINGS, **load_kw):
    """Apply LoRA with trainable REVERSE rows, train 3 steps, save; return (adapter, peft_model, batch)."""
    adapter = _load(base_dir, **load_kw)
    ids = [adapter.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS]
    peft_model = apply_lora(adapter, settings, new_token_ids=ids)
    batch = _batch(adapter)
    assert torch.isin(batch["labels"], torch.tensor(ids)).sum() >= 3
    _train(peft_model, batch)
    save_adapter(peft_model, adapter.processor, out_dir)
    return adapter, peft_model, batch


@pytest.mark.parametrize("mode", ["language-lora", "vision-lora", "projector-saved"])
def test_train_merge_matches_unmerged(tiny_dir, token_bases, tmp_path, mode):
    """Merged logits equal the trained PeftModel's; vision weights change exactly when they were trained."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family = json.loads((tiny_dir / "config.json").read_text())["model_type"]
    base_dir = token_bases[family]  # the tiny folders are named by family, which is each one's model_type
    base = _load(base_dir)
    base_vision = _vision_state(base.model, base)
    ids = [base.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS]
    base_in = base.model.get_input_embeddings().weight[ids].detach().clone()
    base_out = base.model.get_output_embeddings().weight[ids].detach().clone()

    include_vision = mode == "vision-lora"
    saved = base.projector_prefixes[:1] if mode == "projector-saved" else []
    settings = LoraSettings(
        enabled=True, r=4, alpha=8, dropout=0.0, include_vision=include_vision, modules_to_save=saved
    )
    adapter, peft_model, batch = _train_and_save(base_dir, tmp_path / "adapter", settings)
    vision = tuple(
        "base_model.model." + p for p in adapter.vision_tower_prefixes + adapter.projector_prefixes
    )
    lora_names = [n for n, _ in peft_model.named_parameters() if ".lora_A." in n]
    assert any(n.startswith(vision) for n in lora_names) == include_vision
    with torch.no_grad():
        expected = peft_model(**batch).logits

    merge_lora(tmp_path / "adapter", str(base_dir), tmp_path / "merged")
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    assert [processor.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS] == ids
    assert processor.chat_template == base.processor.chat_template
    # The new rows were trained (input and output embedding) and the merge kept them.
    assert not torch.allclose(merged.get_input_embeddings().weight[ids], base_in)
    assert not torch.allclose(merged.get_output_embeddings().weight[ids], base_out)
    with torch.no_grad():
        got = merged(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)

    merged_vision = _vision_state(merged, adapter)
    assert merged_vision.keys() == base_vision.keys() and merged_vision
    changed = {k for k in base_vision if not torch.equal(base_vision[k], merged_vision[k])}
    if mode == "projector-saved":
        assert changed and all(k.startswith(saved[0] + ".") for k in changed)
    else:
        assert bool(changed) == include_vision


def test_tokens_added_in_memory_merge_into_plain_base(tiny_qwen_dir, tmp_path):
    """Tokens added at training time (not saved into a base folder) are re-created on the plain base."""
    adapter = _load(tiny_qwen_dir)
    ids = list(add_special_tokens(adapter, REVERSE_TOKENS).values())
    peft_model = apply_lora(adapter, SETTINGS, new_token_ids=ids)
    batch = _batch(adapter)
    _train(peft_model, batch, steps=2)
    save_adapter(peft_model, adapter.processor, tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model(**batch).logits
    merge_lora(tmp_path / "adapter", str(tiny_qwen_dir), tmp_path / "merged")
    merged = _load(tmp_path / "merged")
    assert [merged.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS] == ids
    with torch.no_grad():
        torch.testing.assert_close(merged.model(**batch).logits, expected, rtol=0, atol=1e-4)
    from prefopt.data.schema import user_message

    prompt = merged.encode_prompts([[user_message("What is it?", n_images=1)]], [[_image()]])
    assert merged.model.generate(**prompt, max_new_tokens=2, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 2


def test_short_target_names_stay_in_the_language_model(tiny_dir):
    adapter = _load(tiny_dir)
    from prefopt.models.lora import resolve_targets

    names = resolve_targets(adapter, LoraSettings(target_modules=["q_proj", "fc1", "qkv"]))
    assert names and all(n.endswith(".q_proj") for n in names)
    assert all(n.startswith(tuple(p + "." for p in adapter.language_model_prefixes)) for n in names)
    with_vision = resolve_targets(
        adapter, LoraSettings(target_modules=["q_proj", "fc1", "qkv"], include_vision=True)
    )
    assert set(names) < set(with_vision)
    with pytest.raises(ModelError, match="match no Linear layer"):
        resolve_targets(adapter, LoraSettings(target_modules=["no_such_layer"]))


def test_tied_embeddings_train_and_merge(tiny_qwen_dir, tmp_path):
    """A checkpoint with a tied LM head: one set of trainable rows drives both ends, and the merge agrees.

    (Family-independent code; one family keeps the suite short.)
    """
    adapter = _load(tiny_qwen_dir)
    adapter.model.config.tie_word_embeddings = True
    adapter.model.lm_head.weight = adapter.model.get_input_embeddings().weight
    tied_dir = save_model_dir(adapter.model, adapter.processor, tmp_path / "tied")
    adapter = _load(tied_dir)
    model = adapter.model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = list(add_special_tokens(adapter, REVERSE_TOKENS).values())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    peft_model = apply_lora(adapter, SETTINGS, new_token_ids=ids)
    batch = _batch(adapter)
    _train(peft_model, batch, steps=2)
    save_adapter(peft_model, adapter.processor, tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model(**batch).logits
    merge_lora(tmp_path / "adapter", str(tied_dir), tmp_path / "merged")
    merged = _load(tmp_path / "merged").model
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=0, atol=1e-4)


def test_merge_refuses_mismatch(tiny_model_dirs, token_bases, tmp_path):
    _train_and_save(token_bases["llava"], tmp_path / "adapter")
    with pytest.raises(ModelError, match="trained on"):
        merge_lora(tmp_path / "adapter", str(token_bases["qwen2_5_vl"]), tmp_path / "m1")
    with pytest.raises(ModelError, match="disagrees|does not match"):
        merge_lora(
            tmp_path / "adapter", str(token_bases["qwen2_5_vl"]), tmp_path / "m2", allow_other_base=True
        )
    # Same family, but the tokens were added in another order: ids differ, so the vocabulary mismatches.
    other = _load(tiny_model_dirs["llava"])
    add_special_tokens(other, list(reversed(REVERSE_TOKENS)))
    save_model_dir(other.model, other.processor, tmp_path / "other-order")
    with pytest.raises(ModelError, match="other ids|disagrees"):
        merge_lora(
            tmp_path / "adapter", str(tmp_path / "other-order"), tmp_path / "m3", allow_other_base=True
        )
    # Shapes: a LoRA matrix that no longer fits its module.
    shutil.copytree(tmp_path / "adapter", tmp_path / "bad")
    _corrupt_one_lora_matrix(tmp_path / "bad")
    with pytest.raises(ModelError, match="shape"):
        merge_lora(tmp_path / "bad", str(token_bases["llava"]), tmp_path / "m4")
    assert not (tmp_path / "m4").exists()


def _corrupt_one_lora_matrix(adapter_dir):
    from safetensors.torch import load_file, save_file

    path = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if ".lora_A." in k)
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 1)
    save_file(tensors, str(path))


def _bnb_quantises_on_cpu() -> str | None:
    """None when bitsandbytes can build and run a 4-bit layer here, else the reason it cannot."""
    try:
        import bitsandbytes as bnb

        # Moving the layer to a device is what quantises its weight.
        layer = bnb.nn.Linear4bit(8, 4, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
        layer(torch.randn(1, 8))
        return None
    except Exception as err:  # noqa: BLE001 - any failure means QLoRA cannot run on this machine
        return f"bitsandbytes cannot quantise on this CPU: {type(err).__name__}: {err}"


@pytest.mark.skipif(_bnb_quantises_on_cpu() is not None, reason=str(_bnb_quantises_on_cpu()))
def test_qlora_merges_to_full_precision(token_bases, tmp_path):
    from transformers import AutoModelForImageTextToText

    from prefopt.models.lora import load_base_for_lora

    base_dir = token_bases["qwen2_5_vl"]
    adapter = load_base_for_lora(str(base_dir), quantization="4bit", dtype="float32")
    assert any("4bit" in type(m).__name__ for m in adapter.model.modules())
    ids = [adapter.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS]
    peft_model = apply_lora(adapter, SETTINGS, new_token_ids=ids)
    _train(peft_model, _batch(adapter), steps=1)
    save_adapter(peft_model, adapter.processor, tmp_path / "adapter")

    from prefopt.cli import main

    assert (
        main(
            [
                "merge-lora",
                "--adapter",
                str(tmp_path / "adapter"),
                "--base",
                str(base_dir),
                "--out",
                str(tmp_path / "merged"),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert not any("4bit" in type(m).__name__ or "Lora" in type(m).__name__ for m in merged.modules())
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    name = next(n for n, _ in base.named_parameters() if n.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(dict(merged.named_parameters())[name], dict(base.named_parameters())[name])


def test_merge_lora_cli(token_bases, tmp_path, capsys):
    from prefopt.cli import main

    _train_and_save(token_bases["llava"], tmp_path / "adapter")
    out = tmp_path / "merged"
    assert (
        main(["merge-lora", "--adapter", str(tmp_path / "adapter"), "--out", str(out), "--dtype", "bfloat16"])
        == 0
    )
    assert "merged model saved" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (out / "model.safetensors").is_file() and config["text_config"]["vocab_size"] >= 1478
    assert config["dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert main(["merge-lora", "--adapter", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
