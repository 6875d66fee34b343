"""The GRPO policy loss forward with the NTK gradient kernel computed inside the same LM-head chunks.

TRL's loss forward scores the completion tokens through its own fused head; the NTK gradient mode needs
the same softmax rows. :func:`policy_forward_with_gram` replaces that forward for the policy's loss pass:
one model call whose LM head is swapped (for that call only) for
:func:`prefopt.grpo.ntk.fused_logps_and_gram`, so the head projects only the completion tokens, in
vocabulary chunks, and returns the per-token log-probs TRL's loss reads, the entropies TRL logs, and the
``[B, B]`` gradient Gram matrix of the NTK term, from one pass. No second logits computation, no
``[N, V]`` tensor kept for backward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from prefopt.training.logprobs import head_replaced, output_head

#: TRL's per-call keyword arguments that are bookkeeping, not model inputs.
_NOT_MODEL_INPUTS = ("num_images", "num_tiles")


def supports_fused_head(model: Any) -> bool:
    """Whether the LM head is a plain linear layer (a LoRA / ``modules_to_save`` head takes TRL's path)."""
    head = output_head(model)
    return type(head) is torch.nn.Linear and head.weight.numel() > 0


def policy_forward_with_gram(
    model: Any,
    call: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    ntk_mask: torch.Tensor,
    temperature: float,
    media: dict[str, Any],
    autocast: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logps [B, K], entropy [B, K], gram [B, B])`` for the last ``K = logits_to_keep`` tokens.

    ``model`` owns the LM head; ``call`` runs the forward (the model itself, or a wrapper that adds per-row
    video tensors). ``ntk_mask`` [B, K] weighs tokens in the kernel (completion mask × tool mask); positions
    with ``attention_mask`` 0 are not scored (0 in ``logps`` and ``entropy``), as in TRL's fused head.
    """
    head = output_head(model)
    n_rows, length, k = input_ids.size(0), input_ids.size(1), logits_to_keep
    keep = attention_mask[:, -k:] != 0
    rows, cols = keep.nonzero(as_tuple=True)
    targets = input_ids[:, -k:][rows, cols]
    weights = ntk_mask.to(input_ids.device)[rows, cols]
    extra: dict[str, torch.Tensor] = {}

    def project(states: torch.Tensor, _forward: Any) -> torch.Tensor:
        from prefopt.grpo.ntk import fused_logps_and_gram

        predicting = states[:, length - k - 1 : length - 1]  # state t predicts token t + 1
        r, c = rows.to(states.device), cols.to(states.device)
        logps, entropy, gram = fused_logps_and_gram(
            predicting[r, c], head.weight, targets.to(states.device), r, n_rows,
            weights=weights.to(states.device), bias=head.bias, temperature=temperature)
        extra["entropy"], extra["gram"] = entropy, gram
        return logps

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    inputs.update({key: v for key, v in media.items() if v is not None and key not in _NOT_MODEL_INPUTS})
    with head_replaced(head, project), (autocast or contextlib.nullcontext()):
        flat = call(**inputs, use_cache=False).logits
    keep = keep.to(flat.device)
    logps = flat.new_zeros(keep.shape).masked_scatter(keep, flat)
    entropy = extra["entropy"].new_zeros(keep.shape).masked_scatter(keep, extra["entropy"])
    return logps, entropy, extra["gram"]
