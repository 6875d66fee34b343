"""Random-init checkpoints at the real sizes of Qwen2.5-VL-3B-Instruct and LLaVA-1.5-7B, and FLOP counts.

The values below are the public ``config.json`` files of ``Qwen/Qwen2.5-VL-3B-Instruct`` and
``llava-hf/llava-1.5-7b-hf`` (text decoder, vision tower, vocabulary). The tokenizer and processor are
prefopt's tiny ones (``prefopt.models.tiny``); the embedding and LM head are padded to the real vocabulary,
so every matrix has its real shape. ``--config tiny`` uses the tiny builders unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Qwen/Qwen2.5-VL-3B-Instruct config.json (text part at top level, vision under "vision_config").
QWEN25_VL_3B = {
    "text": dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
        hidden_act="silu",
    ),
    "vision": dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu",
    ),
    "top": dict(tie_word_embeddings=True),
    "rope_theta": 1e6,
    "mrope_section": [16, 24, 24],
}

#: llava-hf/llava-1.5-7b-hf config.json (Vicuna-7B text decoder, CLIP ViT-L/14-336 vision tower).
LLAVA15_7B = {
    "text": dict(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        hidden_act="silu",
    ),
    "vision": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ),
    "top": dict(
        tie_word_embeddings=False, image_seq_length=576, projector_hidden_act="gelu",
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    ),
}

REAL = {"qwen2_5_vl": QWEN25_VL_3B, "llava": LLAVA15_7B}
NAMES = {"qwen2_5_vl": "Qwen2.5-VL-3B-Instruct", "llava": "LLaVA-1.5-7B"}
#: bf16 dense peak FLOP/s per device (vendor spec sheets); CPU MFU is not reported.
PEAK_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def real_config(family: str, tiny_dir: str | Path) -> Any:
    """The tiny checkpoint's config with the real sizes written in (token ids stay the tiny tokenizer's)."""
    from transformers import AutoConfig

    spec = REAL[family]
    tiny = AutoConfig.from_pretrained(tiny_dir)
    data = tiny.to_dict()
    text = {k: v for k, v in data["text_config"].items() if k not in ("layer_types", "head_dim")}
    text.update(spec["text"])
    vision = dict(data["vision_config"])
    vision.update(spec["vision"])
    if family == "qwen2_5_vl":
        rope = dict(text.get("rope_parameters") or {})
        rope.update(rope_type="default", rope_theta=spec["rope_theta"], mrope_section=spec["mrope_section"])
        text["rope_parameters"] = rope
    text["tie_word_embeddings"] = spec["top"]["tie_word_embeddings"]
    data.update(text_config=text, vision_config=vision, **spec["top"])
    return type(tiny).from_dict(data)


def build_checkpoint(family: str, size: str, out: str | Path, device: str, seed: int = 0) -> Path:
    """Write a random-init checkpoint of ``family`` (``size`` tiny or real) to ``out``; returns ``out``."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from prefopt.models.tiny import build_tiny

    out = Path(out)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    # LLaVA: the processor must emit 576 image tokens (336 px / patch 14); build the tiny one that way.
    extra = {"image_size": 336} if (family == "llava" and size == "real") else {}
    build_tiny(family, out, seed=seed, **extra)
    if size == "tiny":
        return out
    config = real_config(family, out)
    generation = GenerationConfig.from_pretrained(out)
    for stale in out.glob("*.safetensors"):
        stale.unlink()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.generation_config = generation
    model.save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def meta_model(family: str, tiny_dir: str | Path, size: str) -> Any:
    """The model of a checkpoint built on the meta device (shapes only, no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = real_config(family, tiny_dir) if size == "real" else AutoConfig.from_pretrained(tiny_dir)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def model_shape(family: str, tiny_dir: str | Path, size: str) -> dict[str, Any]:
    """Parameter counts (total, language decoder without input embedding, vision) and decoder L, d."""
    model = meta_model(family, tiny_dir, size)
    total = sum(p.numel() for p in model.parameters())
    lm = model.get_decoder() if hasattr(model, "get_decoder") else model.model.language_model
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    decoder = sum(p.numel() for p in lm.parameters()) - embed + head.numel()
    text = model.config.text_config
    return {
        "params_total": total,
        "params_decoder": decoder,  # N of the FLOP formula: decoder layers + final norm + LM head
        "params_vision": total - sum(p.numel() for p in lm.parameters()) - (0 if tied else head.numel()),
        "layers": text.num_hidden_layers,
        "hidden": text.hidden_size,
        "vocab": text.vocab_size,
    }


FLOP_FORMULA = (
    "model FLOPs = sum over sequences of [k*N*T + k*2*L*d*T^2] with T the sequence's tokens, N the decoder "
    "parameters (layers + LM head, no input embedding), L layers, d hidden size; k = 6 for a training "
    "forward+backward, 2 for a forward only (reference, generation prefill/decode counted per generated token "
    "as 2*N + 4*L*d*context). Recomputation by gradient checkpointing and the vision tower are not counted "
    "(MFU convention of PaLM/Megatron: useful model FLOPs only)."
)


def train_flops(shape: dict[str, Any], lengths: list[int], k: int = 6) -> float:
    """FLOPs of a forward (+backward when ``k`` is 6) over sequences of the given lengths."""
    n, layers, d = shape["params_decoder"], shape["layers"], shape["hidden"]
    return float(sum(k * n * t + k * 2 * layers * d * t * t for t in lengths))


def generate_flops(shape: dict[str, Any], prompt: int, new: int, sequences: int) -> float:
    """FLOPs of generating ``new`` tokens after a ``prompt``-token prefill, for ``sequences`` sequences."""
    n, layers, d = shape["params_decoder"], shape["layers"], shape["hidden"]
    prefill = 2 * n * prompt + 4 * layers * d * prompt * prompt
    decode = sum(2 * n + 4 * layers * d * (prompt + i) for i in range(new))
    return float(sequences * (prefill + decode))


def peak_flops(device: str) -> tuple[float | None, str]:
    """Dense bf16 peak FLOP/s of the device and where the figure comes from (None on CPU)."""
    if not device.startswith("cuda"):
        return None, "n/a (CPU)"
    import torch

    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value, f"{name}: {value / 1e12:.1f} TFLOP/s bf16 dense (spec sheet)"
    return None, f"{name}: unknown peak, MFU not reported"
