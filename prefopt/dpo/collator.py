"""Preference batches: every sequence a loss needs, encoded in one right-padded batch.

For ``B`` examples and loss keys ``(k_1 … k_K)`` the batch holds ``K·B`` sequences in key-major order
(all ``k_1`` rows, then all ``k_2`` rows, …), so the policy runs **one** forward per step and
:func:`split_by_key` recovers ``{key: [B]}``. Each sequence is ``prompt(image) + response`` through the
adapter's ``encode_prompt_response``: prompt and image tokens carry label -100, so
:func:`sequence_logps` sums the response tokens (and the end-of-turn token) only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from prefopt.data.images import load_image
from prefopt.data.schema import PreferenceExample, user_message
from prefopt.errors import DataError

logger = logging.getLogger(__name__)

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


def example_problem(ex: PreferenceExample, keys: Sequence[str], loss_name: str, mode: str) -> str | None:
    """Why ``ex`` cannot train the loss ``keys`` (None when it can); ``mode`` is the recipe's ``contrastive``."""
    needs_answer = any(KEY_PARTS[k][1] == "contrastive_chosen" for k in keys)
    needs_image = any(KEY_PARTS[k][0] == "contrastive_image" for k in keys)
    if not ex.chosen.strip() or not ex.rejected.strip():
        return "empty chosen or rejected response"
    if ex.chosen.strip() == ex.rejected.strip():
        # identical responses give a zero margin and no preference signal: almost always a data bug
        return "chosen and rejected responses are identical"
    if needs_answer and not ex.contrastive_chosen:
        return (f"no contrastive_chosen (resp_2_w): loss '{loss_name}' needs the preferred answer for the "
                "contrastive image; use --loss mdpo or --loss dpo for data without it")
    if needs_image and ex.contrastive_image is None and mode not in ("similar", "corrupt"):
        return (f"no contrastive image (image_2): loss '{loss_name}' needs one; set contrastive: similar "
                "(a similar dataset image) or contrastive: corrupt (mDPO-style crop + noise)")
    return None


def _mode(contrastive: Any) -> str:
    return contrastive if isinstance(contrastive, str) else getattr(contrastive, "mode", "none")


def validate_examples(examples: Sequence[PreferenceExample], keys: Sequence[str], loss_name: str,
                      contrastive: Any, path: str | None = None) -> None:
    """Raise DataError naming the (1-based) row when an example lacks what the loss ``keys`` read."""
    for row, ex in enumerate(examples):
        problem = example_problem(ex, keys, loss_name, _mode(contrastive))
        if problem:
            raise DataError(problem, path=path, row=row + 1)


def screen_examples(examples: Sequence[PreferenceExample], keys: Sequence[str], loss_name: str, mode: str,
                    tracker: Any) -> list[PreferenceExample]:
    """The examples fit for the loss whose images verify; the others are recorded in ``tracker`` (BadRows)."""
    from prefopt.data.bad_rows import check_images

    def check(ex: PreferenceExample) -> None:
        problem = example_problem(ex, keys, loss_name, mode)
        if problem:
            raise DataError(problem)
        check_images(ex)

    return tracker.screen(examples, check)


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

    def __init__(self, adapter: Any, keys: Sequence[str], contrastive: Any, skip_bad: bool = False):
        self.adapter = adapter
        self.keys = tuple(keys)
        self.contrastive = contrastive
        self.skip_bad = skip_bad  # training: drop an undecodable example from its batch (reference pass: raise)
        self.bad_skipped = 0

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Encode ``items``; adds ``ref_logps`` ``[K, B]`` when the items carry cached reference values."""
        needs_contrastive = any(KEY_PARTS[k][0] == "contrastive_image" for k in self.keys)
        decoded, kept = [], []
        for item in items:
            ex = item["example"]
            try:
                m2 = self.contrastive.image(item["index"]) if needs_contrastive else None
                decoded.append({"image": load_image(ex.image), "contrastive_image": m2})
            except DataError as err:
                if not self.skip_bad:
                    raise
                # an image that passed the up-front check but does not decode: drop it from this batch, count it
                self.bad_skipped += 1
                logger.warning("example %r skipped (%s); %d skipped so far", ex.id, err, self.bad_skipped)
                continue
            kept.append(item)
        if not kept:
            raise DataError(f"no example of this batch has readable images ({[i['example'].id for i in items]})")
        items = kept
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
