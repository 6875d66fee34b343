"""Target 2: NTK ``gradient_kernel`` against autograd per-sample LM-head gradients (both exact).

Sides, on the same hidden states H [B,T,d], LM head W [V,d], labels and mask:

- ``kernel``: :func:`prefopt.grpo.ntk.gradient_kernel` (route picked by cost) from H and the logits;
- ``autograd``: ``torch.func.vmap(grad(log p))`` gives every sample's V×d gradient, then ``G Gᵀ``;
- ``fwdbwd``: one forward + backward of the LM head on the batch (what a training step pays anyway).

Cases: ``tiny`` (B=8, T=128, d=64, V=2000), ``7b`` (Qwen2.5-VL-7B head: V=152064, d=3584, B=4, T=64;
the autograd side holds B·V·d floats = 8.7 GB in float32, so it runs once, alone, in its own process)
and ``sweep`` (B·T from 256 to 8192 at V=8192, d=512, both routes and autograd) to show where each wins.

    python -m benchmarks.ntk_kernel [--quick] [--repeats N] [--case tiny --case 7b --case sweep]
"""

from __future__ import annotations

import time

import torch

from benchmarks import common
from prefopt.grpo import ntk

CASES = {"tiny": dict(B=8, T=128, d=64, V=2000), "7b": dict(B=4, T=64, d=3584, V=152064)}


def make_batch(B: int, T: int, d: int, V: int, device: str = "cpu", seed: int = 0):
    """Random LM-head inputs; the last quarter of every other row is masked out (padding)."""
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(B, T, d, generator=g).to(device)
    W = (torch.randn(V, d, generator=g) / d**0.5).to(device)
    y = torch.randint(0, V, (B, T), generator=g).to(device)
    mask = torch.ones(B, T, device=device)
    mask[1::2, (3 * T) // 4 :] = 0
    return H, W, y, mask


def kernel_side(H, Z, y, mask, route: str = "auto") -> torch.Tensor:
    """Gram matrix by prefopt's kernel from H and the logits Z, which the policy forward already made."""
    with torch.no_grad():
        return ntk.gradient_kernel(H, Z, y, mask, route=route)


def logits_of(H, W) -> torch.Tensor:
    """The LM head's outputs (computed once, outside the timed kernel calls)."""
    with torch.no_grad():
        return H @ W.T


def _sample_logp(W, h, y, m):
    logits = h @ W.T
    return ((torch.log_softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1)) * m).sum()


def autograd_side(H, W, y, mask) -> torch.Tensor:
    """Gram matrix from per-sample gradients materialised by ``vmap(grad)``: a [B, V, d] tensor."""
    from torch.func import grad, vmap

    grads = vmap(grad(_sample_logp), in_dims=(None, 0, 0, 0))(W, H, y, mask)
    flat = grads.reshape(grads.shape[0], -1)
    return flat @ flat.T


def fwdbwd_side(H, W, y, mask) -> None:
    """One forward + backward of the LM head (gradients for W and H) on the batch."""
    W = W.detach().requires_grad_(True)
    H = H.detach().requires_grad_(True)
    logits = H @ W.T
    logp = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    (logp * mask).sum().backward()


def largest_intermediate(B: int, T: int, d: int, V: int, route: str) -> dict[str, int]:
    """Analytic element counts of the largest temporaries (default chunk budget) per side."""
    N, budget = B * T, ntk.DEFAULT_BUDGET
    if route == "pairs":
        rows = max(1, min(N, budget // (N + V)))
        return {"softmax P [N,V]": N * V, "pair chunk [rows,N]": rows * N, "logits [N,V]": N * V}
    chunk = max(1, min(V, budget // (B * max(d, T))))
    return {"chunk grads [B,c,d]": B * chunk * d, "chunk probs [B,T,c]": B * T * chunk, "logits [N,V]": N * V}


def pick_route(B: int, T: int, d: int, V: int) -> str:
    """The route ``gradient_kernel(route="auto")`` takes for a full mask."""
    return "pairs" if ntk._pair_cost(B * T, V, d) <= ntk._vocab_cost(B * T, B, V, d) else "vocab"


def run_case(
    name: str, sizes: dict[str, int], n: int, device: str, with_autograd: bool = True, warmup: int = 1
) -> dict:
    """Interleaved timings and peak memory of the sides on one shape; checks the Gram matrices agree."""
    H, W, y, mask = make_batch(**sizes, device=device)
    Z = logits_of(H, W)
    sides = {
        "kernel": lambda: common.timed(lambda: kernel_side(H, Z, y, mask), device),
        "fwdbwd": lambda: common.timed(lambda: fwdbwd_side(H, W, y, mask), device),
    }
    if with_autograd:
        sides["autograd"] = lambda: common.timed(lambda: autograd_side(H, W, y, mask), device)
    out = {"case": name, **sizes, "route": pick_route(**sizes), "times": common.interleave(sides, n, warmup)}
    out["peak_mib"] = {
        s: common.measure_peak(f, device)
        for s, f in (
            ("kernel", lambda: kernel_side(H, Z, y, mask)),
            ("fwdbwd", lambda: fwdbwd_side(H, W, y, mask)),
        )
    }
    out["analytic_elements"] = largest_intermediate(**sizes, route=out["route"])
    out["BVd_elements"] = sizes["B"] * sizes["V"] * sizes["d"]
    if with_autograd:
        out["peak_mib"]["autograd"] = common.measure_peak(lambda: autograd_side(H, W, y, mask), device)
        K, ref = kernel_side(H, Z, y, mask), autograd_side(H, W, y, mask)
        out["max_rel_err"] = float((K - ref).abs().max() / ref.abs().max())
    return out


def run_7b(n: int, device: str, side: str) -> dict:
    """The 7B-head case, one side group per process: ``fast`` (kernel + fwd/bwd) or ``autograd`` (alone)."""
    sizes = CASES["7b"]
    H, W, y, mask = make_batch(**sizes, device=device)
    if side == "autograd":
        start = time.perf_counter()  # one run only: it holds B·V·d floats and takes about a minute
        K = autograd_side(H, W, y, mask)
        common._sync(device)()
        times = [time.perf_counter() - start]
        Kk = kernel_side(H, logits_of(H, W), y, mask)
        return {
            "case": "7b",
            "side": side,
            **sizes,
            "times": {"autograd": common.summary(times)},
            "maxrss_mib": common.maxrss_mib(),
            "max_rel_err": float((Kk - K).abs().max() / K.abs().max()),
        }
    out = run_case("7b", sizes, min(n, 2), device, with_autograd=False, warmup=0)
    out["maxrss_mib"] = common.maxrss_mib()
    return out


def _sweep_sides(H, W, y, mask, device: str) -> dict:
    """Timed callables of both kernel routes and autograd on one batch."""
    Z = logits_of(H, W)
    sides = {
        r: (lambda r=r: common.timed(lambda: kernel_side(H, Z, y, mask, r), device))
        for r in ("pairs", "vocab")
    }
    sides["autograd"] = lambda: common.timed(lambda: autograd_side(H, W, y, mask), device)
    return sides


def sweep(points: list[int], n: int, device: str, d: int = 512, V: int = 8192, B: int = 4) -> list[dict]:
    """Both routes and autograd at B·T in ``points`` (T = B·T / B)."""
    rows = []
    for bt in points:
        H, W, y, mask = make_batch(B, bt // B, d, V, device=device)
        sides = _sweep_sides(H, W, y, torch.ones_like(mask), device)
        t = common.interleave(sides, n, warmup=0)
        rows.append(
            {
                "BT": bt,
                "d": d,
                "V": V,
                "B": B,
                "auto": pick_route(B, bt // B, d, V),
                **{s: t[s]["median"] for s in sides},
                "load": t["load"]["median"],
            }
        )
        print(f"sweep B·T={bt}: " + ", ".join(f"{s} {t[s]['median']:.3f}s" for s in sides), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the requested cases and print the ratios."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--case", action="append", choices=("tiny", "7b", "sweep"))
    p.add_argument("--side", choices=("fast", "autograd"), help=argparse_help())
    args = p.parse_args(argv)
    n = common.repeats(args)
    if args.side:  # child process of the 7B case
        common.emit(
            "ntk-7b-" + args.side, run_7b(n if args.side == "fast" else 1, args.device, args.side), []
        )
        return
    cases = args.case or (["tiny", "sweep"] if args.quick else ["tiny", "7b", "sweep"])
    result: dict = {"cases": []}
    ratios = []
    if "tiny" in cases:
        r = run_case("tiny", CASES["tiny"], max(n, 7), args.device)  # milliseconds each: cheap to repeat
        result["cases"].append(r)
        t = r["times"]
        ratios.append(
            ("ntk tiny: autograd / kernel time", t["autograd"]["median"] / t["kernel"]["median"], ">= 1")
        )
    if "sweep" in cases:
        points = [256, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
        result["sweep"] = sweep(points, 1 if args.quick else max(1, n // 2), args.device)
    if "7b" in cases:
        fast = common.isolated("ntk_kernel", ["--side", "fast", "--repeats", str(n), "--device", args.device])
        slow = common.isolated("ntk_kernel", ["--side", "autograd", "--device", args.device])
        result["cases"].append({**fast, "autograd": slow})
        kt, fb = fast["times"]["kernel"]["median"], fast["times"]["fwdbwd"]["median"]
        ratios.append(("ntk 7b: autograd / kernel time", slow["times"]["autograd"]["median"] / kt, ">= 5"))
        ratios.append(("ntk 7b: kernel / LM-head fwd+bwd time", kt / fb, "<= 0.5"))
        ratios.append(
            (
                "ntk 7b: kernel peak / B·V·d floats",
                fast["peak_mib"]["kernel"] * 2**20 / (4 * fast["BVd_elements"]),
                "< 1",
            )
        )
    for r in result["cases"]:
        if "peak_mib" in r and "autograd" in r["peak_mib"]:
            ratios.append(
                (
                    f"ntk {r['case']}: peak memory kernel / autograd",
                    common.mem_ratio(r["peak_mib"]["kernel"], r["peak_mib"]["autograd"]),
                    "< 1",
                )
            )
    common.emit("ntk", result, ratios)


def argparse_help() -> str:
    """Help of the internal ``--side`` option."""
    return "internal: run one side group of the 7B case in this process"


if __name__ == "__main__":
    main()
