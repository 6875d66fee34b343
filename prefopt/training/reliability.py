"""Surviving interruption and bad steps: atomic checkpoints, SIGTERM, and non-finite loss/gradient skipping.

Every prefopt trainer mixes in :class:`ReliableTrainerMixin`, which adds one :class:`ReliabilityCallback`:

- atomic checkpoints: ``Trainer`` writes ``checkpoint-N`` file by file, so a kill during saving leaves a
  folder that holds some files but not others. After the last file is written a marker (:data:`MARKER`,
  written to a temporary name and renamed, so it exists whole or not at all) lists every file with its
  size; only then are older checkpoints rotated out (``save_total_limit``). :func:`checkpoint_complete`
  (used by ``training.common.last_checkpoint``) accepts a checkpoint only when the marker is there and
  every listed file still has its size. Unmarked folders found when training starts are renamed
  ``incomplete-checkpoint-N-<time>`` so that Trainer's rotation never counts them.
- SIGTERM: the first signal only sets a flag; at the next step boundary where a resume is exact (GRPO: a
  generation-batch boundary) the callback asks Trainer to save a checkpoint and stop. :func:`run_training`
  then raises :class:`TrainingInterrupted` (exit status 2 with the checkpoint to resume from). A second
  SIGTERM kills the process at once. Under torch.distributed the flag is all-reduced so every rank stops at
  the same step.
- non-finite steps: a NaN/inf training loss or gradient makes the callback drop all gradients right before
  ``optimizer.step()`` (the optimizer then skips every parameter, its moments untouched), count the step
  (``nonfinite_skipped`` in the logs) and warn. ``max_consecutive_nonfinite`` bad steps in a row raise
  :class:`NonFiniteError` naming the last good checkpoint; the weights were never touched by a bad step.
  The learning-rate schedule and ``global_step`` still advance over a skipped step (Trainer steps them
  outside the optimizer), so a run's schedule does not shift.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from prefopt.config import ConfigError
from prefopt.errors import PrefoptError
from prefopt.files import readable_modes
from prefopt.training.cost_callback import CostCallback
from prefopt.training.run_files import (  # noqa: F401  (MARKER, write_marker, checkpoint_complete: public here)
    MARKER,
    checkpoint_complete,
    last_checkpoint,
    update_run_info,
    write_marker,
)

logger = logging.getLogger(__name__)

STATE_NAME = "prefopt_state.json"  # counters saved with a checkpoint (judge/*), restored on resume
CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")


@dataclass
class ReliabilitySettings:
    """The ``reliability:`` recipe section (GRPO, SymMPO and SFT recipes)."""

    max_consecutive_nonfinite: int = 5  # this many skipped (NaN/inf) steps in a row stop the run
    handle_sigterm: bool = True  # SIGTERM saves a checkpoint at the next step boundary and stops cleanly
    zero_spread_steps: int = 5  # GRPO: warn after this many generation batches in a row with no reward spread


class TrainingInterrupted(PrefoptError):
    """Training stopped on SIGTERM after saving a checkpoint."""


class NonFiniteError(PrefoptError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


def set_aside_incomplete(out_dir: str | Path) -> list[Path]:
    """Rename unmarked ``checkpoint-N`` folders to ``incomplete-checkpoint-N-<time>``; returns the new paths."""
    out = Path(out_dir)
    moved = []
    if not out.is_dir():
        return moved
    for child in sorted(out.iterdir()):
        if CHECKPOINT_RE.fullmatch(child.name) and child.is_dir() and not checkpoint_complete(child):
            target = out / f"incomplete-{child.name}-{int(time.time())}"
            os.replace(child, target)
            logger.warning(
                "%s was not saved completely (interrupted while saving); moved to %s", child, target
            )
            moved.append(target)
    return moved


def weights_problem(folder: str | Path) -> str | None:
    """Why the safetensors weights of checkpoint ``folder`` cannot be resumed from, or None when they can.

    A file whose header does not parse (same size, so the marker still matches) or a tensor holding NaN/inf
    is named. Each tensor is read once, on the CPU, one at a time (a resume pays one read of the weights).
    """
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for name in fh.keys():
                    tensor = fh.get_tensor(name)
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        return f"{path}: tensor {name!r} holds NaN/inf"
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            return f"{path}: unreadable safetensors ({str(err).splitlines()[0][:160]})"
    return None


def set_aside_bad(folder: str | Path, reason: str) -> Path:
    """Rename a checkpoint that must not be resumed to ``bad-checkpoint-N-<time>``; returns the new path."""
    folder = Path(folder)
    target = folder.parent / f"bad-{folder.name}-{int(time.time())}"
    os.replace(folder, target)
    logger.warning("refusing to resume from %s: %s; moved to %s", folder, reason, target)
    return target


def usable_checkpoint(resume: str | None, out_dir: str | Path) -> str | None:
    """``resume`` if its weights are sound; otherwise each bad checkpoint is set aside and the newest previous
    complete one is tried, down to None (then training starts from the beginning, and says so)."""

    if not resume:
        return None
    set_aside: list[str] = []
    candidate: str | None = resume
    while candidate:
        problem = weights_problem(candidate)
        if problem is None:
            if set_aside:
                logger.warning("resuming from the previous good checkpoint %s instead", candidate)
            return candidate
        set_aside.append(str(set_aside_bad(candidate, problem)))
        candidate = last_checkpoint(out_dir)
    logger.warning(
        "no good checkpoint to resume from in %s (set aside: %s); training starts from the beginning",
        out_dir,
        ", ".join(set_aside),
    )
    return None


# --- the callback --------------------------------------------------------------------------------


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _any_rank(flag: bool, device: Any) -> bool:
    """True on every rank if ``flag`` is true on any rank (a no-op without torch.distributed)."""
    if not _distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def grads_finite(model: Any) -> bool:
    """Whether every gradient of ``model`` is finite (parameters without a gradient are ignored)."""
    flags = [p.grad.isfinite().all() for p in model.parameters() if p.grad is not None]
    return bool(torch.stack(flags).all().item()) if flags else True


class ReliabilityCallback(TrainerCallback):
    """Checkpoint markers, SIGTERM stop at a safe step, and non-finite step skipping (see module doc)."""

    def __init__(self, settings: ReliabilitySettings | None = None, align_steps: int = 1):
        self.settings = settings or ReliabilitySettings()
        if self.settings.max_consecutive_nonfinite < 1:
            raise ConfigError("reliability.max_consecutive_nonfinite must be >= 1")
        self.align_steps = max(1, int(align_steps))
        self.skipped = 0
        self.consecutive = 0
        self.first_bad_step: int | None = None
        self.stop_requested = False
        self.interrupted = False
        self._bad_loss = False
        self._previous_handler: Any = None
        self._installed = False
        self.steps_seen = 0
        self.zero_lr_steps = 0  # optimizer steps so far that ran at learning rate 0
        self._warned_zero_lr = False

    # signal handling
    def install(self) -> None:
        """Catch SIGTERM (main thread only; other threads cannot install signal handlers)."""
        if not self.settings.handle_sigterm or self._installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def uninstall(self) -> None:
        """Give SIGTERM back to the handler that was there before training."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            # a second SIGTERM means "now": die the default way
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.stop_requested = True
        logger.warning("SIGTERM received: saving a checkpoint at the next safe step boundary, then stopping")

    # Trainer events
    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            set_aside_incomplete(args.output_dir)
        if args.save_strategy == "steps" and args.save_steps >= 1 and args.save_steps % self.align_steps:
            logger.warning(
                "save_steps=%s is not a multiple of %d (steps per generation batch): a resume from such a "
                "checkpoint regenerates the rest of its generation batch and does not repeat the "
                "uninterrupted run exactly",
                args.save_steps,
                self.align_steps,
            )
        self.install()

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Remember a non-finite micro-batch loss until the next optimizer step."""
        if not bool(torch.isfinite(loss.detach()).all()):
            self._bad_loss = True

    def _watch_lr(self, optimizer: Any, step: int) -> None:
        """Count steps that run at learning rate 0 and say so at the first one (e.g. warmup on a 1-step run)."""
        groups = getattr(optimizer, "param_groups", None)
        if not groups:
            return
        self.steps_seen += 1
        if any(float(g.get("lr", 0.0)) > 0 for g in groups):
            return
        self.zero_lr_steps += 1
        if not self._warned_zero_lr and self.zero_lr_steps == self.steps_seen:
            self._warned_zero_lr = True
            logger.warning(
                "step %d runs at learning rate 0 (the schedule's warmup starts at 0): this step leaves the "
                "weights unchanged; on a run this short set training.warmup_steps=0 (or warmup_ratio=0)",
                step,
            )

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self._watch_lr(kwargs.get("optimizer"), state.global_step + 1)
        bad = self._bad_loss or (model is not None and not grads_finite(model))
        self._bad_loss = False
        if not _any_rank(bad, args.device):
            self.consecutive, self.first_bad_step = 0, None
            return
        for p in model.parameters():
            p.grad = None  # the optimizer skips parameters without a gradient: weights and moments untouched
        step = state.global_step + 1
        self.skipped += 1
        self.consecutive += 1
        self.first_bad_step = self.first_bad_step or step
        logger.warning(
            "step %d: non-finite loss or gradient, optimizer step skipped (%d in a row, %d in all)",
            step,
            self.consecutive,
            self.skipped,
        )
        if self.consecutive >= self.settings.max_consecutive_nonfinite:

            good = last_checkpoint(args.output_dir)
            raise NonFiniteError(
                f"{self.consecutive} optimizer steps in a row (steps {self.first_bad_step}-{step}) had a "
                "non-finite loss or gradient; stopping. No bad step changed the weights; last good "
                f"checkpoint: {good or 'none saved yet'}. Lower the learning rate, check the data, or raise "
                "reliability.max_consecutive_nonfinite."
            )

    def on_step_end(self, args, state, control, **kwargs):
        if not self.settings.handle_sigterm:
            return control
        if _any_rank(self.stop_requested, args.device) and state.global_step % self.align_steps == 0:
            self.stop_requested = self.interrupted = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.uninstall()
        if self.steps_seen and self.zero_lr_steps == self.steps_seen:
            logger.warning(
                "nothing was learned: all %d optimizer steps ran at learning rate 0, so the weights are those "
                "the run started from (a warmup longer than the run? set training.warmup_steps=0)",
                self.steps_seen,
            )

    def metrics(self) -> dict[str, float]:
        """Counters for the training logs."""
        return {"nonfinite_skipped": float(self.skipped), "nonfinite_consecutive": float(self.consecutive)}


class ReliableTrainerMixin:
    """Mix in before a ``Trainer`` subclass: adds :class:`ReliabilityCallback`, loss checks and its metrics."""

    def __init__(self, *args: Any, reliability: ReliabilitySettings | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reliability = ReliabilityCallback(reliability, align_steps=self.resume_alignment())
        self.add_callback(self.reliability)

        self.add_callback(CostCallback(getattr(self, "ref_model", None)))  # OUTPUT_DIR/cost.json

    def resume_alignment(self) -> int:
        """Optimizer steps between points where a resume repeats the run exactly (1 for plain Trainer)."""
        return 1

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Trainer's save, then the completion marker, and only then the rotation of older checkpoints.

        Trainer deletes checkpoints beyond ``save_total_limit`` at the end of its own save; done before the
        marker, a kill in between would leave no complete checkpoint at all, so the rotation is deferred.
        """
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        extra = self.checkpoint_state()  # on every rank: it may sum counters over ranks
        if extra and self.args.should_save and folder.is_dir():
            (folder / STATE_NAME).write_text(json.dumps(extra, indent=1), encoding="utf-8")
        if _distributed():
            torch.distributed.barrier()  # every rank has written its shard before the marker says "complete"
        if self.args.should_save and folder.is_dir():
            write_marker(folder, self.state.global_step)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save, then readable file modes (safetensors writes 0600; others must load the model)."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:

            readable_modes(output_dir or self.args.output_dir)

    def checkpoint_state(self) -> dict[str, Any]:
        """Extra state saved as :data:`STATE_NAME` in each checkpoint (counters; nothing for plain Trainer)."""
        return {}

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`checkpoint_state` saved (called before a resumed run starts)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Load full-model checkpoint weights through ``from_pretrained`` (other layouts: Trainer's own load).

        transformers 5.23 saves ``model.safetensors`` under the original checkpoint key names (its weight
        conversion is reversed on save), but ``Trainer._load_from_checkpoint`` reads the file with a plain
        non-strict ``load_state_dict``: for Qwen2.5-VL and LLaVA no key matches except ``lm_head``, so a
        resumed full fine-tune silently restarts from the base weights. ``from_pretrained`` applies the key
        conversion; the weights are then copied in with a strict load.
        """
        from transformers import PreTrainedModel
        from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

        target = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        has_weights = (folder / SAFE_WEIGHTS_NAME).is_file() or (folder / SAFE_WEIGHTS_INDEX_NAME).is_file()
        if not has_weights or self.is_fsdp_enabled or not isinstance(target, PreTrainedModel):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        logger.info("loading model weights from %s", folder)
        saved = type(target).from_pretrained(str(folder), dtype=target.dtype, device_map="cpu")
        target.load_state_dict(saved.state_dict(), strict=True)
        del saved

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        """Trainer's step; a non-finite loss is remembered so the optimizer step is skipped."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.reliability.observe_loss(loss)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``nonfinite_skipped`` to the training logs."""
        if "loss" in logs:
            logs = {**logs, **self.reliability.metrics()}
            collator = getattr(self, "data_collator", None)
            for name in ("bad_skipped", "truncated"):
                if isinstance(getattr(collator, name, None), int):
                    logs[f"data/{name}"] = float(getattr(collator, name))
        super().log(logs, start_time)


def _same_on_every_rank(value: str | None) -> str | None:
    """Rank 0's checkpoint choice on every rank (rank 0 alone checks the weights and moves bad folders)."""
    if not _distributed():
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def run_training(trainer: Any, resume: str | None = None) -> Any:
    """``trainer.train`` that restores the SIGTERM handler and raises :class:`TrainingInterrupted` on SIGTERM."""
    callback = getattr(trainer, "reliability", None)
    if resume:
        resume = usable_checkpoint(resume, trainer.args.output_dir) if trainer.is_world_process_zero() else resume
        resume = _same_on_every_rank(resume)
    if resume:
        logger.info("resuming from %s", resume)
        saved = Path(resume) / STATE_NAME
        if saved.is_file() and hasattr(trainer, "restore_checkpoint_state"):
            trainer.restore_checkpoint_state(json.loads(saved.read_text(encoding="utf-8")))
    report = getattr(trainer, "data_report", None)
    if report and trainer.is_world_process_zero():

        update_run_info(trainer.args.output_dir, data=report)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        if callback is not None:
            callback.uninstall()
    if callback is not None and callback.interrupted:

        raise TrainingInterrupted(
            f"stopped by SIGTERM at step {trainer.state.global_step}; checkpoint "
            f"{last_checkpoint(trainer.args.output_dir)} saved; continue with --resume (or training.resume)"
        )
    return result
