"""Helpers shared by the adapters: checked loading and chat encoding with template-derived label masks.

Label masks come from ``{% generation %}`` spans of the adapter's training chat template (character
ranges in the rendered text). The processor reports where it expanded image placeholders
(``text_replacement_offsets``), so each span is shifted into the expanded text and matched against the
tokenizer's offset mapping. This needs no token-pattern search and works for any tokenizer.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import ModelError

IGNORE_INDEX = -100
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def is_path_like(name_or_path: str) -> bool:
    """Whether a string names a local path rather than a hub id (``owner/name``)."""
    path = Path(name_or_path)
    return path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1


def read_model_type(path: str | Path) -> str:
    """The ``model_type`` of a local model directory's ``config.json`` (one clear error when unreadable)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{path}: no config.json; is this a model directory?")
    try:
        model_type = json.loads(cfg_file.read_text())["model_type"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelError(f"{cfg_file}: unreadable or without model_type ({err})") from err
    return str(model_type)


def check_model_dir(name_or_path: str, model_types: Sequence[str], *, need_model: bool) -> None:
    """Raise ``ModelError`` when a local directory lacks config/processor files or has another model_type."""
    path = Path(name_or_path)
    if not path.exists():
        if is_path_like(name_or_path):
            raise ModelError(f"{name_or_path}: model directory does not exist")
        return  # a hub id: transformers resolves (or reports) it
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory")
    model_type = read_model_type(path)
    if model_type not in model_types:
        raise ModelError(
            f"{path}: model_type '{model_type}' is not one of {list(model_types)} for this adapter"
        )
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    if not any((path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        raise ModelError(f"{path}: no processor files (processor_config.json / preprocessor_config.json)")
    if need_model and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelError(f"{path}: no model weights (*.safetensors)")


def quantization_config(quantization: str | None, dtype: Any, skip_modules: Sequence[str] = ()) -> Any:
    """A ``BitsAndBytesConfig`` for ``"4bit"`` (NF4, double quant) or ``"8bit"``; None when off.

    ``skip_modules`` (module-name prefixes) stay in full precision: QLoRA quantizes only the language
    model, since the small vision tower and projector lose accuracy cheaply and are rarely trained.
    """
    if quantization in (None, "", "none"):
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        import torch

        compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            llm_int8_skip_modules=list(skip_modules) or None,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules) or None)
    raise ModelError(f"quantization '{quantization}' is not supported; use 4bit, 8bit or leave it empty")


def load_pretrained(
    name_or_path: str,
    model_types: Sequence[str],
    *,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    device_map: Any = None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    load_model: bool = True,
    chat_template: str | None = None,
    unquantized: Sequence[str] = (),
) -> tuple[Any, Any]:
    """Load ``(model, processor)`` with the Auto classes; ``model`` is None when ``load_model`` is False.

    ``chat_template`` is installed on processors that ship none (base checkpoints), so that trainers
    rendering prompts through the processor work. ``unquantized``: module prefixes kept out of 4/8-bit.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    name_or_path = str(name_or_path)
    check_model_dir(name_or_path, model_types, need_model=load_model)
    if dtype not in _DTYPES:
        raise ModelError(f"dtype '{dtype}' is not supported; choose one of {list(_DTYPES)}")
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"{name_or_path}: cannot load the processor ({err})") from err
    if chat_template and not getattr(processor, "chat_template", None):
        processor.chat_template = chat_template
    if not load_model:
        return None, processor
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    bnb = quantization_config(quantization, torch_dtype, unquantized)
    if bnb is not None:
        kwargs["quantization_config"] = bnb
    from safetensors import SafetensorError

    try:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:  # SafetensorError: truncated/corrupt weights
        raise ModelError(f"{name_or_path}: cannot load the model ({err})") from err
    if model.config.model_type not in model_types:
        raise ModelError(
            f"{name_or_path}: model_type '{model.config.model_type}' does not match {list(model_types)}"
        )
    return model, processor


def _count_media(conversation: Sequence[dict[str, Any]], kind: str) -> int:
    total = 0
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            total += sum(1 for part in content if isinstance(part, dict) and part.get("type") == kind)
    return total


def flatten_media(
    adapter: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    images: Sequence[Sequence[Any]] | None,
    videos: Sequence[Sequence[Any]] | None,
) -> tuple[list[Any], list[Any]]:
    """Check per-conversation media counts against the placeholders and return flat image/video lists.

    An image is a PIL image, a path or encoded bytes; a video is a list of frames (each like an image)
    or a video file path, decoded with ``prefopt.data.video.load_video_frames`` defaults (2 fps, <= 16 frames).
    """
    flat_images: list[Any] = []
    flat_videos: list[Any] = []
    for kind, given, flat in (("image", images, flat_images), ("video", videos, flat_videos)):
        if given is not None and len(given) != len(conversations):
            raise ModelError(f"got {len(given)} {kind} lists for {len(conversations)} conversations")
        for i, conversation in enumerate(conversations):
            items = list(given[i]) if given is not None else []
            wanted = _count_media(conversation, kind)
            if kind == "video" and (wanted or items) and not adapter.supports_video:
                raise ModelError(
                    f"conversation {i}: the {adapter.family} adapter does not support video input; "
                    "use a video-capable family or pass frames as images"
                )
            if wanted != len(items):
                raise ModelError(
                    f"conversation {i}: {wanted} {kind} placeholder(s) but {len(items)} {kind}(s) given"
                )
            flat.extend(_open_image(x) if kind == "image" else _open_video(x) for x in items)
    return flat_images, flat_videos


def _open_image(src: Any) -> Any:
    """Decode a path or bytes into an RGB PIL image (PIL images pass through)."""
    # lazy: the CLI imports this module at start (via models.registry), and `prefopt --help` needs no PIL
    from PIL import Image

    if isinstance(src, Image.Image):
        return src.convert("RGB") if src.mode != "RGB" else src
    from prefopt.data.images import load_image  # lazy, as above: it pulls PIL

    return load_image(src)


def _open_video(src: Any) -> list[Any]:
    """Frames of one video: a list of image sources, or a file path sampled through PyAV."""
    if isinstance(src, (str, os.PathLike)):
        from prefopt.data.video import load_video_frames  # lazy, as in _open_image: it pulls PIL

        return load_video_frames(src)
    frames = [_open_image(frame) for frame in src]
    if not frames:
        raise ModelError("a video has no frames")
    return frames


def render_chat(
    adapter: Any, conversations: Sequence[Sequence[dict[str, Any]]], generation_prompt: bool
) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Render conversations with the adapter's training template; return texts and assistant char spans."""
    from transformers.utils.chat_template_utils import render_jinja_template

    tokenizer = adapter.tokenizer
    template_kwargs = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    texts, spans = render_jinja_template(
        conversations=[list(c) for c in conversations],
        chat_template=adapter.chat_template,
        return_assistant_tokens_mask=True,
        add_generation_prompt=generation_prompt,
        **template_kwargs,
    )
    return texts, [[tuple(s) for s in row] for row in spans]


def assistant_mask(
    offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], replacements: Sequence[dict[str, Any]]
) -> list[bool]:
    """Tokens whose characters overlap an assistant span, after shifting spans past expanded placeholders."""
    ends = [r["span"][1] for r in replacements]
    gained = [0]
    for r in replacements:
        gained.append(gained[-1] + (r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0]))
    mask = [False] * len(offsets)
    for start, end in spans:
        start += gained[bisect.bisect_right(ends, start)]
        end += gained[bisect.bisect_right(ends, end - 1)]
        for pos, (tok_start, tok_end) in enumerate(offsets):
            if tok_start < end and tok_end > start:
                mask[pos] = True
    return mask


def encode_chat(
    adapter: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    images: Sequence[Sequence[Any]] | None,
    videos: Sequence[Sequence[Any]] | None,
    *,
    generation_prompt: bool,
    **processor_kwargs: Any,
) -> Any:
    """Tokenise a batch: left-padded prompts (``generation_prompt``) or right-padded inputs with labels."""
    import torch

    if not conversations:
        raise ModelError("cannot encode an empty batch of conversations")
    flat_images, flat_videos = flatten_media(adapter, conversations, images, videos)
    texts, spans = render_chat(adapter, conversations, generation_prompt)
    kwargs: dict[str, Any] = dict(
        text=texts,
        padding=True,
        padding_side="left" if generation_prompt else "right",
        return_tensors="pt",
        add_special_tokens=False,  # the template already writes BOS where the family wants one
        **processor_kwargs,
    )
    if flat_images:
        kwargs["images"] = flat_images
    if flat_videos:
        kwargs["videos"] = flat_videos
    if generation_prompt:
        return adapter.processor(**kwargs)
    kwargs.update(return_offsets_mapping=True, return_text_replacement_offsets=True)
    batch = adapter.processor(**kwargs)
    offsets = batch.pop("offset_mapping").tolist()
    replacements = batch.pop("text_replacement_offsets", None) or [[] for _ in texts]
    labels = batch["input_ids"].clone()
    for row, (row_offsets, row_spans, row_repl) in enumerate(zip(offsets, spans, replacements, strict=True)):
        keep = torch.tensor(assistant_mask(row_offsets, row_spans, row_repl), dtype=torch.bool)
        labels[row][~keep] = IGNORE_INDEX
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    for token_id in adapter.image_token_ids:
        labels[labels == token_id] = IGNORE_INDEX
    batch["labels"] = labels
    return batch
