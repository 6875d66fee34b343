"""The model-adapter base class: every model-family fact algorithm code needs, behind one interface.

Algorithm code (trainers, rollouts, selection, evaluation) receives a :class:`VLMAdapter` and never asks
which family it holds. A family is a thin subclass that states class-level facts (``model_types``, chat
template, module prefixes, media tensor names, ...) and overrides a method only where its processor or
model behaves differently. Families are listed in :mod:`prefopt.models.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from prefopt.data.schema import assistant_message
from prefopt.errors import ModelError
from prefopt.models.loading import encode_chat, load_pretrained

Messages = list[dict[str, Any]]

#: Linear-layer leaf names LoRA wraps in the language model (attention + MLP).
LORA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def limit_pixels(processor: Any, max_pixels: int | None) -> bool:
    """Cap image resolution where the image processor takes a pixel budget (SPEC 1.6 ``max_pixels``).

    Processors that declare a ``max_pixels`` keyword store it as ``size.longest_edge``; fixed-size processors
    (a CLIP crop) have no such budget and are left alone. Returns whether the cap was applied.
    """
    image_processor = getattr(processor, "image_processor", None)
    declared = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {})
    if max_pixels is None or "max_pixels" not in declared:
        return False
    size = image_processor.size
    if isinstance(size, dict):
        size["longest_edge"] = max_pixels
    else:
        size.longest_edge = max_pixels
    return True


class VLMAdapter:
    """A loaded vision-language model and processor, plus the family facts algorithms need."""

    family: ClassVar[str]
    #: ``config.json`` ``model_type`` values this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: Lower-case substrings of hub ids that name this family (``owner/Name-of-model``).
    hub_name_patterns: ClassVar[tuple[str, ...]] = ()
    supports_video: ClassVar[bool] = False
    #: Training chat template with ``{% generation %}`` markers (installed on processors that ship none).
    chat_template: ClassVar[str] = ""
    #: Tokens of the tiny checkpoint's tokenizer, in id order (``prefopt.models.tiny``).
    special_tokens: ClassVar[tuple[str, ...]] = ()
    #: Placeholder tokens (image first) and the config keys that record their ids.
    media_tokens: ClassVar[tuple[str, ...]] = ()
    media_token_config_keys: ClassVar[tuple[str, ...]] = ("image_token_id",)
    #: Module-name prefixes in the transformers 5 layout (checked against ``model.named_modules()``).
    vision_tower_modules: ClassVar[tuple[str, ...]] = ()
    projector_modules: ClassVar[tuple[str, ...]] = ()
    language_model_modules: ClassVar[tuple[str, ...]] = ("model.language_model", "lm_head")
    #: Image tensors of an encoded batch beyond ids and masks (collators carry these).
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    #: Video tensors of an encoded batch.
    video_keys: ClassVar[tuple[str, ...]] = ()
    #: Per-prompt (not per-token) tensors that must be repeated when a prompt's KV cache is shared k times.
    cache_repeat_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether the model needs a per-token modality map (text 0, image 1, video 2) for its positions.
    modality_map_key: ClassVar[str | None] = None
    #: What the template puts between the assistant header and the reply, inside the generated part.
    reply_prefix: ClassVar[str] = ""
    #: How the family's released checkpoints write boxes: "abs" (input pixels), "unit" ([0, 1]) or "thousand".
    box_scale: ClassVar[str] = "abs"

    def __init__(self, model: Any, processor: Any, name_or_path: str | None = None):
        self.model = model
        self.processor = processor
        self.name_or_path = name_or_path

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device_map: Any = None,
        quantization: str | None = None,  # None, "4bit" or "8bit" (bitsandbytes)
        trust_remote_code: bool = False,
        load_model: bool = True,  # False: processor only
        **options: Any,
    ) -> VLMAdapter:
        """Load model and processor from a hub id or a local directory."""
        model, processor = load_pretrained(
            name_or_path,
            cls.model_types,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            quantization=quantization,
            trust_remote_code=trust_remote_code,
            load_model=load_model,
            chat_template=cls.chat_template,
            unquantized=[*cls.vision_tower_modules, *cls.projector_modules, "lm_head"],
        )
        adapter = cls(model, processor, name_or_path)
        adapter.configure(**options)
        return adapter

    def configure(self, **options: Any) -> None:
        """Family-specific load options (none by default)."""
        if options:
            raise ModelError(f"the {self.family} adapter takes no option(s) {sorted(options)}")

    # ---- tokenisation ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def processor_kwargs(self, videos: Sequence[Sequence[Any]] | None) -> dict[str, Any]:
        """Extra processor keyword arguments for a batch (none by default)."""
        return {}

    def encode_prompts(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Left-padded generation inputs (chat template with the generation prompt appended).

        Returns a ``BatchFeature`` with ``input_ids``, ``attention_mask`` and the family's media tensors.
        """
        return encode_chat(
            self, conversations, images, videos, generation_prompt=True, **self.processor_kwargs(videos)
        )

    def encode_conversations(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Right-padded training inputs with ``labels``: -100 everywhere except assistant turns.

        Assistant content and the end-of-turn token are supervised; system/user text, the
        assistant header, image tokens and padding are not.
        """
        return encode_chat(
            self, conversations, images, videos, generation_prompt=False, **self.processor_kwargs(videos)
        )

    def encode_prompt_response(
        self,
        prompts: Sequence[Messages],
        responses: Sequence[str],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Training inputs for ``prompt + assistant(response)``; only the response is supervised."""
        conversations = [list(p) + [assistant_message(r)] for p, r in zip(prompts, responses, strict=True)]
        return self.encode_conversations(conversations, images, videos)

    def decode(self, token_ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode a batch of generated ids."""
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=skip_special_tokens)

    # ---- structure -----------------------------------------------------------------------------
    @property
    def image_token_ids(self) -> list[int]:
        """Token ids that stand for image (and video) features in ``input_ids``, image first."""
        config = self.model.config if self.model is not None else None
        if config is not None:
            return [int(getattr(config, key)) for key in self.media_token_config_keys]
        return [int(self.tokenizer.convert_tokens_to_ids(t)) for t in self.media_tokens]

    @property
    def image_token_id(self) -> int:
        """The id of the image placeholder the processor expands."""
        return self.image_token_ids[0]

    @property
    def vision_tower_prefixes(self) -> list[str]:
        """Module-name prefixes of the vision encoder in ``self.model``."""
        return list(self.vision_tower_modules)

    @property
    def projector_prefixes(self) -> list[str]:
        """Module-name prefixes of the vision-to-language projector / merger."""
        return list(self.projector_modules)

    @property
    def language_model_prefixes(self) -> list[str]:
        """Module-name prefixes of the language model (including ``lm_head``)."""
        return list(self.language_model_modules)

    @property
    def image_input_keys(self) -> tuple[str, ...]:
        """Names of the media tensors in encoded batches (beyond ids and masks)."""
        extra = (self.modality_map_key,) if self.modality_map_key else ()
        return (*self.image_keys, *self.video_keys, *extra)

    @property
    def video_input_keys(self) -> tuple[str, ...]:
        """Names of the video tensors in encoded batches (empty for image-only families)."""
        return tuple(self.video_keys)

    def lora_target_modules(self, include_vision: bool = False) -> list[str]:
        """Full module names of the linear layers LoRA should wrap (language model's attention + MLP)."""
        prefixes = list(self.language_model_prefixes)
        if include_vision:
            prefixes += list(self.vision_tower_prefixes) + list(self.projector_prefixes)
        names = []
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
                continue
            in_scope = any(name == p or name.startswith(p + ".") for p in prefixes)
            vision_leaf = include_vision and not any(
                name.startswith(p + ".") for p in self.language_model_prefixes
            )
            if in_scope and (name.rsplit(".", 1)[-1] in LORA_LEAVES or vision_leaf):
                names.append(name)
        return names

    def freeze_vision(self, freeze_tower: bool = True, freeze_projector: bool = False) -> None:
        """Turn off gradients for the vision tower (and optionally the projector)."""
        prefixes = list(self.vision_tower_prefixes) if freeze_tower else []
        if freeze_projector:
            prefixes += list(self.projector_prefixes)
        for name, param in self.model.named_parameters():
            if any(name.startswith(p + ".") for p in prefixes):
                param.requires_grad_(False)

    # ---- media facts algorithms ask for -------------------------------------------------------
    @property
    def image_processor(self) -> Any:
        """The processor's image processor (prefopt's call wrappers removed)."""
        processor = self.processor
        while hasattr(processor, "_processor"):
            processor = processor._processor
        return processor.image_processor

    def input_size(self, image: Any) -> tuple[int, int]:
        """``(width, height)`` of ``image`` as the model sees it after the processor's resizing.

        Fixed-size processors (a CLIP crop): the pixel tensor's own size.
        """
        pixels = self.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return int(pixels.shape[-1]), int(pixels.shape[-2])

    def image_tensors(self, images: Sequence[Any]) -> dict[str, Any]:
        """The image tensors of a flat list of images, in order, as the model's forward takes them."""
        return dict(self.image_processor(images=list(images), return_tensors="pt"))

    def modality_map(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Per-token modality (text 0, image 1, video 2) where the family needs it, else None."""
        if not self.modality_map_key:
            return None
        modality = torch.zeros_like(input_ids)
        ids = self.image_token_ids
        modality[input_ids == ids[0]] = 1
        for video_id in ids[1:]:
            modality[input_ids == video_id] = 2
        return modality

    def modality_rows(self, rows: Sequence[Sequence[int]]) -> dict[str, list[list[int]]]:
        """The modality map of ragged id lists, keyed as the model's forward takes it (empty where unneeded)."""
        if not self.modality_map_key:
            return {}
        maps = [self.modality_map(torch.tensor(list(row), dtype=torch.long)).tolist() for row in rows]
        return {self.modality_map_key: maps}

    def with_modality_map(self, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` plus the modality map rebuilt from ``input_ids`` (unchanged where none is needed)."""
        modality = self.modality_map(input_ids)
        if modality is None:
            return kwargs
        return {**kwargs, self.modality_map_key: modality}

    def video_inputs(self, prompt: Messages) -> dict[str, Any]:
        """The video tensors of one prompt whose video parts carry frames, exactly as the processor makes them."""
        encoded = self.processor.apply_chat_template(
            [prompt], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        return {key: encoded[key] for key in self.video_input_keys if key in encoded}

    def strip_video_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` without the video tensors (when they are supplied per row elsewhere)."""
        return {key: v for key, v in kwargs.items() if key not in self.video_input_keys}

    @classmethod
    def repeat_for_cache(cls, batch: Any, k: int) -> dict[str, Any]:
        """Per-prompt tensors (not per-token ones) a forward needs after a one-prompt KV cache is repeated k times."""
        return {key: batch[key].repeat(k, 1) for key in cls.cache_repeat_keys if key in batch}

    def limit_pixels(self, max_pixels: int | None) -> bool:
        """Apply an image pixel budget where the processor has one; returns whether it was applied."""
        return limit_pixels(self.processor, max_pixels)
