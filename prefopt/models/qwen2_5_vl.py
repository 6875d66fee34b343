"""Qwen2.5-VL adapter: chat layout ``<|im_start|>role\\n...<|im_end|>``, dynamic-resolution images and videos.

Images become ``<|vision_start|><|image_pad|>…<|vision_end|>``; the processor expands ``<|image_pad|>`` to
one token per merged 2x2 patch group (``image_grid_thw.prod() // 4``). The training chat template is the
official one with ``{% generation %}`` markers around assistant content, so label masks come from the
template's own spans rather than from searching token patterns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prefopt.models.base import VLMAdapter

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


class Qwen25VLAdapter(VLMAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints (and the tiny ones).

    Dynamic resolution: the size the model sees is its patch grid times the patch size; M-RoPE positions
    need the per-token modality map (``mm_token_type_ids``) and each image's grid.
    """

    family: ClassVar[str] = "qwen2_5_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    hub_name_patterns: ClassVar[tuple[str, ...]] = ("qwen2.5-vl", "qwen2_5_vl")
    supports_video: ClassVar[bool] = True
    chat_template: ClassVar[str] = QWEN_CHAT_TEMPLATE
    special_tokens: ClassVar[tuple[str, ...]] = QWEN_SPECIAL_TOKENS
    media_tokens: ClassVar[tuple[str, ...]] = ("<|image_pad|>", "<|video_pad|>")
    media_token_config_keys: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    vision_tower_modules: ClassVar[tuple[str, ...]] = tuple(VISION_PREFIXES)
    projector_modules: ClassVar[tuple[str, ...]] = tuple(PROJECTOR_PREFIXES)
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_grid_thw")
    video_keys: ClassVar[tuple[str, ...]] = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    #: The grids place the cached image tokens in M-RoPE positions.
    cache_repeat_keys: ClassVar[tuple[str, ...]] = ("image_grid_thw",)
    #: Without it transformers 5 silently falls back to 1-D positions, so collators must carry it.
    modality_map_key: ClassVar[str | None] = "mm_token_type_ids"
    #: Pixel budget per video frame; None keeps the processor's ``size["longest_edge"]``.
    video_max_pixels: int | None = None

    def configure(self, video_max_pixels: int | None = None) -> None:
        """``video_max_pixels``: a per-frame pixel budget for videos."""
        self.video_max_pixels = video_max_pixels

    def processor_kwargs(self, videos: Sequence[Sequence[Any]] | None) -> dict[str, Any]:
        """Video frames share a total pixel budget, as the reference (qwen-vl-utils) does."""
        if not videos or not any(videos):
            return {}
        kwargs: dict[str, Any] = {"cap_pixels_per_frame": True}
        if self.video_max_pixels is not None:
            floor = self.processor.video_processor.size["shortest_edge"]
            kwargs["size"] = {
                "shortest_edge": min(floor, self.video_max_pixels),
                "longest_edge": self.video_max_pixels,
            }
        return {"videos_kwargs": kwargs}

    def input_size(self, image: Any) -> tuple[int, int]:
        """The patch grid (after ``max_pixels``) times the patch size."""
        image_processor = self.image_processor
        out = image_processor(images=[image], return_tensors="pt")
        _, rows, cols = (int(v) for v in out["image_grid_thw"][0])
        patch = int(image_processor.patch_size)
        return cols * patch, rows * patch
