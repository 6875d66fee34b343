"""LLaVA-1.5 adapter: Vicuna-v1 layout ``USER: <image>\\n... ASSISTANT: ...</s>``, one 336-px view per image.

Each ``<image>`` becomes ``(image_size // patch)^2`` tokens (576 for LLaVA-1.5, 16 for the tiny model);
``vision_feature_select_strategy="default"`` drops CLIP's CLS feature. The training template is LLaVA-1.5's
conversation format with ``{% generation %}`` markers around the assistant text and ``</s>``. LLaVA-1.5
has no video input; a video raises :class:`~prefopt.errors.ModelError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from prefopt.models.adapter import Messages, VLMAdapter, register
from prefopt.models.loading import encode_chat, load_pretrained

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


@register
class LlavaAdapter(VLMAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` checkpoints (llava-hf LLaVA-1.5 and the tiny one)."""

    family: ClassVar[str] = "llava"
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    supports_video: ClassVar[bool] = False
    chat_template: ClassVar[str] = LLAVA_CHAT_TEMPLATE

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
    ) -> LlavaAdapter:
        """Load a LLaVA model and processor (processor only with ``load_model=False``)."""
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
        return cls(model, processor, name_or_path)

    def encode_prompts(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Left-padded generation inputs ending in ``ASSISTANT:``, with ``pixel_values``."""
        return encode_chat(self, conversations, images, videos, generation_prompt=True)

    def encode_conversations(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Right-padded training inputs; ``labels`` cover each assistant reply and its ``</s>``."""
        return encode_chat(self, conversations, images, videos, generation_prompt=False)

    @property
    def image_token_ids(self) -> list[int]:
        """The ``<image>`` id (``config.image_token_id``)."""
        if self.model is not None:
            return [self.model.config.image_token_id]
        return [self.tokenizer.convert_tokens_to_ids(self.processor.image_token)]

    @property
    def vision_tower_prefixes(self) -> list[str]:
        """CLIP vision encoder (transformers 5 layout: ``model.vision_tower``)."""
        return list(VISION_PREFIXES)

    @property
    def projector_prefixes(self) -> list[str]:
        """Two-layer MLP projector."""
        return list(PROJECTOR_PREFIXES)

    @property
    def language_model_prefixes(self) -> list[str]:
        """Llama/Vicuna decoder and output head."""
        return ["model.language_model", "lm_head"]
