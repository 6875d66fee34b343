"""The NTK InfoNCE term of the GRPO loss (SPEC 1.5): feature capture during TRL's loss forward, and the term.

Gradient mode: the policy's loss forward is prefopt's (:mod:`prefopt.grpo.fused_head`): its LM head computes
TRL's per-token log-probs, the entropies and the NTK Gram matrix from the same vocabulary chunks, so no logits
are recomputed and no ``[N, V]`` tensor is kept (TRL's head + a recompute from captured hidden states remains
the fallback for an entropy bonus, an MoE aux loss or a LoRA-wrapped head). Hidden mode: a forward hook on the
language backbone captures the LM head's input hidden states during TRL's own loss forward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from prefopt._trl_compat import entropy_bonus_enabled, metric_store
from prefopt.grpo import fused_head, ntk


class HiddenCapture:
    """Collects the backbone's ``last_hidden_state`` while armed (one tensor per forward chunk)."""

    def __init__(self) -> None:
        self.armed = False
        self.chunks: list[torch.Tensor] = []

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if self.armed:
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            self.chunks.append(hidden)

    @contextlib.contextmanager
    def armed_for(self):
        """Capture only during the policy's loss forward (generation and reference passes are ignored)."""
        self.chunks, self.armed = [], True
        try:
            yield self
        finally:
            self.armed = False

    def hidden(self) -> torch.Tensor:
        """The captured hidden states ``[B, L, d]`` (chunks of TRL's batched forward re-joined)."""
        if not self.chunks:
            raise RuntimeError(
                "the NTK hook captured no hidden states: the loss forward did not run the backbone"
            )
        return torch.cat(self.chunks, dim=0)


_HiddenCapture = HiddenCapture  # its name inside prefopt.grpo.trainer


def backbone_of(model: Any) -> torch.nn.Module:
    """The module whose output feeds the LM head (PEFT and accelerate wrappers removed)."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module  # DDP / DeepSpeed engine
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.base_model


def lm_head_of(model: Any) -> torch.nn.Module:
    """The output embedding (LM head) of a possibly wrapped model."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    return inner.get_output_embeddings()


def ntk_features(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    inputs: dict[str, Any],
    settings: Any,
    temperature: float = 1.0,
    bank: Any = None,
) -> torch.Tensor:
    """The square similarity matrix (NaN = pair not compared) from hidden states of prompt + completion.

    ``hidden[:, t]`` predicts token ``t + 1``, so the completion's predicting states start one position before
    the first completion token. Gradient mode builds the LM-head gradient Gram matrix ``[B, B]`` and its cosine;
    hidden mode averages the prompt's hidden states and compares each distinct prompt with peers of the same
    data type from the batch's other prompts and the feature ``bank`` (never copies of itself; see
    :func:`prefopt.grpo.ntk.bank_similarity`), updating the bank.
    """
    prompt_len = inputs["prompt_ids"].size(1)
    completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        completion_mask = completion_mask * inputs["tool_mask"]  # multi-turn rollouts: policy tokens only
    if settings.mode == "hidden":
        features = ntk.hidden_proxy_features(hidden[:, :prompt_len], inputs["prompt_mask"])
        data_types = inputs.get("data_types") or ["image"] * hidden.size(0)
        keys = ntk.prompt_keys(inputs["prompt_ids"], inputs["prompt_mask"])
        return ntk.bank_similarity(features, keys, data_types, bank, peers=settings.peers)
    states = hidden[:, prompt_len - 1 : prompt_len - 1 + completion_ids.size(1)]
    logits = lm_head(states.to(lm_head.weight.dtype)) / temperature
    gram = ntk.gradient_kernel(states, logits, completion_ids, completion_mask)
    return ntk.cosine_from_gram(gram)


class NTKLossMixin:
    """``compute_loss`` parts of the GRPO trainer that add ``weight · InfoNCE`` (SPEC 1.5) to TRL's loss."""

    def _init_ntk(self, settings: Any) -> None:
        """Hook the backbone and set up the hidden-mode feature bank (``settings``: ``NTKSettings`` or None)."""
        self.ntk_settings = settings if settings is not None and settings.enabled else None
        self._capture = HiddenCapture()
        # hidden mode: recent prompts' proxy features, the peers of a micro-batch that holds one prompt's copies
        self.ntk_bank = ntk.FeatureBank(getattr(self.ntk_settings, "bank_size", 64) if self.ntk_settings else 0)
        self._hook = backbone_of(self.model).register_forward_hook(self._capture)
        # gradient-mode NTK: the loss forward's own LM-head chunks also build the Gram matrix (fused_head.py)
        self._fused_ntk: dict[str, Any] | None = None

    def _loss_with_ntk(self, model, inputs, return_outputs, num_items_in_batch):
        if self.ntk_settings is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._fused_ntk = self._fused_ntk_request(model, inputs)
        try:
            with self._capture.armed_for():
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            fused, self._fused_ntk = self._fused_ntk, None
        gram = fused["gram"] if fused is not None else None
        hidden = self._capture.hidden() if gram is None else None
        nce, positives = self.ntk_loss(hidden, inputs, model, gram=gram)
        mode = "train" if self.model.training else "eval"
        # TRL scales its loss for gradient accumulation itself; scale the extra term the same way
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        metrics = metric_store(self, mode)
        metrics["ntk/loss"].append(self.accelerator.gather(nce.detach()).mean().item())
        metrics["ntk/positives"].append(positives)
        return loss + self.ntk_settings.weight * nce / normalizer

    def _fused_ntk_wanted(self) -> bool:
        """Whether this log-prob forward is the policy's loss pass that should also build the Gram matrix."""
        return self._fused_ntk is not None and self._fused_ntk["gram"] is None

    def _fused_ntk_request(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Ask the loss forward for the Gram matrix when the gradient mode can share its head chunks.

        Not with an entropy bonus (TRL backpropagates through the entropies, which the fused pass only
        reports), an MoE aux loss, or a non-linear (LoRA-wrapped) head: those keep TRL's head + recompute.
        """
        if self.ntk_settings.mode != "gradient" or entropy_bonus_enabled(self) or self.aux_loss_enabled:
            return None
        if not fused_head.supports_fused_head(model):
            return None
        mask = inputs["completion_mask"]
        if inputs.get("tool_mask") is not None:
            mask = mask * inputs["tool_mask"]  # multi-turn rollouts: policy tokens only
        return {"mask": mask, "gram": None}

    def _fused_policy_logps(self, model, call, input_ids, attention_mask, logits_to_keep, **kwargs):
        """The loss forward's log-probs and entropies, with the NTK Gram matrix from the same head chunks."""
        for key in ("batch_size", "compute_entropy", "compute_aux_loss"):
            kwargs.pop(key, None)
        logps, entropy, gram = fused_head.policy_forward_with_gram(
            model, call, input_ids, attention_mask, logits_to_keep, self._fused_ntk["mask"], self.temperature,
            kwargs, self.accelerator.autocast())
        self._fused_ntk["gram"] = gram
        return logps, entropy, None

    def ntk_loss(
        self, hidden: torch.Tensor | None, inputs: dict[str, Any], model: Any, gram: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float]:
        """InfoNCE over the batch and the mean number of positives per example (``gram``: from the loss pass)."""
        settings = self.ntk_settings
        threshold = settings.resolved_threshold()
        if gram is not None:
            similarity = ntk.cosine_from_gram(gram)
        else:
            bank = getattr(self, "ntk_bank", None) if model.training else None  # evaluation never fills the bank
            similarity = ntk_features(hidden, lm_head_of(model), inputs, settings, self.temperature, bank=bank)
        # the released proxy counts ties at the threshold as positives; the paper's rule is strict
        inclusive = settings.mode == "hidden"
        nce = ntk.info_nce(similarity, threshold, settings.temperature, inclusive=inclusive)
        eye = torch.eye(similarity.size(0), dtype=torch.bool, device=similarity.device)
        compared = ~eye & ~torch.isnan(similarity)
        below = similarity <= threshold if inclusive else similarity < threshold
        counted = compared.any(dim=1)  # rows that were compared (hidden mode: the batch's prompts, not the bank)
        positives = (below & compared).sum(dim=1)[counted].float().mean().item() if counted.any() else 0.0
        return nce, positives
