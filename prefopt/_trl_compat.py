"""The one module that touches TRL's private ``GRPOTrainer`` members (supported range: :data:`SUPPORTED_TRL`).

prefopt's GRPO trainer fills four of TRL's private seams (generation-and-scoring, generation, prompt
tokenisation, the per-token log-prob forward), reads TRL's metric store and its entropy-bonus flag, calls its
single-turn generator and swaps its ``processing_class`` for one call. All of that goes through this module:

- :class:`GRPOSeams`, a ``GRPOTrainer`` whose private seams call public-named hooks
  (``generate_and_score``, ``generate_rollouts``, ``tokenize_prompts``, ``token_logps``) that default to
  TRL's own code; prefopt's trainer overrides the hooks, never TRL's private names;
- thin named wrappers (:func:`generate_single_turn`, :func:`metric_store`, :func:`entropy_bonus_enabled`,
  :func:`swapped_processor`, :func:`suppressed_tokens`, :func:`generation_limit`).

At import every private member is checked to exist with the parameters prefopt passes
(:func:`check_trl`); a TRL outside the range whose members still fit only logs a warning, one whose members do
not fit fails here with one line naming the member and the supported range, not deep inside a training step.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import trl
from packaging.version import Version
from trl import GRPOTrainer

logger = logging.getLogger(__name__)

#: The TRL releases prefopt is tested with (pyproject.toml pins the same range).
SUPPORTED_TRL = (">=1.16", "<1.17")
_LOW, _HIGH = Version("1.16"), Version("1.17")

#: TRL's private ``GRPOTrainer`` methods prefopt calls or overrides, with the leading parameters it relies on.
PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_generate": ("self", "prompts"),
    "_tokenize_prompts": ("self", "prompts"),
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss"),
    "_generate_single_turn": ("self", "prompt_ids", "images", "multimodal_fields", "num_generations"),
}
#: TRL's private ``GRPOTrainer`` attributes prefopt reads (set in ``__init__``, so checked in its source). TRL's
#: per-family media pad-token ids are not read at all: the model adapter owns those ids (tests/test_architecture.py).
PRIVATE_ATTRIBUTES = ("_metrics", "_entropy_bonus_enabled")
#: Every TRL private name; no prefopt module but this one may name them (tests/test_architecture.py).
PRIVATE_NAMES = (*PRIVATE_METHODS, *PRIVATE_ATTRIBUTES)


class TRLCompatError(ImportError):
    """The installed TRL lacks a private member prefopt relies on, or its signature changed."""


def check_trl(cls: type = GRPOTrainer, version: str | None = None) -> None:
    """Check that ``cls`` has every private member prefopt uses, with the expected leading parameters."""
    version = version or trl.__version__
    where = f"trl {version} (prefopt supports trl{','.join(SUPPORTED_TRL)})"
    for name, expected in PRIVATE_METHODS.items():
        member = getattr(cls, name, None)
        if not callable(member):
            raise TRLCompatError(f"{where}: GRPOTrainer.{name} is missing")
        params = tuple(inspect.signature(member).parameters)
        if params[: len(expected)] != expected:
            raise TRLCompatError(f"{where}: GRPOTrainer.{name}{params} no longer starts with {expected}")
    try:
        source = inspect.getsource(cls.__init__)
    except (OSError, TypeError):  # an install without sources: the methods above were still checked
        source = None
    missing = [a for a in PRIVATE_ATTRIBUTES if source is not None and f"self.{a} =" not in source]
    if missing:
        raise TRLCompatError(f"{where}: GRPOTrainer.__init__ no longer sets {missing}")
    if not _LOW <= Version(version) < _HIGH:
        logger.warning("%s: untested TRL version; its private members still fit", where)


class GRPOSeams(GRPOTrainer):
    """``GRPOTrainer`` whose private seams call public-named hooks; each hook's default is TRL's own code."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return self.generate_and_score(inputs)

    def _generate(self, prompts: list) -> tuple:
        return self.generate_rollouts(prompts)

    def _tokenize_prompts(self, prompts: list) -> tuple:
        return self.tokenize_prompts(prompts)

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: Any, *args: Any, **kwargs: Any) -> tuple:
        return self.token_logps(model, input_ids, *args, **kwargs)

    def generate_and_score(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's batch dict (prompt/completion ids and masks, advantages, media tensors) for ``inputs``."""
        return trl_generate_and_score(self, inputs)

    def generate_rollouts(self, prompts: list) -> tuple:
        """TRL's 8-tuple: prompt/completion ids, loss mask, completions, logprobs, extras, images, tool images."""
        return trl_generate(self, prompts)

    def tokenize_prompts(self, prompts: list) -> tuple:
        """TRL's ``(prompt_ids, images, multimodal_fields)`` for conversational ``prompts``."""
        return GRPOTrainer._tokenize_prompts(self, prompts)

    def token_logps(self, model: Any, input_ids: Any, *args: Any, **kwargs: Any) -> tuple:
        """TRL's ``(per-token log-probs, entropies, aux loss)`` of the last ``logits_to_keep`` tokens."""
        return GRPOTrainer._get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs)


def trl_generate_and_score(trainer: GRPOTrainer, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """TRL's generation-and-scoring for ``trainer`` (its seams still call the trainer's hooks)."""
    return GRPOTrainer._generate_and_score_completions(trainer, inputs)


def trl_generate(trainer: GRPOTrainer, prompts: list) -> tuple:
    """TRL's own ``_generate`` (single-turn generation plus its completion-length metrics)."""
    return GRPOTrainer._generate(trainer, prompts)


def generate_single_turn(
    trainer: GRPOTrainer, prompt_ids: list, images: list | None, fields: dict[str, Any], num_generations: int = 1
) -> tuple[list, Any]:
    """``(completion_ids, logprobs)`` of one batched generation from token ids (and images) with TRL's backend."""
    return trainer._generate_single_turn(prompt_ids, images, fields, num_generations=num_generations)


def metric_store(trainer: GRPOTrainer, mode: str) -> dict[str, list[float]]:
    """TRL's per-mode metric lists (``train`` / ``eval``), averaged and logged at each logging step."""
    return trainer._metrics[mode]


def entropy_bonus_enabled(trainer: GRPOTrainer) -> bool:
    """Whether TRL backpropagates through the entropies (entropy coefficient or adaptive entropy)."""
    return bool(trainer._entropy_bonus_enabled)


@contextlib.contextmanager
def swapped_processor(trainer: GRPOTrainer, processor: Any) -> Iterator[Any]:
    """``trainer.processing_class`` replaced by ``processor`` inside the block (restored on any exit)."""
    saved, trainer.processing_class = trainer.processing_class, processor
    try:
        yield saved
    finally:
        trainer.processing_class = saved


@contextlib.contextmanager
def suppressed_tokens(trainer: GRPOTrainer, token_ids: list[int | None]) -> Iterator[None]:
    """Generation inside the block never writes ``token_ids``; the config's own list is restored after."""
    config = trainer.generation_config
    saved = getattr(config, "suppress_tokens", None)
    blocked = set(saved or []) | {t for t in token_ids if t is not None}
    config.suppress_tokens = sorted(blocked)
    try:
        yield
    finally:
        config.suppress_tokens = saved


@contextlib.contextmanager
def generation_limit(trainer: GRPOTrainer, max_new_tokens: int) -> Iterator[None]:
    """Generation inside the block writes at most ``max_new_tokens`` tokens."""
    config = trainer.generation_config
    saved, config.max_new_tokens = config.max_new_tokens, max_new_tokens
    try:
        yield
    finally:
        config.max_new_tokens = saved


check_trl()
