"""Qwen2.5-VL adapter: chat layout ``<|im_start|>role\\n...<|im_end|>``, dynamic-resolution images and videos.

Images become ``<|vision_start|><|image_pad|>…<|vision_end|>``; the processor expands ``<|image_pad|>`` to
one token per merged 2x2 patch group (``image_grid_thw.prod() // 4``). The training chat template is the
official one with ``{% generation %}`` markers around assistant content, so label masks come from the
template's own spans rather than from searching token patterns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prefopt.models.adapter import Messages, VLMAdapter, register
from prefopt.models.loading import encode_chat, load_pretrained

#: Official Qwen2.5-VL template plus ``{% generation %}`` markers (assistant text + ``<|im_end|>``).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


#: Module prefixes in the transformers 5 layout (checked against ``model.named_modules()``).
VISION_PREFIXES = ["model.visual.patch_embed", "model.visual.blocks"]
PROJECTOR_PREFIXES = ["model.visual.merger"]


@register
class Qwen25VLAdapter(VLMAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints (and the tiny ones)."""

    family: ClassVar[str] = "qwen2_5_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    supports_video: ClassVar[bool] = True
    chat_template: ClassVar[str] = QWEN_CHAT_TEMPLATE
    #: Pixel budget per video frame; None keeps the processor's ``size["longest_edge"]``.
    video_max_pixels: int | None = None

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device_map: Any = None,
        quantization: str | None = None,
        trust_remote_code: bool = False,
        load_model: bool = True,
        video_max_pixels: int | None = None,
    ) -> Qwen25VLAdapter:
        """Load a Qwen2.5-VL model and processor (processor only with ``load_model=False``)."""
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
            unquantized=VISION_PREFIXES + PROJECTOR_PREFIXES + ["lm_head"],
        )
        adapter = cls(model, processor, name_or_path)
        adapter.video_max_pixels = video_max_pixels
        return adapter

    def _processor_kwargs(self, videos: Sequence[Sequence[Any]] | None) -> dict[str, Any]:
        if not videos or not any(videos):
            return {}
        # Reference (qwen-vl-utils) behaviour: frames also share a total-video pixel budget.
        kwargs: dict[str, Any] = {"cap_pixels_per_frame": True}
        if self.video_max_pixels is not None:
            floor = self.processor.video_processor.size["shortest_edge"]
            kwargs["size"] = {
                "shortest_edge": min(floor, self.video_max_pixels),
                "longest_edge": self.video_max_pixels,
            }
        return {"videos_kwargs": kwargs}

    def encode_prompts(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Left-padded generation inputs with ``pixel_values``/``image_grid_thw`` (and video tensors)."""
        return encode_chat(
            self, conversations, images, videos, generation_prompt=True, **self._processor_kwargs(videos)
        )

    def encode_conversations(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Right-padded training inputs; ``labels`` cover assistant text and its ``<|im_end|>``."""
        return encode_chat(
            self, conversations, images, videos, generation_prompt=False, **self._processor_kwargs(videos)
        )

    @property
    def image_token_ids(self) -> list[int]:
        """``<|image_pad|>`` and ``<|video_pad|>`` ids, as the model config records them."""
        config = self.model.config if self.model is not None else None
        if config is not None:
            return [config.image_token_id, config.video_token_id]
        return [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]

    @property
    def image_input_keys(self) -> tuple[str, ...]:
        """Image/video tensors, plus the per-token ``mm_token_type_ids`` that 3-D (mrope) positions need.

        Without ``mm_token_type_ids`` transformers 5 silently falls back to 1-D positions, so collators
        must carry it (padded like ``input_ids``).
        """
        return (
            "pixel_values",
            "image_grid_thw",
            "pixel_values_videos",
            "video_grid_thw",
            "second_per_grid_ts",
            "mm_token_type_ids",
        )

    @property
    def vision_tower_prefixes(self) -> list[str]:
        """The ViT blocks and patch embedding (transformers 5 layout: ``model.visual``)."""
        return list(VISION_PREFIXES)

    @property
    def projector_prefixes(self) -> list[str]:
        """The patch merger that maps vision features to the text width."""
        return list(PROJECTOR_PREFIXES)

    @property
    def language_model_prefixes(self) -> list[str]:
        """Text decoder and output head."""
        return ["model.language_model", "lm_head"]
