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


OVERLONG = ("truncate", "refuse")


def max_positions(model: Any) -> int | None:
    """The language model's ``max_position_embeddings`` (None when the config does not say)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if value else None


class ConversationCollator:
    """Turns a list of ``ConversationExample`` into a training batch (``input_ids``, ``labels``, media tensors).

    Sequences longer than ``max_length`` (default: the model's max positions) are cut at the end with a counted
    warning (``overlong="truncate"``) or stop the run naming the example (``"refuse"``). An example whose image
    does not decode is dropped from its batch and counted (``bad_skipped``), not fatal.
    """

    def __init__(self, adapter: Any, reverse: bool = False, tag_weight: float = 1.0, video_frames: int = 8,
                 max_length: int | None = None, overlong: str = "truncate"):
        from prefopt.config import ConfigError

        if overlong not in OVERLONG:
            raise ConfigError(f"data.overlong must be one of {list(OVERLONG)}, got {overlong!r}")
        limit = max_positions(getattr(adapter, "model", None))
        if max_length is not None and max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {max_length}")
        if max_length is not None and limit is not None and max_length > limit:
            raise ConfigError(f"data.max_length={max_length} exceeds the model's {limit} positions")
        self.adapter = adapter
        self.reverse = reverse
        self.tag_weight = tag_weight
        self.video_frames = video_frames
        self.max_length = max_length or limit
        self.overlong = overlong
        self.truncated = 0
        self.bad_skipped = 0

    def _videos(self, example: Any) -> list[Any]:
        from prefopt.data.video import load_video_frames

        return [
            load_video_frames(v, num_frames=self.video_frames) if isinstance(v, str) else v
            for v in example.videos
        ]

    def _decodable(self, examples: Sequence[Any]) -> list[tuple[Any, list[Any]]]:
        """``(example, decoded images)`` of the examples whose images decode; the others are counted."""
        import logging

        from prefopt.data.images import load_image

        kept = []
        for ex in examples:
            try:
                kept.append((ex, [load_image(img) for img in ex.images]))
            except DataError as err:
                self.bad_skipped += 1
                logging.getLogger(__name__).warning(
                    "example %r skipped (%s); %d skipped so far", ex.id, err, self.bad_skipped)
        if not kept:
            raise DataError(f"no example of this batch has a readable image ({[ex.id for ex in examples]})")
        return kept

    def __call__(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Encode ``examples``; assistant tokens supervised, everything else -100."""
        pairs = self._decodable(examples)
        examples = [ex for ex, _ in pairs]
        conversations = [ex.messages for ex in examples]
        images = [imgs for _, imgs in pairs]
        videos = [self._videos(ex) for ex in examples] if any(ex.videos for ex in examples) else None
        batch = self.adapter.encode_conversations(conversations, images, videos)
        batch = self._limit_length(dict(batch), examples)
        if self.reverse:
            from prefopt.reverse.masking import apply_reverse_masking

            batch = apply_reverse_masking(batch, self.adapter.tokenizer, self.tag_weight)
        return dict(batch)

    def _limit_length(self, batch: dict[str, Any], examples: Sequence[Any]) -> dict[str, Any]:
        """Cut right-padded rows to ``max_length`` tokens (or refuse), never through image tokens."""
        import logging

        import torch

        limit, ids = self.max_length, batch["input_ids"]
        if limit is None or ids.size(1) <= limit:
            return batch
        lengths = batch["attention_mask"].sum(dim=1) if "attention_mask" in batch else torch.full(
            (ids.size(0),), ids.size(1))
        long_rows = [i for i, n in enumerate(lengths.tolist()) if n > limit]
        for i in long_rows:
            what = f"example {examples[i].id!r} has {int(lengths[i])} tokens, more than max_length={limit}"
            if self.overlong == "refuse":
                raise DataError(f"{what} (data.overlong=refuse; set data.overlong=truncate to cut it)")
            media = set(getattr(self.adapter, "image_token_ids", []) or [])
            if media and bool(torch.isin(ids[i, limit:], torch.tensor(sorted(media))).any()):
                raise DataError(f"{what}, and cutting it would cut its image tokens; shorten the conversation")
            self.truncated += 1
            if self.truncated <= 3 or self.truncated % 100 == 0:
                logging.getLogger(__name__).warning("%s: truncated (%d truncated so far)", what, self.truncated)
        width = ids.size(1)
        for key, value in list(batch.items()):
            if torch.is_tensor(value) and value.dim() == 2 and value.size(1) == width:
                batch[key] = value[:, :limit]
        return batch
