"""Adapters: label masks, padding sides, image-token / vision-feature agreement, video, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from prefopt.data.schema import assistant_message, user_message
from prefopt.errors import ModelError
from prefopt.models.adapter import load_adapter
from prefopt.models.loading import IGNORE_INDEX, assistant_mask, quantization_config
from prefopt.models.registry import adapter_class
from prefopt.models.tiny import TINY_FAMILIES as FAMILIES
from tests.helpers import write_clip

VIDEO_FAMILIES = [f for f in FAMILIES if adapter_class(f).supports_video]


def _image(w, h, colour=(10, 120, 200)):
    return Image.new("RGB", (w, h), colour)


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs):
    return {family: load_adapter(str(path)) for family, path in tiny_model_dirs.items()}


@pytest.fixture(params=FAMILIES)
def adapter(request, adapters):
    return adapters[request.param]


def _runs(labels):
    """Contiguous supervised runs of one label row, as lists of token ids."""
    runs, current = [], []
    for token in labels.tolist():
        if token == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(token)
    return runs + ([current] if current else [])


def _feature_rows(adapter, batch):
    """Number of vision feature vectors the model produces for the batch's images."""
    kwargs = {k: batch[k] for k in ("pixel_values", "image_grid_thw") if k in batch}
    config = adapter.model.config
    if hasattr(config, "vision_feature_layer"):
        kwargs.update(
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
    with torch.no_grad():
        features = adapter.model.get_image_features(**kwargs).pooler_output
    return sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features)


@pytest.mark.parametrize("sizes", [[(56, 56)], [(56, 56), (112, 84)]])
def test_image_tokens_equal_vision_features(adapter, sizes):
    convs = [
        [user_message(f"Describe picture {i}.", 1), assistant_message("A shape.")] for i in range(len(sizes))
    ]
    batch = adapter.encode_conversations(convs, [[_image(w, h)] for w, h in sizes])
    n_tokens = sum(int((batch["input_ids"] == t).sum()) for t in adapter.image_token_ids)
    assert n_tokens == _feature_rows(adapter, batch) > 0
    with torch.no_grad():
        loss = adapter.model(**batch).loss  # the model itself re-checks token/feature agreement
    assert torch.isfinite(loss)


def test_labels_supervise_only_assistant_turns(adapter):
    convs = [
        [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            user_message("How many stars?", 1),
            assistant_message("<answer>3</answer>"),
            user_message("And which colour is the square?", 1),
            assistant_message("The square is blue."),
        ],
        [user_message("Is there a cat?", 1), assistant_message("No.")],
    ]
    images = [[_image(56, 56), _image(84, 56)], [_image(56, 84)]]
    batch = adapter.encode_conversations(convs, images)
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    eos = adapter.tokenizer.eos_token
    expected = [["<answer>3</answer>", "The square is blue."], ["No."]]
    for row in range(2):
        texts = [adapter.tokenizer.decode(run) for run in _runs(labels[row])]
        assert [t.strip() for t in texts] == [e + eos for e in expected[row]]
        supervised = labels[row] != IGNORE_INDEX
        assert torch.equal(labels[row][supervised], ids[row][supervised])
    assert mask[1, -1] == 0 and mask[1, 0] == 1  # shorter row is right-padded
    assert (labels[mask == 0] == IGNORE_INDEX).all()
    for token in adapter.image_token_ids:
        assert (labels[ids == token] == IGNORE_INDEX).all()


def test_prompts_are_left_padded_with_generation_prompt(adapter):
    prompts = [[user_message("Hi?", 1)], [user_message("Describe every shape in this picture in detail.", 1)]]
    batch = adapter.encode_prompts(prompts, [[_image(56, 56)], [_image(56, 56)]])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert "labels" not in batch
    # Both rows end with the same assistant header the training template puts before a reply.
    assert torch.equal(batch["input_ids"][0, -2:], batch["input_ids"][1, -2:])
    train = adapter.encode_prompt_response(prompts[:1], ["Hello."], [[_image(56, 56)]])
    n = int(batch["attention_mask"][0].sum())
    assert torch.equal(train["input_ids"][0, :n], batch["input_ids"][0, -n:])
    with torch.no_grad():
        out = adapter.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert len(adapter.decode(out[:, batch["input_ids"].shape[1] :])) == 2


def test_text_only_and_mixed_batches(adapter):
    convs = [
        [user_message("Say hi."), assistant_message("Hi.")],
        [user_message("Look.", 1), assistant_message("Red.")],
    ]
    batch = adapter.encode_conversations(convs, [[], [_image(56, 56)]])
    assert sum(int((batch["input_ids"][0] == t).sum()) for t in adapter.image_token_ids) == 0
    with torch.no_grad():
        assert torch.isfinite(adapter.model(**batch).loss)
    text_only = adapter.encode_conversations(convs[:1])
    assert "pixel_values" not in text_only


def test_image_count_mismatch_is_a_clear_error(adapter):
    with pytest.raises(ModelError, match="conversation 0: 1 image placeholder"):
        adapter.encode_prompts([[user_message("Look.", 1)]], [[]])


def test_prefixes_partition_parameters(adapter):
    groups = [adapter.vision_tower_prefixes, adapter.projector_prefixes, adapter.language_model_prefixes]
    for name, _ in adapter.model.named_parameters():
        owners = [g for g in groups if any(name.startswith(p + ".") for p in g)]
        assert len(owners) == 1, name
    targets = adapter.lora_target_modules()
    assert targets and all(
        any(t.startswith(p + ".") for p in adapter.language_model_prefixes) for t in targets
    )


def test_llava_refuses_video(adapters):
    frames = [_image(56, 56) for _ in range(2)]
    with pytest.raises(ModelError, match="does not support video"):
        adapters["llava"].encode_prompts([[user_message("What happens?", 0, 1)]], None, [[frames]])


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_qwen_video_tokens_match_features_and_budget(adapters, family):
    qwen = adapters[family]
    frames = [_image(112, 84, (i * 50, 0, 0)) for i in range(4)]
    convs = [[user_message("What happens?", 0, 1), assistant_message("It moves.")]]
    batch = qwen.encode_conversations(convs, None, [[frames]])
    video_tokens = int((batch["input_ids"] == qwen.model.config.video_token_id).sum())
    with torch.no_grad():
        feats = qwen.model.get_video_features(
            batch["pixel_values_videos"], batch["video_grid_thw"]
        ).pooler_output
        assert torch.isfinite(qwen.model(**batch).loss)
    assert video_tokens == sum(f.shape[0] for f in feats) > 0
    qwen.video_max_pixels = 56 * 56
    try:
        small = qwen.encode_conversations(convs, None, [[frames]])
    finally:
        qwen.video_max_pixels = None
    assert int((small["input_ids"] == qwen.model.config.video_token_id).sum()) < video_tokens


def test_load_errors(tiny_llava_dir, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_adapter(str(tmp_path / "missing"), family="llava")
    with pytest.raises(ModelError, match="unknown model family"):
        load_adapter(str(tiny_llava_dir), family="gpt2")
    no_proc = tmp_path / "no-processor"
    no_proc.mkdir()
    shutil.copy(tiny_llava_dir / "config.json", no_proc / "config.json")
    shutil.copy(tiny_llava_dir / "tokenizer.json", no_proc / "tokenizer.json")
    with pytest.raises(ModelError, match="no processor files"):
        load_adapter(str(no_proc))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert' is not supported"):
        load_adapter(str(bert))
    with pytest.raises(ModelError, match="not one of"):
        load_adapter(str(tiny_llava_dir), family="qwen2_5_vl")


def test_processor_only_load(tiny_qwen_dir):
    adapter = load_adapter(str(tiny_qwen_dir), load_model=False)
    assert adapter.model is None
    batch = adapter.encode_conversations(
        [[user_message("Hi.", 1), assistant_message("Yo.")]], [[_image(56, 56)]]
    )
    assert int((batch["input_ids"] == adapter.image_token_ids[0]).sum()) == 4  # 56x56 -> 4x4 patches -> 2x2


def test_quantization_config():
    assert quantization_config(None, "auto") is None
    four = quantization_config("4bit", torch.bfloat16)
    assert (
        four.load_in_4bit
        and four.bnb_4bit_quant_type == "nf4"
        and four.bnb_4bit_compute_dtype == torch.bfloat16
    )
    assert quantization_config("8bit", "auto").load_in_8bit
    with pytest.raises(ModelError, match="3bit"):
        quantization_config("3bit", "auto")


def test_assistant_mask_shifts_spans_past_expanded_placeholders():
    """Text "<i>ab" (placeholder at 0..3) expands to "<i><i>ab" (0..6); span "ab" = chars 3..5 -> 6..8.

    Tokens: (0,3) (3,6) image, (6,7) "a", (7,8) "b" -> mask [F, F, T, T].
    """
    offsets = [(0, 3), (3, 6), (6, 7), (7, 8)]
    replacements = [{"span": (0, 3), "new_span": (0, 6)}]
    assert assistant_mask(offsets, [(3, 5)], replacements) == [False, False, True, True]
    assert assistant_mask(offsets, [(3, 4)], replacements) == [False, False, True, False]
    assert assistant_mask(offsets, [(3, 5)], []) == [False, True, False, False]


def _write_video(path, n_frames=4, size=(64, 48)):
    return write_clip(path, n_frames=n_frames, rate=2, size=size, step=60)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_qwen_video_from_file_path(adapters, tmp_path, family):
    qwen = adapters[family]
    path = tmp_path / "clip.mp4"
    _write_video(path)
    prompt = [[user_message("What happens?", 0, 1)]]
    batch = qwen.encode_prompts(prompt, None, [[str(path)]])
    assert int((batch["input_ids"] == qwen.model.config.video_token_id).sum()) > 0
    with pytest.raises(ModelError, match="no frames"):
        qwen.encode_prompts(prompt, None, [[[]]])


@pytest.mark.parametrize("family", [f for f in FAMILIES if adapter_class(f).modality_map_key])
def test_qwen_batches_carry_mm_token_types_for_3d_positions(adapters, family):
    """Dropping ``mm_token_type_ids`` changes Qwen2.5-VL's rope positions, hence the logits (Qwen3-VL refuses)."""
    qwen = adapters[family]
    assert "mm_token_type_ids" in qwen.image_input_keys
    batch = qwen.encode_prompts([[user_message("Shapes?", 1)]], [[_image(112, 56)]])
    is_image = batch["input_ids"] == qwen.image_token_ids[0]
    assert (batch["mm_token_type_ids"][is_image] != 0).all() and (
        batch["mm_token_type_ids"][~is_image] == 0
    ).all()
    with torch.no_grad():
        full = qwen.model(**batch).logits
        qwen.model.model.rope_deltas = None
        try:
            flat = qwen.model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
        except ValueError as err:  # Qwen3-VL refuses a multimodal batch without it instead of guessing
            assert "mm_token_type_ids" in str(err)
            return
    assert not torch.allclose(full[:, -1], flat[:, -1])


def test_load_options_and_template_fallback(tiny_llava_dir, tmp_path):
    adapter = load_adapter(str(tiny_llava_dir), dtype="bfloat16", attn_implementation="eager")
    assert adapter.model.dtype == torch.bfloat16
    assert adapter.model.config.get_text_config()._attn_implementation == "eager"
    with pytest.raises(ModelError, match="dtype 'fp8'"):
        load_adapter(str(tiny_llava_dir), dtype="fp8")
    bare = tmp_path / "no-template"
    shutil.copytree(tiny_llava_dir, bare)
    (bare / "chat_template.jinja").unlink()
    processor_only = load_adapter(str(bare), load_model=False)
    assert processor_only.processor.chat_template == processor_only.chat_template
    (bare / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model weights"):
        load_adapter(str(bare))


def test_4bit_load_quantizes_language_model_only(tiny_qwen_dir):
    adapter = load_adapter(str(tiny_qwen_dir), quantization="4bit")
    kinds = {name: type(m).__name__ for name, m in adapter.model.named_modules()}
    lm_q = next(n for n in kinds if n.startswith(adapter.language_model_prefixes[0]) and n.endswith("q_proj"))
    assert kinds[lm_q] == "Linear4bit"
    kept = [
        n for n in kinds if n.startswith(tuple(adapter.vision_tower_prefixes + adapter.projector_prefixes))
    ]
    assert kept and all(kinds[n] != "Linear4bit" for n in kept)
    assert kinds["lm_head"] == "Linear"
    batch = adapter.encode_prompts([[user_message("Hi", 1)]], [[_image(56, 56)]])
    with torch.no_grad():
        out = adapter.model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
