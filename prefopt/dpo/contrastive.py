"""Contrastive images m' for rows that have none (SPEC 3 needs one for the 2w / 22 sequences).

Two constructions, picked by the recipe's ``contrastive`` key:

- ``similar``: the most similar *other* image of the dataset under a cheap embedding (the image
  downsampled to 16x16 RGB, mean-centred and L2-normalised; cosine similarity). Similar but
  different images are what SymMPO's m' is meant to be.
- ``corrupt``: mDPO-style corruption of the image itself: a random crop keeping 5-20 % of the area,
  resized back to the original size, plus Gaussian pixel noise; seeded per example so that the
  reference cache and every epoch see the same m'.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from prefopt.data.images import load_image
from prefopt.errors import DataError

logger = logging.getLogger(__name__)

EMBED_SIZE = 16


def embed_image(image: Image.Image, size: int = EMBED_SIZE) -> np.ndarray:
    """A unit vector of the image downsampled to ``size`` x ``size`` RGB, mean-centred."""
    small = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    vec = small.reshape(-1)
    vec = vec - vec.mean()
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def _source_key(src: Any) -> str:
    """A stable identity for an image source, so duplicates of the same file are not 'similar' partners."""
    if isinstance(src, bytes | bytearray):
        return "b:" + hashlib.sha1(bytes(src)).hexdigest()
    if isinstance(src, dict):
        return _source_key(src.get("bytes") or src.get("path") or "")
    if isinstance(src, Image.Image):
        return "p:" + hashlib.sha1(src.tobytes()).hexdigest()
    return "s:" + str(src)


def most_similar_indices(images: Sequence[Any], *, chunk: int = 1024) -> list[int]:
    """For each image, the index of the most similar different image (cosine of :func:`embed_image`)."""
    keys = [_source_key(src) for src in images]
    if len(set(keys)) < 2:
        raise DataError("contrastive: similar needs at least two different images in the dataset")
    vectors = np.stack([embed_image(load_image(src)) for src in tqdm(images, desc="embedding images")])
    key_ids = np.unique(np.asarray(keys), return_inverse=True)[1]
    best: list[int] = []
    # chunked so that a large dataset never holds the full N x N similarity matrix
    for start in range(0, len(images), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        same = key_ids[start:start + chunk, None] == key_ids[None, :]
        sims[same] = -np.inf  # itself, and other rows that point at the same image
        best.extend(int(i) for i in sims.argmax(axis=1))
    return best


def corrupt_image(image: Image.Image, seed: int, *, min_keep: float = 0.05, max_keep: float = 0.2,
                  noise_std: float = 0.1) -> Image.Image:
    """mDPO-style corruption: random crop of ``min_keep``-``max_keep`` of the area, resized back, plus noise."""
    rng = np.random.default_rng(seed)
    width, height = image.size
    keep = rng.uniform(min_keep, max_keep)
    aspect = rng.uniform(0.5, 2.0)
    crop_w = int(np.clip(round(np.sqrt(keep * width * height * aspect)), 1, width))
    crop_h = int(np.clip(round(keep * width * height / crop_w), 1, height))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    crop = image.convert("RGB").crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32) / 255.0
    pixels = np.clip(pixels + rng.normal(0.0, noise_std, pixels.shape), 0.0, 1.0)
    return Image.fromarray((pixels * 255).round().astype(np.uint8))


class ContrastiveImages:
    """Supplies m' per example index: the row's own contrastive image, or one built by ``mode``."""

    def __init__(self, examples: Sequence[Any], mode: str, seed: int = 0):
        self.examples = examples
        self.mode = mode
        self.seed = seed
        missing = [i for i, ex in enumerate(examples) if ex.contrastive_image is None]
        self.built = set(missing)
        self.partner: dict[int, int] = {}
        if missing and mode == "similar":
            partners = most_similar_indices([ex.image for ex in examples])
            self.partner = {i: partners[i] for i in missing}
        if missing and mode in ("similar", "corrupt"):
            logger.info("contrastive images: %d of %d rows have none; built with '%s'",
                        len(missing), len(examples), mode)

    def needs_mode(self) -> bool:
        """True when some rows lack m' and no construction was chosen."""
        return bool(self.built) and self.mode not in ("similar", "corrupt")

    def image(self, index: int) -> Image.Image:
        """The contrastive image of example ``index``, decoded."""
        example = self.examples[index]
        if index not in self.built:
            return load_image(example.contrastive_image)
        if self.mode == "similar":
            return load_image(self.examples[self.partner[index]].image)
        if self.mode == "corrupt":
            return corrupt_image(load_image(example.image), seed=self.seed * 1_000_003 + index)
        raise DataError(
            f"example {index} has no contrastive image; set contrastive: similar or contrastive: corrupt to build one"
        )
