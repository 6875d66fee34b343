"""A run folder's bookkeeping files: ``run_info.json``, checkpoint completion markers, the newest checkpoint.

The lowest piece of ``prefopt.training``: ``common`` (recipes, curves) and ``reliability`` (resume, SIGTERM,
non-finite steps) both build on it, so neither needs the other.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

MARKER = "prefopt_checkpoint_complete.json"


def _listing(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``folder`` except the marker."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MARKER, f".{MARKER}.tmp")
    }


def write_marker(folder: str | Path, step: int) -> Path:
    """Mark ``folder`` complete: list its files and sizes, written atomically (temp file + ``os.replace``)."""
    folder = Path(folder)
    path = folder / MARKER
    tmp = folder / f".{MARKER}.tmp"
    record = {"step": step, "files": _listing(folder), "time": time.time()}  # listed before tmp exists
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())  # the marker must not reach the disk before its own content
    os.replace(tmp, path)
    return path


def checkpoint_complete(folder: str | Path) -> bool:
    """Whether ``folder`` has a marker and every file it lists is present with the listed size."""
    path = Path(folder) / MARKER
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name, size in files.items():
        try:
            if (Path(folder) / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return bool(files)


RUN_INFO = "run_info.json"


def update_run_info(out_dir: str | Path, **fields: Any) -> Path:
    """Merge ``fields`` into the run's ``run_info.json`` (created when absent; other keys are kept)."""
    path = Path(out_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
    info.update(fields)
    tmp = path.with_name(f".{RUN_INFO}.tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def last_checkpoint(out_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder of a run (its completion marker checked), or None."""
    out = Path(out_dir)
    if not out.is_dir():
        return None
    found = []
    for child in out.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and checkpoint_complete(child):
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None
