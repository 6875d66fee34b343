"""Hallucination-aware SFT labels (REVERSE, SPEC 4.2).

Answers carry ``<SPAN>phrase</CN>`` for confident phrases and end with ``<SPAN>wrong</UN>`` when a
hallucinated phrase follows. The model must learn *to flag* the wrong phrase, never *to say* it, so the
tokens strictly between a ``<SPAN>`` and its ``</UN>`` are removed from the loss; the tags themselves,
confident phrases and the end-of-turn token stay supervised. Optionally the tag tokens weigh more in the
loss (``tag_weight``; default 1, as the seed's released runs, whose code offers 2.0 as an unused
``cnun_penalty`` option) through a per-token ``loss_weights`` tensor.

Labels follow the Hugging Face convention: aligned with ``input_ids`` (the trainer shifts them), so
``loss_weights[b, t]`` weighs the prediction of token ``input_ids[b, t]``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from prefopt.errors import ModelError

IGNORE_INDEX = -100


def reverse_labels(input_ids: Any, labels: Any, span_id: int, cn_id: int, un_id: int) -> Any:
    """Copy of ``labels`` [B, T] with tokens strictly between ``<SPAN>`` and ``</UN>`` set to -100.

    Only tags inside the supervised part (``labels != -100``) count, so prompt text is never read as a span.
    A ``</UN>`` closes the nearest ``<SPAN>`` before it that no ``</CN>``/``</UN>`` closed already; a
    ``</UN>`` without an open span masks nothing.
    """
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} differ in shape")
    out = labels.clone()
    supervised = labels != IGNORE_INDEX
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        keep = supervised[row].tolist()
        open_at = None
        for pos, tok in enumerate(ids):
            if not keep[pos]:
                continue
            if tok == span_id:
                open_at = pos
            elif tok in (cn_id, un_id):
                if tok == un_id and open_at is not None:
                    out[row, open_at + 1 : pos] = IGNORE_INDEX
                open_at = None
    return out


def reverse_token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """Ids of ``<SPAN>``, ``</CN>``, ``</UN>``; a clear error when the tokenizer lacks them."""
    from prefopt.models.tokens import REVERSE_TOKENS

    vocab = tokenizer.get_vocab()
    missing = [t for t in REVERSE_TOKENS if t not in vocab]
    if missing:
        raise ModelError(
            f"the tokenizer has no REVERSE tokens {missing}: run `prefopt add-tokens --tokens reverse` on the model first"
        )
    span, cn, un = (int(vocab[t]) for t in REVERSE_TOKENS)
    return span, cn, un


def apply_reverse_masking(
    batch: MutableMapping[str, Any], tokenizer: Any, tag_weight: float = 1.0
) -> MutableMapping[str, Any]:
    """Rewrite ``batch["labels"]`` with :func:`reverse_labels`; add ``loss_weights`` [B, T] when ``tag_weight != 1``.

    ``loss_weights`` is ``tag_weight`` on supervised tag tokens, 1 on other supervised tokens and 0 where
    the label is -100, so ``sum(w * nll) / sum(w)`` is the weighted mean token loss.
    """
    import torch

    if "labels" not in batch or "input_ids" not in batch:
        raise ValueError("apply_reverse_masking needs a batch with input_ids and labels")
    span, cn, un = reverse_token_ids(tokenizer)
    input_ids = batch["input_ids"]
    labels = reverse_labels(input_ids, batch["labels"], span, cn, un)
    batch["labels"] = labels
    if tag_weight != 1.0:
        is_tag = (input_ids == span) | (input_ids == cn) | (input_ids == un)
        weights = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
        weights[is_tag] = float(tag_weight)
        weights[labels == IGNORE_INDEX] = 0.0
        batch["loss_weights"] = weights
    return batch
