"""Reference log-probs, computed once before training and cached next to the dataset.

The cache is a safetensors file holding one ``[N, K]`` float32 tensor (rows = examples, columns = the
loss keys in collator order) and, in its metadata, the fingerprint it was computed under. The
fingerprint covers the reference model (``config.json`` content + each weight file's name, size and
mtime, or the hub id), the data file (path, size, mtime), the tokenisation settings (processor/tokenizer
files and chat template), the loss keys, the contrastive-image construction and the row count. Any change
gives a new file name, so a stale cache is never read; an unchanged setup (a second run, a resume)
reads the file and does no reference forward at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from prefopt.dpo.collator import sequence_logps

logger = logging.getLogger(__name__)

_TOKENISATION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                       "merges.txt", "tokenizer.model", "added_tokens.json", "preprocessor_config.json",
                       "processor_config.json", "video_preprocessor_config.json", "chat_template.json",
                       "chat_template.jinja")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _file_stat(path: Path) -> list[Any]:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_identity(name_or_path: str) -> dict[str, Any]:
    """What identifies a model's weights and tokenisation: file stats / hashes for a directory, else the id."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub_id": name_or_path}
    weights = sorted(_file_stat(p) for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    config = path / "config.json"
    tokenisation = {name: _content_hash(path / name) for name in _TOKENISATION_FILES if (path / name).is_file()}
    return {
        "path": str(path.resolve()),
        "config": _content_hash(config) if config.is_file() else None,
        "weights": weights,
        "tokenisation": tokenisation,
    }


def data_identity(path_or_name: str) -> dict[str, Any]:
    """Path, size and mtime of a local data file, or the dataset name."""
    path = Path(path_or_name)
    if path.is_file():
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"name": path_or_name}


def fingerprint(parts: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cache_file(data_path: str, fp: str, cache_dir: str | None = None, fallback_dir: str | None = None) -> Path:
    """Where the cache for fingerprint ``fp`` lives: next to a local data file unless ``cache_dir`` is given."""
    data = Path(data_path)
    folder = Path(cache_dir) if cache_dir else data.parent if data.is_file() else Path(fallback_dir or ".")
    stem = data.name if data.is_file() else data_path.replace("/", "__")
    return folder / f"{stem}.ref-logps-{fp[:16]}.safetensors"


def load_cache(path: Path, fp: str, keys: Sequence[str], n_rows: int) -> Tensor | None:
    """The cached ``[N, K]`` tensor when ``path`` exists and matches ``fp``, ``keys`` and ``n_rows``; else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            values = fh.get_tensor("ref_logps")
    except Exception as err:  # a truncated or foreign file is recomputed, not trusted
        logger.warning("reference cache %s unreadable (%s); recomputing", path, err)
        return None
    if meta.get("fingerprint") != fp or meta.get("keys") != ",".join(keys) or values.shape != (n_rows, len(keys)):
        logger.warning("reference cache %s does not match this run; recomputing", path)
        return None
    return values


def save_cache(path: Path, values: Tensor, fp: str, keys: Sequence[str], parts: dict[str, Any]) -> None:
    """Write the cache atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    meta = {"fingerprint": fp, "keys": ",".join(keys), "parts": json.dumps(parts, sort_keys=True, default=str)}
    save_file({"ref_logps": values.float().contiguous()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _reference_forward(model: Any, batch: dict[str, Any]) -> Tensor:
    """One no-grad forward of the reference over a concatenated batch (tests count calls to it)."""
    with torch.no_grad():
        return sequence_logps(model, batch)


def compute_reference_logps(model: Any, dataset: Any, collator: Any, *, batch_size: int = 4,
                            device: Any = None, indices: Sequence[int] | None = None) -> Tensor:
    """Run the reference over the dataset (or its rows ``indices``) once: ``[rows, K]`` float32 log-probs."""
    from torch.utils.data import DataLoader, Subset

    was_training = model.training
    model.eval()  # dropout off: the reference must be deterministic
    keys = collator.keys
    subset = Subset(dataset, list(indices)) if indices is not None else dataset
    chunks = []
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    try:
        for batch in tqdm(loader, desc="reference log-probs"):
            batch = {k: v.to(device) if device is not None and isinstance(v, Tensor) else v for k, v in batch.items()}
            values = _reference_forward(model, batch).float().cpu()
            chunks.append(torch.stack(values.chunk(len(keys)), dim=1))  # [B, K]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, len(keys))
