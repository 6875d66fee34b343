"""Special-token surgery on both tiny families: new ids, mean-initialised rows, spare rows, save/reload, CLI."""

from __future__ import annotations

import pytest
import torch

from prefopt.errors import ModelError
from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens, init_new_rows, parse_token_list


def _load(path):
    from prefopt.models.adapter import load_adapter

    return load_adapter(str(path), dtype="float32")


def _image():
    from PIL import Image

    return Image.new("RGB", (56, 56), (200, 30, 30))


def test_parse_token_list():
    assert parse_token_list("reverse") == ["<SPAN>", "</CN>", "</UN>"]
    assert parse_token_list(" <a>, <b> ") == ["<a>", "<b>"]
    for bad in ("", "<a>,,<b>", "<a>,<a>"):
        with pytest.raises(ModelError):
            parse_token_list(bad)


def test_init_new_rows_mean_and_tied_head():
    """Rows 0..2 are [1,2], [3,4], [5,6] -> mean [3,4]; row 3 is a spare row and must not enter the mean.

    With a tied head the single shared matrix is written once; the result is the same mean.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=4, hidden_size=2, intermediate_size=4, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.tensor([[1.0, 2], [3, 4], [5, 6], [100, 100]]))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    init_new_rows(model, [3, 4], n_old=3)
    weight = model.get_input_embeddings().weight
    assert weight.shape == (5, 2) and model.config.vocab_size == 5
    assert torch.equal(weight[3:], torch.tensor([[3.0, 4], [3, 4]]))
    assert torch.equal(weight[:3], torch.tensor([[1.0, 2], [3, 4], [5, 6]]))
    assert model.get_output_embeddings().weight is weight


@pytest.mark.parametrize("spare", [0, 5], ids=["no-spare-rows", "spare-rows"])
def test_add_tokens_rows_are_new_means(tiny_dir, tmp_path, spare):
    adapter = _load(tiny_dir)
    model, tok = adapter.model, adapter.tokenizer
    n_old = len(tok)
    # Construct both layouts: an embedding exactly as large as the tokenizer, and one with spare rows.
    model.resize_token_embeddings(n_old + spare, mean_resizing=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()

    ids = add_special_tokens(adapter, REVERSE_TOKENS)

    assert sorted(ids.values()) == list(range(n_old, n_old + 3))
    assert list(ids) == list(REVERSE_TOKENS)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == max(n_old + 3, n_old + spare)
    assert model.get_output_embeddings().weight.shape[0] == rows
    assert model.config.get_text_config().vocab_size == rows
    new_in = model.get_input_embeddings().weight.detach()
    new_out = model.get_output_embeddings().weight.detach()
    assert torch.equal(new_in[:n_old], old_in[:n_old]) and torch.equal(new_out[:n_old], old_out[:n_old])
    for token_id in ids.values():
        torch.testing.assert_close(new_in[token_id], old_in[:n_old].mean(0), rtol=0, atol=1e-6)
        torch.testing.assert_close(new_out[token_id], old_out[:n_old].mean(0), rtol=0, atol=1e-6)
    assert tok.encode("a <SPAN>red</CN> b", add_special_tokens=False).count(ids["<SPAN>"]) == 1

    with pytest.raises(ModelError, match="already in the tokenizer"):
        add_special_tokens(adapter, ["<NEW>", "</CN>"])

    from prefopt.models.tokens import save_model_dir

    out = save_model_dir(model, adapter.processor, tmp_path / "with-tokens")
    _check_reload(out, ids, rows)


def _check_reload(out, ids, rows):
    """Plain transformers reload: same ids, same row count, and generation from an image still runs."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from prefopt.data.schema import user_message

    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert {t: processor.tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    assert model.get_input_embeddings().weight.shape[0] == rows
    reloaded = _load(out)
    batch = reloaded.encode_prompts([[user_message("What is this?", n_images=1)]], [[_image()]])
    generated = reloaded.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_add_tokens_cli(tiny_dir, tmp_path, capsys):
    from prefopt.cli import main

    out = tmp_path / "cli-out"
    assert main(["add-tokens", "--model", str(tiny_dir), "--tokens", "<obj>,</obj>", "--out", str(out)]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line)
    reloaded = _load(out)
    assert {t: reloaded.tokenizer.convert_tokens_to_ids(t) for t in ("<obj>", "</obj>")} == {
        t: int(i) for t, i in printed.items()
    }
    # Adding a token the model already has is refused with a one-line error (exit status 2).
    assert main(["add-tokens", "--model", str(out), "--tokens", "<obj>", "--out", str(tmp_path / "again")]) == 2
    assert "already in the tokenizer" in capsys.readouterr().err
