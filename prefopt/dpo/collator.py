"""Preference batches: every sequence a loss needs, encoded in one right-padded batch.

For ``B`` examples and loss keys ``(k_1 … k_K)`` the batch holds ``K·B`` sequences in key-major order
(all ``k_1`` rows, then all ``k_2`` rows, …), so the policy runs **one** forward per step and
:func:`split_by_key` recovers ``{key: [B]}``. Each sequence is ``prompt(image) + response`` through the
adapter's ``encode_prompt_response``: prompt and image tokens carry label -100, so
:func:`sequence_logps` sums the response tokens (and the end-of-turn token) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from prefopt.data.images import load_image
from prefopt.data.schema import PreferenceExample, user_message
from prefopt.errors import DataError

#: Which image (example "1" or contrastive "2") and which response each key pairs.
KEY_PARTS: dict[str, tuple[str, str]] = {
    "1w": ("image", "chosen"),
    "1l": ("image", "rejected"),
    "12": ("image", "contrastive_chosen"),
    "2w": ("contrastive_image", "chosen"),
    "22": ("contrastive_image", "contrastive_chosen"),
}
#: Batch entries that are not model inputs.
NON_MODEL_KEYS = ("labels", "ref_logps", "example_index")


def validate_examples(examples: Sequence[PreferenceExample], keys: Sequence[str], loss_name: str,
                      contrastive: Any, path: str | None = None) -> None:
    """Raise DataError naming the row when an example lacks what the loss ``keys`` read."""
    needs_answer = any(KEY_PARTS[k][1] == "contrastive_chosen" for k in keys)
    needs_image = any(KEY_PARTS[k][0] == "contrastive_image" for k in keys)
    for row, ex in enumerate(examples):
        if not ex.chosen.strip() or not ex.rejected.strip():
            raise DataError("empty chosen or rejected response", path=path, row=row)
        if ex.chosen.strip() == ex.rejected.strip():
            # identical responses give a zero margin and no preference signal: almost always a data bug
            raise DataError("chosen and rejected responses are identical", path=path, row=row)
        if needs_answer and not ex.contrastive_chosen:
            raise DataError(
                f"no contrastive_chosen (resp_2_w): loss '{loss_name}' needs the preferred answer for the "
                "contrastive image; use --loss mdpo or --loss dpo for data without it", path=path, row=row)
        if needs_image and ex.contrastive_image is None and contrastive.needs_mode():
            raise DataError(
                f"no contrastive image (image_2): loss '{loss_name}' needs one; set contrastive: similar "
                "(a similar dataset image) or contrastive: corrupt (mDPO-style crop + noise)", path=path, row=row)


class PreferenceDataset(torch.utils.data.Dataset):
    """Examples by index, with their cached reference log-probs ``[N, K]`` when precomputed."""

    def __init__(self, examples: Sequence[PreferenceExample], reference: Tensor | None = None):
        self.examples = list(examples)
        self.reference = reference

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"index": index, "example": self.examples[index]}
        if self.reference is not None:
            item["ref"] = self.reference[index]
        return item


class PreferenceCollator:
    """Turns dataset items into one ``K·B``-row batch through the adapter (see the module docstring)."""

    def __init__(self, adapter: Any, keys: Sequence[str], contrastive: Any):
        self.adapter = adapter
        self.keys = tuple(keys)
        self.contrastive = contrastive

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Encode ``items``; adds ``ref_logps`` ``[K, B]`` when the items carry cached reference values."""
        needs_contrastive = any(KEY_PARTS[k][0] == "contrastive_image" for k in self.keys)
        decoded = []
        for item in items:
            ex = item["example"]
            m2 = self.contrastive.image(item["index"]) if needs_contrastive else None
            decoded.append({"image": load_image(ex.image), "contrastive_image": m2})
        prompts, responses, images = [], [], []
        for key in self.keys:
            image_field, response_field = KEY_PARTS[key]
            for item, imgs in zip(items, decoded):
                ex = item["example"]
                prompts.append([user_message(ex.question, n_images=1)])
                responses.append(getattr(ex, response_field))
                images.append([imgs[image_field]])
        batch = dict(self.adapter.encode_prompt_response(prompts, responses, images))
        batch["example_index"] = torch.tensor([item["index"] for item in items])
        if all("ref" in item for item in items):
            batch["ref_logps"] = torch.stack([item["ref"] for item in items], dim=1)
        return batch


def sequence_logps(model: Any, batch: dict[str, Any]) -> Tensor:
    """Summed log-probs of the supervised (label != -100) tokens of each row: shape ``[rows]`` float32.

    Only the states that predict a response token reach the LM head, in token chunks
    (:mod:`prefopt.training.logprobs`): no ``[rows, positions, V]`` logits are ever built.
    """
    from prefopt.training.logprobs import response_token_logps, sequence_sums

    inputs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    labels = batch["labels"]
    logps, rows, _ = response_token_logps(model, inputs, labels)
    return sequence_sums(logps, rows, labels.size(0))


def split_by_key(values: Tensor, keys: Sequence[str]) -> dict[str, Tensor]:
    """Undo the key-major concatenation: ``[K·B]`` -> ``{key: [B]}``."""
    return dict(zip(keys, values.chunk(len(keys), dim=0), strict=True))
