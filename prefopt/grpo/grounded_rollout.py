"""``rollout: grounded``: Ground-R1's multi-round, multi-image rollouts inside TRL's GRPO loop (SPEC 2).

TRL's generation-and-scoring is reused whole (through :mod:`prefopt._trl_compat`, the only module that names
TRL's private members); two of its seams are filled in:

- generation (through :meth:`GroundedRollout.generate`): the round loop of ``prefopt.grpo.grounded`` with
  the policy as generator. Every round is one batched call of TRL's single-turn generator
  (:func:`prefopt._trl_compat.generate_single_turn`) on the token ids so far (no re-tokenisation of what the
  policy wrote) and all images so far. The follow-up user turn (crop placeholder and text, chat-template
  markup) is tokenised on its own and appended. The completion of a rollout is ``turn 1, user turn 2, turn 2,
  …``; TRL's ``tool_mask`` (its multi-turn loss mask) is 1 on the policy's tokens and 0 on every user-turn
  token, image tokens included, so the loss covers the assistant turns only. Completions reach the reward
  functions as one assistant message per round. Media placeholders are suppressed in generation for the
  rollout only (``generation_config.suppress_tokens`` is restored afterwards).
- the loss-forward media: TRL re-encodes the *prompts* with their images to get the image tensors; here the
  processor is wrapped for that one call so that it returns the tensors of every image of each conversation
  (original + crops, in order), and :meth:`GroundedRollout.model_kwargs` rebuilds the adapter's modality map
  (where its family needs one) from the full ids, which place crops inside the completion. The policy is kept
  from writing media placeholders itself (they are suppressed in generation), so the ids mark images exactly.

Why not TRL's public ``rollout_func`` (TRL 1.16, ``GRPOTrainer(rollout_func=...)``)? Its contract is
``rollout_func(prompts, trainer) -> {"prompt_ids", "completion_ids", "logprobs", **extra}``; an ``env_mask``
extra becomes the loss mask (so "assistant turns only" would fit) and the other extras reach the reward
functions. It does not carry the rest of what this rollout needs:

- images: on that path ``_generate`` returns ``images = None`` and ``_generate_and_score_completions`` falls
  back to the dataset's images, so the loss and reference forwards would see the original image only, never
  the crops fed back in later rounds (tool images are merged only on TRL's own ``tools=`` path, which parses
  tool calls from text, not Ground-R1 boxes);
- the modality map over the full ids (crop placeholders inside the completion) is built only on the
  ``tools=`` path, and from TRL's own pad-token ids;
- completions: TRL decodes ``completion_ids`` into one assistant message, whereas the rewards read one message
  per round (final-round accuracy, per-round format); the rounds could travel as an extra, at the price of
  reward functions that differ from the single-turn ones;
- the generator: a ``rollout_func`` has no public way to generate with the trainer's policy (it would call
  the same private single-turn generator), and TRL's completion-length metrics would count user-turn tokens.
So this module keeps TRL's private seams, fenced in :mod:`prefopt._trl_compat`.

All model facts come from the trainer's adapter (``trainer.adapter``). The size written into the prompt is
the one the model sees (``adapter.input_size``): a dynamic-resolution family's patch grid times the patch size
(after ``max_pixels``), or a fixed-size processor's input. For a fixed-size centre-cropping processor a box is
mapped back by plain scaling, which is exact for square images; on non-square ones the crop shows the model
only the middle of the image, and boxes near the cut-off sides land off target.

Logged per generation batch: ``grounded/rounds`` (mean rounds per rollout), ``grounded/answered`` (share that
ended with an answer), ``grounded/box_rate`` (share that wrote at least one box), ``grounded/rejected`` (share
of non-answer rounds without a usable box) and ``grounded/giou_score``: per rollout the mean over its boxes of
``(GIoU + 1) / 2`` against the best-matching annotated box, 0 when it wrote none (as the released code scored
a missing box), averaged over rollouts whose row has annotations. Not rewarded (SPEC 2).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import BatchFeature

from prefopt._trl_compat import (
    generate_single_turn,
    generation_limit,
    metric_store,
    suppressed_tokens,
    swapped_processor,
    trl_generate_and_score,
)
from prefopt.errors import DataError, ModelError
from prefopt.grpo import grounded
from prefopt.grpo.config import GroundedSettings
from prefopt.grpo.rollout import RolloutStrategy, register_rollout
from prefopt.rewards.grounding import giou_score
from prefopt.rewards.registry import final_round  # noqa: F401  (re-exported: its former home)


def inner_processor(processor: Any) -> Any:
    """The processor under prefopt's call wrappers."""
    while hasattr(processor, "_processor"):
        processor = processor._processor
    return processor


def image_token_id(processor: Any) -> int:
    """The id of the image placeholder the processor expands (``<|image_pad|>``, ``<image>``)."""
    processor = inner_processor(processor)
    token = getattr(processor, "image_token", None)
    tid = processor.tokenizer.convert_tokens_to_ids(token) if token else None
    if tid is None or tid == processor.tokenizer.unk_token_id:
        raise ModelError(f"{type(processor).__name__} declares no image token; grounded rollouts need one")
    return int(tid)


def input_size(adapter: Any, image: Any) -> tuple[int, int]:
    """``(width, height)`` of the image as the model sees it after the processor's resizing."""
    return adapter.input_size(image)


def media_fields(adapter: Any, images: list[list[Any]], ids: list[list[int]]) -> dict[str, Any]:
    """Image tensors for every image of every row (in order), plus the family's per-token modality map."""
    flat = [img for row in images for img in row]
    return {**adapter.image_tensors(flat), **adapter.modality_rows(ids)}


def follow_up_text(processor: Any, message: dict[str, Any]) -> str:
    """The chat-template text that closes an assistant turn's EOS and opens the next assistant turn after ``message``.

    Rendered as the difference of two dummy conversations (one ending with an assistant turn, one with
    ``message`` after it), cut after the EOS that closes the assistant turn, so it starts where the policy
    stopped.
    """
    processor = inner_processor(processor)
    base = [
        {"role": "user", "content": [{"type": "text", "text": "dummy"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "dummy"}]},
    ]
    prefix = processor.apply_chat_template(base, tokenize=False)
    full = processor.apply_chat_template([*base, message], tokenize=False, add_generation_prompt=True)
    eos = processor.tokenizer.eos_token
    cut = prefix.rfind(eos) if eos else -1
    if cut >= 0:
        prefix = prefix[: cut + len(eos)]
    if not full.startswith(prefix):
        raise ModelError("the chat template renders an assistant turn differently when a user turn follows")
    return full[len(prefix) :]


class _PolicyGenerator:
    """The ``generate`` callable of :func:`prefopt.grpo.grounded.run_rounds` backed by the trainer's policy."""

    def __init__(self, trainer: Any, processor: Any, adapter: Any):
        self.trainer, self.processor, self.adapter = trainer, processor, adapter
        self.eos_ids = set(trainer.eos_token_ids)

    def _append_follow_up(self, conv: grounded.Conversation) -> None:
        """Tokenise the newest user turn with its crop and add it to the conversation's ids (loss mask 0)."""
        last = conv.payloads[-1]
        closing = [] if last and last[-1] in self.eos_ids else [self.trainer.eos_token_ids[0]]
        text = follow_up_text(self.processor, conv.follow_ups[-1])
        encoded = self.processor(text=[text], images=[conv.crops[-1]], add_special_tokens=False)
        ids = closing + [int(t) for t in encoded["input_ids"][0]]
        conv.state["ids"] = conv.state["ids"] + ids
        conv.state["segments"].append((0, ids))

    def idle(self) -> None:
        """A one-token generation that keeps this process in step with others still generating (ZeRO-3)."""
        with generation_limit(self.trainer, 1):
            generate_single_turn(self.trainer, [[self.trainer.eos_token_ids[0]]], None, {})

    def __call__(self, convs: list[grounded.Conversation]) -> list[tuple[str, Any]]:
        if not convs:
            self.idle()
            return []
        for conv in convs:
            if len(conv.follow_ups) > conv.state["appended"]:
                self._append_follow_up(conv)
                conv.state["appended"] += 1
        ids = [conv.state["ids"] for conv in convs]
        images = [conv.images for conv in convs]
        fields = media_fields(self.adapter, images, ids)
        new_ids, _ = generate_single_turn(self.trainer, ids, images, fields)
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        for conv, turn in zip(convs, new_ids):
            conv.state["ids"] = conv.state["ids"] + list(turn)
            conv.state["segments"].append((1, list(turn)))
        return [(text, list(turn)) for text, turn in zip(texts, new_ids)]


class _MediaOnlyProcessor:
    """The processor, except that TRL's re-encoding call returns the tensors of every conversation image.

    TRL calls ``processor(images=..., text=prompts_text, ...)`` once per batch for the loss-forward tensors;
    the texts are the first-turn prompts, which hold only the original image's placeholder.
    """

    def __init__(self, processor: Any, adapter: Any):
        self._processor, self._adapter = processor, adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        images = kwargs.get("images")
        if images is None or not isinstance(kwargs.get("text"), list):
            return self._processor(*args, **kwargs)
        flat = [img for row in images for img in (row or [])]
        return BatchFeature(self._adapter.image_tensors(flat))


class GroundedRollout(RolloutStrategy):
    """Ground-R1 rounds: think + box (crop fed back) until think + answer, at most ``max_rounds``."""

    name = "grounded"

    def __init__(self, settings: Any = None):
        self.settings = settings or GroundedSettings()
        self._rows: list[dict[str, Any]] | None = None

    def configure(self, recipe: Any) -> None:
        """Take ``max_rounds``, ``min_side`` and ``max_aspect`` from the recipe's ``grounded:`` section."""
        self.settings = recipe.grounded

    def generate_and_score(self, trainer: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's generation-and-scoring with the grounded generation and multi-image forward tensors."""
        self._rows = inputs
        try:
            with swapped_processor(trainer, _MediaOnlyProcessor(trainer.processing_class, trainer.adapter)):
                return trl_generate_and_score(trainer, inputs)
        finally:
            self._rows = None

    def model_kwargs(
        self, trainer: Any, input_ids: torch.Tensor, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The adapter's modality map over the full ids (where its family has one): crops sit in the completion."""
        return trainer.adapter.with_modality_map(input_ids, kwargs)

    def generate(self, trainer: Any, prompts: list) -> tuple:
        """The multi-round rollouts in the shape of TRL's ``_generate`` return value."""
        adapter = trainer.adapter
        # the policy must not write media placeholders (the ids mark the fed-back images); restored after
        with suppressed_tokens(trainer, adapter.image_token_ids):
            prompt_ids, convs = self._run(trainer, adapter, prompts)
        completion_ids, loss_mask = [], []
        for conv in convs:
            completion_ids.append([t for _, seg in conv.state["segments"] for t in seg])
            loss_mask.append([keep for keep, seg in conv.state["segments"] for _ in seg])
        completions = [[{"role": "assistant", "content": text} for text in conv.turns] for conv in convs]
        extra = {
            "grounded_rounds": [len(conv.turns) for conv in convs],
            "grounded_boxes": [[list(b) for b in conv.boxes] for conv in convs],
        }
        self._log(trainer, convs, loss_mask, completion_ids)
        images = [conv.images for conv in convs]
        return [list(p) for p in prompt_ids], completion_ids, loss_mask, completions, None, extra, images, []

    def _run(self, trainer: Any, adapter: Any, prompts: list) -> tuple[list, list[grounded.Conversation]]:
        """Tokenise the prompts and play every conversation to its end."""
        convs, filled = self._start(adapter, prompts)
        prompt_ids, _, _ = trainer.tokenize_prompts(filled)
        for conv, ids in zip(convs, prompt_ids):
            conv.state.update(ids=list(ids), segments=[], appended=0)
        s = self.settings
        policy = _PolicyGenerator(trainer, inner_processor(trainer.processing_class), adapter)
        any_active = functools.partial(_any_active, trainer)
        grounded.run_rounds(policy, convs, s.max_rounds, s.min_side, s.max_aspect, any_active=any_active)
        return prompt_ids, convs

    def _start(self, adapter: Any, prompts: list) -> tuple[list[grounded.Conversation], list]:
        """One conversation per prompt, and the prompts with the resized input size written in."""
        convs, filled, sizes = [], [], {}
        for i, prompt in enumerate(prompts):
            images = [
                p["image"]
                for m in prompt
                if isinstance(m["content"], list)
                for p in m["content"]
                if p.get("type") == "image"
            ]
            if len(images) != 1:
                row = (self._rows or [{}] * len(prompts))[i].get("id", i)
                raise DataError(f"prompt {row}: grounded rollouts need exactly one image, got {len(images)}")
            image = images[0]
            if image.size not in sizes:  # the resized size depends on the original size only
                sizes[image.size] = adapter.input_size(image)
            w, h = sizes[image.size]
            convs.append(grounded.Conversation(image=image.convert("RGB"), input_size=(w, h)))
            filled.append([_fill_message(m, w, h) for m in prompt])
        return convs, filled

    def _log(self, trainer: Any, convs: list, loss_mask: list, completion_ids: list) -> None:
        """Round, box and GIoU metrics, plus TRL's completion-length metrics (its ``_generate`` is bypassed)."""
        mode = "train" if trainer.model.training else "eval"
        rows = self._rows or [{} for _ in convs]
        regions = [r for conv in convs for r in conv.regions]
        scored = [_giou_of(conv.boxes, row.get("bboxs") or []) for conv, row in zip(convs, rows)]
        scored = [v for v in scored if v is not None]
        lengths = [float(sum(mask)) for mask in loss_mask]
        clipped = [float(bool(ids) and ids[-1] not in trainer.eos_token_ids) for ids in completion_ids]
        local = {
            "grounded/rounds": [float(len(c.turns)) for c in convs],
            "grounded/answered": [float(c.stop == "answer") for c in convs],
            "grounded/box_rate": [float(bool(c.boxes)) for c in convs],
            "grounded/rejected": [float(r.crop_box is None) for r in regions],
            "grounded/giou_score": scored,
            "completions/mean_length": lengths,
            "completions/clipped_ratio": clipped,
        }
        device = trainer.accelerator.device
        for name, values in local.items():  # every rank gathers every key, in the same order
            stats = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=device)
            total, count = trainer.accelerator.gather(stats).view(-1, 2).sum(dim=0).tolist()
            if count > 0:
                metric_store(trainer, mode)[name].append(total / count)


def _fill_message(message: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": grounded.fill_input_size(content, width, height)}
    parts = [
        {**p, "text": grounded.fill_input_size(p["text"], width, height)} if p.get("type") == "text" else p
        for p in content
    ]
    return {**message, "content": parts}


def _any_active(trainer: Any, local: bool) -> bool:
    """Whether any process still has a conversation going."""
    if trainer.accelerator.num_processes == 1:
        return local
    flags = trainer.accelerator.gather(torch.tensor([int(local)], device=trainer.accelerator.device))
    return bool(flags.sum().item())


def _giou_of(boxes: list, annotations: list) -> float | None:
    """Mean over ``boxes`` of the best GIoU score against ``annotations``; 0 without boxes; None without annotations."""
    if not annotations:
        return None
    if not boxes:
        return 0.0
    return sum(max(giou_score(b, a) for a in annotations) for b in boxes) / len(boxes)


register_rollout("grounded", GroundedRollout)
