"""Target 2b: the NTK term's TRAINING-path cost against one LM-head forward+backward (issue 21 item 2).

What a GRPO step with ``ntk.mode=gradient`` pays on top of its loss, at the 7B head (V = 152,064, d = 3,584),
``B = 16`` completions sharing ``N`` completion tokens:

- ``head``: the loss's own LM head: chunked log-probs of the N tokens, forward + backward
  (:func:`prefopt.training.logprobs.chunked_token_logps`; the head frozen, as under LoRA);
- ``fused``: the same log-probs AND the Gram matrix from one chunked pass
  (:func:`prefopt.grpo.ntk.fused_logps_and_gram`), then ``InfoNCE(cosine(K))``, forward + backward;
- ``recompute`` (the path before issue 21, small N only): ``head``, plus the logits recomputed from the hidden
  states and the token-pair kernel under autograd.

The ratio reported is ``(fused - head) / head``: the NTK's extra cost in units of one LM-head fwd+bwd
(goal <= 0.3 at 6,144 tokens). Each row runs in a fresh process: its ``ru_maxrss`` (inputs included) and
the peak the computation adds above its inputs (``VmHWM`` reset, see ``common.peak_memory``) are reported.

    python -m benchmarks.ntk_training_path [--quick] [--tokens 256 --tokens 1024 ...] [--d 3584 --vocab 152064]
"""

from __future__ import annotations

import subprocess
import sys

import torch

from benchmarks import common
from prefopt.grpo import ntk
from prefopt.training.logprobs import chunked_token_logps

TOKENS = (256, 512, 1024, 2048, 4096, 6144, 8192)
QUICK_TOKENS = (256, 512)


def make_inputs(n: int, d: int, vocab: int, rows: int = 16, seed: int = 0):
    """Hidden states [N, d] (requires grad), a frozen head [V, d], targets [N], row of each token [N]."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).requires_grad_(True)
    weight = torch.randn(vocab, d, generator=g).div_(d**0.5)  # in place: one [V, d] copy, not two
    targets = torch.randint(0, vocab, (n,), generator=g)
    sample = torch.arange(n) * rows // n
    return hidden, weight, targets, sample, rows


def head_side(hidden, weight, targets, sample, rows) -> None:
    chunked_token_logps(hidden, weight, targets).sum().backward()


def fused_side(hidden, weight, targets, sample, rows) -> None:
    logps, _, gram = ntk.fused_logps_and_gram(hidden, weight, targets, sample, rows)
    nce = ntk.info_nce(ntk.cosine_from_gram(gram), ntk.GRADIENT_THRESHOLD, ntk.GRADIENT_TEMPERATURE)
    (logps.sum() + ntk.NCE_WEIGHT * nce).backward()


def recompute_side(hidden, weight, targets, sample, rows) -> None:
    logps = chunked_token_logps(hidden, weight, targets)
    per_row = hidden.size(0) // rows
    h = hidden[: rows * per_row].reshape(rows, per_row, -1)
    logits = h @ weight.T  # the second logits computation the fused pass removes
    gram = ntk.gradient_kernel(h, logits, targets[: rows * per_row].reshape(rows, per_row),
                               torch.ones(rows, per_row))
    nce = ntk.info_nce(ntk.cosine_from_gram(gram), ntk.GRADIENT_THRESHOLD, ntk.GRADIENT_TEMPERATURE)
    (logps.sum() + ntk.NCE_WEIGHT * nce).backward()


SIDES = {"head": head_side, "fused": fused_side, "recompute": recompute_side}


def one_row(n: int, d: int, vocab: int, side: str, repeats: int) -> dict:
    """Time one side at N tokens in this (fresh) process; its max RSS is the row's peak."""
    inputs = make_inputs(n, d, vocab)
    fn = SIDES[side]
    times = []
    with common.peak_memory() as mem:  # what the computation adds above its inputs
        for _ in range(repeats + 1):  # the first call warms the allocator
            inputs[0].grad = None
            times.append(common.timed(lambda: fn(*inputs)))
    return {"tokens": n, "side": side, "seconds": common.summary(times[1:]), "maxrss_mib": common.maxrss_mib(),
            "added_mib": mem["peak_mib"]}


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, action="append", help="completion tokens per device (repeatable)")
    p.add_argument("--d", type=int, default=3584, help="hidden size (Qwen2.5-VL-7B: 3584)")
    p.add_argument("--vocab", type=int, default=152_064)
    p.add_argument("--one", nargs=2, metavar=("N", "SIDE"), help="internal: run one row in this process")
    args = p.parse_args(argv)
    n_rep = common.repeats(args)
    if args.one:
        row = one_row(int(args.one[0]), args.d, args.vocab, args.one[1], n_rep)
        common.emit("ntk_training_path_row", row, [])
        return
    tokens = args.tokens or (QUICK_TOKENS if args.quick else TOKENS)
    rows = []
    for n in tokens:
        # the old path only where it is a few minutes: N <= 2,048 and its [N, V] fp32 logits < 2 GiB
        sides = ["head", "fused"] + (["recompute"] if n <= 2048 and n * args.vocab * 4 < 2**31 else [])
        for side in sides:
            cmd = [sys.executable, "-m", "benchmarks.ntk_training_path", "--one", str(n), side, "--d", str(args.d),
                   "--vocab", str(args.vocab), "--repeats", str(n_rep), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(common.ROOT), check=True).stdout
            rows.append(common.parse_result(out))
            r = rows[-1]
            print(f"N={n:5d} {side:9s} {common.fmt_stats(r['seconds'])}  process peak {r['maxrss_mib']:.0f} MiB, "
                  f"added above the inputs {r['added_mib']:.0f} MiB", flush=True)
    ratios = []
    for n in tokens:
        by = {r["side"]: r for r in rows if r["tokens"] == n}
        head, fused = by["head"]["seconds"]["median"], by["fused"]["seconds"]["median"]
        goal = "<= 0.3" if n == 6144 else "report"
        ratios.append((f"ntk N={n}: (fused - head) / head fwd+bwd", (fused - head) / head, goal))
        if "recompute" in by:
            ratios.append((f"ntk N={n}: (recompute - head) / head fwd+bwd (before)",
                           (by["recompute"]["seconds"]["median"] - head) / head, "report"))
    common.emit("ntk_training_path", {"d": args.d, "vocab": args.vocab, "rows": rows, "load": common.load_avg()},
                ratios)


if __name__ == "__main__":
    main()
