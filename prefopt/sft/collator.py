"""Batches for SFT: conversations -> right-padded tensors through ``adapter.encode_conversations``.

Only assistant turns (and their end-of-turn token) are supervised; system/user text, image tokens and padding
carry label -100 (the seed code trained on prompt tokens too; SPEC 1.7 asks us not to). With ``reverse`` the
labels are rewritten by ``prefopt.reverse.masking.apply_reverse_masking``, which may add ``loss_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefopt.errors import DataError


def to_four_stage(example: Any) -> Any:
    """Rewrite every assistant turn of a LLaVA-CoT conversation into the four-stage format (SPEC 1.7)."""
    from prefopt.data.schema import assistant_message, message_text
    from prefopt.grpo.prompts import llava_cot_to_four_stage

    messages = []
    for msg in example.messages:
        if msg.get("role") == "assistant":
            try:
                msg = assistant_message(llava_cot_to_four_stage(message_text(msg)))
            except DataError as err:
                raise DataError(f"example {example.id!r}: {err}") from err
        messages.append(msg)
    example.messages = messages
    return example


class ConversationCollator:
    """Turns a list of ``ConversationExample`` into a training batch (``input_ids``, ``labels``, media tensors)."""

    def __init__(self, adapter: Any, reverse: bool = False, tag_weight: float = 1.0, video_frames: int = 8):
        self.adapter = adapter
        self.reverse = reverse
        self.tag_weight = tag_weight
        self.video_frames = video_frames

    def _videos(self, example: Any) -> list[Any]:
        from prefopt.data.video import load_video_frames

        return [
            load_video_frames(v, num_frames=self.video_frames) if isinstance(v, str) else v
            for v in example.videos
        ]

    def __call__(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Encode ``examples``; assistant tokens supervised, everything else -100."""
        conversations = [ex.messages for ex in examples]
        images = [list(ex.images) for ex in examples]
        videos = [self._videos(ex) for ex in examples] if any(ex.videos for ex in examples) else None
        batch = self.adapter.encode_conversations(conversations, images, videos)
        if self.reverse:
            from prefopt.reverse.masking import apply_reverse_masking

            batch = apply_reverse_masking(batch, self.adapter.tokenizer, self.tag_weight)
        return dict(batch)
