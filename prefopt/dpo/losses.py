"""SymMPO, DPO and mDPO as settings of one preference loss (SPEC 3); pure functions of tensors.

Inputs are two mappings ``policy`` and ``reference`` from a sequence key to the **summed** response
log-probs, shape ``[B]`` (prompt and image tokens never count). The keys name (image, response) pairs:

=====  ======================  =====================================
key    image                   response
=====  ======================  =====================================
``1w`` m (the example image)   y_w  (preferred for m)
``1l`` m                       y_l  (dispreferred for m)
``12`` m                       y'_w (preferred for the contrastive m')
``2w`` m' (contrastive image)  y_w
``22`` m'                      y'_w
=====  ======================  =====================================

With ``d(k) = policy[k] - reference[k]``, ``h0 = d1w - d1l``, ``h1 = d1w - d12``, ``h2 = d22 - d2w``:

    L = -logσ(β·h0)                                   (DPO on m)
        + λ·[-logσ(β·h1) - logσ(β·h2)]                (symmetric pair terms)
        + γ·(h1 - h2)²                                (margin-consistency regulariser)
        + η·[-logσ(β·d1w - δ) - logσ(β_2·d22 - δ)]    (anchors)
        + μ·[-logσ(β·(d1w - d2w))]                    (mDPO image-conditional term)

averaged over the batch. Departures from the paper, following the released SymMPO code: γ acts on the
**unscaled** margins ``h1 - h2`` (no β); ``gamma_on_scaled=True`` gives the β-scaled variant
``γ·(β·h1 - β·h2)²``. Every log-sigmoid is ``F.logsigmoid``, finite for log-ratios of ±1e4.

Presets: :func:`symmpo_loss` (μ = 0), :func:`dpo_loss` (λ = γ = η = μ = 0: needs only 1w/1l) and
:func:`mdpo_loss` (λ = γ = 0, μ = 1, anchor on 1w only: needs 1w/1l/2w); :func:`ipo_loss` is IPO on h0.

**The loss table.** :data:`LOSSES` maps a loss name to its :class:`LossSpec`: the function, the sequence
keys it reads (the collator builds exactly those) and its keyword parameters with their defaults (the
trainer binds them from the recipe's ``loss:`` section). Config validation and the CLI's ``--loss`` choices
read the same table, so a new loss is one decorated function here: ``@register_loss("name", keys=(...))``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES", "LOSS_KEYS", "LossSpec", "register_loss", "get_loss", "loss_names", "loss_keys",
    "preference_loss", "symmpo_loss", "dpo_loss", "mdpo_loss", "ipo_loss",
]

LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class LossSpec:
    """One row of the loss table: the function, the sequence keys it reads, its parameters with defaults."""

    name: str
    fn: LossFn
    keys: tuple[str, ...]  # in the order the collator concatenates them
    params: Mapping[str, Any]  # keyword-only parameters of ``fn`` -> default

    def bind(self, settings: Any) -> LossFn:
        """``fn`` with each parameter read from ``settings`` (e.g. the recipe's ``loss:``), else its default."""
        return functools.partial(self.fn, **{p: getattr(settings, p, d) for p, d in self.params.items()})


#: name -> LossSpec, in registration order (the order of the CLI's ``--loss`` choices).
LOSSES: dict[str, LossSpec] = {}
#: name -> sequence keys; a view of :data:`LOSSES` kept for callers of the earlier name.
LOSS_KEYS: dict[str, tuple[str, ...]] = {}


def register_loss(name: str, keys: tuple[str, ...]) -> Callable[[LossFn], LossFn]:
    """Decorator: enter ``fn`` in the loss table as ``name`` reading sequences ``keys``."""

    def enter(fn: LossFn) -> LossFn:
        sig = inspect.signature(fn).parameters.values()
        params = {p.name: p.default for p in sig if p.kind is inspect.Parameter.KEYWORD_ONLY}
        LOSSES[name] = LossSpec(name, fn, tuple(keys), MappingProxyType(params))
        LOSS_KEYS[name] = tuple(keys)
        return fn

    return enter


def loss_names() -> tuple[str, ...]:
    """The registered loss names, in registration order."""
    return tuple(LOSSES)


def get_loss(name: str) -> LossSpec:
    """The table row of loss ``name``; ValueError naming the choices when there is none."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; choose one of {list(LOSSES)}")
    return LOSSES[name]


def loss_keys(name: str) -> tuple[str, ...]:
    """The sequence keys the loss ``name`` needs (see :data:`LOSSES`)."""
    return get_loss(name).keys


def _ratios(policy: Mapping[str, Tensor], reference: Mapping[str, Tensor], keys: tuple[str, ...]) -> dict[str, Tensor]:
    missing = [k for k in keys if k not in policy or k not in reference]
    if missing:
        raise KeyError(f"log-probs for keys {missing} are missing (have policy {sorted(policy)}, "
                       f"reference {sorted(reference)})")
    return {k: policy[k] - reference[k].to(policy[k].dtype) for k in keys}


def preference_loss(
    policy: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    *,
    beta: float = 0.1,
    beta_anchor: float = 0.1,
    lam: float = 0.5,
    gamma: float = 1e-4,
    eta: float = 1.0,
    delta: float = 0.0,
    mu: float = 0.0,
    anchor_contrastive: bool = True,
    gamma_on_scaled: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The general loss of the module docstring; returns ``(batch-mean loss, detached metrics)``.

    Keys are only read when their term is on: 1w/1l always; 12/22/2w for λ or γ; 22 for the
    contrastive anchor (``eta`` with ``anchor_contrastive``); 2w for μ. Each tensor has shape ``[B]``.
    """
    pair = lam != 0 or gamma != 0
    keys = ["1w", "1l"]
    if pair:
        keys += ["12", "2w", "22"]
    if eta != 0 and anchor_contrastive and "22" not in keys:
        keys.append("22")
    if mu != 0 and "2w" not in keys:
        keys.append("2w")
    d = _ratios(policy, reference, tuple(keys))
    h0 = d["1w"] - d["1l"]
    parts = {"dpo": -F.logsigmoid(beta * h0)}
    metrics: dict[str, Tensor] = {
        "rewards/chosen": beta * d["1w"],
        "rewards/rejected": beta * d["1l"],
        "rewards/margins": beta * h0,
        "rewards/accuracies": (h0 > 0).to(h0.dtype),
    }
    if pair:
        h1, h2 = d["1w"] - d["12"], d["22"] - d["2w"]
        parts["pair"] = lam * (-F.logsigmoid(beta * h1) - F.logsigmoid(beta * h2))
        gap = beta * (h1 - h2) if gamma_on_scaled else h1 - h2
        parts["consistency"] = gamma * gap.pow(2)
        metrics |= {
            "rewards/pair_image_margins": beta * h1,
            "rewards/pair_image_accuracies": (h1 > 0).to(h1.dtype),
            "rewards/pair_contrastive_margins": beta * h2,
            "rewards/pair_contrastive_accuracies": (h2 > 0).to(h2.dtype),
        }
    if eta != 0:
        anchor = -F.logsigmoid(beta * d["1w"] - delta)
        if anchor_contrastive:
            anchor = anchor - F.logsigmoid(beta_anchor * d["22"] - delta)
        parts["anchor"] = eta * anchor
    if mu != 0:
        h_img = d["1w"] - d["2w"]
        parts["image"] = mu * -F.logsigmoid(beta * h_img)
        metrics |= {"rewards/image_margins": beta * h_img, "rewards/image_accuracies": (h_img > 0).to(h_img.dtype)}
    per_example = torch.stack(list(parts.values())).sum(0)
    metrics |= {f"loss/{name}": value for name, value in parts.items()}
    return per_example.mean(), {k: v.detach().float().mean() for k, v in metrics.items()}


@register_loss("symmpo", keys=("1w", "1l", "12", "2w", "22"))
def symmpo_loss(
    policy: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    *,
    beta: float = 0.1,
    beta_anchor: float = 0.1,
    lam: float = 0.5,
    gamma: float = 1e-4,
    eta: float = 1.0,
    delta: float = 0.0,
    gamma_on_scaled: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SymMPO over keys 1w/1l/12/2w/22 (each ``[B]``); returns the batch-mean loss and its parts as metrics.

    Worked example (B = 1, β = β_2 = 0.1, λ = 0.5, γ = 1e-4, η = 1, δ = 0), with all reference
    log-probs 0 and policy 1w = -1, 1l = -3, 12 = -2, 2w = -4, 22 = -1:
    h0 = 2, h1 = 1, h2 = 3; -logσ(0.2) = 0.598139, -logσ(0.1) = 0.644397, -logσ(0.3) = 0.554355,
    γ(h1 - h2)² = 0.0004, anchors -logσ(-0.1) - logσ(-0.1) = 2·0.744397;
    L = 0.598139 + 0.5·(0.644397 + 0.554355) + 0.0004 + 1.488794 = 2.686708.
    """
    return preference_loss(policy, reference, beta=beta, beta_anchor=beta_anchor, lam=lam, gamma=gamma,
                           eta=eta, delta=delta, mu=0.0, gamma_on_scaled=gamma_on_scaled)


@register_loss("dpo", keys=("1w", "1l"))
def dpo_loss(
    policy: Mapping[str, Tensor], reference: Mapping[str, Tensor], *, beta: float = 0.1
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sigmoid DPO, ``mean(-logσ(β·(d1w - d1l)))`` over keys 1w/1l (each ``[B]``).

    Worked example (β = 0.1): policy 1w = -1, 1l = -3, reference 1w = -2, 1l = -2 → d1w = 1, d1l = -1,
    h0 = 2, L = -logσ(0.2) = log(1 + e^-0.2) = 0.598139.
    """
    return preference_loss(policy, reference, beta=beta, lam=0.0, gamma=0.0, eta=0.0, mu=0.0)


@register_loss("mdpo", keys=("1w", "1l", "2w"))
def mdpo_loss(
    policy: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    *,
    beta: float = 0.1,
    eta: float = 1.0,
    delta: float = 0.0,
    mu: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """mDPO over keys 1w/1l/2w (each ``[B]``): DPO + μ·(-logσ(β·(d1w - d2w))) + η·(-logσ(β·d1w - δ)).

    Worked example (β = 0.1, μ = η = 1, δ = 0), reference 0, policy 1w = -1, 1l = -3, 2w = -4:
    DPO -logσ(0.2) = 0.598139; image term -logσ(0.3) = 0.554355; anchor -logσ(-0.1) = 0.744397;
    L = 1.896891.
    """
    return preference_loss(policy, reference, beta=beta, lam=0.0, gamma=0.0, eta=eta, delta=delta, mu=mu,
                           anchor_contrastive=False)


@register_loss("ipo", keys=("1w", "1l"))
def ipo_loss(
    policy: Mapping[str, Tensor], reference: Mapping[str, Tensor], *, beta: float = 0.1
) -> tuple[Tensor, dict[str, Tensor]]:
    """IPO (Azar et al. 2023), ``mean((h0 - 1/(2β))²)`` with ``h0 = d1w - d1l`` over keys 1w/1l (each ``[B]``).

    β plays the paper's τ. The log-ratios are of **summed** response log-probs, as for every loss here
    (TRL's ``loss_type="ipo"`` averages them over tokens first). Worked example (β = 0.1): policy
    1w = -1, 1l = -3, reference 0 → h0 = 2, 1/(2β) = 5, L = (2 - 5)² = 9; with β = 0.5, L = (2 - 1)² = 1.
    """
    d = _ratios(policy, reference, ("1w", "1l"))
    h0 = d["1w"] - d["1l"]
    per_example = (h0 - 1 / (2 * beta)).pow(2)
    metrics = {
        "rewards/chosen": beta * d["1w"],
        "rewards/rejected": beta * d["1l"],
        "rewards/margins": beta * h0,
        "rewards/accuracies": (h0 > 0).to(h0.dtype),
        "loss/ipo": per_example,
    }
    return per_example.mean(), {k: v.detach().float().mean() for k, v in metrics.items()}
