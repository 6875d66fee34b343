"""NTK kernel routes vs autograd per-sample gradients of a real nn.Linear LM head; InfoNCE vs a Python loop."""

from __future__ import annotations

import math

import pytest
import torch

from prefopt.grpo.ntk import (
    cosine_from_gram,
    gradient_kernel,
    hidden_proxy_features,
    info_nce,
    kernel_token_pairs,
    kernel_vocab_chunks,
    peer_similarity,
)


def _batch(B=3, T=5, d=6, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(d, V, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, d, generator=g, dtype=torch.float64))
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[0, : min(2, T - 1)] = 0  # prompt tokens of sample 0
    mask[-1, -1] = 0  # padding of the last sample
    labels[mask == 0] = -100
    return hidden, head, labels, mask


def _autograd_kernel(hidden, head, labels, mask):
    """Brute force: flatten each sample's true gradient w.r.t. the LM-head weight, then take dot products."""
    grads = []
    for i in range(hidden.shape[0]):
        head.zero_grad()
        logp = torch.log_softmax(head(hidden[i]), dim=-1)
        y = labels[i].clamp(min=0)
        (logp.gather(1, y[:, None]).squeeze(1) * mask[i]).sum().backward()
        grads.append(head.weight.grad.detach().flatten().clone())
    G = torch.stack(grads)
    return G @ G.T


@pytest.mark.parametrize("route", ["pairs", "vocab", "auto"])
@pytest.mark.parametrize("budget", [7, 2**20])  # 7 forces many tiny chunks on both routes
def test_kernel_matches_autograd(route, budget):
    hidden, head, labels, mask = _batch()
    expected = _autograd_kernel(hidden, head, labels, mask)
    with torch.no_grad():
        logits = head(hidden)
    got = gradient_kernel(hidden, logits, labels, mask, route=route, budget=budget)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-6, rel
    assert torch.allclose(got, got.T, atol=1e-10)
    # the no-gradient paths work in place on their own copies, never on the caller's tensors
    assert torch.equal(logits, head(hidden).detach()) and (labels[mask == 0] == -100).all()


def test_kernel_direct_routes_agree_with_weighted_mask():
    hidden, head, labels, mask = _batch(B=4, T=3, d=5, V=9, seed=3)
    mask = mask * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)  # per-token loss weights
    with torch.no_grad():
        logits = head(hidden)
    expected = _autograd_kernel(hidden, head, labels, mask)
    for fn in (kernel_token_pairs, kernel_vocab_chunks):
        got = fn(hidden, logits, labels, mask)
        assert ((got - expected).norm() / expected.norm()) < 1e-6


def test_kernel_hand_worked_single_token():
    """One token, d=1, V=2, h=2, logits 0 -> p=(1/2,1/2), y=0: G = (e_0 - p) h = (1, -1); ⟨G,G⟩ = 2."""
    hidden = torch.tensor([[[2.0]]], dtype=torch.float64)
    logits = torch.zeros(1, 1, 2, dtype=torch.float64)
    labels = torch.tensor([[0]])
    mask = torch.ones(1, 1, dtype=torch.float64)
    for route in ("pairs", "vocab"):
        assert gradient_kernel(hidden, logits, labels, mask, route=route).item() == pytest.approx(2.0)


@pytest.mark.parametrize("route", ["pairs", "vocab"])
def test_kernel_gradcheck(route):
    hidden, head, labels, mask = _batch(B=2, T=2, d=3, V=4, seed=1)
    logits = head(hidden).detach().requires_grad_(True)
    hidden = hidden.clone().requires_grad_(True)

    def fn(h, z):
        return gradient_kernel(h, z, labels, mask, route=route, budget=5)

    assert torch.autograd.gradcheck(fn, (hidden, logits))


def test_kernel_rejects_bad_shapes():
    hidden, head, labels, mask = _batch()
    with pytest.raises(ValueError, match="share"):
        gradient_kernel(hidden, head(hidden), labels[:, :2], mask)


def test_cosine_from_gram():
    K = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    C = cosine_from_gram(K)
    assert C[0, 1].item() == pytest.approx(2.0 / 6.0)
    assert torch.allclose(torch.diagonal(C), torch.ones(2))


def _brute_info_nce(sim, thr, t, inclusive=False):
    B = len(sim)
    losses = []
    for i in range(B):
        others = [j for j in range(B) if j != i and not math.isnan(sim[i][j])]
        if not others:
            continue
        pos = [j for j in others if (sim[i][j] <= thr if inclusive else sim[i][j] < thr)]
        if not pos:
            pos = [min(others, key=lambda j: sim[i][j])]
        num = sum(math.exp(sim[i][j] / t) for j in pos)
        den = sum(math.exp(sim[i][k] / t) for k in others)
        losses.append(-math.log(num / den))
    return sum(losses) / len(losses)


def test_info_nce_matches_brute_force_with_no_positive_row():
    sim = torch.tensor(
        [
            [1.0, 0.2, 0.9, 0.5],
            [0.2, 1.0, 0.7, 0.8],  # row 1: all others >= 0.54 except 0.2 -> one positive
            [0.9, 0.7, 1.0, 0.6],  # row 2: no positive (all >= 0.54) -> least similar (0.6)
            [0.5, 0.8, 0.6, 1.0],
        ],
        dtype=torch.float64,
    )
    got = info_nce(sim, threshold=0.54, temperature=0.54)
    assert got.item() == pytest.approx(_brute_info_nce(sim.tolist(), 0.54, 0.54), rel=1e-12)
    incl = info_nce(sim, threshold=0.5, temperature=0.5, inclusive=True)
    assert incl.item() == pytest.approx(_brute_info_nce(sim.tolist(), 0.5, 0.5, inclusive=True), rel=1e-12)


def test_info_nce_hand_worked():
    """B=2: each row has one other item, which is its only candidate -> -log(1) = 0."""
    sim = torch.tensor([[1.0, 0.3], [0.3, 1.0]])
    assert info_nce(sim, 0.54, 0.54).item() == pytest.approx(0.0, abs=1e-7)


def test_info_nce_random_and_nan_and_grad():
    g = torch.Generator().manual_seed(5)
    sim = (torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    masked = sim.detach().clone()
    masked[0, 3] = masked[4, :] = float("nan")
    got = info_nce(torch.where(torch.isnan(masked), masked, sim), 0.1, 0.5)
    assert got.item() == pytest.approx(_brute_info_nce(masked.tolist(), 0.1, 0.5), rel=1e-12)
    got.backward()
    assert torch.isfinite(sim.grad).all() and sim.grad.abs().sum() > 0
    empty = torch.full((3, 3), float("nan"))
    assert info_nce(empty, 0.5, 0.5).item() == 0.0


def test_hidden_proxy_and_peer_similarity():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]], [[0.0, 2.0], [0.0, 4.0], [0.0, 6.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    feats = hidden_proxy_features(hidden, mask)
    assert torch.allclose(feats, torch.tensor([[2.0, 1.0], [0.0, 4.0]]))

    feats = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    types = ["image"] * 9 + ["video"]
    sim = peer_similarity(feats, types, peers=7, generator=torch.Generator().manual_seed(1))
    drawn = ~torch.isnan(sim)
    assert drawn[:9].sum(dim=1).tolist() == [7] * 9  # 7 peers among the 8 other images
    assert not drawn[9].any() and not drawn[:, 9].any()  # the lone video has no peer
    assert not torch.diagonal(drawn).any()
    i, j = drawn.nonzero()[0].tolist()
    assert sim[i, j].item() == pytest.approx(
        torch.cosine_similarity(feats[i], feats[j], dim=0).item(), rel=1e-5
    )
    loss = info_nce(sim, 0.5, 0.5, inclusive=True)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("route", ["pairs", "vocab"])
def test_kernel_backward_does_not_keep_per_sample_gradients(route):
    """Autograd must not save B·V·d elements (all per-sample V×d gradients) for the backward pass."""
    B, T, d, V = 4, 3, 64, 512
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.float64)
    saved = {}  # storage pointer -> elements; views of one tensor share a storage

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        K = gradient_kernel(hidden, logits, labels, mask, route=route, budget=4096)
    assert sum(saved.values()) < B * V * d / 4, saved  # logits-sized tensors only (B·T·V each)
    (cosine_from_gram(K) ** 2).sum().backward()
    assert torch.isfinite(hidden.grad).all() and logits.grad.abs().sum() > 0


def test_kernel_half_precision_inputs_are_computed_in_float32():
    hidden, head, labels, mask = _batch(seed=4)
    with torch.no_grad():
        logits = head(hidden)
    exact = gradient_kernel(hidden, logits, labels, mask)
    for route in ("pairs", "vocab"):
        got = gradient_kernel(hidden.bfloat16(), logits.bfloat16(), labels, mask, route=route)
        assert got.dtype == torch.float32
        assert ((got.double() - exact).norm() / exact.norm()) < 0.05  # bf16 input rounding only
