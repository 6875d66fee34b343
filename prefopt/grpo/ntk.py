"""Conflict-aware regularisation (SPEC 1.5): LM-head gradient kernels, cosine similarity, InfoNCE.

Two feature modes:

- ``gradient`` (the paper): the similarity of samples i and j is the cosine of the gradients
  ``G_i = Σ_t m_t (e_{y_t} - p_t) h_tᵀ`` (V × d) of ``Σ_t m_t log softmax(W h_t)[y_t]`` with respect to the
  LM-head weight W. :func:`gradient_kernel` returns the exact Gram matrix ``K_ij = ⟨G_i, G_j⟩_F`` without
  ever holding B gradients of V × d, by one of two exact routes (picked per shape by estimated cost):

  * :func:`kernel_token_pairs`: ``K_ij = Σ_{t∈i, s∈j} (h_t·h_s)([y_t=y_s] - p_s[y_t] - p_t[y_s] + p_t·p_s)``,
    about ``N²(V + d)`` work for N response tokens, chunked over token rows (memory ``rows · (N + V)``).
  * :func:`kernel_vocab_chunks`: per vocabulary chunk c, ``G_i^c = (E - P)_cᵀ H_i`` for all samples
    (memory ``B · chunk · d``), accumulating ``K += G^c G^cᵀ``; about ``2·N·V·d + B²·V·d`` work.

  Defaults: threshold τ = 0.54 (the paper's), InfoNCE temperature t = 0.5 (``ntk.temperature``, the value
  the config and recipes use for both modes), weight 0.01.
- ``hidden`` (the released code, a proxy): :func:`hidden_proxy_features` (mean last-layer hidden state
  over non-pad prompt tokens) compared with 7 random peers of the same data type; temperature 0.5,
  threshold 0.5, weight 0.01. The released code draws the peers from the whole dataset; a GRPO micro-batch
  holds G copies of ONE prompt, so peers taken from the micro-batch would all be copies (cosine 1, a
  constant loss with no gradient). :func:`bank_similarity` therefore draws them from the other prompts of
  the batch and a :class:`FeatureBank` of recent prompts' features (detached, by data type), never from
  copies of the same prompt (same prompt token ids). :func:`peer_similarity` is the within-batch draw.

:func:`info_nce` turns a similarity matrix into the loss: pairs BELOW the threshold are positives
(pulled together, i.e. the loss lowers their conflict), the rest negatives. All functions are pure and
differentiable; inputs are not modified.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque

import torch
import torch.nn.functional as F

from prefopt.grpo.ntk_fused import (  # noqa: F401  (re-exported: prefopt.grpo.ntk.* stays the public home)
    DEFAULT_BUDGET,
    _pair_cost,
    _vocab_cost,
    fused_logps_and_gram,
    gradient_kernel,
    kernel_token_pairs,
    kernel_vocab_chunks,
)

__all__ = [
    "fused_logps_and_gram",
    "gradient_kernel",
    "kernel_token_pairs",
    "kernel_vocab_chunks",
    "cosine_from_gram",
    "gradient_similarity",
    "info_nce",
    "hidden_proxy_features",
    "peer_similarity",
    "bank_similarity",
    "prompt_keys",
    "FeatureBank",
    "GRADIENT_TEMPERATURE",
    "GRADIENT_THRESHOLD",
    "HIDDEN_TEMPERATURE",
    "HIDDEN_THRESHOLD",
    "NCE_WEIGHT",
]

GRADIENT_THRESHOLD = 0.54  # τ of the paper: gradient-cosine below it = positive pair
GRADIENT_TEMPERATURE = 0.5  # InfoNCE temperature t (config and recipes); the paper's 0.54 is the threshold
HIDDEN_THRESHOLD = 0.5  # released code
HIDDEN_TEMPERATURE = 0.5
NCE_WEIGHT = 0.01


def cosine_from_gram(K: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities ``K_ij / sqrt(K_ii K_jj)`` from a Gram matrix (zero-norm rows give 0)."""
    norms = torch.sqrt(torch.clamp(torch.diagonal(K), min=eps))
    return K / (norms.unsqueeze(0) * norms.unsqueeze(1))


def gradient_similarity(
    hidden: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, route: str = "auto"
) -> torch.Tensor:
    """Cosine similarity [B,B] of per-sample LM-head gradients (the paper's NTK approximation)."""
    return cosine_from_gram(gradient_kernel(hidden, logits, labels, mask, route=route))


def info_nce(
    similarity: torch.Tensor, threshold: float, temperature: float, inclusive: bool = False
) -> torch.Tensor:
    """InfoNCE over a [B,B] similarity matrix: mean over rows of ``-log(Σ_pos e^{s/t} / Σ_{k≠i} e^{s/t})``.

    Positives of row i are j ≠ i with ``s_ij < threshold`` (``<=`` when ``inclusive``, as the released
    code). A row without positives uses its least similar j as the numerator. NaN entries mark pairs
    that were not compared (see :func:`peer_similarity`); rows with nothing to compare are skipped and a
    batch with no usable row gives 0.
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square [B,B] matrix, got {tuple(similarity.shape)}")
    B = similarity.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=similarity.device)
    valid = ~eye & ~torch.isnan(similarity)
    rows = valid.any(dim=1)
    if not bool(rows.any()):
        return similarity.nan_to_num(0.0).sum() * 0.0
    sim = torch.where(valid, similarity, torch.zeros_like(similarity))[rows]
    valid = valid[rows]
    pos = valid & ((sim <= threshold) if inclusive else (sim < threshold))
    # Rows with no positive fall back to their least similar compared item.
    least = torch.where(valid, sim, torch.full_like(sim, math.inf)).argmin(dim=1)
    fallback = F.one_hot(least, B).bool() & ~pos.any(dim=1, keepdim=True)
    numer_mask = pos | fallback
    scaled = sim / temperature
    neg_inf = torch.full_like(scaled, -math.inf)
    numer = torch.logsumexp(torch.where(numer_mask, scaled, neg_inf), dim=1)
    denom = torch.logsumexp(torch.where(valid, scaled, neg_inf), dim=1)
    return (denom - numer).mean()


def hidden_proxy_features(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of last-layer hidden states [B,T,d] over non-pad prompt tokens (``mask`` [B,T]) -> [B,d]."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def peer_similarity(
    features: torch.Tensor, data_types: list[str], peers: int = 7, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cosine similarity [B,B] of each example with up to ``peers`` random others of the same data type.

    Entries for pairs that were not drawn are NaN (ignored by :func:`info_nce`); the diagonal is NaN too.
    """
    B = features.shape[0]
    if len(data_types) != B:
        raise ValueError(f"got {len(data_types)} data types for {B} features")
    drawn = torch.zeros(B, B, dtype=torch.bool, device=features.device)
    for i in range(B):
        same = [j for j in range(B) if j != i and data_types[j] == data_types[i]]
        if not same:
            continue
        order = torch.randperm(len(same), generator=generator)[:peers].tolist()
        drawn[i, [same[k] for k in order]] = True
    unit = F.normalize(features, dim=-1)
    cos = unit @ unit.T
    return torch.where(drawn, cos, torch.full_like(cos, math.nan))


def prompt_keys(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[str]:
    """One key per row naming its prompt (a digest of the non-pad prompt token ids): copies share a key."""
    keys = []
    for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m]
        keys.append(hashlib.sha1(repr(kept).encode()).hexdigest())
    return keys


class FeatureBank:
    """The last ``size`` distinct prompts' proxy features per data type (detached), keyed by prompt."""

    def __init__(self, size: int = 64):
        if size < 0:
            raise ValueError(f"bank size must be >= 0, got {size}")
        self.size = size
        self._by_type: dict[str, deque[tuple[str, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_type.values())

    def entries(self) -> list[tuple[str, str, torch.Tensor]]:
        """All stored ``(key, data_type, feature)`` triples, oldest first within a type."""
        return [(key, kind, feat) for kind, q in self._by_type.items() for key, feat in q]

    def add(self, key: str, data_type: str, feature: torch.Tensor) -> None:
        """Store a prompt's feature (a newer feature of the same prompt replaces the older one)."""
        if self.size == 0:
            return
        q = self._by_type.setdefault(data_type, deque())
        for i, (old, _) in enumerate(q):
            if old == key:
                del q[i]
                break
        q.append((key, feature.detach()))
        while len(q) > self.size:
            q.popleft()


def bank_similarity(
    features: torch.Tensor,
    keys: list[str],
    data_types: list[str],
    bank: FeatureBank | None = None,
    peers: int = 7,
    generator: torch.Generator | None = None,
    update: bool = True,
) -> torch.Tensor:
    """Cosine similarity of each distinct prompt of the batch with up to ``peers`` OTHER prompts of its type.

    ``features`` [B,d] with per-row prompt ``keys`` and ``data_types``. Candidates are the batch's other
    distinct prompts (gradients flow on both sides) and the ``bank``'s entries (detached); a candidate with
    the anchor's key (a copy of the same prompt) is never drawn. Returns a square [N,N] matrix over the
    batch's distinct prompts (first rows, in order of first appearance) followed by the bank entries; rows
    and pairs not compared are NaN, as :func:`info_nce` expects. With ``update`` the batch's distinct prompts
    are stored in the bank afterwards.
    """
    B = features.shape[0]
    if len(keys) != B or len(data_types) != B:
        raise ValueError(f"got {len(keys)} keys and {len(data_types)} data types for {B} features")
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    rows = list(first.values())
    stored = bank.entries() if bank is not None else []
    all_keys = [keys[i] for i in rows] + [k for k, _, _ in stored]
    all_types = [data_types[i] for i in rows] + [t for _, t, _ in stored]
    parts = [features[rows]] + [f.to(features.device, features.dtype).unsqueeze(0) for _, _, f in stored]
    feats = torch.cat(parts, dim=0)
    U, N = len(rows), len(all_keys)
    drawn = torch.zeros(N, N, dtype=torch.bool, device=features.device)
    for i in range(U):
        same = [j for j in range(N) if all_keys[j] != all_keys[i] and all_types[j] == all_types[i]]
        if same:
            order = torch.randperm(len(same), generator=generator)[:peers].tolist()
            drawn[i, [same[k] for k in order]] = True
    unit = F.normalize(feats, dim=-1)
    cos = unit @ unit.T
    sim = torch.where(drawn, cos, torch.full_like(cos, math.nan))
    if update and bank is not None:
        for i in rows:
            bank.add(keys[i], data_types[i], features[i])
    return sim
