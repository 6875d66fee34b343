"""Tiny random-init checkpoints of every built-in family, for tests and CPU demos.

``build_tiny("llava" | "qwen2_5_vl" | "qwen3_vl", out_dir, seed=0)`` writes a directory that plain
``AutoModelForImageTextToText`` / ``AutoProcessor`` load: the real architecture at toy sizes (2 text
layers, hidden 64, a 2-layer vision encoder), a byte-level BPE tokenizer trained on
``tiny_corpus.txt`` plus the family's special tokens, the family's chat template and a real processor.
Everything is derived from the seed, so the same seed gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.errors import ModelError
from prefopt.models.registry import adapter_class, families

CORPUS = Path(__file__).with_name("tiny_corpus.txt")

#: Overridable sizes and their defaults (``build_tiny(..., hidden_size=128)``).
DEFAULTS: dict[str, int] = {
    "vocab_size": 3000,  # BPE target; the embedding is padded up to a multiple of 64
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vision_hidden_size": 32,
    "vision_intermediate_size": 64,
    "vision_depth": 2,
    "vision_heads": 2,
    "image_size": 56,  # LLaVA only: CLIP input resolution (multiple of 14)
    "max_position_embeddings": 4096,
}


def _corpus_lines() -> list[str]:
    """The shipped corpus plus templated sentences so that frequent project phrases get merged."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white"]
    shapes = ["circle", "square", "triangle", "star"]
    for i, colour in enumerate(colours):
        for j, shape in enumerate(shapes):
            n = (i * 4 + j) % 10
            lines.append(
                f"There are {n} {colour} {shape}s. How many {shape}s are {colour}? <answer>{n}</answer>"
            )
            lines.append(f"<think>The {shape} is {colour}.</think> <answer>{'ABCD'[j]}</answer>")
    return lines


def train_tokenizer(special_tokens: tuple[str, ...], vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``special_tokens`` at ids 0..k-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    return tok


def _fast_tokenizer(tok: Any, **special: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **special)


def _padded(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


def _text_kwargs(sizes: dict[str, int], vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["num_hidden_layers"],
        "num_attention_heads": sizes["num_attention_heads"],
        "num_key_value_heads": sizes["num_key_value_heads"],
        "max_position_embeddings": sizes["max_position_embeddings"],
    }


def _mrope_section(head_dim: int) -> list[int]:
    """Split half the head dim into (temporal, height, width) like Qwen's [16, 24, 24] for 128."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _qwen_tokenizer(cls: Any, sizes: dict[str, int]) -> tuple[Any, dict[str, int]]:
    """The Qwen-style tokenizer (shared by both Qwen families) and its special-token ids."""
    tok = train_tokenizer(cls.special_tokens, sizes["vocab_size"])
    tokenizer = _fast_tokenizer(
        tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(cls.special_tokens[1:]),
    )
    return tokenizer, {t: tok.token_to_id(t) for t in cls.special_tokens}


def _qwen_ids(ids: dict[str, int]) -> dict[str, int]:
    """The special-token ids a Qwen text config and model config record."""
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }



def _qwen_media_ids(ids: dict[str, int]) -> dict[str, int]:
    """The config's media token ids: they must be the tokenizer's own (Qwen2.5-VL and Qwen3-VL alike)."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }

def _build_qwen(cls: Any, sizes: dict[str, int]) -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer, ids = _qwen_tokenizer(cls, sizes)
    head_dim = sizes["hidden_size"] // sizes["num_attention_heads"]
    text = _text_kwargs(sizes, _padded(len(tokenizer), 128))  # spare rows, as in the real checkpoints
    text.update(
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": _mrope_section(head_dim),
        },
        **_qwen_ids(ids),
    )
    vision = {
        "depth": sizes["vision_depth"],
        "hidden_size": sizes["vision_hidden_size"],
        "intermediate_size": sizes["vision_intermediate_size"],
        "num_heads": sizes["vision_heads"],
        "out_hidden_size": sizes["hidden_size"],
        "fullatt_block_indexes": [sizes["vision_depth"] - 1],
        "window_size": 112,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        **_qwen_media_ids(ids),
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    # Small pixel budgets: a 56x56 image is 4x4 patches -> 4 merged tokens; big images stay cheap.
    size = {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(
            size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, cap_pixels_per_frame=True
        ),
        tokenizer=tokenizer,
        chat_template=cls.chat_template,
    )
    return model, processor


def _interleaved_mrope_section(head_dim: int) -> list[int]:
    """Qwen3-VL's interleaved (t, h, w) split of half the head dim, in the ratio of its [24, 20, 20] for 128.

    Frequencies are assigned round-robin t, h, w, ..., so h and w take ``3·section`` slots each and must fit.
    """
    half = head_dim // 2
    spatial = max(1, (half * 20) // 64)
    return [half - 2 * spatial, spatial, spatial]


def _build_qwen3(cls: Any, sizes: dict[str, int]) -> tuple[Any, Any]:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer, ids = _qwen_tokenizer(cls, sizes)
    head_dim = sizes["hidden_size"] // sizes["num_attention_heads"]
    text = _text_kwargs(sizes, _padded(len(tokenizer), 128))
    text.update(
        head_dim=head_dim,  # Qwen3-VL's text config states it (default 128), it is not derived
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": _interleaved_mrope_section(head_dim),
            "mrope_interleaved": True,
        },
        **_qwen_ids(ids),
    )
    patch = 16
    vision = {
        "depth": sizes["vision_depth"],
        "hidden_size": sizes["vision_hidden_size"],
        "intermediate_size": sizes["vision_intermediate_size"],
        "num_heads": sizes["vision_heads"],
        "out_hidden_size": sizes["hidden_size"],
        "patch_size": patch,
        "num_position_embeddings": 16 * 16,  # a 16x16 learned grid, interpolated to each image's patch grid
        "deepstack_visual_indexes": [0],  # one DeepStack merger, from the first vision block
    }
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        **_qwen_media_ids(ids),
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config)
    # 32-px merged cells: a 56x56 image becomes 64x64 = 4x4 patches -> 4 merged tokens.
    cell = patch * 2
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": 64 * 64, "longest_edge": 256 * 256}, patch_size=patch, merge_size=2
        ),
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": cell * cell, "longest_edge": 4 * 128 * 128},
            patch_size=patch,
            cap_pixels_per_frame=True,
            do_sample_frames=False,  # prefopt samples frames itself
        ),
        tokenizer=tokenizer,
        chat_template=cls.chat_template,
    )
    return model, processor


def _build_llava(cls: Any, sizes: dict[str, int]) -> tuple[Any, Any]:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    special = cls.special_tokens

    if sizes["image_size"] % 14:
        raise ModelError(f"image_size must be a multiple of the patch size 14, got {sizes['image_size']}")
    tok = train_tokenizer(special, sizes["vocab_size"])
    tokenizer = _fast_tokenizer(
        tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
    )
    ids = {t: tok.token_to_id(t) for t in special}
    text = _text_kwargs(sizes, _padded(len(tokenizer)))
    text.update(
        model_type="llama", bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"]
    )
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": sizes["vision_hidden_size"],
        "intermediate_size": sizes["vision_intermediate_size"],
        "num_hidden_layers": sizes["vision_depth"],
        "num_attention_heads": sizes["vision_heads"],
        "projection_dim": sizes["vision_hidden_size"],
        "image_size": sizes["image_size"],
        "patch_size": 14,
    }
    n_features = (sizes["image_size"] // 14) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        image_seq_length=n_features,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=ids["<pad>"],
    )
    model = LlavaForConditionalGeneration(config)
    side = sizes["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=cls.chat_template,
    )
    return model, processor


_BUILDERS = {"llava": _build_llava, "qwen2_5_vl": _build_qwen, "qwen3_vl": _build_qwen3}
#: The tiny model the demo and the docs use unless told otherwise.
DEFAULT_FAMILY = "qwen2_5_vl"
#: Registered families that have a tiny builder, in registry order (``prefopt tiny-model --family``).
TINY_FAMILIES: tuple[str, ...] = tuple(f for f in families() if f in _BUILDERS)


def build_tiny(family: str, out_dir: str | Path, seed: int = 0, **overrides: int) -> Path:
    """Write a tiny random-init checkpoint of ``family`` to ``out_dir`` and return the directory."""
    import torch

    if family not in _BUILDERS:
        raise ModelError(f"unknown model family '{family}' for a tiny model; choose one of {list(TINY_FAMILIES)}")
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ModelError(f"unknown tiny-model size override(s) {unknown}; known: {sorted(DEFAULTS)}")
    sizes = {**DEFAULTS, **{k: int(v) for k, v in overrides.items()}}
    if (
        sizes["hidden_size"] % sizes["num_attention_heads"]
        or sizes["num_attention_heads"] % sizes["num_key_value_heads"]
    ):
        raise ModelError("hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
    if (sizes["hidden_size"] // sizes["num_attention_heads"]) % 2 or sizes["vision_hidden_size"] % (
        2 * sizes["vision_heads"]
    ):
        raise ModelError(
            "head dimensions (hidden_size / num_attention_heads, vision likewise) must be even for rotary"
        )
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[family](adapter_class(family), sizes)
    model.eval()
    _set_generation_config(model, processor.tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _set_generation_config(model: Any, tokenizer: Any) -> None:
    """Greedy by default, stopping at end-of-turn (and ``<|endoftext|>`` for Qwen), with a pad id."""
    eos = [tokenizer.eos_token_id]
    extra = (
        tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tokenizer.get_vocab() else None
    )
    if extra is not None and extra not in eos:
        eos.append(extra)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos[-1]
    gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.do_sample = False
    gen.max_new_tokens = 32
