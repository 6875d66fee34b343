"""Quiet, useful console output: the known harmless library warnings filtered, one process talking under DDP.

Half of a tiny GRPO log was warnings that say nothing about the run: transformers' renaming of
``gradient_checkpointing`` to ``activation_checkpointing`` (raised by TRL's and Trainer's own calls, not the
recipe's), bitsandbytes' missing optional CPU kernel, DeepSpeed's "Setting accelerator to CPU". Those exact
messages are dropped; every other warning still shows. Under torch.distributed every rank printed every
INFO line and warning; ranks other than 0 now log errors only (and show no progress bars).
"""

from __future__ import annotations

import logging
import os
import re
import warnings

#: ``(logger name, message start)`` of harmless log records.
HARMLESS_LOGS: tuple[tuple[str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ("DeepSpeed", "Setting accelerator to CPU"),
)
#: ``(category, message regex)`` of harmless ``warnings.warn`` calls.
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`(is_)?gradient_checkpointing\w*` is deprecated and will be removed in v6"),
)


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_known_warnings() -> None:
    """Install the filters for :data:`HARMLESS_LOGS` and :data:`HARMLESS_WARNINGS` (idempotent)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, start in HARMLESS_LOGS:
        by_logger[name] = by_logger.get(name, ()) + (start,)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)  # the libraries fetch these same objects when they are imported
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    for category, pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def process_rank() -> int:
    """This process's global rank as the launcher set it (``RANK``, else ``LOCAL_RANK``; 0 without one)."""
    for key in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(key)
        if value is not None and re.fullmatch(r"\d+", value.strip()):
            return int(value)
    return 0


def main_process_logging(rank: int | None = None) -> bool:
    """On ranks other than 0: errors only, from prefopt and the libraries, and no progress bars.

    Returns whether this process is the main one. Called before the libraries are imported, so their own
    handlers (transformers, datasets) read the environment settings made here.
    """
    rank = process_rank() if rank is None else rank
    if rank == 0:
        return True
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("prefopt", "transformers", "trl", "accelerate", "datasets", "DeepSpeed", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.simplefilter("ignore")  # warnings.warn has no level: rank 0 shows each one once
    return False
