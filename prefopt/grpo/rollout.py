"""GRPO rollout strategies by name, and the plumbing that feeds video prompts through TRL's forwards.

A :class:`RolloutStrategy` decides how the completions of a generation batch are produced and scored;
``single`` is TRL's own single-turn generation. Others register themselves with :func:`register_rollout`
(Ground-R1's multi-round grounding: :mod:`prefopt.grpo.grounded_rollout`). TRL's seams are reached through
:mod:`prefopt._trl_compat` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from prefopt._trl_compat import trl_generate, trl_generate_and_score
from prefopt.config import ConfigError


class RolloutStrategy:
    """How completions for a generation batch are produced and scored (default: TRL's single-turn rollout)."""

    name = "single"

    def configure(self, recipe: Any) -> None:
        """Read the strategy's settings from the recipe (the single-turn rollout has none)."""

    def generate_and_score(self, trainer: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Return TRL's batch dict (prompt/completion ids and masks, advantages, media tensors)."""
        return trl_generate_and_score(trainer, inputs)

    def generate(self, trainer: Any, prompts: list) -> tuple:
        """TRL's generation: prompt/completion ids, loss mask, completions, logprobs, extras, images."""
        return trl_generate(trainer, prompts)

    def model_kwargs(self, trainer: Any, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The media keyword arguments of a log-prob forward (unchanged for single-turn rollouts)."""
        return kwargs


#: Rollout strategies by recipe name; another module adds one with :func:`register_rollout`.
ROLLOUTS: dict[str, Callable[[], RolloutStrategy]] = {"single": RolloutStrategy}


def register_rollout(name: str, factory: Callable[[], RolloutStrategy]) -> None:
    """Make ``rollout: <name>`` build strategies with ``factory``."""
    ROLLOUTS[name] = factory


def make_rollout(name: str) -> RolloutStrategy:
    """The rollout strategy registered under ``name``."""
    if name not in ROLLOUTS:
        raise ConfigError(f"rollout: unknown strategy {name!r}; choose one of {sorted(ROLLOUTS)}")
    return ROLLOUTS[name]()


class WithVideos:
    """Calls the policy with each row's video tensors added: TRL's log-prob forward passes image tensors only.

    TRL calls the model on consecutive row chunks in order, so the wrapper walks ``rows`` with an offset. The
    adapter's modality map (text 0, image 1, video 2) is rebuilt from the ids because TRL's version is
    computed from a text without expanded video placeholders.
    """

    def __init__(self, model: Any, rows: list[dict[str, Any] | None], adapter: Any):
        self.model, self.rows, self.offset, self.adapter = model, rows, 0, adapter

    def __call__(self, **kwargs: Any) -> Any:
        input_ids = kwargs["input_ids"]
        rows = self.rows[self.offset : self.offset + input_ids.size(0)]
        self.offset += input_ids.size(0)
        videos = [r for r in rows if r is not None]
        if videos:
            for key in videos[0]:
                kwargs[key] = torch.cat([r[key] for r in videos]).to(input_ids.device)
            kwargs = self.adapter.with_modality_map(input_ids, kwargs)
        return self.model(**kwargs)


class VideoAwareProcessor:
    """The processor, except that a direct call on texts with video placeholders gets the batch's videos.

    TRL re-encodes the prompts with ``processor(images=..., text=...)`` to build the loss-forward tensors and
    never passes videos, which the processor rejects when the texts hold video placeholders.
    """

    def __init__(self, processor: Any, videos: list[Any]):
        self._processor, self._videos = processor, videos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("videos") is None and isinstance(kwargs.get("text"), list):
            kwargs["videos"] = self._videos
        return self._processor(*args, **kwargs)


def row_videos(rows: list[dict[str, Any]]) -> list[Any]:
    """The sampled frame lists of every video placeholder, in row and placeholder order."""
    return [
        part["video"]
        for row in rows
        for message in row["prompt"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "video"
    ]


# the names these helpers had inside prefopt.grpo.trainer
_WithVideos, _VideoAwareProcessor, _row_videos = WithVideos, VideoAwareProcessor, row_videos
