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
from torch.utils.checkpoint import checkpoint

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
DEFAULT_BUDGET = 2**24  # elements of the largest temporary a chunk may allocate (~128 MiB in float64)


def _check(hidden: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> None:
    if hidden.dim() != 3 or logits.dim() != 3:
        raise ValueError(
            f"hidden must be [B,T,d] and logits [B,T,V]; got {tuple(hidden.shape)}, {tuple(logits.shape)}"
        )
    if (
        hidden.shape[:2] != logits.shape[:2]
        or labels.shape != hidden.shape[:2]
        or mask.shape != hidden.shape[:2]
    ):
        raise ValueError(
            f"hidden {tuple(hidden.shape)}, logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and "
            f"mask {tuple(mask.shape)} must share [B, T]"
        )


def _upcast(hidden: torch.Tensor) -> torch.Tensor:
    """Half-precision states are summed over many token pairs: compute in at least float32."""
    return hidden.to(torch.promote_types(hidden.dtype, torch.float32))


def _flat_tokens(hidden, logits, labels, mask):
    """Masked tokens only: mask-weighted hidden [N,d], logits [N,V], labels [N], sample index [N]."""
    B, T = labels.shape
    keep = mask != 0
    sample = torch.arange(B, device=labels.device).unsqueeze(1).expand(B, T)[keep]
    weight = mask[keep].to(hidden.dtype).unsqueeze(1)
    return hidden[keep] * weight, logits[keep], labels[keep].long(), sample


def kernel_token_pairs(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    budget: int = DEFAULT_BUDGET,
) -> torch.Tensor:
    """Exact LM-head gradient Gram matrix [B,B] by the token-pair closed form, chunked over token rows."""
    _check(hidden, logits, labels, mask)
    hidden = _upcast(hidden)
    B = labels.shape[0]
    H, Z, y, sample = _flat_tokens(hidden, logits, labels, mask)
    N, V = Z.shape
    K = hidden.new_zeros(B, B)
    if N == 0:
        return K + 0.0 * (hidden.sum() + logits.sum())
    Z = Z.to(hidden.dtype)
    if torch.is_grad_enabled() and Z.requires_grad:
        P = torch.softmax(Z, dim=-1)  # [N, V]
    else:  # Z is already a copy (masked rows): normalise it in place, so the peak is one [N, V], not two
        P = Z.sub_(Z.amax(dim=-1, keepdim=True)).exp_()
        P.div_(P.sum(dim=-1, keepdim=True))
    S = F.one_hot(sample, B).to(hidden.dtype)  # [N, B] token -> sample
    rows = max(1, min(N, budget // max(1, N + V)))
    for start in range(0, N, rows):
        K = K + _run_chunk(_pair_chunk, H, P, y, S, start, min(N, start + rows))
    return K


def _run_chunk(fn, *args):
    """Call ``fn(*args)``; under autograd, recompute it in backward so chunk temporaries are not all kept."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _pair_chunk(H, P, y, S, start: int, stop: int) -> torch.Tensor:
    """Contribution to K of token rows ``start:stop`` against all tokens (closed form of SPEC 1.5)."""
    sl = slice(start, stop)
    hh = H[sl] @ H.T  # h_t·h_s                                 [r, N]
    same = (y[sl].unsqueeze(1) == y.unsqueeze(0)).to(H.dtype)  # [y_t = y_s]
    p_s_yt = P[:, y[sl]].T  # p_s[y_t]                          [r, N]
    p_t_ys = P[sl][:, y]  # p_t[y_s]                            [r, N]
    pp = P[sl] @ P.T  # p_t·p_s                                 [r, N]
    pair = hh * (same - p_s_yt - p_t_ys + pp)
    return S[sl].T @ pair @ S


def kernel_vocab_chunks(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    budget: int = DEFAULT_BUDGET,
) -> torch.Tensor:
    """Exact LM-head gradient Gram matrix [B,B] built one vocabulary chunk of ``(E - P)ᵀH`` at a time."""
    _check(hidden, logits, labels, mask)
    hidden = _upcast(hidden)
    B, T, V = logits.shape
    d = hidden.shape[-1]
    m = mask.to(hidden.dtype)
    lse = torch.logsumexp(logits.to(hidden.dtype), dim=-1, keepdim=True)  # full-vocabulary normaliser
    y = labels.long().clamp(0, V - 1)  # masked positions may hold -100; their weight is 0
    chunk = max(1, min(V, budget // max(1, B * max(d, T))))
    K = hidden.new_zeros(B, B)
    for start in range(0, V, chunk):
        stop = min(V, start + chunk)
        K = K + _run_chunk(_vocab_chunk, hidden, logits[..., start:stop], lse, y, m, start)
    return K


def _vocab_chunk(hidden, logits_c, lse, y, m, start: int) -> torch.Tensor:
    """``G^c G^cᵀ`` for the vocabulary columns ``start:start+c`` with ``G_i^c = (E - P)_cᵀ H_i``."""
    B, _, c = logits_c.shape
    # -m·P over the chunk, then +m at each in-chunk target: the one-hot E is O(N) scattered entries, not a
    # dense [B,T,c] tensor (profiled: the dense one-hot's extra passes made this route slower than autograd)
    neg_m = (-m).unsqueeze(-1)
    if torch.is_grad_enabled() and (logits_c.requires_grad or hidden.requires_grad):
        resid = torch.exp(logits_c.to(hidden.dtype) - lse) * neg_m  # [B, T, c]
    else:  # one [B,T,c] allocation instead of three: fresh large buffers cost page faults on the CPU
        resid = (logits_c.to(hidden.dtype) - lse).exp_().mul_(neg_m)
    hit = (y >= start) & (y < start + c) & (m != 0)
    b_idx, t_idx = hit.nonzero(as_tuple=True)
    # in place on mul's output is safe under autograd: mul's backward keeps its inputs, not its result
    resid.index_put_((b_idx, t_idx, y[hit] - start), m[hit], accumulate=True)
    grads = torch.bmm(resid.transpose(1, 2), hidden).reshape(B, -1)  # G_i^c = (E - P)_cᵀ H_i: [B, c·d]
    return grads @ grads.T


def _pair_cost(n_tokens: int, V: int, d: int) -> float:
    return float(n_tokens) ** 2 * (V + d)


def _vocab_cost(n_tokens: int, B: int, V: int, d: int) -> float:
    return 2.0 * n_tokens * V * d + float(B) ** 2 * V * d


def gradient_kernel(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    route: str = "auto",
    budget: int = DEFAULT_BUDGET,
) -> torch.Tensor:
    """Gram matrix [B,B] of per-sample LM-head gradients of ``Σ_t mask·log softmax(logits)[labels]``.

    ``hidden`` [B,T,d] are the LM-head inputs, ``logits`` [B,T,V] its outputs at the same positions and
    ``labels`` [B,T] the targets predicted there (already shifted by the caller). ``route`` is ``"auto"``
    (cheaper estimated cost), ``"pairs"`` or ``"vocab"``; both are exact and differentiable.
    """
    if route not in ("auto", "pairs", "vocab"):
        raise ValueError(f"route must be 'auto', 'pairs' or 'vocab', got {route!r}")
    if route == "auto":
        B, T, V = logits.shape
        n_tokens = int((mask != 0).sum())
        cheaper = _pair_cost(n_tokens, V, hidden.shape[-1]) <= _vocab_cost(B * T, B, V, hidden.shape[-1])
        route = "pairs" if cheaper else "vocab"
    fn = kernel_token_pairs if route == "pairs" else kernel_vocab_chunks
    return fn(hidden, logits, labels, mask, budget=budget)


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


# --- gradient mode inside the loss's own LM-head chunks ----------------------------------------------------
#
# The GRPO loss needs log softmax(W h_t / τ)[y_t] at every completion token; the gradient kernel needs the
# same softmax rows. :func:`fused_logps_and_gram` computes both in ONE pass over vocabulary chunks of the
# logits ``[N, c]``, with an online (running-max) normaliser: the token-pair terms
# ``Q = P Pᵀ`` and ``A[t, s] = p_s[y_t]`` are accumulated unnormalised and rescaled when a row's maximum
# grows, so nothing needs the full-vocabulary normaliser before the pass ends. The vocabulary-chunk route
# (``G^c = (E - P)_cᵀ H``) cannot share the pass: it needs normalised probabilities inside a sum over
# tokens, i.e. a second pass over the logits. Memory: one ``[N, c]`` chunk plus a few ``[N, N]`` matrices;
# backward recomputes each chunk (no ``[N, V]`` tensor is kept).


def _chunk_logits(hidden, weight, bias, v0: int, v1: int, temperature: float) -> torch.Tensor:
    b = bias[v0:v1] if bias is not None else None
    logits = F.linear(hidden.to(weight.dtype), weight[v0:v1], b)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits / temperature if temperature != 1.0 else logits


class _FusedLogpsGram(torch.autograd.Function):
    """Token log-probs, entropies and the LM-head gradient Gram matrix from one pass over vocabulary chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, sample, weights, n_samples, temperature, chunk):  # type: ignore[override]
        n, v = hidden.size(0), weight.size(0)
        dev, f32 = hidden.device, torch.promote_types(hidden.dtype, torch.float32)
        run_max = torch.full((n,), -math.inf, dtype=f32, device=dev)
        run_sum = torch.zeros(n, dtype=f32, device=dev)
        run_ez = torch.zeros(n, dtype=f32, device=dev)
        q = torch.zeros(n, n, dtype=f32, device=dev)  # Σ_v e^{z_t - m_t} e^{z_s - m_s}
        zy = torch.zeros(n, n, dtype=f32, device=dev)  # zy[t, s] = z_s[y_t] (raw logits)
        for v0 in range(0, v, chunk):
            v1 = min(v, v0 + chunk)
            z = _chunk_logits(hidden, weight, bias, v0, v1, temperature)  # [N, c]
            new_max = torch.maximum(run_max, z.amax(dim=1))
            alpha = torch.exp(run_max - new_max)
            e = torch.exp(z - new_max.unsqueeze(1))
            run_sum = run_sum * alpha + e.sum(1)
            run_ez = run_ez * alpha + (e * z).sum(1)
            q.mul_(alpha.unsqueeze(1) * alpha.unsqueeze(0)).addmm_(e, e.T)
            hit = ((targets >= v0) & (targets < v1)).nonzero(as_tuple=True)[0]
            zy[hit] = z[:, targets[hit] - v0].T
            run_max = new_max
            del z, e
        lse = run_max + torch.log(run_sum)
        logps = zy.diagonal() - lse
        entropy = lse - run_ez / run_sum
        q.div_(run_sum.unsqueeze(1) * run_sum.unsqueeze(0))  # Q[t, s] = p_t · p_s
        a = zy.sub_(lse.unsqueeze(0)).exp_()  # A[t, s] = p_s[y_t]
        hm = hidden.to(f32) * weights.to(f32).unsqueeze(1)
        resid = _residual_gram(targets, a, q)
        s = F.one_hot(sample, n_samples).to(f32)
        gram = s.T @ ((hm @ hm.T) * resid) @ s
        ctx.save_for_backward(hidden, weight, bias, targets, sample, weights, lse, q, a)
        ctx.temperature, ctx.chunk, ctx.n_samples = temperature, chunk, n_samples
        ctx.mark_non_differentiable(entropy)
        return logps, entropy, gram

    @staticmethod
    def backward(ctx, g_logps, _g_entropy, g_gram):  # type: ignore[override]
        hidden, weight, bias, targets, sample, weights, lse, q, a = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        f32 = torch.promote_types(hidden.dtype, torch.float32)
        n, v = hidden.size(0), weight.size(0)
        g_logps = torch.zeros(n, dtype=f32, device=hidden.device) if g_logps is None else g_logps.to(f32)
        hm = hidden.to(f32) * weights.to(f32).unsqueeze(1)
        grad_h = torch.zeros(n, hidden.size(1), dtype=f32, device=hidden.device)
        ps = torch.zeros(n, n, dtype=f32, device=hidden.device)
        if g_gram is not None:
            s = F.one_hot(sample, ctx.n_samples).to(f32)
            omega = s @ g_gram.to(f32) @ s.T  # Ω[t, s] = Γ[b_t, b_s]
            x = omega * _residual_gram(targets, a, q)  # dL/d(HmHmᵀ)
            grad_h += ((x + x.T) @ hm) * weights.to(f32).unsqueeze(1)
            psi = omega * (hm @ hm.T)  # dL/dR
            ps = psi + psi.T
        # softmax backward needs Σ_v dP·P per row; with dP = Ps (P - E) it is Σ_u Ps[s,u] (Q[u,s] - A[u,s])
        c = (ps * q).sum(1) - (ps * a).sum(0)
        need_w, need_b = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_w = torch.zeros(weight.shape, dtype=f32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=f32, device=bias.device) if need_b else None
        rows = torch.arange(n, device=hidden.device)
        for v0 in range(0, v, chunk):
            v1 = min(v, v0 + chunk)
            p = _chunk_logits(hidden, weight, bias, v0, v1, tau).sub_(lse.unsqueeze(1)).exp_()  # [N, c]
            hit = (targets >= v0) & (targets < v1)
            p_minus_e = p.clone()
            p_minus_e[rows[hit], targets[hit] - v0] -= 1.0
            dz = p * (ps @ p_minus_e - c.unsqueeze(1)) - g_logps.unsqueeze(1) * p_minus_e
            if tau != 1.0:
                dz.div_(tau)
            dzw = dz.to(weight.dtype)
            grad_h += (dzw @ weight[v0:v1]).to(f32)
            if need_w:
                grad_w[v0:v1] += dz.T @ hidden.to(f32)
            if need_b:
                grad_b[v0:v1] += dz.sum(0)
            del p, p_minus_e, dz, dzw
        return (grad_h.to(hidden.dtype), grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None, None, None, None, None, None, None)


def _residual_gram(targets: torch.Tensor, a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``R = (E - P)(E - P)ᵀ = [y_t = y_s] - A - Aᵀ + Q`` ``[N, N]``."""
    same = (targets.unsqueeze(1) == targets.unsqueeze(0)).to(q.dtype)
    return same - a - a.T + q


def fused_logps_and_gram(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    sample: torch.Tensor,
    n_samples: int,
    weights: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    budget: int = DEFAULT_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logps [N], entropy [N], K [B, B])`` for the ``N`` scored tokens of a batch, in one chunked pass.

    ``hidden`` [N, d] are the LM head's inputs, ``weight`` [V, d] (+ ``bias`` [V]) the head, ``targets`` [N]
    the predicted tokens, ``sample`` [N] each token's row in ``0..n_samples-1`` and ``weights`` [N] the
    kernel's token mask (default 1). ``logps`` are ``log softmax((W h + b) / τ)[y]`` (float32, the loss's);
    ``K`` is :func:`gradient_kernel` of the same tokens (exact, token-pair form); ``entropy`` carries no
    gradient. Differentiable in ``hidden``, ``weight`` and ``bias``; the vocabulary is processed
    ``budget // N`` columns at a time.
    """
    n = hidden.size(0)
    if hidden.dim() != 2 or targets.shape != (n,) or sample.shape != (n,):
        raise ValueError(f"hidden [N, d], targets [N], sample [N]; got {tuple(hidden.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(sample.shape)}")
    weights = torch.ones(n, device=hidden.device) if weights is None else weights
    chunk = max(1, min(weight.size(0), budget // max(1, n)))
    return _FusedLogpsGram.apply(hidden, weight, bias, targets.long(), sample.long(), weights, int(n_samples),
                                 float(temperature), int(chunk))
