"""Filesystem helpers every layer may use (no prefopt imports): they sit at the bottom of the import layers."""

from __future__ import annotations

import os
from pathlib import Path


def readable_modes(folder: str | Path, recursive: bool = False) -> int:
    """Give every file under ``folder`` the read bits the umask allows (0644 under the usual 022).

    safetensors writes its files mode 0600 (a private temporary file renamed into place), so a model saved
    for others to load or serve was unreadable to them. Returns how many files were changed.
    """
    mask = os.umask(0)
    os.umask(mask)
    wanted = 0o644 & ~mask
    root = Path(folder)
    if not root.is_dir():
        return 0
    changed = 0
    for path in root.rglob("*") if recursive else root.iterdir():
        try:
            if path.is_file() and not path.is_symlink():
                mode = path.stat().st_mode & 0o777
                if mode & wanted != wanted:
                    os.chmod(path, mode | wanted)
                    changed += 1
        except OSError:
            continue  # a file another process removed or owns: leave it
    return changed
