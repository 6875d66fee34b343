"""Retrospective resampling control flow on the tiny models, driven by a scripted logits processor."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from prefopt.data.schema import user_message
from prefopt.models.tiny import TINY_FAMILIES as FAMILIES
from prefopt.reverse.resample import (
    ResampleConfig,
    resample_no_cache,
    retrospective_generate,
    sample_token,
    strip_tags,
    with_hint,
)

NEG = -1e9


class PhraseScript:
    """Logits processor that makes the model write ``<SPAN>word</CN>`` slots, with chosen words unconfident.

    ``slots[i]`` is a list of choices for slot ``i``; choice ``k`` is used on the k-th visit of the slot
    (the last one repeats). A choice is one token id (forced) or a list of ids (the model's own logits pick
    among them). After a word from ``bad`` the closing tag has p(</UN>) = ``p_bad``, otherwise 1e-6.
    ``period_after`` lists slots followed by a "." token. The state is read from the tags in the sequence
    (the prompt holds none), so it works for the cached and the from-scratch runs alike.
    """

    def __init__(self, tok_ids, slots, bad=(), p_bad=0.5, period_after=(), period_id=None, eos_id=None):
        self.span, self.cn, self.un = tok_ids
        self.slots, self.bad, self.p_bad = slots, set(bad), p_bad
        self.period_after, self.period_id, self.eos_id = set(period_after), period_id, eos_id
        self.visits: dict[int, int] = {}
        self.seen: list[list[int]] = []

    def _only(self, scores, allowed, values=None):
        out = torch.full_like(scores, NEG)
        for i, tok in enumerate(allowed):
            out[0, tok] = scores[0, tok] if values is None else values[i]
        return out

    def __call__(self, input_ids, scores):
        seq = input_ids[0].tolist()
        self.seen.append(seq)
        closed = sum(t in (self.cn, self.un) for t in seq)
        last = seq[-1]
        if last == self.span:
            self.visits[closed] = self.visits.get(closed, 0) + 1
            choices = self.slots[closed]
            choice = choices[min(self.visits[closed], len(choices)) - 1]
            return self._only(scores, choice if isinstance(choice, list) else [choice])
        if len(seq) > 1 and seq[-2] == self.span:
            p = self.p_bad if last in self.bad else 1e-6
            return self._only(scores, [self.cn, self.un], [0.0, math.log(p / (1 - p))])
        if last in (self.cn, self.un) and closed - 1 in self.period_after:
            return self._only(scores, [self.period_id])
        if closed < len(self.slots):
            return self._only(scores, [self.span])
        return self._only(scores, [self.eos_id])


@pytest.fixture(scope="module", params=FAMILIES)
def tagged(request, tiny_model_dirs):
    """A tiny adapter with the REVERSE tokens added (in memory), its tag ids and a few one-token words."""
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens

    adapter = load_adapter(str(tiny_model_dirs[request.param]), dtype="float32")
    ids = add_special_tokens(adapter, REVERSE_TOKENS)
    adapter.model.eval()
    tok = adapter.tokenizer
    words = {w: tok.encode(" " + w, add_special_tokens=False) for w in ("cat", "dog", "red", "blue", "tree", "car")}
    assert all(len(v) == 1 for v in words.values()), words
    words = {w: v[0] for w, v in words.items()}
    period = tok.encode(".", add_special_tokens=False)
    assert len(period) == 1
    tag_ids = tuple(ids[t] for t in REVERSE_TOKENS)
    return adapter, tag_ids, words, period[0]


def _script(tagged, slots, **kw):
    adapter, tag_ids, words, period = tagged
    as_id = [[[words[w] for w in c] if isinstance(c, list) else words[c] for c in slot] for slot in slots]
    bad = [words[w] for w in kw.pop("bad", ())]
    return PhraseScript(tag_ids, as_id, bad=bad, period_id=period, eos_id=adapter.tokenizer.eos_token_id, **kw)


def _ask(n_images=1):
    return [user_message("Describe the image.", n_images)], [Image.new("RGB", (56, 56), (200, 30, 30))]


def test_flag_backtrack_and_temperature_schedule(tagged):
    adapter = tagged[0]
    proc = _script(tagged, [["cat"], ["car", "car", "dog"], ["tree"]], bad=["car"])
    cfg = ResampleConfig(tau=0.1, temperature=0.2, temperature_step=0.3, max_temperature_gain=0.5, hint=False)
    msgs, imgs = _ask()
    res = retrospective_generate(adapter, msgs, imgs, cfg, proc)
    assert res.success and res.attempts == 2
    assert res.flagged == ["car", "car"]
    # Both rejections go back to just after the first phrase's </CN> (3 ids: <SPAN> cat </CN>).
    assert [e["backtrack_to"] for e in res.events] == [3, 3]
    # T0 = 0.2 -> 0.5 -> capped at T0 + 0.5 = 0.7; reset to T0 once "dog" is accepted.
    assert [round(e["temperature"], 6) for e in res.events] == [0.5, 0.7]
    assert all(e["p_un"] == pytest.approx(0.5) for e in res.events)
    assert res.final_temperature == pytest.approx(0.2)
    assert res.text == "cat dog tree"
    assert res.raw.count("<SPAN>") == 3 and "</UN>" not in res.raw and "car" not in res.raw


def test_hint_rewrites_the_prompt(tagged):
    adapter = tagged[0]
    proc = _script(tagged, [["cat"], ["car", "red", "dog"]], bad=["car", "red"])
    cfg = ResampleConfig(tau=0.1, hint=True)
    msgs, imgs = _ask()
    res = retrospective_generate(adapter, msgs, imgs, cfg, proc)
    assert res.success and res.flagged == ["car", "red"] and res.text == "cat dog"
    decoded = adapter.tokenizer.decode(proc.seen[-1], skip_special_tokens=False)
    assert "(Hint: potential incorrect phrases -> car, red)" in decoded
    # The hint sits in the user turn: before the generated answer, after the question.
    assert decoded.index("Describe the image.") < decoded.index("(Hint:") < decoded.index("cat")
    first = adapter.tokenizer.decode(proc.seen[0], skip_special_tokens=False)
    assert "Hint" not in first


def test_hint_keeps_only_last_five_phrases():
    msgs = [user_message("Q?", 1), {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
            user_message("Again?")]
    out = with_hint(msgs, ["a", "b"], "(Hint: potential incorrect phrases -> {phrases})")
    assert out[2]["content"][-1]["text"] == "Again? (Hint: potential incorrect phrases -> a, b)"
    assert msgs[2]["content"][-1]["text"] == "Again?"  # the input is not modified
    from prefopt.reverse.resample import _recent_unique

    assert _recent_unique(["a", "b", "a", "c", "d", "e", "f"], 5) == ["b", "a", "c", "d", "e", "f"][-5:]


def test_k_limit_goes_back_to_the_sentence_start(tagged):
    adapter = tagged[0]
    # "<SPAN>cat</CN> . <SPAN>red</CN> <SPAN>car</UN>..." : "car" fails K=3 times in a row.
    proc = _script(tagged, [["cat"], ["red", "blue"], ["car", "car", "car", "tree"]], bad=["car"], period_after=[0])
    cfg = ResampleConfig(tau=0.1, local_retries=3, hint=False)
    msgs, imgs = _ask()
    res = retrospective_generate(adapter, msgs, imgs, cfg, proc)
    assert res.success and res.attempts == 3
    assert [e["sentence_backtrack"] for e in res.events] == [False, False, True]
    # Local backtracks stop after "red</CN>" (7 ids); the sentence backtrack goes to just after "." (4 ids).
    assert [e["backtrack_to"] for e in res.events] == [7, 7, 4]
    assert res.text == "cat. blue tree"


def test_n_limit_gives_up_with_the_accepted_prefix(tagged):
    adapter = tagged[0]
    proc = _script(tagged, [["cat"], ["dog"], ["car"]], bad=["car"])
    cfg = ResampleConfig(tau=0.1, max_attempts=4, local_retries=10, hint=False)
    msgs, imgs = _ask()
    res = retrospective_generate(adapter, msgs, imgs, cfg, proc)
    assert not res.success and res.attempts == 4 and res.flagged == ["car"] * 4
    assert res.text == "cat dog" and "<SPAN>" in res.raw and "car" not in res.raw
    last = retrospective_generate(adapter, msgs, imgs, ResampleConfig(tau=0.1, max_attempts=2, hint=False, fallback="last"),
                                  _script(tagged, [["cat"], ["dog"], ["car"]], bad=["car"]))
    assert last.text == "cat dog car" and not last.success
    fixed = retrospective_generate(adapter, msgs, imgs, ResampleConfig(tau=0.1, max_attempts=2, hint=False, fallback="text",
                                   fallback_text="unsure"), _script(tagged, [["cat"], ["car"]], bad=["car"]))
    assert fixed.text == "unsure"


def test_tau_decides_and_confident_phrases_pass(tagged):
    adapter = tagged[0]
    msgs, imgs = _ask()
    # p(</UN>) = 0.05 after "car": flagged at tau 0.01, accepted at tau 0.1.
    low = retrospective_generate(adapter, msgs, imgs, ResampleConfig(tau=0.01, max_attempts=1, hint=False),
                                 _script(tagged, [["car"]], bad=["car"], p_bad=0.05))
    high = retrospective_generate(adapter, msgs, imgs, ResampleConfig(tau=0.1, hint=False),
                                  _script(tagged, [["car"]], bad=["car"], p_bad=0.05))
    assert low.attempts == 1 and not low.success and low.text == ""
    assert high.attempts == 0 and high.success and high.text == "car"


@pytest.mark.parametrize("hint", [False, True])
def test_cache_reuse_counts_far_fewer_tokens_with_equal_outputs(tagged, hint):
    adapter = tagged[0]
    free = ["cat", "dog", "red", "blue", "tree"]
    slots = [[free]] * 4 + [["car"] * 5 + [free]] + [[free]]
    cfg = ResampleConfig(tau=0.1, temperature=0.7, hint=hint, seed=3)
    msgs, imgs = _ask()
    cached = retrospective_generate(adapter, msgs, imgs, cfg, _script(tagged, slots, bad=["car"]))
    scratch = resample_no_cache(adapter, msgs, imgs, cfg, _script(tagged, slots, bad=["car"]))
    assert cached.attempts == scratch.attempts == 5
    assert cached.token_ids == scratch.token_ids and cached.text == scratch.text and cached.raw == scratch.raw
    assert cached.flagged == scratch.flagged and cached.success and scratch.success
    n_gen = len(cached.token_ids)
    if not hint:
        # Each rejection costs the cached run one token; the scratch run re-feeds prompt + 12-id prefix.
        assert scratch.forward_tokens - cached.forward_tokens > 5 * 10
        assert cached.forward_tokens <= scratch.forward_tokens / 3
    else:
        # With hints the prompt changes, but the cached run keeps everything up to the image.
        assert cached.forward_tokens < scratch.forward_tokens
    assert cached.forward_tokens >= n_gen


def test_sample_token_top_p_and_greedy():
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert sample_token(scores, 0.0, 1.0, None) == 0
    gen = torch.Generator().manual_seed(0)
    # top_p 0.6 keeps {0, 1} (0.5 < 0.6 <= 0.8): nothing else may be drawn.
    draws = {sample_token(scores, 1.0, 0.6, gen) for _ in range(200)}
    assert draws == {0, 1}
    draws = {sample_token(scores, 1.0, 1.0, gen) for _ in range(400)}
    assert draws == {0, 1, 2, 3}


def test_strip_tags():
    assert strip_tags("<SPAN>A cat</CN> sits on <SPAN>a mat</CN> .") == "A cat sits on a mat."
    assert strip_tags(" <SPAN> dog</UN>") == "dog"


def test_cache_crop_and_prompt_rewrite_give_the_logits_of_a_fresh_prefill(tagged):
    """The cached runner's logits after a rollback and after a hint rewrite equal a from-scratch prefill's."""
    from prefopt.reverse.resample import RetrospectiveSampler, _ModelRunner

    adapter, tag_ids, words, period = tagged
    sampler = RetrospectiveSampler(adapter)
    msgs, imgs = _ask()
    sampler._media = (imgs, [])
    prompt = sampler._encode(msgs)
    span, cn, _ = tag_ids
    answer = [span, words["cat"], cn, period, span, words["dog"], cn, span, words["car"]]
    cached = _ModelRunner(adapter, reuse_cache=True)
    cached.prefill(prompt, [])
    for tok in answer:
        cached.step(tok)
    fresh = _ModelRunner(adapter, reuse_cache=False)
    torch.testing.assert_close(cached.rollback(answer[:3]), fresh.prefill(prompt, answer[:3]), atol=1e-4, rtol=1e-4)
    before = cached.forward_tokens
    hinted = sampler._encode(with_hint(msgs, ["car"], ResampleConfig.hint_template))
    got = cached.new_prompt(hinted, answer[:3])
    torch.testing.assert_close(got, fresh.prefill(hinted, answer[:3]), atol=1e-4, rtol=1e-4)
    # Only the hint tail and the 3-id prefix were fed, not the common prefix (image tokens included) again.
    old, new = prompt["input_ids"][0].tolist(), hinted["input_ids"][0].tolist()
    common = next(i for i, (x, y) in enumerate(zip(old, new)) if x != y)
    assert any(t in adapter.image_token_ids for t in new[:common])
    assert cached.forward_tokens - before <= len(new) - common + 3 + 1
    for tok in answer[3:6]:
        got = cached.step(tok)
    torch.testing.assert_close(got, fresh.prefill(hinted, answer[:6]), atol=1e-4, rtol=1e-4)
