"""GRPO with grounded rewards and the conflict-aware NTK regulariser ("Ground What You See", SPEC 1).

:class:`GroundedGRPOTrainer` subclasses TRL's ``GRPOTrainer`` (through :class:`prefopt._trl_compat.GRPOSeams`,
the only place that names TRL's private members) and changes four things:

- rewards: the recipe's reward list (:mod:`prefopt.grpo.reward_funcs`) as TRL reward functions with reward
  weights; TRL logs each one as ``rewards/<name>/mean``; judge counters are logged as ``judge/*``;
- loss: ``L_GRPO + weight·L_NCE`` (SPEC 1.5), with no extra forward (:mod:`prefopt.grpo.ntk_capture`);
- judge latency: the caption judge's requests start right after generation and are collected when TRL
  computes the rewards, after its old / reference log-prob forwards;
- rollouts: chosen by name from :data:`prefopt.grpo.rollout.ROLLOUTS` (``single`` = TRL's own generation,
  ``grounded`` = Ground-R1's multi-round grounding, :mod:`prefopt.grpo.grounded_rollout`).

Departure from the released code, on purpose: the default NTK mode is the paper's exact LM-head gradient
cosine (``gradient``); the released prompt hidden-state proxy is ``ntk.mode=hidden``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

from trl import GRPOConfig

from prefopt._trl_compat import GRPOSeams, swapped_processor
from prefopt.config import ConfigError
from prefopt.data.lengths import length_check, max_positions_of, model_length_check
from prefopt.data.video import load_video_frames
from prefopt.errors import ModelError
from prefopt.grpo import grounded_rollout, kl  # noqa: F401  (grounded_rollout registers rollout: grounded)
from prefopt.grpo.data import attach_videos, load_checked, video_inputs
from prefopt.grpo.ntk_capture import (  # noqa: F401  (HiddenCapture..ntk_features: re-exported names)
    HiddenCapture,
    NTKLossMixin,
    _HiddenCapture,
    backbone_of,
    lm_head_of,
    ntk_features,
)
from prefopt.grpo.reward_funcs import (
    build_reward_funcs,
    judge_logs,
    judge_state,
    judges_of,
    restore_judge_state,
    start_rewards,
)
from prefopt.grpo.rollout import (  # noqa: F401  (ROLLOUTS, RolloutStrategy: re-exported names)
    ROLLOUTS,
    RolloutStrategy,
    VideoAwareProcessor,
    WithVideos,
    make_rollout,
    row_videos,
)
from prefopt.models.base import limit_pixels  # noqa: F401  (re-exported: prefopt.grpo.trainer.limit_pixels)
from prefopt.models.registry import adapter_for_model
from prefopt.training.common import prepare_policy
from prefopt.training.reliability import ReliableTrainerMixin

logger = logging.getLogger(__name__)
class GroundedGRPOTrainer(NTKLossMixin, ReliableTrainerMixin, GRPOSeams):
    """TRL ``GRPOTrainer`` plus the NTK InfoNCE term, judge metrics, pluggable rollouts and reliability hooks."""

    def __init__(
        self,
        *args: Any,
        ntk: Any = None,
        rollout: str | RolloutStrategy = "single",
        load_video: Callable[[str], Any] | None = None,
        adapter: Any = None,
        kl_clamp: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # the only holder of model-family facts; built around the trainer's model when not given
        self.adapter = adapter or adapter_for_model(self.model)(self.model, self.processing_class)
        self.kl_clamp = kl_clamp  # the seed's clamp of log π_ref − log π_θ before k3 (prefopt.grpo.kl)
        self._kl_inputs: dict[str, Any] | None = None
        self.load_video = load_video
        self._video_rows: list[dict[str, Any] | None] | None = None
        self.rollout = make_rollout(rollout) if isinstance(rollout, str) else rollout
        self._init_ntk(ntk)
        self._reward_rows: list[dict[str, Any]] | None = None

    def resume_alignment(self) -> int:
        """Optimizer steps per generation batch: TRL's buffered completions are not checkpointed, so a
        resume is exact only from a checkpoint taken where a new generation batch starts."""
        micro = self.args.steps_per_generation * self.num_iterations  # TRL generates every `micro` micro-steps
        accum = self.args.gradient_accumulation_steps
        return math.lcm(micro, accum) // accum

    def generate_and_score(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The rollout strategy's generation and scoring, with video rows and data types attached."""
        if self.load_video is not None:
            inputs = attach_videos(inputs, self.load_video)
        self._video_rows = video_inputs(self.adapter, inputs)
        processor = self.processing_class
        if self._video_rows is not None:
            processor = VideoAwareProcessor(processor, row_videos(inputs))
        self._reward_rows = inputs  # for the judge requests started right after generation (generate_rollouts)
        try:
            with swapped_processor(self, processor):
                output = self.rollout.generate_and_score(self, inputs)
        finally:
            rows, self._video_rows, self._reward_rows = self._video_rows, None, None
        self._watch_reward_spread(output)
        if rows is not None:
            output["video_inputs"] = rows  # a list, so TRL's shuffle/split keeps it aligned with the rows
        # the hidden-state proxy compares examples of the same data type only (SPEC 1.5)
        output["data_types"] = [str(x.get("data_type") or "image") for x in inputs]
        return output

    def _watch_reward_spread(self, output: dict[str, Any]) -> None:
        """Warn when every group of ``zero_spread_steps`` generation batches in a row had equal rewards: their
        advantages are all 0, so the policy-gradient term of the loss is 0 and only the KL term trains."""
        advantages = output.get("advantages")
        if advantages is None or not self.model.training:
            return
        flat = bool((advantages.detach().abs() < 1e-8).all())
        self.zero_spread_streak = getattr(self, "zero_spread_streak", 0) + 1 if flat else 0
        self.spread_batches = getattr(self, "spread_batches", 0) + 1
        self.flat_batches = getattr(self, "flat_batches", 0) + int(flat)
        limit = max(1, self.reliability.settings.zero_spread_steps)
        if self.zero_spread_streak == limit and self.accelerator.is_main_process:
            logger.warning(
                "no reward spread: in the last %d generation batches every group of %d completions earned the "
                "same reward (frac_reward_zero_std = 1), so every advantage is 0 and GRPO learns nothing from "
                "the rewards; check the rewards (judge reachable? answer format?), raise temperature or "
                "num_generations, or curate prompts with `prefopt select`",
                limit,
                self.num_generations,
            )

    def generate_rollouts(self, prompts: list) -> tuple:
        """Generation by the rollout strategy (TRL's own for ``single``); then the judge requests start."""
        result = self.rollout.generate(self, prompts)
        start_rewards(self.reward_funcs, getattr(self, "_reward_rows", None), prompts, result[3])
        return result

    def tokenize_prompts(self, prompts: list) -> tuple:
        """TRL's tokenisation; a row without images gets ``[]`` (not None) so mixed image/video batches encode."""
        prompt_ids, images, multimodal_fields = super().tokenize_prompts(prompts)
        if images is not None:
            images = [imgs if imgs is not None else [] for imgs in images]
        return prompt_ids, images, multimodal_fields

    def token_logps(self, model, input_ids, *args, **kwargs):
        """TRL's log-probs, with video tensors supplied per row when the batch has video prompts."""
        kwargs = self.adapter.strip_video_inputs(kwargs)  # TRL's whole-batch video tensors: supplied per row below
        kwargs = self.rollout.model_kwargs(self, input_ids, kwargs)
        call = model
        if self._video_rows is not None:
            call = WithVideos(model, self._video_rows, self.adapter)
        if self._fused_ntk_wanted():
            out = self._fused_policy_logps(model, call, input_ids, *args, **kwargs)
        else:
            out = super().token_logps(call, input_ids, *args, **kwargs)
        if self._kl_inputs is not None:
            # the policy forward of compute_loss: TRL reads the reference log-probs right after this returns
            inputs, self._kl_inputs = self._kl_inputs, None  # once: only the first call is the policy's
            inputs["ref_per_token_logps"] = kl.clamped_reference(out[0], inputs["ref_per_token_logps"], self.kl_clamp)
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """GRPO loss from TRL, plus ``weight · InfoNCE`` on features captured during the same forward."""
        self._video_rows = inputs.get("video_inputs")
        ref = inputs.get("ref_per_token_logps")
        if getattr(self, "kl_clamp", None) and self.beta != 0.0 and ref is not None:
            self._kl_inputs = inputs
        try:
            return self._loss_with_ntk(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._video_rows, self._kl_inputs = None, None
            if ref is not None:
                inputs["ref_per_token_logps"] = ref  # TRL reuses buffered inputs (num_iterations > 1)

    def _judges(self) -> list[Any]:
        """The judge clients behind the reward functions (the caption reward's)."""
        return judges_of(self.reward_funcs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the caption judge's counters (``judge/*``, summed over ranks) to TRL's metrics."""
        logs.update(judge_logs(self.reward_funcs, self.accelerator.device))
        batches = getattr(self, "spread_batches", 0)
        limit = max(1, self.reliability.settings.zero_spread_steps)
        if "train_runtime" in logs and batches and self.flat_batches == batches and batches < limit:
            if self.accelerator.is_main_process:  # a run shorter than the streak warning: say it at the end
                logger.warning(
                    "nothing was learned from the rewards: in all %d generation batches every group's completions "
                    "earned the same reward (frac_reward_zero_std = 1, advantages 0)",
                    batches,
                )
        super().log(logs, start_time)

    def checkpoint_state(self) -> dict[str, Any]:
        """The judge counters summed over ranks, saved with each checkpoint (a collective: every rank calls it)."""
        return judge_state(self.reward_funcs, self.accelerator.device)

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Continue the judge counters of a resumed run; the saved values are totals, so rank 0 holds them."""
        restore_judge_state(self.reward_funcs, state, self.accelerator.is_main_process)


def build_trainer(recipe: Any, adapter: Any = None, train_dataset: Any = None) -> GroundedGRPOTrainer:
    """A ready-to-train :class:`GroundedGRPOTrainer` for a validated recipe."""
    report = None
    if train_dataset is None:  # before the model: bad data is reported in seconds, not after the load
        reserve = int(recipe.training_args().get("max_completion_length") or 0)
        policy = getattr(recipe.data, "overlong", "truncate")
        if adapter is None:
            check = model_length_check(recipe.model.name_or_path, reserve, policy,
                                       trust_remote_code=recipe.model.trust_remote_code)
        else:
            check = length_check(adapter.tokenizer, max_positions_of(adapter.model.config), reserve, policy)
        train_dataset, tracker = load_checked(recipe.data, check)
        report = tracker.summary()
    if adapter is None:
        adapter = prepare_policy(recipe.model, recipe.lora, seed=recipe.training_args().get("seed", 42))
    adapter.limit_pixels(recipe.max_pixels)
    has_video = "videos" in train_dataset.column_names and any(train_dataset["videos"])
    if has_video and recipe.training_args().get("use_vllm"):
        # prefopt hands video frames to the processor itself; TRL's vLLM path only forwards images
        raise ConfigError(f"{recipe.data.path}: video prompts need training.use_vllm=false")
    if has_video and not adapter.supports_video:
        raise ModelError(
            f"{recipe.data.path}: the data has video prompts but {recipe.model.name_or_path} cannot read video"
        )
    funcs, weights = build_reward_funcs(recipe)
    try:
        args = GRPOConfig(**{**recipe.training_args(), "reward_weights": weights})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"training: {err}") from err
    rollout = make_rollout(recipe.rollout)
    rollout.configure(recipe)
    trainer = GroundedGRPOTrainer(
        model=adapter.model,
        reward_funcs=funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=adapter.processor,
        ntk=recipe.ntk,
        rollout=rollout,
        adapter=adapter,
        kl_clamp=recipe.kl_clamp,
        reliability=recipe.reliability,
        load_video=functools.partial(
            load_video_frames,
            num_frames=recipe.data.video_frames,
            fps=recipe.data.video_fps,
            max_pixels=recipe.data.video_max_pixels,
        ),
    )
    trainer.data_report = report
    return trainer
