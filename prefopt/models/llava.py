"""LLaVA-1.5 adapter: Vicuna-v1 layout ``USER: <image>\\n... ASSISTANT: ...</s>``, one 336-px view per image.

Each ``<image>`` becomes ``(image_size // patch)^2`` tokens (576 for LLaVA-1.5, 16 for the tiny model);
``vision_feature_select_strategy="default"`` drops CLIP's CLS feature. The training template is LLaVA-1.5's
conversation format with ``{% generation %}`` markers around the assistant text and ``</s>``. LLaVA-1.5
has no video input; a video raises :class:`~prefopt.errors.ModelError`.
"""

from __future__ import annotations

from typing import ClassVar

from prefopt.models.base import VLMAdapter

#: LLaVA-1.5 (Vicuna v1) conversation format; ``bos_token``/``eos_token`` come from the tokenizer.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'system' %}"
    "{% for content in parts %}{% if content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT:' }}{% generation %}"
    "{% for content in parts %}{% if content['type'] == 'text' %}{{ ' ' + content['text'] }}{% endif %}{% endfor %}"
    "{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ 'USER: ' }}"
    "{% for content in parts %}{% if content['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for content in parts %}{% if content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

LLAVA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


#: Module prefixes in the transformers 5 layout (checked against ``model.named_modules()``).
VISION_PREFIXES = ["model.vision_tower"]
PROJECTOR_PREFIXES = ["model.multi_modal_projector"]


class LlavaAdapter(VLMAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` checkpoints (llava-hf LLaVA-1.5 and the tiny one).

    A fixed-size CLIP input: the size the model sees is the pixel tensor's, no modality map, no video.
    """

    family: ClassVar[str] = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    hub_name_patterns: ClassVar[tuple[str, ...]] = ("llava",)
    supports_video: ClassVar[bool] = False
    chat_template: ClassVar[str] = LLAVA_CHAT_TEMPLATE
    special_tokens: ClassVar[tuple[str, ...]] = LLAVA_SPECIAL_TOKENS
    media_tokens: ClassVar[tuple[str, ...]] = ("<image>",)
    media_token_config_keys: ClassVar[tuple[str, ...]] = ("image_token_id",)
    vision_tower_modules: ClassVar[tuple[str, ...]] = tuple(VISION_PREFIXES)
    projector_modules: ClassVar[tuple[str, ...]] = tuple(PROJECTOR_PREFIXES)
    #: Vicuna's template writes ``ASSISTANT:`` and the reply starts with a space the model generates.
    reply_prefix: ClassVar[str] = " "
    #: LLaVA-1.5 was trained on boxes relative to the image side.
    box_scale: ClassVar[str] = "unit"

    @property
    def image_token_ids(self) -> list[int]:
        """The ``<image>`` id (``config.image_token_id``, else the processor's image token)."""
        if self.model is not None:
            return [int(self.model.config.image_token_id)]
        return [int(self.tokenizer.convert_tokens_to_ids(self.processor.image_token))]
