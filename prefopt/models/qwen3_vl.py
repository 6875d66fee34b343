"""Qwen3-VL adapter: Qwen2.5-VL's chat layout and dynamic resolution, with 16-px patches and DeepStack.

What differs from Qwen2.5-VL, and only that, is stated here:

- the official template has no default system turn;
- a video is one ``<|video_pad|>`` that the processor expands into per-frame blocks
  ``<t seconds><|vision_start|><|video_pad|>…<|vision_end|>`` (timestamps are text), so the template writes
  no ``<|vision_start|>`` around it; there is no ``second_per_grid_ts``;
- 16-px patches (merged 2x2); boxes on a relative 0-1000 grid;
- its video processor re-samples frames at 2 fps by default, assuming 24 fps input when it has no metadata;
  prefopt hands it frames it already sampled, so re-sampling is turned off on the loaded processor (every
  caller, TRL's included, then sees the same frames). Timestamps then assume 24 fps;
- the vision tower has a learned position embedding, and DeepStack mergers feed vision features into the
  first decoder layers (they belong to the projector).
"""

from __future__ import annotations

from typing import Any, ClassVar

from prefopt.models.qwen2_5_vl import QWEN_SPECIAL_TOKENS, Qwen25VLAdapter

#: Qwen3-VL chat layout plus ``{% generation %}`` markers (assistant text + ``<|im_end|>``).
QWEN3_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
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
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|video_pad|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

VISION_PREFIXES = ["model.visual.patch_embed", "model.visual.pos_embed", "model.visual.blocks"]
PROJECTOR_PREFIXES = ["model.visual.merger", "model.visual.deepstack_merger_list"]


class Qwen3VLAdapter(Qwen25VLAdapter):
    """Adapter for ``Qwen3VLForConditionalGeneration`` checkpoints (and the tiny ones)."""

    family: ClassVar[str] = "qwen3_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl",)
    hub_name_patterns: ClassVar[tuple[str, ...]] = ("qwen3-vl", "qwen3_vl")
    chat_template: ClassVar[str] = QWEN3_CHAT_TEMPLATE
    special_tokens: ClassVar[tuple[str, ...]] = QWEN_SPECIAL_TOKENS
    vision_tower_modules: ClassVar[tuple[str, ...]] = tuple(VISION_PREFIXES)
    projector_modules: ClassVar[tuple[str, ...]] = tuple(PROJECTOR_PREFIXES)
    video_keys: ClassVar[tuple[str, ...]] = ("pixel_values_videos", "video_grid_thw")
    #: Qwen3-VL writes boxes on a 0-1000 grid relative to the image (Qwen2.5-VL wrote input pixels).
    box_scale: ClassVar[str] = "thousand"

    def configure(self, **options: Any) -> None:
        """Qwen2.5-VL's options; frames reach the processor already sampled, so it keeps them all."""
        super().configure(**options)
        video_processor = getattr(self.processor, "video_processor", None)
        if video_processor is not None:
            video_processor.do_sample_frames = False
