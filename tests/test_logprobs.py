"""Response-only chunked log-probs (issue 21 item 1): exact against the full computation, gradients included,
and no ``[rows, positions, V]`` tensor on the way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prefopt.data.schema import PreferenceExample
from prefopt.dpo.collator import PreferenceCollator, sequence_logps
from prefopt.dpo.contrastive import ContrastiveImages
from prefopt.dpo.losses import loss_keys
from prefopt.sft.trainer import response_token_loss, weighted_token_loss
from prefopt.training.logprobs import (
    chunked_token_logps,
    head_token_logps,
    last_hidden_states,
    sequence_sums,
    supervised_positions,
    token_chunk,
)


def _full(hidden, weight, targets, bias=None, temperature=1.0):
    logits = F.linear(hidden, weight, bias).float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_logps_and_gradients_match_full(chunk, temperature, with_bias):
    g = torch.Generator().manual_seed(0)
    n, d, v = 13, 8, 50
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(v, d, generator=g, requires_grad=True)
    bias = torch.randn(v, generator=g, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    upstream = torch.randn(n, generator=g)
    got = chunked_token_logps(hidden, weight, targets, bias, temperature, chunk)
    grads = torch.autograd.grad((got * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    want = _full(hidden, weight, targets, bias, temperature)
    ref = torch.autograd.grad((want * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunked_logps_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 9, (5,), generator=g)
    # the op returns float32 by design; compare the float64 autograd of the closed form instead
    got = chunked_token_logps(hidden, weight, targets, chunk=2)
    gh, gw = torch.autograd.grad(got.sum(), [hidden, weight])
    want = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[:, None]).sum()
    rh, rw = torch.autograd.grad(want, [hidden, weight])
    torch.testing.assert_close(gh, rh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)


def test_supervised_positions_shift_and_sums():
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, -100, 7]])
    rows, pos, targets = supervised_positions(labels)
    assert rows.tolist() == [0, 0, 1] and pos.tolist() == [0, 1, 2] and targets.tolist() == [5, 6, 7]
    assert sequence_sums(torch.tensor([1.0, 2.0, 4.0]), rows, 2).tolist() == [3.0, 4.0]
    assert token_chunk(152_064) == 2**24 // 152_064


def test_non_linear_head_is_called_per_chunk():
    """A wrapped head (LoRA, modules_to_save) is called on chunks under checkpointing; same values, grads."""
    head = torch.nn.Sequential(torch.nn.Linear(6, 20))
    states = torch.randn(9, 6, requires_grad=True)
    targets = torch.randint(0, 20, (9,))
    got = head_token_logps(head, head.forward, states, targets, chunk=4)
    want = _full(states, head[0].weight, targets, head[0].bias)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), states)[0],
                               torch.autograd.grad(want.sum(), states)[0], atol=1e-5, rtol=1e-5)


class _LargestVocabTensor(TorchDispatchMode):
    """Records the most elements of any tensor an op returns whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


def _examples(n: int = 2) -> list[PreferenceExample]:
    from PIL import Image

    return [PreferenceExample(id=str(i), question="What is in the image?", image=Image.new("RGB", (56, 56), (i, 9, 9)),
                              chosen=f"A red circle and {i} squares.", rejected="A blue star.")
            for i in range(n)]


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir):
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(str(tiny_qwen_dir), dtype="float32")
    adapter.model.eval()
    return adapter


def _batch(adapter):
    keys = loss_keys("dpo")
    collator = PreferenceCollator(adapter, keys, ContrastiveImages(_examples(), "none"))
    return collator([{"index": i, "example": ex} for i, ex in enumerate(_examples())])


def test_sequence_logps_match_full_logits_with_gradients(qwen):
    model = qwen.model
    batch = _batch(qwen)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_index")}
    params = [p for p in model.parameters() if p.requires_grad]
    got = sequence_logps(model, batch)
    got_grads = torch.autograd.grad(got.sum(), params, allow_unused=True)
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    want = (token * mask).sum(-1)
    want_grads = torch.autograd.grad(want.sum(), params, allow_unused=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, want_grads, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_no_rows_by_positions_by_vocab_tensor(qwen):
    batch = _batch(qwen)
    vocab = qwen.model.get_output_embeddings().weight.size(0)
    n_rows, n_pos = batch["input_ids"].shape
    n_supervised = int((batch["labels"][:, 1:] != -100).sum())
    probe = _LargestVocabTensor(vocab)
    with probe:
        sequence_logps(qwen.model, batch).sum().backward()
    qwen.model.zero_grad(set_to_none=True)
    hidden = qwen.model.get_output_embeddings().weight.size(1)
    # the largest vocabulary-wide tensors: one chunk of supervised tokens' logits, or the head's own weightᵀ
    bound = max(min(n_supervised, token_chunk(vocab)), hidden) * vocab
    assert 0 < probe.largest <= bound < n_rows * (n_pos - 1) * vocab
    # and the head's input states are the model's own: the identity head returns them unchanged
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_index")}
    states = last_hidden_states(qwen.model, inputs)
    head = qwen.model.get_output_embeddings()
    torch.testing.assert_close(head(states), qwen.model(**inputs, use_cache=False).logits, atol=1e-5, rtol=1e-5)


def test_sft_loss_matches_full_weighted_loss(qwen):
    batch = _batch(qwen)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_index")}
    labels = batch["labels"]
    weights = torch.where(labels != -100, 1.0 + (labels % 3).float(), 0.0)
    params = [p for p in qwen.model.parameters() if p.requires_grad]
    for w in (None, weights):
        got = response_token_loss(qwen.model, inputs, labels, w)
        want = weighted_token_loss(qwen.model(**inputs, use_cache=False).logits, labels, w)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        ga = torch.autograd.grad(got, params, allow_unused=True)
        gb = torch.autograd.grad(want, params, allow_unused=True)
        for a, b in zip(ga, gb, strict=True):
            if b is not None:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
