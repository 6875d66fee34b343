"""Target 4: retrospective resampling against plain ``generate`` and against the seed's regenerate-from-scratch.

A scripted logits processor (the same object type on every side) makes the tiny model write ``n`` tagged
phrases ``<SPAN> w </CN>``: at each slot the model's own logits pick ``w`` among a few word ids, and the
closing tag gets p(``</UN>``) = 0.5 after a "bad" word, 1e-6 otherwise; then end of turn.

- no flags (only good words, greedy): :func:`retrospective_generate` vs ``model.generate`` with the same
  processor, prompt and length; goal time ratio <= 1.1;
- frequent flags (3 of 8 words bad, sampling at T=0.7, no hint): forward tokens (prompt, re-prefills and
  sampled tokens) of :func:`retrospective_generate` (KV cache cropped at the backtrack point) vs
  :func:`resample_no_cache` (prefills prompt + accepted prefix after every rejection, as the seed did);
  goal <= 1/3. Both draw the same random numbers, so they return the same text (checked).

    python -m benchmarks.resample_bench [--quick] [--repeats N] [--family qwen2_5_vl]
"""

from __future__ import annotations

import math

import torch

from benchmarks import common

NEG = -1e9


class Phrases:
    """Logits processor: ``slots`` tagged phrases from ``words`` (``bad`` ones unconfident), then EOS."""

    def __init__(self, tags: tuple[int, int, int], words: list[int], bad: set[int], slots: int, eos: int):
        self.span, self.cn, self.un = tags
        self.words, self.bad, self.slots, self.eos = words, bad, slots, eos

    def _only(
        self, scores: torch.Tensor, allowed: list[int], values: list[float] | None = None
    ) -> torch.Tensor:
        out = torch.full_like(scores, NEG)
        idx = torch.tensor(allowed, device=scores.device)
        out[:, idx] = scores[:, idx] if values is None else torch.tensor([values], dtype=scores.dtype)
        return out

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Allowed next tokens given the tags written so far (the prompt holds none)."""
        seq = input_ids[0].tolist()
        last = seq[-1]
        if last == self.span:
            return self._only(scores, self.words)
        if len(seq) > 1 and seq[-2] == self.span:
            p = 0.5 if last in self.bad else 1e-6
            return self._only(scores, [self.cn, self.un], [0.0, math.log(p / (1 - p))])
        closed = sum(t == self.cn for t in seq)
        return self._only(scores, [self.span] if closed < self.slots else [self.eos])


def tagged_adapter(model_dir: str, dtype: str):
    """The tiny adapter with the REVERSE tokens added in memory, and the tag ids."""
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens

    adapter = load_adapter(model_dir, dtype=dtype)
    ids = add_special_tokens(adapter, REVERSE_TOKENS)
    adapter.model.eval()
    return adapter, tuple(ids[t] for t in REVERSE_TOKENS)


def question():
    """One image question."""
    from PIL import Image

    from prefopt.data.schema import user_message

    return [user_message("Describe the image.", 1)], [Image.new("RGB", (56, 56), (200, 30, 30))]


def plain_generate(adapter, messages, images, proc, max_new: int) -> torch.Tensor:
    """``model.generate`` (greedy) with the same processor: the baseline of the no-flag case."""
    from transformers import LogitsProcessorList

    batch = adapter.encode_prompts([messages], [images])
    batch = batch.to(adapter.model.device)
    with torch.no_grad():
        return adapter.model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new,
            logits_processor=LogitsProcessorList([proc]),
            pad_token_id=adapter.tokenizer.pad_token_id,
        )


def run_family(family: str, args, n: int) -> dict:
    """Both cases on one family."""
    from prefopt.reverse.resample import ResampleConfig, resample_no_cache, retrospective_generate

    adapter, tags = tagged_adapter(common.model_dir(family, args), args.dtype)
    eos = adapter.tokenizer.eos_token_id
    words = list(range(200, 208))
    slots = 8 if args.quick else 20
    max_new = 3 * slots + 1
    msgs, imgs = question()
    good = Phrases(tags, words[3:], set(), slots, eos)
    cfg = ResampleConfig(tau=0.1, temperature=0.0, max_new_tokens=max_new, hint=False)
    res = retrospective_generate(adapter, msgs, imgs, cfg, good)
    ref = plain_generate(adapter, msgs, imgs, good, max_new)
    assert res.attempts == 0, "the no-flag case flagged a phrase"
    sides = {
        "generate": lambda: common.timed(lambda: plain_generate(adapter, msgs, imgs, good, max_new)),
        "retrospective": lambda: common.timed(lambda: retrospective_generate(adapter, msgs, imgs, cfg, good)),
    }
    prompt_len = int(adapter.encode_prompts([msgs], [imgs])["input_ids"].shape[1])
    no_flag = {
        "tokens": len(res.token_ids),
        "generate_tokens": int(ref.shape[1]) - prompt_len,
        "times": common.interleave(sides, n),
    }
    no_flag["peak_mib"] = {
        "generate": common.measure_peak(lambda: plain_generate(adapter, msgs, imgs, good, max_new)),
        "retrospective": common.measure_peak(lambda: retrospective_generate(adapter, msgs, imgs, cfg, good)),
    }
    flaggy = Phrases(tags, words, set(words[:3]), slots, eos)
    fcfg = ResampleConfig(
        tau=0.1, temperature=0.7, max_new_tokens=4 * max_new, hint=False, seed=3, max_attempts=10 * slots
    )
    cached = retrospective_generate(adapter, msgs, imgs, fcfg, flaggy)
    scratch = resample_no_cache(adapter, msgs, imgs, fcfg, flaggy)
    assert cached.token_ids == scratch.token_ids, "cached and from-scratch runs disagree"
    sides = {
        "seed": lambda: common.timed(lambda: resample_no_cache(adapter, msgs, imgs, fcfg, flaggy)),
        "cached": lambda: common.timed(lambda: retrospective_generate(adapter, msgs, imgs, fcfg, flaggy)),
    }
    flags = {
        "attempts": cached.attempts,
        "forward_tokens": {"cached": cached.forward_tokens, "seed": scratch.forward_tokens},
        "times": common.interleave(sides, n),
    }
    flags["peak_mib"] = {
        "seed": common.measure_peak(lambda: resample_no_cache(adapter, msgs, imgs, fcfg, flaggy)),
        "cached": common.measure_peak(lambda: retrospective_generate(adapter, msgs, imgs, fcfg, flaggy)),
    }
    t = no_flag["times"]
    print(
        f"{family}: no flags retro {common.fmt_stats(t['retrospective'])} vs generate "
        f"{common.fmt_stats(t['generate'])}; {cached.attempts} flags: forward tokens {cached.forward_tokens} vs "
        f"{scratch.forward_tokens}",
        flush=True,
    )
    return {"family": family, "slots": slots, "no_flags": no_flag, "frequent_flags": flags}


def main(argv: list[str] | None = None) -> None:
    """Run both cases per family and print the ratios."""
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    n = common.repeats(args)
    runs = [run_family(f, args, n) for f in common.families(args)]
    ratios = []
    for r in runs:
        nf, ff = r["no_flags"], r["frequent_flags"]
        ratios.append(
            (
                f"resample {r['family']}: no flags, retrospective / generate time",
                nf["times"]["retrospective"]["median"] / nf["times"]["generate"]["median"],
                "<= 1.1",
            )
        )
        ratios.append(
            (
                f"resample {r['family']}: {ff['attempts']} flags, cached / seed forward tokens",
                ff["forward_tokens"]["cached"] / ff["forward_tokens"]["seed"],
                "<= 0.333",
            )
        )
        ratios.append(
            (
                f"resample {r['family']}: flags, cached / seed time",
                ff["times"]["cached"]["median"] / ff["times"]["seed"]["median"],
                "report",
            )
        )
        ratios.append(
            (
                f"resample {r['family']}: no flags, retrospective / generate peak memory",
                common.mem_ratio(nf["peak_mib"]["retrospective"], nf["peak_mib"]["generate"]),
                "report",
            )
        )
    common.emit("resample", {"config": args.config, "runs": runs}, ratios)


if __name__ == "__main__":
    main()
