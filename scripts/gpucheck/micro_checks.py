"""The NTK training-path cost against one LM-head forward+backward, and retrospective resampling on the device."""

from __future__ import annotations

from typing import Any

from gpucheck.context import Context
from gpucheck.grpo_checks import _release


def ntk_cost(ctx: Context) -> dict[str, Any]:
    """NTK term as the trainer computes it (gradient kernel from H and logits, cosine, InfoNCE) vs LM-head fwd+bwd.

    Shapes are the Qwen2.5-VL model's real LM head (V, d) with B sequences of T response tokens, in the
    run's dtype on the run's device; both sides are timed interleaved (benchmarks.common.interleave).
    """
    import torch

    from benchmarks import common
    from benchmarks.ntk_kernel import fwdbwd_side, make_batch
    from prefopt.grpo import ntk

    shape = ctx.shapes["qwen2_5_vl"]
    B, T, d, V = ctx.sizes["ntk_batch"], ctx.sizes["ntk_tokens"], shape["hidden"], shape["vocab"]
    dtype = torch.float32 if ctx.cpu else torch.bfloat16
    H, W, y, mask = make_batch(B, T, d, V, device=ctx.device)
    H, W = H.to(dtype), W.to(dtype)
    with torch.no_grad():
        Z = H @ W.T

    def ntk_path() -> None:
        with torch.no_grad():
            sim = ntk.cosine_from_gram(ntk.gradient_kernel(H, Z, y, mask))
            ntk.info_nce(sim, threshold=0.54, temperature=0.5)

    sides = {
        "ntk": lambda: common.timed(ntk_path, ctx.device),
        "lm_head_fwd_bwd": lambda: common.timed(lambda: fwdbwd_side(H, W, y, mask), ctx.device),
    }
    times = common.interleave(sides, n=3 if ctx.cpu else 5)
    ratio = times["ntk"]["median"] / times["lm_head_fwd_bwd"]["median"]
    assert torch.isfinite(ntk.gradient_kernel(H, Z, y, mask)).all(), "non-finite NTK Gram matrix"
    return {"B": B, "T": T, "d": d, "V": V, "dtype": str(dtype), "ntk_s": times["ntk"],
            "lm_head_fwd_bwd_s": times["lm_head_fwd_bwd"], "ntk_over_lm_head": ratio}


def _device_phrases():
    """``benchmarks.resample_bench.Phrases`` with its forced logit values built on the scores' device (CUDA)."""
    import torch

    from benchmarks.resample_bench import NEG, Phrases

    class DevicePhrases(Phrases):
        def _only(self, scores, allowed, values=None):
            out = torch.full_like(scores, NEG)
            idx = torch.tensor(allowed, device=scores.device)
            if values is None:
                out[:, idx] = scores[:, idx]
            else:
                out[:, idx] = torch.tensor([values], dtype=scores.dtype, device=scores.device)
            return out

    return DevicePhrases


def resample(ctx: Context) -> dict[str, Any]:
    """Retrospective resampling on the device: same text as the no-cache path (fixed seed), and its cost
    with nothing flagged against ``model.generate`` (both with the same scripted logits processor)."""
    import torch

    from benchmarks import common
    from benchmarks.resample_bench import plain_generate, question
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import REVERSE_TOKENS
    from prefopt.reverse.resample import ResampleConfig, resample_no_cache, retrospective_generate

    Phrases = _device_phrases()
    base = ctx.shared.get("reverse_base")
    assert base is not None, "no tagged checkpoint (the reverse_sft check failed or was skipped)"
    adapter = load_adapter(str(base), dtype=ctx.dtype, attn_implementation="sdpa")
    adapter.model.to(ctx.device).eval()
    tags = tuple(adapter.tokenizer.convert_tokens_to_ids(t) for t in REVERSE_TOKENS)
    eos = adapter.tokenizer.eos_token_id
    words = list(range(200, 208))
    slots = ctx.sizes["resample_slots"]
    max_new = 3 * slots + 1
    msgs, imgs = question()
    flaggy = Phrases(tags, words, set(words[:3]), slots, eos)
    fcfg = ResampleConfig(tau=0.1, temperature=0.7, max_new_tokens=4 * max_new, hint=True, seed=3,
                          max_attempts=10 * slots)
    cached = retrospective_generate(adapter, msgs, imgs, fcfg, flaggy)
    scratch = resample_no_cache(adapter, msgs, imgs, fcfg, flaggy)
    assert cached.attempts > 0, "the flagged case flagged nothing"
    assert cached.text == scratch.text and cached.token_ids == scratch.token_ids, (
        f"KV-cache path and no-cache path disagree:\n{cached.raw!r}\n{scratch.raw!r}")
    good = Phrases(tags, words[3:], set(), slots, eos)
    cfg = ResampleConfig(tau=0.1, temperature=0.0, max_new_tokens=max_new, hint=False)
    res = retrospective_generate(adapter, msgs, imgs, cfg, good)
    assert res.attempts == 0, "the no-flag case flagged a phrase"
    sides = {
        "generate": lambda: common.timed(lambda: plain_generate(adapter, msgs, imgs, good, max_new), ctx.device),
        "retrospective": lambda: common.timed(lambda: retrospective_generate(adapter, msgs, imgs, cfg, good),
                                              ctx.device),
    }
    times = common.interleave(sides, n=3)
    tokens = len(res.token_ids)
    figures = {
        "flagged_attempts": cached.attempts, "same_text": True,
        "forward_tokens": {"cached": cached.forward_tokens, "no_cache": scratch.forward_tokens},
        "no_flag_tokens": tokens, "generate_s": times["generate"], "retrospective_s": times["retrospective"],
        "retrospective_over_generate": times["retrospective"]["median"] / times["generate"]["median"],
        "retrospective_tokens_per_s": tokens / times["retrospective"]["median"],
    }
    del torch
    _release(adapter)
    return figures
