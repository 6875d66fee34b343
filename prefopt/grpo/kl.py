"""The seed's KL log-ratio clamp (SPEC 1.6), applied through TRL's reference log-probs.

The released GWYS and Ground-R1 trainers compute the per-token k3 KL on a clamped log-ratio,
``x = clamp(log π_ref − log π_θ, −c, c)`` with c = 10, ``KL = e^x − x − 1``; outside the range the token's KL
is a constant with no gradient. TRL 1.16 has no such option: its ``_compute_loss`` computes
``e^(ref − logp) − (ref − logp) − 1`` from ``inputs["ref_per_token_logps"]`` and the policy log-probs it has
just computed. :func:`clamped_reference` gives the reference TRL should see so that its formula yields the
seed's value AND gradient: ``ref' = logp + clamp(ref − logp, −c, c)`` with the live (grad-carrying) ``logp``,
so ``ref' − logp = clamp(ref − logp)`` exactly as autograd sees it (the two ``logp`` terms cancel).
"""

from __future__ import annotations

import torch

__all__ = ["SEED_KL_CLAMP", "clamped_reference", "k3"]

SEED_KL_CLAMP = 10.0  # GWYS RL-OURS and Ground-R1 grpo_trainer.py: torch.clamp(ref - logp, min=-10, max=10)


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 KL estimator ``e^x − x − 1`` of ``x = log π_ref − log π_θ`` (SPEC 1.6)."""
    return torch.exp(log_ratio) - log_ratio - 1


def clamped_reference(logps: torch.Tensor, ref_logps: torch.Tensor, clamp: float) -> torch.Tensor:
    """Reference log-probs ``ref'`` [B,T] such that ``k3(ref' − logps)`` equals ``k3(clamp(ref − logps, ±clamp))``.

    ``logps`` are the policy's per-token log-probs with their graph; ``ref_logps`` the (detached) reference's.
    """
    if clamp <= 0:
        raise ValueError(f"the KL log-ratio clamp must be > 0, got {clamp}")
    return logps + torch.clamp(ref_logps - logps, min=-clamp, max=clamp)
