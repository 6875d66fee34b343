"""The GRPO recipe: model, LoRA, data, rewards, NTK regulariser, rollout strategy and TRL training fields.

``training:`` is passed through to TRL's ``GRPOConfig``: any of its fields may be set there; the defaults
below are the seed runs' values (SPEC 1.6), including the three TRL defaults the seeds differ from:
``loss_type: grpo`` (per-sequence mean of token losses, then batch mean; TRL's default is ``dapo``) and
``top_k: 50`` (transformers' sampling default, which the seeds' ``GenerationConfig`` kept; TRL's is 0 = off).
``kl_clamp`` (top level, default 10) clamps ``log π_ref − log π_θ`` to ``[−10, 10]`` before the k3 KL as the
seed trainers do; TRL has no such field, see :mod:`prefopt.grpo.kl`; ``null`` turns it off. ``rewards.judge`` holds the fields of
``prefopt.rewards.judge.JudgeConfig`` (the API key is read from the environment variable it names).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.config import ConfigError, from_dict, load_config
from prefopt.models.settings import LoraSettings, ModelSettings
from prefopt.training.reliability import ReliabilitySettings

TEMPLATES = ("four_stage", "r1", "grounded")  # grounded: Ground-R1 rounds (SPEC 2), with rollout: grounded
NTK_MODES = ("gradient", "hidden")
#: SPEC 1.5: the gradient route thresholds its exact cosine at 0.54, the released hidden-state proxy at 0.5.
DEFAULT_THRESHOLD = {"gradient": 0.54, "hidden": 0.5}


@dataclass
class GRPODataSettings:
    """The ``data:`` section: a Video-R1 / GWYS JSON file of prompts."""

    path: str = ""
    format: str = "video_r1"  # video_r1 (GWYS / Video-R1 JSON or JSONL) | viscot (Ground-R1 VisCoT JSONL)
    image_root: str | None = None  # media paths are relative to this folder (None: paths as written)
    template: str = "four_stage"  # four_stage | r1 (SPEC 1.1) | grounded (SPEC 2)
    max_samples: int | None = None
    max_bad_fraction: float = 0.01  # bad rows (missing fields, corrupt images) skipped up to this share
    overlong: str = "truncate"  # prompts longer than the positions left for them: truncate (skip+count) | refuse
    video_frames: int = 16  # frames sampled per video (video rows need a video-capable family: Qwen2.5-VL)
    video_fps: float = 2.0
    video_max_pixels: int = 128 * 28 * 28  # per frame


@dataclass
class RewardSettings:
    """The ``rewards:`` section: weights of accuracy, format and caption rewards (SPEC 1.3)."""

    accuracy_weight: float = 1.0
    format_weight: float = 0.1
    caption: bool = True
    caption_weight: float = 1.0
    caption_prompt: str = "seed"  # seed: the released GWYS judge wording | prefopt: prefopt's rewording
    judge: dict[str, Any] = field(default_factory=dict)  # fields of prefopt.rewards.judge.JudgeConfig


@dataclass
class NTKSettings:
    """The ``ntk:`` section: the conflict-aware InfoNCE regulariser (SPEC 1.5)."""

    enabled: bool = True
    mode: str = "gradient"  # gradient (exact LM-head gradient cosine) | hidden (released prompt proxy)
    threshold: float | None = None  # None: 0.54 for gradient, 0.5 for hidden
    temperature: float = 0.5
    weight: float = 0.01
    peers: int = 7  # hidden mode: peers of the same data type per example
    bank_size: int = 64  # hidden mode: recent distinct prompts kept per data type as peers (never self-copies)

    def resolved_threshold(self) -> float:
        """The similarity threshold, defaulting by mode."""
        return DEFAULT_THRESHOLD[self.mode] if self.threshold is None else self.threshold


@dataclass
class GroundedSettings:
    """The ``grounded:`` section: Ground-R1 multi-round rollouts (SPEC 2), used when ``rollout: grounded``."""

    max_rounds: int = 5
    min_side: int = 28  # pixels; a smaller box is grown about its centre
    max_aspect: float = 200.0  # a box whose long/short side ratio reaches this is not cropped


VLLM_MODES = ("off", "server", "colocate")


@dataclass
class VLLMSettings:
    """The ``vllm:`` section: GRPO generation through TRL's vLLM integration (GPU only, ``prefopt[vllm]``).

    ``server``: a separate ``trl vllm-serve`` process on its own GPU(s); the trainer sends prompts and pushes
    weights to it. ``colocate``: vLLM runs inside every training process on the same GPUs. ``off``:
    transformers ``generate`` (``training.*`` vLLM fields, if any, pass through to ``GRPOConfig`` as written).
    """

    mode: str = "off"  # off | server | colocate
    server_host: str = "127.0.0.1"  # server mode: where `trl vllm-serve` listens
    server_port: int = 8000
    server_base_url: str | None = None  # server mode: overrides host/port, e.g. http://node3:8000
    server_timeout: float = 240.0  # seconds to wait for the server to come up
    gpu_memory_utilization: float = 0.3  # colocate: share of each GPU vLLM may take (server: a vllm-serve flag)
    tensor_parallel_size: int = 1  # colocate: GPUs per vLLM engine (server: a vllm-serve flag)
    max_model_length: int | None = None  # vLLM context; None: from the model config
    enable_sleep_mode: bool = False  # colocate: offload vLLM weights/cache during the optimizer step

    def grpo_fields(self) -> dict[str, Any]:
        """The TRL ``GRPOConfig`` fields this section sets (none when ``mode`` is off)."""
        if self.mode == "off":
            return {}
        fields = {"use_vllm": True, "vllm_mode": self.mode, "vllm_max_model_length": self.max_model_length}
        if self.mode == "server":
            fields.update(
                vllm_server_host=self.server_host,
                vllm_server_port=self.server_port,
                vllm_server_base_url=self.server_base_url,
                vllm_server_timeout=self.server_timeout,
            )
        else:
            fields.update(
                vllm_gpu_memory_utilization=self.gpu_memory_utilization,
                vllm_tensor_parallel_size=self.tensor_parallel_size,
                vllm_enable_sleep_mode=self.enable_sleep_mode,
            )
        return fields


def default_training() -> dict[str, Any]:
    """The seed runs' GRPO hyper-parameters (SPEC 1.6); any ``GRPOConfig`` field may be added."""
    return {
        "output_dir": "runs/grpo",
        "num_generations": 8,
        "beta": 0.04,
        "learning_rate": 1e-6,
        "lr_scheduler_type": "cosine",
        "max_completion_length": 768,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 50,  # the seeds' GenerationConfig kept transformers' default top-k 50 (TRL's default 0 = off)
        "loss_type": "grpo",  # the seeds' per-sequence mean then batch mean (TRL's default: dapo)
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 100,
        "report_to": "none",
        "use_vllm": False,
    }


@dataclass
class GRPORecipe:
    """A whole ``prefopt grpo`` recipe."""

    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: GRPODataSettings = field(default_factory=GRPODataSettings)
    rewards: RewardSettings = field(default_factory=RewardSettings)
    ntk: NTKSettings = field(default_factory=NTKSettings)
    rollout: str = "single"  # rollout strategy by name (prefopt.grpo.trainer.ROLLOUTS)
    grounded: GroundedSettings = field(default_factory=GroundedSettings)
    max_pixels: int | None = 401408  # SPEC 1.6; applied to processors that have it (Qwen2.5-VL)
    kl_clamp: float | None = 10.0  # seed: clamp(log π_ref − log π_θ, ±10) before k3; None: TRL's unclamped KL
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    reliability: ReliabilitySettings = field(default_factory=ReliabilitySettings)  # NaN/inf skips, SIGTERM
    training: dict[str, Any] = field(default_factory=dict)

    def training_args(self) -> dict[str, Any]:
        """The defaults merged with the recipe's ``training:`` values, then the ``vllm:`` section's fields."""
        # vllm.mode=server|colocate wins over a recipe's `training.use_vllm: false`, so one override switches it on
        return {**default_training(), **self.training, **self.vllm.grpo_fields()}


def validate(recipe: GRPORecipe, where: str = "config") -> GRPORecipe:
    """Check choices and that ``training:`` keys are ``GRPOConfig`` fields and judge keys ``JudgeConfig`` fields."""
    if recipe.data.template not in TEMPLATES:
        raise ConfigError(
            f"{where}: data.template must be one of {list(TEMPLATES)}, got {recipe.data.template!r}"
        )
    _validate_grounded(recipe, where)
    _validate_vllm(recipe, where)
    _validate_kl_clamp(recipe, where)
    if recipe.ntk.mode not in NTK_MODES:
        raise ConfigError(f"{where}: ntk.mode must be one of {list(NTK_MODES)}, got {recipe.ntk.mode!r}")
    if recipe.ntk.peers < 1 or recipe.ntk.bank_size < 0:
        raise ConfigError(
            f"{where}: ntk needs peers >= 1 and bank_size >= 0, got {recipe.ntk.peers} and {recipe.ntk.bank_size}"
        )
    from trl import GRPOConfig

    known = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    for key in recipe.training:
        if key not in known:
            from prefopt.config import _suggest

            raise ConfigError(f"{where}: training.{key} is not a GRPOConfig field{_suggest(key, known)}")
    if recipe.rewards.caption:
        judge_config(recipe, where)
        from prefopt.rewards.caption import PROMPTS

        if recipe.rewards.caption_prompt not in PROMPTS:
            raise ConfigError(
                f"{where}: rewards.caption_prompt must be one of {list(PROMPTS)}, got {recipe.rewards.caption_prompt!r}"
            )
    return recipe


def _validate_grounded(recipe: GRPORecipe, where: str) -> None:
    """``rollout: grounded`` and ``template: grounded`` go together; the caption reward needs a caption stage."""
    grounded = recipe.rollout == "grounded"
    if grounded != (recipe.data.template == "grounded"):
        raise ConfigError(f"{where}: rollout: grounded and data.template: grounded must be used together")
    if not grounded:
        return
    if recipe.rewards.caption:
        raise ConfigError(
            f"{where}: rewards.caption needs the four_stage template; set it false for grounded"
        )
    if recipe.training_args().get("use_vllm"):
        raise ConfigError(
            f"{where}: rollout: grounded generates with transformers; set training.use_vllm=false"
        )
    g = recipe.grounded
    if g.max_rounds < 1 or g.min_side < 1 or g.max_aspect <= 1:
        raise ConfigError(f"{where}: grounded needs max_rounds >= 1, min_side >= 1, max_aspect > 1, got {g}")


def _validate_kl_clamp(recipe: GRPORecipe, where: str) -> None:
    """A positive clamp, not combined with TRL options whose KL the reference-log-prob hook cannot reach."""
    if recipe.kl_clamp is None:
        return
    if recipe.kl_clamp <= 0:
        raise ConfigError(f"{where}: kl_clamp must be > 0 or null, got {recipe.kl_clamp}")
    args = recipe.training_args()
    if args.get("use_liger_kernel"):
        raise ConfigError(f"{where}: kl_clamp works on TRL's own loss; set it null with the Liger loss")


def _validate_vllm(recipe: GRPORecipe, where: str) -> None:
    """A known mode, and no ``training.vllm_*`` value that contradicts the ``vllm:`` section."""
    if recipe.vllm.mode not in VLLM_MODES:
        raise ConfigError(f"{where}: vllm.mode must be one of {list(VLLM_MODES)}, got {recipe.vllm.mode!r}")
    for key, value in recipe.vllm.grpo_fields().items():
        if key != "use_vllm" and key in recipe.training and recipe.training[key] != value:
            raise ConfigError(
                f"{where}: training.{key}={recipe.training[key]!r} contradicts the vllm: section ({value!r}); "
                "set it in vllm: only"
            )


def judge_config(recipe: GRPORecipe, where: str = "config") -> Any:
    """``rewards.judge`` as a ``JudgeConfig`` (unknown keys raise ``ConfigError``)."""
    from prefopt.rewards.judge import JudgeConfig

    return from_dict(JudgeConfig, recipe.rewards.judge, f"{where}: rewards.judge")


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> GRPORecipe:
    """Load and validate a GRPO recipe from YAML plus dotted overrides."""
    recipe = load_config(GRPORecipe, path, overrides)
    return validate(recipe, str(path) if path else "config")
