"""The trainers' cost recorder: a ``TrainerCallback`` over :mod:`prefopt.cost` (kept apart so that the CLI,
which loads ``prefopt.cost`` through the model registry at start, never imports transformers for ``--help``)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from prefopt.cost import Meter, record_section, watch


class CostCallback(TrainerCallback):
    """Record the training cost (and logged judge calls) to ``OUTPUT_DIR/cost.json`` under ``"train"``."""

    def __init__(self, *also_watch: Any) -> None:
        for model in also_watch:  # e.g. a trainer's separate reference model
            watch(model)
        self.meter = Meter()
        self.judge = {"judge_calls": 0, "judge_cache_hits": 0}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Watch the model and start the meter."""
        watch(model)
        self.meter.start()
        self.judge = {"judge_calls": 0, "judge_cache_hits": 0}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        """Keep the judge counters (the caption reward logs them cumulatively, since the trainer started)."""
        for key, name in (("judge/calls", "judge_calls"), ("judge/cache_hits", "judge_cache_hits")):
            value = (logs or {}).get(key)
            if isinstance(value, int | float):
                self.judge[name] = max(self.judge[name], int(value))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the ``"train"`` section (main process only)."""
        if not getattr(state, "is_world_process_zero", True):
            return
        cost = self.meter.read(**self.judge, optimizer_steps=int(state.global_step))
        record_section(args.output_dir, "train", cost)
