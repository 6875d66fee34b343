"""What a stage cost: wall and CPU seconds, forward and generated tokens, judge calls, written to ``cost.json``.

Counting works at two levels:

* :func:`watch` puts a forward pre-hook on a model (every model :func:`prefopt.models.registry.load_adapter`
  loads is watched). Each forward adds the tokens it is fed (``input_ids`` or ``inputs_embeds`` positions,
  padding included) to a process-wide ledger; a forward that carries a KV cache (``past_key_values``) is a
  generation step and also adds one generated token per row (finished rows included: an upper bound).
* :class:`Meter` takes a snapshot of the ledger, ``time.perf_counter`` and ``resource.getrusage`` (user +
  system CPU time of this process and its waited-for children) and returns the difference.

:class:`CostCallback` (added to every prefopt trainer) writes the training part to
``OUTPUT_DIR/cost.json`` under ``"train"``, with the judge calls the run logged; :func:`record_section`
adds other parts (``"reference_cache"``, ``"eval"``) to the same kind of file.
"""

from __future__ import annotations

import json
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COST_FILE = "cost.json"

#: The counters every cost record has (seconds and tokens are summed when records are added).
FIELDS = ("wall_s", "cpu_s", "gpu_s", "forward_tokens", "forward_calls", "generated_tokens",
          "judge_calls", "judge_cache_hits")


@dataclass
class Ledger:
    """Process-wide token counters (only ever increase)."""

    forward_tokens: int = 0
    forward_calls: int = 0
    generated_tokens: int = 0


LEDGER = Ledger()


def _count(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
        shape = tuple(ids.shape[:2]) if ids is not None else ()
    else:
        shape = tuple(ids.shape)
    if not shape:
        return
    rows, length = (shape[0], shape[1]) if len(shape) > 1 else (1, shape[0])
    LEDGER.forward_tokens += int(rows * length)
    LEDGER.forward_calls += 1
    if kwargs.get("past_key_values") is not None:  # a generation step: one new token per row
        LEDGER.generated_tokens += int(rows)


def watch(model: Any) -> Any:
    """Count the tokens of every forward of ``model`` in :data:`LEDGER` (idempotent); returns ``model``."""
    if model is None or getattr(model, "_prefopt_cost_watched", False):
        return model
    try:
        model.register_forward_pre_hook(_count, with_kwargs=True)
        model._prefopt_cost_watched = True
    except (AttributeError, TypeError):  # not a torch module: nothing to count
        pass
    return model


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (``resource.getrusage``)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _gpu_seconds() -> float | None:
    """None on CPU: prefopt does not time GPU kernels (the wall time is the GPU-bound cost there)."""
    return None


class Meter:
    """Difference of wall time, CPU time and ledger counters since :meth:`start`."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> Meter:
        """Take the starting snapshot."""
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self._tokens = (LEDGER.forward_tokens, LEDGER.forward_calls, LEDGER.generated_tokens)
        return self

    def read(self, **extra: Any) -> dict[str, Any]:
        """The cost so far, with ``extra`` fields (e.g. judge calls) added."""
        out = {
            "wall_s": round(time.perf_counter() - self._wall, 3),
            "cpu_s": round(cpu_seconds() - self._cpu, 3),
            "gpu_s": _gpu_seconds(),
            "forward_tokens": LEDGER.forward_tokens - self._tokens[0],
            "forward_calls": LEDGER.forward_calls - self._tokens[1],
            "generated_tokens": LEDGER.generated_tokens - self._tokens[2],
            "judge_calls": 0,
            "judge_cache_hits": 0,
        }
        out.update(extra)
        return out


def read_cost(folder: str | Path) -> dict[str, Any]:
    """``FOLDER/cost.json`` as a dict (empty when absent or unreadable)."""
    path = Path(folder) / COST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_section(folder: str | Path, section: str, cost: dict[str, Any]) -> Path:
    """Write ``cost`` under ``section`` in ``FOLDER/cost.json`` (other sections are kept)."""
    path = Path(folder) / COST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = read_cost(folder)
    data[section] = cost
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


@contextmanager
def measured(folder: str | Path | None, section: str, **extra: Any):
    """Measure the ``with`` block and record it as ``section`` of ``FOLDER/cost.json`` (not when folder is None)."""
    meter = Meter()
    result: dict[str, Any] = {}
    yield result
    result.update(meter.read(**extra))
    if folder is not None:
        record_section(folder, section, result)


def add(*costs: dict[str, Any] | None) -> dict[str, Any]:
    """Field-wise sum of cost records (missing fields and ``None`` count as absent)."""
    total: dict[str, Any] = {}
    for cost in costs:
        for key in FIELDS:
            value = (cost or {}).get(key)
            if isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in total.items()}
