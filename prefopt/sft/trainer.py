"""Cold-start SFT (SPEC 1.7) on ``transformers.Trainer`` with the prefopt conversation collator.

The loss is the (optionally weighted) token-mean cross entropy over supervised tokens:
``sum_t w_t · nll_t / sum_t w_t`` with ``w_t = 1`` on supervised tokens unless the batch carries
``loss_weights`` (REVERSE tag up-weighting); tokens with label -100 never count.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from prefopt.training.loss_scaling import MeanLossTrainerMixin
from prefopt.training.reliability import ReliableTrainerMixin

IGNORE_INDEX = -100


def weighted_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean next-token NLL; ``labels``/``loss_weights`` ``[B, T]`` are aligned with ``input_ids``.

    Position ``t`` of ``logits`` predicts ``labels[t + 1]``, so both are shifted by one. Worked example: two
    supervised tokens with NLL 1.0 and 3.0 and weights 1 and 3 give (1·1 + 3·3) / (1 + 3) = 2.5.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    valid = shift_labels != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp(min=0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)
    weights = valid.float() if loss_weights is None else loss_weights[:, 1:].float() * valid
    return (nll * weights).sum() / weights.sum().clamp(min=1e-8)


def response_token_loss(
    model: Any, inputs: dict[str, Any], labels: torch.Tensor, loss_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`weighted_token_loss` from one forward that projects only the supervised positions, in token
    chunks (:mod:`prefopt.training.logprobs`): the same value without any ``[B, T, V]`` logits."""
    from prefopt.training.logprobs import response_token_logps

    logps, rows, pos = response_token_logps(model, inputs, labels)
    weights = torch.ones_like(logps) if loss_weights is None else loss_weights[:, 1:].to(logps.device)[rows, pos]
    weights = weights.float()
    return -(logps * weights).sum() / weights.sum().clamp(min=1e-8)


class ConversationSFTTrainer(MeanLossTrainerMixin, ReliableTrainerMixin, Trainer):
    """``Trainer`` whose loss honours ``loss_weights`` from the collator (plain token mean without them).

    The loss is a per-micro-batch mean, so ``Trainer`` divides it by the accumulation steps (the mixin).
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Forward without labels (no model-side loss) and apply :func:`response_token_loss`."""
        labels = inputs.pop("labels")
        weights = inputs.pop("loss_weights", None)
        loss = response_token_loss(model, inputs, labels, weights)
        return (loss, {"loss": loss}) if return_outputs else loss


class _ListDataset(torch.utils.data.Dataset):
    """Records in memory; the collator encodes them (images are decoded per batch, not up front)."""

    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def load_examples(data: Any) -> list[Any]:
    """Conversation records of a recipe's ``data:`` section (four-stage rewrite applied if asked)."""
    return read_checked(data)[0]


def read_checked(data: Any) -> tuple[list[Any], Any]:
    """Conversations with bad rows (missing fields, corrupt images, ...) skipped and counted; ``(examples,
    tracker)``. More bad rows than ``data.max_bad_fraction`` stop with one line naming file and rows."""
    from pathlib import Path

    from prefopt.data.bad_rows import BadRows, check_images, read_tolerant
    from prefopt.errors import DataError

    if not data.path:
        raise DataError("data.path is empty: give a LLaVA conversation JSON/JSONL file")
    if not Path(data.path).is_file():
        raise DataError("data file not found", path=data.path)
    from prefopt.data.formats import read_llava_conversations
    from prefopt.sft.collator import to_four_stage

    tracker = BadRows(data.path, getattr(data, "max_bad_fraction", 0.01))
    examples = read_tolerant(tracker, lambda: read_llava_conversations(data.path, image_root=data.image_root))
    examples = tracker.truncate(examples, data.max_samples)
    if data.convert == "four_stage":
        examples = tracker.screen(examples, to_four_stage)
    examples = tracker.screen(examples, check_images)
    tracker.check()
    if not examples:
        raise DataError("no conversations to train on", path=data.path)
    return examples, tracker


def build_trainer(recipe: Any, adapter: Any = None) -> ConversationSFTTrainer:
    """A ready-to-train SFT trainer for a validated recipe."""
    from transformers import TrainingArguments

    from prefopt.config import ConfigError
    from prefopt.sft.collator import ConversationCollator
    from prefopt.training.common import prepare_policy

    examples, tracker = read_checked(recipe.data)  # before the model: bad data is reported in seconds
    if adapter is None:
        adapter = prepare_policy(recipe.model, recipe.lora, seed=recipe.training_args().get("seed", 42))
    try:
        # the collator needs the raw records, so Trainer must not drop "unused" columns
        args = TrainingArguments(**{**recipe.training_args(), "remove_unused_columns": False})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"training: {err}") from err
    collator = ConversationCollator(
        adapter,
        reverse=recipe.reverse,
        tag_weight=recipe.tag_weight,
        max_length=getattr(recipe.data, "max_length", None),
        overlong=getattr(recipe.data, "overlong", "truncate"),
    )
    dataset: Any = _ListDataset(examples)
    if recipe.reverse and recipe.hint_prob > 0:
        from prefopt.reverse.data import HintedDataset

        # REVERSE: the seed's hint injection, drawn each time a record is served
        dataset = HintedDataset(examples, recipe.hint_prob, seed=args.seed)
    trainer = ConversationSFTTrainer(
        model=adapter.model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=adapter.processor,
        reliability=recipe.reliability,
    )
    trainer.data_report = tracker.summary()
    return trainer
