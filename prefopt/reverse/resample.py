"""Retrospective resampling at inference (REVERSE, SPEC 4.3), with the KV cache of the accepted prefix kept.

The model writes ``<SPAN>phrase</CN>`` around the phrases it states. At every closing tag we read
p = softmax(logits)[``</UN>``] (after any user logits processors, before temperature and top-p, so the check
does not depend on the sampling temperature; also when ``</CN>`` was the token sampled). When p > τ (or ``</UN>`` itself was sampled) the
phrase is flagged: we go back to the end of the previous accepted phrase and sample again with temperature
T ← min(T + ΔT, T0 + 0.5); T returns to T0 once a phrase is accepted. Optionally the flagged phrases (last 5) are written into the prompt as
"(Hint: potential incorrect phrases -> p1, …)". After K consecutive failures without an accepted phrase we
go back further, to the last sentence end; after N flagged phrases in total we give up and return the
accepted prefix (``success=False``) or the configured fallback.

A malformed span structure is rejected the same way, as the seed does: a ``</CN>``/``</UN>`` with no open
``<SPAN>``, a ``<SPAN>`` inside an open span, or the end of the answer inside an open span goes back to the
end of the last accepted phrase and counts as a flagged attempt (``format_errors`` counts them), with the
seed's phrase "format error" in the flagged list and hence in the hint.

How this departs from the seed: the seed called ``generate`` again on the whole prompt after every
rejection. Here one sampling loop runs over the model with a ``DynamicCache``; a rejection crops the cache
to the backtrack point (``DynamicCache.crop``) and feeds one token to get fresh logits. A hint rewrite
re-encodes the prompt, keeps the cache of the longest common prefix of old and new prompt when that prefix
holds every image token (the hint goes after the image), and otherwise prefills again. The seed's approach
stays available (``reuse_cache=False`` / :func:`resample_no_cache`) as the reference the tests and
benchmarks compare against: same control flow, same random draws, so equal outputs for equal seeds.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefopt.reverse.masking import reverse_token_ids

_TAG_RE = re.compile(r"<SPAN>|</CN>|</UN>")
_SENTENCE_END = (".", "!", "?", "\n")
#: What a malformed span structure is flagged as (the seed's "Format Error", lower-cased as its hints are).
FORMAT_ERROR = "format error"


@dataclass
class ResampleConfig:
    """Knobs of retrospective resampling (seed defaults in brackets)."""

    tau: float = 0.003  # flag threshold on p(</UN>) [0.003 generative, 0.5 yes/no, 0.01 Qwen]
    temperature: float = 0.0  # T0; 0 = greedy first pass
    temperature_step: float = 0.1  # ΔT added per rejection [0.05-0.1]
    max_temperature_gain: float = 0.5  # T never exceeds T0 + this
    top_p: float = 1.0
    max_new_tokens: int = 256
    local_retries: int = 10  # K: consecutive failures before the sentence-level backtrack
    max_attempts: int = 50  # N: flagged phrases in total before giving up
    hint: bool = True  # query rewriting with the flagged phrases
    hint_max_phrases: int = 5
    hint_template: str = "(Hint: potential incorrect phrases -> {phrases})"
    fallback: str = "prefix"  # on give-up: prefix (accepted prefix) | last (last attempt, tags stripped) | text
    fallback_text: str = "I cannot answer this question confidently."
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fallback not in ("prefix", "last", "text"):
            raise ValueError(f"fallback must be prefix, last or text, not {self.fallback!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")


@dataclass
class ResampleResult:
    """Outcome of one retrospective generation."""

    text: str  # final answer, tags stripped
    raw: str  # the tagged text that was kept
    flagged: list[str] = field(default_factory=list)  # every flagged phrase, in order
    attempts: int = 0  # flagged phrases (rejections)
    success: bool = True  # False when the N-limit was hit
    forward_tokens: int = 0  # tokens fed through the model, prompt and re-prefills included
    token_ids: list[int] = field(default_factory=list)  # kept generated ids (tags included)
    final_temperature: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)  # one per rejection: phrase, p, T, backtrack
    format_errors: int = 0  # rejections for a malformed span structure (included in ``attempts``)


def strip_tags(text: str) -> str:
    """Remove ``<SPAN>``, ``</CN>``, ``</UN>`` and tidy the spaces they leave."""
    text = _TAG_RE.sub("", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r" +([.,;:!?])", r"\1", text).strip()


def with_hint(messages: Sequence[dict[str, Any]], phrases: Sequence[str], template: str) -> list[dict[str, Any]]:
    """Copy of ``messages`` with the hint appended to the last user turn (just before the assistant turn)."""
    out = copy.deepcopy(list(messages))
    if not phrases:
        return out
    hint = template.format(phrases=", ".join(phrases))
    for msg in reversed(out):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"] = f"{content} {hint}"
        else:
            texts = [part for part in content if part.get("type") == "text"]
            if texts:
                texts[-1]["text"] = f"{texts[-1]['text']} {hint}"
            else:
                content.append({"type": "text", "text": hint})
        return out
    raise ValueError("messages hold no user turn to attach the hint to")


def sample_token(scores: Any, temperature: float, top_p: float, generator: Any) -> int:
    """One token from ``scores`` [V]: argmax at temperature 0, else nucleus sampling at ``temperature``."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(scores))
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # Keep the smallest head whose mass reaches top_p (the first token always stays).
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


class _ModelRunner:
    """Feeds tokens through the model and tracks the cache; counts every token it feeds."""

    def __init__(self, adapter: Any, reuse_cache: bool):
        self.model = adapter.model
        self.reuse_cache = reuse_cache
        self.image_ids = set(adapter.image_token_ids)
        self.forward_tokens = 0
        self.cache = None
        self.prompt_inputs: dict[str, Any] = {}
        self.prompt_ids: list[int] = []

    def _forward(self, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            out = self.model(**kwargs, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.forward_tokens += int(kwargs["input_ids"].shape[1])
        return out.logits[0, -1].float()

    def prefill(self, prompt_inputs: dict[str, Any], prefix: Sequence[int]) -> Any:
        """Fresh cache over ``prompt + prefix``; returns next-token logits."""
        import torch

        self.prompt_inputs = dict(prompt_inputs)
        self.prompt_ids = prompt_inputs["input_ids"][0].tolist()
        self.cache = None
        inputs = dict(prompt_inputs)
        if prefix:
            extra = torch.tensor([list(prefix)], dtype=inputs["input_ids"].dtype, device=inputs["input_ids"].device)
            n_prompt = inputs["input_ids"].shape[1]
            for key, value in prompt_inputs.items():
                # Per-token tensors (ids, masks, token-type ids) grow with the prefix; image tensors do not.
                if hasattr(value, "shape") and value.dim() == 2 and tuple(value.shape) == (1, n_prompt):
                    fill = extra if key == "input_ids" else torch.full_like(extra, 1 if "mask" in key else 0)
                    inputs[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
        return self._forward(**inputs)

    def step(self, token: int) -> Any:
        """Feed one sampled token; returns next-token logits."""
        import torch

        ids = torch.tensor([[token]], device=self.prompt_inputs["input_ids"].device)
        return self._forward(input_ids=ids)

    def rollback(self, prefix: Sequence[int]) -> Any:
        """Logits after ``prompt + prefix``: crop the cache and re-feed one token, or prefill from scratch."""
        import torch

        if not self.reuse_cache:
            return self.prefill(self.prompt_inputs, prefix)
        seq = self.prompt_ids + list(prefix)
        _crop_to(self.cache, len(seq) - 1)
        ids = torch.tensor([seq[-1:]], device=self.prompt_inputs["input_ids"].device)
        return self._forward(input_ids=ids)

    def new_prompt(self, prompt_inputs: dict[str, Any], prefix: Sequence[int]) -> Any:
        """Switch to a rewritten prompt: keep the cache of the common prefix when it holds all image tokens."""
        import torch

        new_ids = prompt_inputs["input_ids"][0].tolist()
        common = 0
        for a, b in zip(self.prompt_ids, new_ids):
            if a != b:
                break
            common += 1
        reusable = self.reuse_cache and 0 < common and not (set(new_ids[common:]) & self.image_ids)
        if not reusable:
            return self.prefill(prompt_inputs, prefix)
        # Keep at least one token to feed, so that fresh logits come out.
        keep = min(common, len(new_ids) + len(prefix) - 1)
        tail = (new_ids + list(prefix))[keep:]
        _crop_to(self.cache, keep)
        self.prompt_inputs = dict(prompt_inputs)
        self.prompt_ids = new_ids
        ids = torch.tensor([tail], device=prompt_inputs["input_ids"].device)
        return self._forward(input_ids=ids)


def _crop_to(cache: Any, length: int) -> None:
    """Cut a ``DynamicCache`` down to its first ``length`` positions (transformers 5 ``crop`` takes minus the count)."""
    remove = cache.get_seq_length() - length
    if remove < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} positions to {length}")
    if remove:
        cache.crop(-remove)


@dataclass
class _State:
    """Mutable bookkeeping of one retrospective generation."""

    temperature: float
    ids: list[int] = field(default_factory=list)
    accepted_end: int = 0  # ids[:accepted_end] is the accepted prefix
    local_failures: int = 0
    attempts: int = 0
    flagged: list[str] = field(default_factory=list)
    hint_phrases: list[str] = field(default_factory=list)
    last_attempt: list[int] = field(default_factory=list)
    format_errors: int = 0
    gave_up: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


class RetrospectiveSampler:
    """Samples one answer with retrospective verification; holds the tokenizer facts it needs."""

    def __init__(self, adapter: Any, config: ResampleConfig | None = None, logits_processor: Callable | None = None):
        self.adapter = adapter
        self.config = config or ResampleConfig()
        self.processor = logits_processor
        self.tokenizer = adapter.tokenizer
        self.span_id, self.cn_id, self.un_id = reverse_token_ids(self.tokenizer)
        self.eos_ids = _eos_ids(adapter)

    def __call__(
        self, messages: Sequence[dict[str, Any]], images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None, reuse_cache: bool = True,
    ) -> ResampleResult:
        """Generate an answer to ``messages``; ``reuse_cache=False`` is the seed's regenerate-from-scratch."""
        import torch

        cfg = self.config
        self._media = (list(images or []), list(videos or []))
        runner = _ModelRunner(self.adapter, reuse_cache)
        generator = torch.Generator().manual_seed(cfg.seed)
        state = _State(temperature=cfg.temperature)
        logits = runner.prefill(self._encode(messages), [])
        while len(state.ids) < cfg.max_new_tokens:
            scores = self._process(runner.prompt_ids + state.ids, logits)
            token = sample_token(scores.cpu(), state.temperature, cfg.top_p, generator)
            state.ids.append(token)
            if self._malformed(state, token):
                state.format_errors += 1
                self._reject(state, None, FORMAT_ERROR)
                if state.gave_up:
                    break
                logits = self._resume(state, runner, messages)
                continue
            if token in (self.cn_id, self.un_id):
                p_unconfident = float(torch.softmax(scores.float(), dim=-1)[self.un_id])
                if p_unconfident > cfg.tau or token == self.un_id:
                    self._reject(state, p_unconfident)
                    if state.gave_up:
                        break
                    logits = self._resume(state, runner, messages)
                    continue
                state.accepted_end, state.local_failures, state.temperature = len(state.ids), 0, cfg.temperature
            if token in self.eos_ids:
                break
            logits = runner.step(token)
        return self._result(state, runner.forward_tokens)

    def _encode(self, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
        images, videos = self._media
        batch = self.adapter.encode_prompts([list(messages)], [images] if images else None, [videos] if videos else None)
        device = next(self.adapter.model.parameters()).device
        return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}

    def _process(self, seq: list[int], logits: Any) -> Any:
        if self.processor is None:
            return logits
        import torch

        ids = torch.tensor([seq], device=logits.device)
        return self.processor(ids, logits[None].clone())[0]

    def _malformed(self, state: _State, token: int) -> bool:
        """Whether ``token`` breaks the span structure (the accepted prefix always ends outside a span)."""
        open_span = self.span_id in state.ids[state.accepted_end : -1]
        if token == self.span_id:
            return open_span  # nested <SPAN>
        if token in (self.cn_id, self.un_id):
            return not open_span  # a closing tag with nothing to close
        return token in self.eos_ids and open_span  # the answer ends inside a span

    def _reject(self, state: _State, p_unconfident: float | None, phrase: str | None = None) -> None:
        """Record the flagged phrase, raise the temperature and move the ids back to the backtrack point."""
        cfg = self.config
        state.attempts += 1
        phrase = self._phrase(state.ids[state.accepted_end :]) if phrase is None else phrase
        state.flagged.append(phrase)
        state.last_attempt = list(state.ids)
        event = {"phrase": phrase, "p_un": p_unconfident, "at": len(state.ids), "sentence_backtrack": False,
                 "format_error": phrase == FORMAT_ERROR and p_unconfident is None}
        state.events.append(event)
        if state.attempts >= cfg.max_attempts:
            state.gave_up = True
            state.ids = state.ids[: state.accepted_end]
            event.update(backtrack_to=state.accepted_end, temperature=state.temperature, gave_up=True)
            return
        state.local_failures += 1
        state.temperature = min(state.temperature + cfg.temperature_step, cfg.temperature + cfg.max_temperature_gain)
        if state.local_failures >= cfg.local_retries:
            state.accepted_end = self._sentence_start(state.ids, state.accepted_end)
            state.local_failures = 0
            event["sentence_backtrack"] = True
        state.ids = state.ids[: state.accepted_end]
        event.update(backtrack_to=state.accepted_end, temperature=state.temperature, gave_up=False)

    def _resume(self, state: _State, runner: _ModelRunner, messages: Sequence[dict[str, Any]]) -> Any:
        """Logits at the backtrack point; re-encode the prompt only when the hint list changed."""
        cfg = self.config
        if cfg.hint:
            phrases = _recent_unique(state.flagged, cfg.hint_max_phrases)
            if phrases != state.hint_phrases:
                state.hint_phrases = phrases
                prompt = self._encode(with_hint(messages, phrases, cfg.hint_template))
                return runner.new_prompt(prompt, state.ids)
        return runner.rollback(state.ids)

    def _phrase(self, segment: list[int]) -> str:
        """Text of the flagged phrase: after the last ``<SPAN>`` of the segment, closing tag excluded."""
        body = segment[:-1]
        if self.span_id in body:
            body = body[len(body) - body[::-1].index(self.span_id) :]
        return strip_tags(self.tokenizer.decode(body, skip_special_tokens=True))

    def _sentence_start(self, ids: list[int], before: int) -> int:
        """Position just after the last sentence end strictly before ``before`` (0 when there is none)."""
        for pos in range(before - 1, 0, -1):
            piece = self.tokenizer.decode([ids[pos - 1]], skip_special_tokens=True).rstrip(" ")
            if piece.endswith(_SENTENCE_END):
                return pos
        return 0

    def _decode(self, ids: list[int]) -> str:
        kept = [t for t in ids if t not in self.eos_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=False).strip()

    def _result(self, state: _State, forward_tokens: int) -> ResampleResult:
        cfg = self.config
        raw = self._decode(state.ids)
        text = strip_tags(raw)
        if state.gave_up and cfg.fallback == "last":
            raw = self._decode(state.last_attempt)
            text = strip_tags(raw)
        elif state.gave_up and cfg.fallback == "text":
            text = cfg.fallback_text
        return ResampleResult(
            text=text, raw=raw, flagged=list(state.flagged), attempts=state.attempts, success=not state.gave_up,
            forward_tokens=forward_tokens, token_ids=list(state.ids), final_temperature=state.temperature,
            events=list(state.events), format_errors=state.format_errors,
        )


def _recent_unique(phrases: Sequence[str], limit: int) -> list[str]:
    """The last ``limit`` distinct non-empty phrases, oldest first."""
    out: list[str] = []
    for phrase in reversed(phrases):
        if phrase and phrase not in out:
            out.append(phrase)
        if len(out) == limit:
            break
    return out[::-1]


def _eos_ids(adapter: Any) -> set[int]:
    """End-of-answer ids: the generation config's EOS ids plus the tokenizer's."""
    ids: set[int] = set()
    gen_cfg = getattr(adapter.model, "generation_config", None)
    for value in (getattr(gen_cfg, "eos_token_id", None), adapter.tokenizer.eos_token_id):
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, list | tuple) else [value]))
    return ids


def retrospective_generate(
    adapter: Any, messages: Sequence[dict[str, Any]], images: Sequence[Any] | None = None,
    config: ResampleConfig | None = None, logits_processor: Callable | None = None, videos: Sequence[Any] | None = None,
) -> ResampleResult:
    """Retrospective resampling of one answer, keeping the KV cache of the accepted prefix."""
    return RetrospectiveSampler(adapter, config, logits_processor)(messages, images, videos, reuse_cache=True)


def resample_no_cache(
    adapter: Any, messages: Sequence[dict[str, Any]], images: Sequence[Any] | None = None,
    config: ResampleConfig | None = None, logits_processor: Callable | None = None, videos: Sequence[Any] | None = None,
) -> ResampleResult:
    """Reference: the seed's approach, prefilling prompt + accepted prefix again after every backtrack."""
    return RetrospectiveSampler(adapter, config, logits_processor)(messages, images, videos, reuse_cache=False)
