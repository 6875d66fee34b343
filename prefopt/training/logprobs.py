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
3. :func:`chunked_token_logps` applies the head to ``chunk`` tokens at a time with an exact log-softmax and
   recomputes each chunk in backward, so at most one ``[chunk, V]`` fp32 block is alive in forward or backward.

Logits are computed in the head's dtype and upcast to float32 before the softmax, as ``logits.float()`` on
the model output does, so results match the full computation (to 1e-5 in float32, tested with gradients).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100
#: Elements of the largest ``[chunk, V]`` float32 block (64 MiB); the token chunk is ``budget // V``.
DEFAULT_BUDGET = 2**24


def token_chunk(vocab_size: int, budget: int = DEFAULT_BUDGET) -> int:
    """Tokens per chunk so that one ``[chunk, V]`` fp32 block holds at most ``budget`` elements."""
    return max(1, budget // max(1, vocab_size))


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    """``(h Wᵀ + b) / temperature`` in float32, the matmul in the head's dtype: ``[c, d] -> [c, V]``."""
    logits = torch.nn.functional.linear(h.to(weight.dtype), weight, bias).float()
    return logits / temperature if temperature != 1.0 else logits


class _ChunkedLogps(torch.autograd.Function):
    """Token log-probs of ``targets`` under ``softmax((H Wᵀ + b) / τ)``; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk):  # type: ignore[override]
        n = hidden.size(0)
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            logits = _chunk_logits(hidden[sl], weight, bias, temperature)
            lse[sl] = torch.logsumexp(logits, dim=-1)
            out[sl] = logits.gather(-1, targets[sl].unsqueeze(-1)).squeeze(-1) - lse[sl]
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, hidden.size(0), chunk):
            sl = slice(start, min(hidden.size(0), start + chunk))
            # d logp_t / d logits_t = (e_y - softmax) / τ, scaled by the incoming gradient
            probs = _chunk_logits(hidden[sl], weight, bias, tau).sub_(lse[sl].unsqueeze(-1)).exp_()
            g = grad_out[sl].float().unsqueeze(-1)
            grad_logits = probs.mul_(-g)
            grad_logits.scatter_add_(-1, targets[sl].unsqueeze(-1), g)
            if tau != 1.0:
                grad_logits.div_(tau)
            gl = grad_logits.to(weight.dtype)
            if need_h:
                grad_h[sl] = (gl @ weight).to(hidden.dtype)
            if need_w:
                grad_w.add_(gl.T.float() @ hidden[sl].float())
            if need_b:
                grad_b.add_(grad_logits.sum(0))
            del probs, grad_logits, gl
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None


def chunked_token_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk: int | None = None,
) -> Tensor:
    """Log-probs ``[N]`` (float32) of ``targets`` ``[N]`` under the head ``weight`` ``[V, d]`` (+ ``bias`` ``[V]``)
    applied to ``hidden`` ``[N, d]``, ``chunk`` tokens at a time (default :func:`token_chunk`); differentiable
    in ``hidden``, ``weight`` and ``bias`` without keeping any ``[N, V]`` tensor."""
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1] or weight.dim() != 2:
        raise ValueError(f"hidden [N, d], targets [N], weight [V, d]; got {tuple(hidden.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(weight.shape)}")
    chunk = chunk or token_chunk(weight.size(0))
    return _ChunkedLogps.apply(hidden, weight, bias, targets.long(), float(temperature), int(chunk))


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
