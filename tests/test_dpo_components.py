"""Component tests: concatenated log-probs, contrastive images, data validation, reference cache files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prefopt.data.schema import PreferenceExample, user_message
from prefopt.dpo.collator import (
    PreferenceCollator,
    PreferenceDataset,
    sequence_logps,
    split_by_key,
    validate_examples,
)
from prefopt.dpo.contrastive import ContrastiveImages, corrupt_image, most_similar_indices
from prefopt.dpo.losses import loss_keys
from prefopt.dpo.reference import cache_file, data_identity, fingerprint, load_cache, save_cache
from prefopt.errors import DataError


def _noise_image(seed: int, size: int = 56) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))


def _examples(n: int = 2) -> list[PreferenceExample]:
    return [
        PreferenceExample(id=str(i), question="What is in the image?", image=_noise_image(i),
                          chosen=f"A red circle and {i} squares.", rejected="A blue star.",
                          contrastive_image=_noise_image(100 + i), contrastive_chosen="A green triangle.")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs):
    from prefopt.models.adapter import load_adapter

    out = {}
    for family, path in tiny_model_dirs.items():
        adapter = load_adapter(str(path), dtype="float32")
        adapter.model.eval()
        out[family] = adapter
    return out


def test_concatenated_forward_matches_separate_forwards(adapters, family):
    adapter = adapters[family]
    examples = _examples(2)
    keys = loss_keys("symmpo")
    collator = PreferenceCollator(adapter, keys, ContrastiveImages(examples, "none"))
    batch = collator([{"index": i, "example": ex} for i, ex in enumerate(examples)])
    with torch.no_grad():
        together = split_by_key(sequence_logps(adapter.model, batch), keys)
    images = {"1": [ex.image for ex in examples], "2": [ex.contrastive_image for ex in examples]}
    responses = {"w": [ex.chosen for ex in examples], "l": [ex.rejected for ex in examples],
                 "2": [ex.contrastive_chosen for ex in examples]}
    for key in keys:
        for b, ex in enumerate(examples):
            img = images[key[0]][b]
            resp = responses["w" if key[1] == "w" else "l" if key[1] == "l" else "2"][b]
            single = dict(adapter.encode_prompt_response([[user_message(ex.question, 1)]], [resp], [[img]]))
            with torch.no_grad():
                alone = sequence_logps(adapter.model, single)
                # brute force: the summed cross-entropy of the supervised tokens
                inputs = {k: v for k, v in single.items() if k != "labels"}
                logits = adapter.model(**inputs).logits[0, :-1]
                expected = -F.cross_entropy(logits, single["labels"][0, 1:], ignore_index=-100, reduction="sum")
            assert alone.item() == pytest.approx(expected.item(), abs=1e-4)
            assert together[key][b].item() == pytest.approx(alone.item(), abs=1e-5)


def test_only_response_tokens_are_supervised(adapters):
    adapter = adapters["qwen2_5_vl"]
    examples = _examples(1)
    batch = PreferenceCollator(adapter, ("1w",), ContrastiveImages(examples, "none"))(
        [{"index": 0, "example": examples[0]}])
    labels = batch["labels"][0]
    text = adapter.tokenizer.decode(labels[labels != -100])
    assert examples[0].chosen in text and "What is in the image" not in text
    for token_id in adapter.image_token_ids:
        assert not (labels == token_id).any()
    assert "ref_logps" not in batch and batch["example_index"].tolist() == [0]


def test_collator_attaches_reference_rows():
    examples = _examples(2)
    ref = torch.arange(4.0).reshape(2, 2)
    dataset = PreferenceDataset(examples, ref)

    class FakeAdapter:
        def encode_prompt_response(self, prompts, responses, images):
            assert len(prompts) == 4 and responses[:2] == [e.chosen for e in examples]
            assert responses[2:] == [e.rejected for e in examples]
            return {"input_ids": torch.zeros(4, 3, dtype=torch.long)}

    batch = PreferenceCollator(FakeAdapter(), ("1w", "1l"), ContrastiveImages(examples, "none"))(
        [dataset[0], dataset[1]])
    # [K, B]: row k holds key k for each example
    assert batch["ref_logps"].tolist() == [[0.0, 2.0], [1.0, 3.0]]


def test_most_similar_excludes_itself_and_duplicates():
    base = [_noise_image(s) for s in range(3)]
    near = [Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + 6, 0, 255).astype("uint8")) for im in base]
    images = base + near + [base[0]]  # index 6 duplicates index 0
    partners = most_similar_indices(images)
    assert partners[:3] == [3, 4, 5] and partners[3:6] == [0, 1, 2]
    assert partners[6] == 3 and partners[0] != 6


def test_corrupt_image_is_seeded_and_changes_the_image():
    img = _noise_image(7)
    a, b, c = corrupt_image(img, seed=1), corrupt_image(img, seed=1), corrupt_image(img, seed=2)
    assert a.size == img.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert np.abs(np.asarray(a, dtype=float) - np.asarray(img, dtype=float)).mean() > 10


def test_validation_names_the_row_and_the_loss():
    examples = _examples(3)
    examples[1].contrastive_chosen = None
    examples[2].contrastive_image = None
    with pytest.raises(DataError, match=r"data.parquet, row 2: no contrastive_chosen.*'symmpo'.*mdpo"):
        validate_examples(examples, loss_keys("symmpo"), "symmpo", ContrastiveImages(examples, "corrupt"),
                          path="data.parquet")
    with pytest.raises(DataError, match=r"row 3: no contrastive image.*contrastive: similar"):
        validate_examples(examples, loss_keys("mdpo"), "mdpo", ContrastiveImages(examples, "none"), path="d.json")
    validate_examples(examples, loss_keys("dpo"), "dpo", ContrastiveImages(examples, "none"))
    built = ContrastiveImages(examples, "similar")
    validate_examples(examples, loss_keys("mdpo"), "mdpo", built)
    assert built.image(2).size == (56, 56)


def test_reference_cache_round_trip_and_fingerprint(tmp_path):
    data = tmp_path / "pairs.parquet"
    data.write_bytes(b"one")
    parts = {"data": data_identity(str(data)), "keys": ["1w", "1l"]}
    fp = fingerprint(parts)
    path = cache_file(str(data), fp)
    assert path.parent == tmp_path and path.suffix == ".safetensors"
    values = torch.randn(3, 2)
    save_cache(path, values, fp, ["1w", "1l"], parts)
    assert torch.equal(load_cache(path, fp, ["1w", "1l"], 3), values)
    assert load_cache(path, fp, ["1w", "1l", "2w"], 3) is None  # other loss keys
    assert load_cache(path, "0" * 64, ["1w", "1l"], 3) is None  # other fingerprint
    data.write_bytes(b"changed data")
    assert fingerprint({"data": data_identity(str(data)), "keys": ["1w", "1l"]}) != fp


def test_reference_shards_match_the_full_pass(adapters):
    from prefopt.dpo.reference import compute_reference_logps

    adapter = adapters["llava"]
    examples = _examples(3)
    collator = PreferenceCollator(adapter, loss_keys("mdpo"), ContrastiveImages(examples, "none"))
    dataset = PreferenceDataset(examples)
    full = compute_reference_logps(adapter.model, dataset, collator, batch_size=2)
    shard = compute_reference_logps(adapter.model, dataset, collator, batch_size=2, indices=[2, 0])
    assert full.shape == (3, 3) and torch.allclose(shard, full[[2, 0]], atol=1e-5)
