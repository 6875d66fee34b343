"""GRPO with grounded rewards and the conflict-aware NTK regulariser ("Ground What You See", SPEC 1).

:class:`GroundedGRPOTrainer` subclasses TRL's ``GRPOTrainer`` and changes three things:

- rewards: accuracy + 0.1·format + caption (judge over an OpenAI-compatible API) as TRL reward functions
  with reward weights; TRL logs each one as ``rewards/<name>/mean``; judge counters are logged as ``judge/*``;
- loss: ``L_GRPO + weight·L_NCE`` (SPEC 1.5), with no extra forward. Gradient mode: the policy's loss forward
  is prefopt's (:mod:`prefopt.grpo.fused_head`): its LM head computes TRL's per-token log-probs, the entropies
  and the NTK Gram matrix from the same vocabulary chunks, so no logits are recomputed and no ``[N, V]``
  tensor is kept (TRL's head + a recompute from captured hidden states remains the fallback for an entropy
  bonus, an MoE aux loss or a LoRA-wrapped head). Hidden mode: a forward hook on the language backbone
  captures the LM head's input hidden states during TRL's own loss forward;
- judge latency: the caption judge's requests start right after generation (``_start_rewards``) and are
  collected when TRL computes the rewards, after its old / reference log-prob forwards;
- rollouts: chosen by name from :data:`ROLLOUTS` (``single`` = TRL's own generation); other strategies such as
  Ground-R1's multi-round grounding register themselves there.

Departure from the released code, on purpose: the default NTK mode is the paper's exact LM-head gradient
cosine (``gradient``); the released prompt hidden-state proxy is ``ntk.mode=hidden``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from prefopt.models.base import limit_pixels  # noqa: F401  (re-exported: prefopt.grpo.trainer.limit_pixels)
from prefopt.models.registry import adapter_for_model
from prefopt.training.reliability import ReliableTrainerMixin

logger = logging.getLogger(__name__)


class RolloutStrategy:
    """How completions for a generation batch are produced and scored (default: TRL's single-turn rollout)."""

    name = "single"

    def configure(self, recipe: Any) -> None:
        """Read the strategy's settings from the recipe (the single-turn rollout has none)."""

    def generate_and_score(self, trainer: GRPOTrainer, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Return TRL's batch dict (prompt/completion ids and masks, advantages, media tensors)."""
        return GRPOTrainer._generate_and_score_completions(trainer, inputs)

    def generate(self, trainer: GRPOTrainer, prompts: list) -> tuple:
        """TRL's ``_generate``: prompt/completion ids, loss mask, completions, logprobs, extras, images."""
        return GRPOTrainer._generate(trainer, prompts)

    def model_kwargs(
        self, trainer: GRPOTrainer, input_ids: torch.Tensor, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The media keyword arguments of a log-prob forward (unchanged for single-turn rollouts)."""
        return kwargs


#: Rollout strategies by recipe name; another module adds e.g. ``ROLLOUTS["grounded"] = GroundedRollout``.
ROLLOUTS: dict[str, Callable[[], RolloutStrategy]] = {"single": RolloutStrategy}


def make_rollout(name: str) -> RolloutStrategy:
    """The rollout strategy registered under ``name``."""
    import prefopt.grpo.grounded_rollout  # noqa: F401  (registers "grounded")
    from prefopt.config import ConfigError

    if name not in ROLLOUTS:
        raise ConfigError(f"rollout: unknown strategy {name!r}; choose one of {sorted(ROLLOUTS)}")
    return ROLLOUTS[name]()


class _HiddenCapture:
    """Collects the backbone's ``last_hidden_state`` while armed (one tensor per forward chunk)."""

    def __init__(self) -> None:
        self.armed = False
        self.chunks: list[torch.Tensor] = []

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if self.armed:
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            self.chunks.append(hidden)

    @contextlib.contextmanager
    def armed_for(self):
        """Capture only during the policy's loss forward (generation and reference passes are ignored)."""
        self.chunks, self.armed = [], True
        try:
            yield self
        finally:
            self.armed = False

    def hidden(self) -> torch.Tensor:
        """The captured hidden states ``[B, L, d]`` (chunks of TRL's batched forward re-joined)."""
        if not self.chunks:
            raise RuntimeError(
                "the NTK hook captured no hidden states: the loss forward did not run the backbone"
            )
        return torch.cat(self.chunks, dim=0)


def backbone_of(model: Any) -> torch.nn.Module:
    """The module whose output feeds the LM head (PEFT and accelerate wrappers removed)."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module  # DDP / DeepSpeed engine
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.base_model


def lm_head_of(model: Any) -> torch.nn.Module:
    """The output embedding (LM head) of a possibly wrapped model."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    return inner.get_output_embeddings()


def ntk_features(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    inputs: dict[str, Any],
    settings: Any,
    temperature: float = 1.0,
    bank: Any = None,
) -> torch.Tensor:
    """The square similarity matrix (NaN = pair not compared) from hidden states of prompt + completion.

    ``hidden[:, t]`` predicts token ``t + 1``, so the completion's predicting states start one position before
    the first completion token. Gradient mode builds the LM-head gradient Gram matrix ``[B, B]`` and its cosine;
    hidden mode averages the prompt's hidden states and compares each distinct prompt with peers of the same
    data type from the batch's other prompts and the feature ``bank`` (never copies of itself; see
    :func:`prefopt.grpo.ntk.bank_similarity`), updating the bank.
    """
    from prefopt.grpo import ntk

    prompt_len = inputs["prompt_ids"].size(1)
    completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        completion_mask = completion_mask * inputs["tool_mask"]  # multi-turn rollouts: policy tokens only
    if settings.mode == "hidden":
        features = ntk.hidden_proxy_features(hidden[:, :prompt_len], inputs["prompt_mask"])
        data_types = inputs.get("data_types") or ["image"] * hidden.size(0)
        keys = ntk.prompt_keys(inputs["prompt_ids"], inputs["prompt_mask"])
        return ntk.bank_similarity(features, keys, data_types, bank, peers=settings.peers)
    states = hidden[:, prompt_len - 1 : prompt_len - 1 + completion_ids.size(1)]
    logits = lm_head(states.to(lm_head.weight.dtype)) / temperature
    gram = ntk.gradient_kernel(states, logits, completion_ids, completion_mask)
    return ntk.cosine_from_gram(gram)


class _WithVideos:
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


class _VideoAwareProcessor:
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


def _row_videos(rows: list[dict[str, Any]]) -> list[Any]:
    """The sampled frame lists of every video placeholder, in row and placeholder order."""
    return [
        part["video"]
        for row in rows
        for message in row["prompt"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "video"
    ]


class GroundedGRPOTrainer(ReliableTrainerMixin, GRPOTrainer):
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
        self.ntk_settings = ntk if ntk is not None and ntk.enabled else None
        self.rollout = make_rollout(rollout) if isinstance(rollout, str) else rollout
        self._capture = _HiddenCapture()
        # hidden mode: recent prompts' proxy features, the peers of a micro-batch that holds one prompt's copies
        from prefopt.grpo.ntk import FeatureBank

        self.ntk_bank = FeatureBank(getattr(self.ntk_settings, "bank_size", 64) if self.ntk_settings else 0)
        self._hook = backbone_of(self.model).register_forward_hook(self._capture)
        # gradient-mode NTK: the loss forward's own LM-head chunks also build the Gram matrix (fused_head.py)
        self._fused_ntk: dict[str, Any] | None = None
        self._reward_rows: list[dict[str, Any]] | None = None

    def resume_alignment(self) -> int:
        """Optimizer steps per generation batch: TRL's buffered completions are not checkpointed, so a
        resume is exact only from a checkpoint taken where a new generation batch starts."""
        import math

        micro = self.args.steps_per_generation * self.num_iterations  # TRL generates every `micro` micro-steps
        accum = self.args.gradient_accumulation_steps
        return math.lcm(micro, accum) // accum

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        from prefopt.grpo.data import attach_videos, video_inputs

        if self.load_video is not None:
            inputs = attach_videos(inputs, self.load_video)
        self._video_rows = video_inputs(self.adapter, inputs)
        processor = self.processing_class
        if self._video_rows is not None:
            self.processing_class = _VideoAwareProcessor(processor, _row_videos(inputs))
        self._reward_rows = inputs  # for the judge requests started right after generation (_generate)
        try:
            output = self.rollout.generate_and_score(self, inputs)
        finally:
            rows, self._video_rows, self.processing_class = self._video_rows, None, processor
            self._reward_rows = None
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

    def _generate(self, prompts: list):
        """Generation by the rollout strategy (TRL's own for ``single``); then the judge requests start."""
        result = self.rollout.generate(self, prompts)
        self._start_rewards(prompts, result[3])
        return result

    def _start_rewards(self, prompts: list, completions: list) -> None:
        """Let reward functions with a ``start`` method (the caption judge) send their requests now, so their
        latency overlaps TRL's old / reference log-prob forwards; the reward call collects the answers."""
        rows = getattr(self, "_reward_rows", None)
        if not rows or len(rows) != len(completions):
            return
        skip = ("prompt", "completion", "completion_ids")
        columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in skip}
        for func in self.reward_funcs:
            start = getattr(func, "start", None)
            if callable(start):
                start(prompts=prompts, completions=completions, **columns)

    def _tokenize_prompts(self, prompts: list):
        """TRL's tokenisation; a row without images gets ``[]`` (not None) so mixed image/video batches encode."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        if images is not None:
            images = [imgs if imgs is not None else [] for imgs in images]
        return prompt_ids, images, multimodal_fields

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        """TRL's log-probs, with video tensors supplied per row when the batch has video prompts."""
        kwargs = self.adapter.strip_video_inputs(kwargs)  # TRL's whole-batch video tensors: supplied per row below
        kwargs = self.rollout.model_kwargs(self, input_ids, kwargs)
        call = model
        if self._video_rows is not None:
            call = _WithVideos(model, self._video_rows, self.adapter)
        if self._fused_ntk is not None and self._fused_ntk["gram"] is None:
            out = self._fused_policy_logps(model, call, input_ids, *args, **kwargs)
        else:
            out = super()._get_per_token_logps_and_entropies(call, input_ids, *args, **kwargs)
        if self._kl_inputs is not None:
            # the policy forward of compute_loss: TRL reads the reference log-probs right after this returns
            from prefopt.grpo.kl import clamped_reference

            inputs, self._kl_inputs = self._kl_inputs, None  # once: only the first call is the policy's
            inputs["ref_per_token_logps"] = clamped_reference(out[0], inputs["ref_per_token_logps"], self.kl_clamp)
        return out

    def _fused_policy_logps(self, model, call, input_ids, attention_mask, logits_to_keep, **kwargs):
        """The loss forward's log-probs and entropies, with the NTK Gram matrix from the same head chunks."""
        from prefopt.grpo.fused_head import policy_forward_with_gram

        for key in ("batch_size", "compute_entropy", "compute_aux_loss"):
            kwargs.pop(key, None)
        logps, entropy, gram = policy_forward_with_gram(
            model, call, input_ids, attention_mask, logits_to_keep, self._fused_ntk["mask"], self.temperature,
            kwargs, self.accelerator.autocast())
        self._fused_ntk["gram"] = gram
        return logps, entropy, None

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

    def _loss_with_ntk(self, model, inputs, return_outputs, num_items_in_batch):
        if self.ntk_settings is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._fused_ntk = self._fused_ntk_request(model, inputs)
        try:
            with self._capture.armed_for():
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            fused, self._fused_ntk = self._fused_ntk, None
        gram = fused["gram"] if fused is not None else None
        hidden = self._capture.hidden() if gram is None else None
        nce, positives = self.ntk_loss(hidden, inputs, model, gram=gram)
        mode = "train" if self.model.training else "eval"
        # TRL scales its loss for gradient accumulation itself; scale the extra term the same way
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        self._metrics[mode]["ntk/loss"].append(self.accelerator.gather(nce.detach()).mean().item())
        self._metrics[mode]["ntk/positives"].append(positives)
        return loss + self.ntk_settings.weight * nce / normalizer

    def _fused_ntk_request(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Ask the loss forward for the Gram matrix when the gradient mode can share its head chunks.

        Not with an entropy bonus (TRL backpropagates through the entropies, which the fused pass only
        reports), an MoE aux loss, or a non-linear (LoRA-wrapped) head: those keep TRL's head + recompute.
        """
        from prefopt.grpo.fused_head import supports_fused_head

        if self.ntk_settings.mode != "gradient" or self._entropy_bonus_enabled or self.aux_loss_enabled:
            return None
        if not supports_fused_head(model):
            return None
        mask = inputs["completion_mask"]
        if inputs.get("tool_mask") is not None:
            mask = mask * inputs["tool_mask"]  # multi-turn rollouts: policy tokens only
        return {"mask": mask, "gram": None}

    def ntk_loss(
        self, hidden: torch.Tensor | None, inputs: dict[str, Any], model: Any, gram: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float]:
        """InfoNCE over the batch and the mean number of positives per example (``gram``: from the loss pass)."""
        from prefopt.grpo import ntk

        settings = self.ntk_settings
        threshold = settings.resolved_threshold()
        if gram is not None:
            similarity = ntk.cosine_from_gram(gram)
        else:
            bank = getattr(self, "ntk_bank", None) if model.training else None  # evaluation never fills the bank
            similarity = ntk_features(hidden, lm_head_of(model), inputs, settings, self.temperature, bank=bank)
        # the released proxy counts ties at the threshold as positives; the paper's rule is strict
        inclusive = settings.mode == "hidden"
        nce = ntk.info_nce(similarity, threshold, settings.temperature, inclusive=inclusive)
        eye = torch.eye(similarity.size(0), dtype=torch.bool, device=similarity.device)
        compared = ~eye & ~torch.isnan(similarity)
        below = similarity <= threshold if inclusive else similarity < threshold
        counted = compared.any(dim=1)  # rows that were compared (hidden mode: the batch's prompts, not the bank)
        positives = (below & compared).sum(dim=1)[counted].float().mean().item() if counted.any() else 0.0
        return nce, positives

    def _judges(self) -> list[Any]:
        """The judge clients behind the reward functions (the caption reward's)."""
        from prefopt.rewards.judge import JudgeClient

        return [f.judge for f in self.reward_funcs if isinstance(getattr(f, "judge", None), JudgeClient)]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the caption judge's counters (``judge/*``, summed over ranks) to TRL's metrics."""
        from prefopt.rewards.judge import counter_stats, summed_counters

        for func in self.reward_funcs:
            stats = getattr(func, "stats", None)
            if callable(stats):
                for key, value in stats().items():
                    if isinstance(value, int | float):
                        logs[key if "/" in key else f"judge/{key}"] = float(value)
        for judge in self._judges():  # every rank logs at the same steps, so the all-reduce is safe here
            logs.update(counter_stats(summed_counters(judge.counters(), self.accelerator.device)))
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
        from prefopt.rewards.judge import summed_counters

        return {"judge": [summed_counters(j.counters(), self.accelerator.device) for j in self._judges()]}

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Continue the judge counters of a resumed run; the saved values are totals, so rank 0 holds them."""
        for judge, counters in zip(self._judges(), state.get("judge") or [], strict=False):
            judge.load_counters(counters if self.accelerator.is_main_process else {})


def build_reward_funcs(recipe: Any, cache_root: str | None = None) -> tuple[list[Any], list[float]]:
    """Accuracy, format (by template) and, if on, caption reward functions with their weights (SPEC 1.3).

    The judge's answer cache goes to ``<cache_root>/judge_cache`` (default: the recipe's output folder)
    unless ``rewards.judge.cache_dir`` names another folder or ``rewards.judge.cache`` is false."""
    from prefopt.rewards import format as fmt
    from prefopt.rewards.answers import accuracy_reward

    rewards = recipe.rewards
    if recipe.rollout == "grounded":
        from prefopt.grpo.grounded_rollout import final_round

        # Ground-R1: answer rewards on the final round, 2 · mean per-round format (SPEC 2); no caption stage
        return [final_round(accuracy_reward), fmt.grounded_format_reward], [
            rewards.accuracy_weight,
            rewards.format_weight,
        ]
    format_fn = fmt.four_stage_format_reward if recipe.data.template == "four_stage" else fmt.r1_format_reward
    funcs: list[Any] = [accuracy_reward, format_fn]
    weights = [rewards.accuracy_weight, rewards.format_weight]
    if rewards.caption:
        from prefopt.grpo.config import judge_config
        from prefopt.rewards.caption import CaptionReward
        from prefopt.rewards.judge import JudgeClient

        config = judge_config(recipe)
        if config.cache and not config.cache_dir:
            # on by default, inside the run: a resumed run (or a rerun into the folder) never pays twice
            root = cache_root or recipe.training_args().get("output_dir") or "."
            config.cache_dir = str(Path(root) / "judge_cache")
        funcs.append(CaptionReward(JudgeClient(config), prompt=rewards.caption_prompt))
        weights.append(rewards.caption_weight)
    return funcs, weights


def build_trainer(recipe: Any, adapter: Any = None, train_dataset: Any = None) -> GroundedGRPOTrainer:
    """A ready-to-train :class:`GroundedGRPOTrainer` for a validated recipe."""
    from trl import GRPOConfig

    from prefopt.config import ConfigError
    from prefopt.data.video import load_video_frames
    from prefopt.errors import ModelError
    from prefopt.grpo.data import load_checked
    from prefopt.training.common import prepare_policy

    report = None
    if train_dataset is None:  # before the model: bad data is reported in seconds, not after the load
        from prefopt.data.lengths import length_check, max_positions_of, model_length_check

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
