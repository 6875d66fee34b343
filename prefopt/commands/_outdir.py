"""One output-folder policy for every command that writes a run folder (sft, grpo, symmpo, select, eval).

- A missing or empty folder is used as is.
- A non-empty folder is refused unless ``--resume`` (continue the same recipe: the saved
  ``prefopt_config.yaml`` is compared with the new one and changes that alter the run are refused, naming
  the keys) or ``--overwrite`` (the old run is deleted first; only a folder that holds a prefopt run).
- A path that is a file is refused in one line.
- ``run_info.json`` records the command, its status (``running`` / ``done`` / ``failed`` / ``interrupted``)
  and, for a failed run, the message; other writers (bad-data counts, eval) merge their keys into it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefopt.errors import PrefoptError

RUN_INFO = "run_info.json"
CONFIG_NAME = "prefopt_config.yaml"
#: Keys a resumed run may change: how long it runs, how it logs and saves, and where the judge listens.
RESUMABLE_CHANGES = (
    "training.max_steps", "training.num_train_epochs", "training.logging_steps", "training.save_steps",
    "training.save_total_limit", "training.report_to", "training.dataloader_num_workers", "training.resume",
    "training.output_dir", "training.logging_dir", "training.save_strategy", "reliability.",
    "rewards.judge.base_url", "rewards.judge.api_key_env", "rewards.judge.timeout", "rewards.judge.max_retries",
    "rewards.judge.max_concurrency", "rewards.judge.cache_dir", "rewards.judge.fail_fast", "vllm.server_",
)


def add_folder_flags(parser: argparse.ArgumentParser, resume_help: str | None = None) -> None:
    """``--resume`` and ``--overwrite``, the same on every training command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help=resume_help or (
        "continue the run in the output folder (newest complete checkpoint); the recipe must be the same"))
    group.add_argument("--overwrite", action="store_true", help="delete the run in the output folder first")


def is_main_process() -> bool:
    """Rank 0 (or no launcher): only it checks, clears and writes the folder's bookkeeping."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def check_not_file(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output path that is an existing file (or whose parent is one)."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise PrefoptError(f"{flag} {out}: {p} is a file, not a folder")
    return path


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: data}


def recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two recipes, except those a resume may change."""
    a, b = _flat(old), _flat(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key) and not key.startswith(RESUMABLE_CHANGES):
            changed.append(f"{key} ({a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r})")
    return changed


def _read_yaml(path: Path) -> Any:
    from prefopt.config import safe_load

    try:
        return safe_load(path.read_text(encoding="utf-8")) or {}
    except Exception:  # noqa: BLE001 - an unreadable old recipe cannot be compared: treat as different
        return None


def claim_output_dir(out: str | os.PathLike, recipe: Any, command: str, *, resume: bool = False,
                     overwrite: bool = False, flag: str = "training.output_dir") -> Path:
    """Apply the folder policy to ``out`` for ``recipe`` (a config or a plain mapping); returns the folder."""
    from prefopt.config import save_config, to_dict

    path = check_not_file(out, flag)
    if not is_main_process():
        return path
    entries = [p for p in path.iterdir()] if path.is_dir() else []
    if {p.name for p in entries} <= {CONFIG_NAME, RUN_INFO} and read_run_info(path).get("status") == "failed":
        entries = []  # a run that failed before writing anything but its bookkeeping: start again in place
    new = to_dict(recipe)
    if entries:
        saved = path / CONFIG_NAME
        is_run = saved.is_file() or (path / RUN_INFO).is_file()
        if overwrite:
            if not is_run:
                raise PrefoptError(f"{flag} {out} is not empty and holds no prefopt run; --overwrite only "
                                   "replaces a prefopt run folder: choose another folder")
            shutil.rmtree(path)
        elif resume:
            if not saved.is_file():
                raise PrefoptError(f"{flag} {out} holds no {CONFIG_NAME} to resume; choose another folder")
            old = _read_yaml(saved)
            changes = recipe_changes(old, new) if isinstance(old, Mapping) else [f"{CONFIG_NAME} (unreadable)"]
            if changes:
                raise PrefoptError(f"--resume continues the same recipe, but {out} was run with another: "
                                   f"{'; '.join(changes)}; use another folder or --overwrite")
        else:
            what = f"a {_previous(path)} run" if is_run else "files"
            raise PrefoptError(f"{flag} {out} already holds {what}; pass --resume to continue it, "
                               "--overwrite to replace it, or choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    save_config(new, path / CONFIG_NAME)
    write_run_info(path, command=command, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   resumed=bool(resume and entries), message=None)
    return path


def _previous(path: Path) -> str:
    info = read_run_info(path)
    parts = [str(info.get("command") or "prefopt"), str(info.get("status") or "")]
    return " ".join(p for p in parts if p) or "prefopt"


def read_run_info(out: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``run_info.json`` ({} when absent or unreadable)."""
    try:
        return json.loads((Path(out) / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_run_info(out: str | os.PathLike, **fields: Any) -> None:
    """Merge ``fields`` into the folder's ``run_info.json`` (rank 0 only; written atomically)."""
    if not is_main_process():
        return
    path = Path(out)
    if not path.is_dir():
        return
    info = {**read_run_info(path), **fields}
    tmp = path / f".{RUN_INFO}.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path / RUN_INFO)


@contextmanager
def tracked_run(out: str | os.PathLike) -> Iterator[None]:
    """Mark the run ``done`` on success, ``failed`` (with the message) or ``interrupted`` when it stops."""
    from prefopt.training.reliability import TrainingInterrupted

    try:
        yield
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        write_run_info(out, status="interrupted", message=str(err) or type(err).__name__)
        raise
    except BaseException as err:
        message = str(err) if isinstance(err, PrefoptError) else f"{type(err).__name__}: {err}"
        write_run_info(out, status="failed", message=message, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        raise
    write_run_info(out, status="done", message=None, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
