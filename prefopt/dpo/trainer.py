"""Offline SymMPO / DPO / mDPO training on ``transformers.Trainer``.

The trainer only computes log-probs, calls the loss and logs metrics: one concatenated forward of the
``K·B`` sequences per step (:mod:`prefopt.dpo.collator`), reference log-probs read from the batch
(precomputed and cached, :mod:`prefopt.dpo.reference`) or computed online with the LoRA adapter
disabled (or by a frozen copy without LoRA), and the loss of :mod:`prefopt.dpo.losses`.
Accelerate, DeepSpeed, checkpoints and logging come from ``Trainer``; LoRA from ``prepare_policy``.
"""

from __future__ import annotations

import gc
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from prefopt.config import ConfigError
from prefopt.cost import measured
from prefopt.data.bad_rows import BadRows, read_tolerant
from prefopt.data.formats import read_dataset
from prefopt.data.lengths import model_length_check
from prefopt.dpo.collator import (
    KEY_PARTS,
    PreferenceCollator,
    PreferenceDataset,
    screen_examples,
    sequence_logps,
    split_by_key,
    validate_examples,  # noqa: F401  (public name, kept importable here)
)
from prefopt.dpo.config import LossSettings, SymMPOConfig
from prefopt.dpo.contrastive import ContrastiveImages
from prefopt.dpo.losses import get_loss, loss_keys
from prefopt.dpo.reference import (
    cache_file,
    compute_reference_logps,
    data_identity,
    fingerprint,
    load_cache,
    model_identity,
    save_cache,
)
from prefopt.errors import DataError, ModelError
from prefopt.models.adapter import load_adapter
from prefopt.training.common import last_checkpoint, plot_training_curves, prepare_policy, write_run_config
from prefopt.training.loss_scaling import MeanLossTrainerMixin
from prefopt.training.reliability import ReliableTrainerMixin, run_training

logger = logging.getLogger(__name__)


def make_loss_fn(settings: LossSettings) -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """The loss ``settings.name`` of the loss table with the recipe's weights bound."""
    return get_loss(settings.name).bind(settings)


class SymMPOTrainer(MeanLossTrainerMixin, ReliableTrainerMixin, Trainer):
    """``Trainer`` whose ``compute_loss`` is the preference loss over one concatenated forward.

    The loss is a batch mean, so ``Trainer`` divides it by the accumulation steps (the mixin).
    """

    def __init__(self, *args: Any, loss_settings: LossSettings, ref_model: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_settings = loss_settings
        self.loss_fn = make_loss_fn(loss_settings)
        self.loss_keys = loss_keys(loss_settings.name)
        self.ref_model = ref_model
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def _reference_logps(self, model: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "ref_logps" in inputs:
            ref = inputs["ref_logps"]
            return {k: ref[i] for i, k in enumerate(self.loss_keys)}
        with torch.no_grad():
            if self.ref_model is not None:
                values = sequence_logps(self.ref_model, inputs)
            else:
                unwrapped = self.accelerator.unwrap_model(model)
                if not hasattr(unwrapped, "disable_adapter"):
                    raise ModelError("reference: online without LoRA needs a reference model copy")
                with unwrapped.disable_adapter():
                    values = sequence_logps(model, inputs)
        return split_by_key(values.detach(), self.loss_keys)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """Policy log-probs per key from one forward, reference log-probs, then the loss; metrics are stored."""
        policy = split_by_key(sequence_logps(model, inputs), self.loss_keys)
        reference = self._reference_logps(model, inputs)
        loss, metrics = self.loss_fn(policy, reference)
        for key, value in policy.items():
            metrics[f"logps/{key}"] = value.detach().mean()
        for name, value in metrics.items():
            gathered = self.accelerator.gather_for_metrics(value.detach().float().reshape(1))
            self._metrics[name].append(gathered.mean().item())
        return (loss, {"policy_logps": policy}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means of the loss terms, rewards, margins and accuracies since the last log."""
        if self._metrics and "loss" in logs:
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._metrics.items()}}
            self._metrics.clear()
        super().log(logs, start_time)


def read_examples(config: SymMPOConfig, tracker: Any = None) -> list[Any]:
    """The preference records of ``config.data`` (first ``max_examples`` when set); with a ``BadRows``
    ``tracker`` bad rows are recorded there and skipped instead of raised."""
    data = config.data
    if not data.path:
        raise DataError("data.path is empty: give a SymMPO parquet or a preference dataset")
    fmt = None if data.format == "auto" else data.format

    def read() -> list[Any]:
        return read_dataset(data.path, format=fmt, image_root=data.image_root, split=data.split)

    examples = read_tolerant(tracker, read) if tracker is not None else read()
    if examples and not hasattr(examples[0], "chosen"):
        raise DataError(f"{data.path} is not preference data (it read as {type(examples[0]).__name__})")
    if tracker is not None:
        return tracker.truncate(examples, data.max_examples or None)
    return examples[: data.max_examples] if data.max_examples else examples


def read_checked(config: SymMPOConfig, keys: Sequence[str]) -> tuple[list[Any], Any]:
    """Examples fit for the loss ``keys``, bad rows skipped and counted (``data.max_bad_fraction``)."""
    tracker = BadRows(config.data.path, config.data.max_bad_fraction)
    examples = read_examples(config, tracker)
    mode = config.contrastive if any(KEY_PARTS[k][0] == "contrastive_image" for k in keys) else "none"
    examples = screen_examples(examples, keys, config.loss.name, mode, tracker)
    check = model_length_check(config.model.name_or_path, 0, config.data.overlong, "prompt + response",
                               config.model.trust_remote_code)
    if check is not None:
        examples = tracker.screen(examples, check)
    tracker.check()
    if not examples:
        raise DataError("no preference pairs to train on", path=config.data.path)
    return examples, tracker


def _fingerprint_parts(config: SymMPOConfig, keys: Sequence[str], n_rows: int) -> dict[str, Any]:
    ref_path = config.reference_model or config.model.name_or_path
    return {
        "reference": model_identity(ref_path),
        "tokenizer": model_identity(config.model.name_or_path).get("tokenisation", config.model.name_or_path),
        "dtype": config.model.dtype, "quantization": config.model.quantization,
        "data": data_identity(config.data.path), "format": config.data.format, "split": config.data.split,
        "image_root": config.data.image_root, "rows": n_rows, "keys": list(keys),
        "contrastive": [config.contrastive, config.contrastive_seed],
    }


def _load_frozen(config: SymMPOConfig, path: str, device: Any) -> Any:
    m = config.model
    adapter = load_adapter(path, family=m.family, dtype=m.dtype, attn_implementation=m.attn_implementation,
                           quantization=m.quantization)
    if not m.quantization:
        adapter.model.to(device)
    adapter.model.eval().requires_grad_(False)
    return adapter


def precomputed_reference(config: SymMPOConfig, examples: list[Any], contrastive: Any) -> torch.Tensor:
    """The cached ``[N, K]`` reference log-probs; when absent every rank computes a shard, rank 0 saves."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    keys = loss_keys(config.loss.name)
    parts = _fingerprint_parts(config, keys, len(examples))
    fp = fingerprint(parts)
    path = cache_file(config.data.path, fp, config.reference_cache_dir, config.training.output_dir)
    state = PartialState()
    values = load_cache(path, fp, keys, len(examples))
    state.wait_for_everyone()  # nobody may see a file written during this run's own check
    if values is not None:
        logger.info("reference log-probs: reusing %s", path)
        return values
    ref_path = config.reference_model or config.model.name_or_path
    logger.info("reference log-probs: computing with %s for %d examples -> %s", ref_path, len(examples), path)

    cost_dir = config.training.output_dir if state.is_main_process else None
    with measured(cost_dir, "reference_cache", examples=len(examples)):  # what the cache cost to build
        adapter = _load_frozen(config, ref_path, state.device)
        # strided shards: each rank runs 1/world of the forwards, so no rank idles at a barrier for long
        shard = list(range(state.process_index, len(examples), state.num_processes))
        local = compute_reference_logps(adapter.model, PreferenceDataset(examples),
                                        PreferenceCollator(adapter, keys, contrastive),
                                        batch_size=config.reference_batch_size, device=state.device, indices=shard)
    values = torch.zeros(len(examples), len(keys))
    if state.num_processes > 1:
        for rows, part in gather_object([(shard, local)]):
            values[rows] = part
    else:
        values[shard] = local
    if state.is_main_process:
        save_cache(path, values, fp, keys, parts)
    del adapter
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return values


def training_arguments(config: SymMPOConfig) -> TrainingArguments:
    """``TrainingArguments`` from the recipe's ``training`` section (built before the model: ZeRO-3 init)."""
    t = config.training
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"training.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    # transformers 5 reads a warmup_steps below 1 as the warmup share of all steps
    kwargs: dict[str, Any] = dict(
        output_dir=t.output_dir, learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, bf16=t.bf16, gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        deepspeed=t.deepspeed, logging_steps=t.logging_steps, save_steps=t.save_steps,
        save_total_limit=t.save_total_limit, seed=t.seed, report_to=t.report_to, use_cpu=t.use_cpu,
        dataloader_num_workers=t.dataloader_num_workers, remove_unused_columns=False, label_names=[],
    )
    kwargs.update(t.extra)
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"training section: {err}") from err


def _online_reference_model(config: SymMPOConfig, device: Any) -> Any:
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise ModelError("reference: online without LoRA keeps a full reference copy per device, which ZeRO-3 "
                         "cannot shard here; use reference: precomputed (the default) or lora.enabled=true")
    return _load_frozen(config, config.reference_model or config.model.name_or_path, device).model


def train(config: SymMPOConfig) -> Path:
    """Run a whole SymMPO/DPO/mDPO training from a resolved recipe; returns the output directory."""
    keys = loss_keys(config.loss.name)
    examples, tracker = read_checked(config, keys)
    if not any(KEY_PARTS[k][0] == "contrastive_image" for k in keys):
        config.contrastive = "none"  # plain DPO never looks at m': do not embed or corrupt images for it
    contrastive = ContrastiveImages(examples, config.contrastive, config.contrastive_seed)
    logger.info("loss %s over sequences %s; %d examples", config.loss.name, ",".join(keys), len(examples))
    reference = precomputed_reference(config, examples, contrastive) if config.reference == "precomputed" else None
    args = training_arguments(config)
    adapter = prepare_policy(config.model, config.lora, seed=config.training.seed)
    ref_model = None
    if config.reference == "online" and (not config.lora.enabled or config.reference_model):
        ref_model = _online_reference_model(config, args.device)
    trainer = SymMPOTrainer(
        model=adapter.model, args=args, train_dataset=PreferenceDataset(examples, reference),
        data_collator=PreferenceCollator(adapter, keys, contrastive, skip_bad=True),
        processing_class=adapter.processor,
        loss_settings=config.loss, ref_model=ref_model, reliability=config.reliability,
    )
    trainer.data_report = tracker.summary()
    out = Path(args.output_dir)
    write_run_config(config, out)
    resume = last_checkpoint(out) if config.training.resume else None
    run_training(trainer, resume)  # SIGTERM -> checkpoint + TrainingInterrupted
    trainer.save_model(str(out))
    trainer.save_state()
    if trainer.is_world_process_zero():
        adapter.processor.save_pretrained(str(out))
        plot_training_curves(out)
    return out
