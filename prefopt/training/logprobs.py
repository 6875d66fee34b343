"""Response-only, chunked log-probabilities: the LM head never produces a ``[rows, positions, V]`` tensor.

Every trainer in prefopt (SymMPO / DPO / mDPO policy and reference, cold-start SFT with REVERSE tag weights)
needs ``log softmax(W h_t)[y_t]`` only at the positions ``t`` whose next token is supervised. The model's
own forward would project *every* position (image and prompt tokens included) through the LM head and keep
the full-vocabulary logits for backward: at V = 152,064 that is the whole memory bill of a step.

Here instead:

1. :func:`last_hidden_states` runs the (possibly PEFT / DDP / DeepSpeed wrapped) model with its output
   embedding temporarily replaced by the identity, so ``outputs.logits`` *is* the LM head's input
   ``[rows, positions, d]`` (every wrapper still sees its forward; nothing family-specific is asked);
2. :func:`supervised_positions` gathers the states that predict a supervised token (``labels[t + 1] != -100``);
3. :func:`chunked_token_logps` applies the head to blocks of tokens, walking the vocabulary in column chunks
   with an online log-sum-exp, and recomputes each chunk in backward, so at most one ``[tokens, columns]``
   fp32 block (``budget`` elements, 64 MiB by default) is alive in forward or backward.

Logits are computed in the head's dtype and upcast to float32 before the softmax, as ``logits.float()`` on
the model output does, so results match the full computation (to 1e-5 in float32, tested with gradients).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100
#: Elements of the largest ``[tokens, columns]`` float32 logits block (64 MiB).
DEFAULT_BUDGET = 2**24
#: Tokens per block: within a block the vocabulary is walked in ``budget // tokens`` columns, so the head's
#: weight is read once per block and pass (token-only tiling re-reads all of ``W`` for every few tokens,
#: which made it memory-bound at V·d = 545 M: measured 3x slower than vocabulary tiling at 512 tokens).
DEFAULT_TOKENS = 4096


def token_chunk(vocab_size: int, budget: int = DEFAULT_BUDGET) -> int:
    """Tokens whose full-vocabulary fp32 logits fit in ``budget`` elements (the module-call path's chunk)."""
    return max(1, budget // max(1, vocab_size))


def _logits(h: Tensor, weight: Tensor, bias: Tensor | None, v0: int, v1: int, temperature: float) -> Tensor:
    """``(h W[v0:v1]ᵀ + b[v0:v1]) / τ`` in float32, the matmul in the head's dtype: ``[n, d] -> [n, v1-v0]``."""
    b = bias[v0:v1] if bias is not None else None
    logits = torch.nn.functional.linear(h.to(weight.dtype), weight[v0:v1], b).float()
    return logits / temperature if temperature != 1.0 else logits


def _block_forward(h, weight, bias, y, tau, cols):
    """Online log-sum-exp over vocabulary chunks: ``(logp [n], lse [n])`` of one token block."""
    n, v = h.size(0), weight.size(0)
    run_max = torch.full((n,), -math.inf, dtype=torch.float32, device=h.device)
    run_sum = torch.zeros(n, dtype=torch.float32, device=h.device)
    picked = torch.zeros(n, dtype=torch.float32, device=h.device)
    for v0 in range(0, v, cols):
        v1 = min(v, v0 + cols)
        z = _logits(h, weight, bias, v0, v1, tau)
        new_max = torch.maximum(run_max, z.amax(dim=1))
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(z - new_max.unsqueeze(1)).sum(1)
        run_max = new_max
        hit = ((y >= v0) & (y < v1)).nonzero(as_tuple=True)[0]
        picked[hit] = z[hit, y[hit] - v0]
        del z
    lse = run_max + torch.log(run_sum)
    return picked - lse, lse


class _ChunkedLogps(torch.autograd.Function):
    """Token log-probs of ``targets`` under ``softmax((H Wᵀ + b) / τ)``; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, tokens, budget):  # type: ignore[override]
        n = hidden.size(0)
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, tokens):
            sl = slice(start, min(n, start + tokens))
            cols = max(1, budget // (sl.stop - sl.start))
            out[sl], lse[sl] = _block_forward(hidden[sl], weight, bias, targets[sl], temperature, cols)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.temperature, ctx.tokens, ctx.budget = temperature, tokens, budget
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        tau, n, v = ctx.temperature, hidden.size(0), weight.size(0)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, n, ctx.tokens):
            sl = slice(start, min(n, start + ctx.tokens))
            h, y, g = hidden[sl], targets[sl], grad_out[sl].float().unsqueeze(1)
            rows = torch.arange(h.size(0), device=h.device)
            cols = max(1, ctx.budget // h.size(0))
            for v0 in range(0, v, cols):
                v1 = min(v, v0 + cols)
                # d logp_t / d logits_t = (e_y - softmax) / τ, scaled by the incoming gradient
                dz = _logits(h, weight, bias, v0, v1, tau).sub_(lse[sl].unsqueeze(1)).exp_().mul_(-g)
                hit = (y >= v0) & (y < v1)
                dz[rows[hit], y[hit] - v0] += g[hit, 0]
                if tau != 1.0:
                    dz.div_(tau)
                dzw = dz.to(weight.dtype)
                if need_h:
                    grad_h[sl] += (dzw @ weight[v0:v1]).float()
                if need_w:
                    grad_w[v0:v1] += dz.T @ h.float()
                if need_b:
                    grad_b[v0:v1] += dz.sum(0)
                del dz, dzw
        return (grad_h.to(hidden.dtype) if need_h else None, grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None, None, None, None, None)


def chunked_token_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk: int | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Tensor:
    """Log-probs ``[N]`` (float32) of ``targets`` ``[N]`` under the head ``weight`` ``[V, d]`` (+ ``bias`` ``[V]``)
    applied to ``hidden`` ``[N, d]``: ``chunk`` tokens per block (default :data:`DEFAULT_TOKENS`), each block's
    vocabulary walked ``budget // block`` columns at a time with an online log-sum-exp. Differentiable in
    ``hidden``, ``weight`` and ``bias`` without keeping any ``[N, V]`` tensor."""
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1] or weight.dim() != 2:
        raise ValueError(f"hidden [N, d], targets [N], weight [V, d]; got {tuple(hidden.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(weight.shape)}")
    tokens = int(chunk or DEFAULT_TOKENS)
    return _ChunkedLogps.apply(hidden, weight, bias, targets.long(), float(temperature), tokens, int(budget))


def unwrap(model: Any) -> Any:
    """The model under DDP / DeepSpeed engine wrappers (PEFT is left on: it forwards attributes)."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    return inner


def output_head(model: Any) -> torch.nn.Module:
    """The LM head (output embedding) of a possibly wrapped model."""
    return unwrap(model).get_output_embeddings()


@contextlib.contextmanager
def head_replaced(head: torch.nn.Module, fn: Any) -> Iterator[Any]:
    """While active, calling ``head(states)`` returns ``fn(states, original_forward)``.

    The head is still *called* inside the model's forward, so wrapper hooks (DDP's unused-parameter search,
    ZeRO-3 parameter gathering) see it used; only what it computes changes. Yields the original forward.
    """
    original = type(head).forward.__get__(head)
    had_own = "forward" in head.__dict__
    saved = head.__dict__.get("forward")
    base = saved if had_own else original
    head.forward = lambda x, *args, **kwargs: fn(x, base)  # type: ignore[method-assign]
    try:
        yield base
    finally:
        if had_own:
            head.forward = saved  # type: ignore[method-assign]
        else:
            del head.forward


def last_hidden_states(model: Any, inputs: dict[str, Any]) -> Tensor:
    """The LM head's input ``[rows, positions, d]`` from one forward of ``model`` (no logits computed)."""
    with head_replaced(output_head(model), lambda states, _forward: states):
        return model(**inputs, use_cache=False).logits


def supervised_positions(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(row, position, target)`` ``[N]`` each: state ``[row, position]`` predicts ``target = labels[row,
    position + 1] != -100`` (the usual one-token shift; positions index ``[rows, positions - 1]``)."""
    shifted = labels[:, 1:]
    rows, pos = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows, pos, shifted[rows, pos]


def _module_chunk_logps(forward: Any, h: Tensor, targets: Tensor, temperature: float) -> Tensor:
    logits = forward(h).float()
    logits = logits / temperature if temperature != 1.0 else logits
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def head_token_logps(head: torch.nn.Module, forward: Any, states: Tensor, targets: Tensor,
                     temperature: float = 1.0, chunk: int | None = None) -> Tensor:
    """Log-probs ``[N]`` of ``targets`` ``[N]`` for the head's inputs ``states`` ``[N, d]``, chunked.

    A plain ``nn.Linear`` head goes through :func:`chunked_token_logps`; any other head (a LoRA or
    ``modules_to_save`` wrapper) is called per chunk under activation checkpointing, which also keeps one
    chunk's logits alive at a time.
    """
    weight = getattr(head, "weight", None)
    if type(head) is torch.nn.Linear and weight is not None and weight.numel() > 0:
        return chunked_token_logps(states.to(weight.device), weight, targets.to(weight.device), head.bias,
                                   temperature, chunk)
    from torch.utils.checkpoint import checkpoint

    chunk = chunk or token_chunk(int(getattr(head, "out_features", 0)) or 2**17)
    parts = []
    for start in range(0, states.size(0), chunk):
        h, y = states[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_module_chunk_logps, forward, h, y, temperature, use_reentrant=False))
        else:
            parts.append(_module_chunk_logps(forward, h, y, temperature))
    return torch.cat(parts) if parts else states.new_zeros(0, dtype=torch.float32)


def response_token_logps(
    model: Any, inputs: dict[str, Any], labels: Tensor, temperature: float = 1.0, chunk: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per supervised token: ``(logps [N] float32, rows [N], positions [N])`` from one forward of ``model``.

    ``labels`` ``[rows, positions]`` are aligned with ``input_ids`` (-100 = not scored); the head sees only
    the ``N`` states that predict a supervised token.
    """
    head = output_head(model)
    rows, pos, targets = supervised_positions(labels)

    def project(states: Tensor, forward: Any) -> Tensor:
        r, p = rows.to(states.device), pos.to(states.device)
        return head_token_logps(head, forward, states[r, p], targets.to(states.device), temperature, chunk)

    with head_replaced(head, project):
        logps = model(**inputs, use_cache=False).logits
    return logps, rows.to(logps.device), pos.to(logps.device)


def sequence_sums(values: Tensor, rows: Tensor, n_rows: int, weights: Tensor | None = None) -> Tensor:
    """``out[r] = Σ_{i: rows[i] = r} weights[i]·values[i]``: per-token values ``[N]`` summed per row ``[n_rows]``."""
    weighted = values if weights is None else values * weights
    out = torch.zeros(n_rows, dtype=weighted.dtype, device=weighted.device)
    return out.index_add(0, rows.to(weighted.device), weighted)
