"""NTK gradient mode inside the loss's LM-head chunks (issue 21 item 2): the fused pass's log-probs, entropies
and Gram matrix equal the full-logits computation, and so do their gradients (autograd of the full form)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prefopt.grpo import ntk


def _problem(seed: int, bias: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, T, d, V = 3, 5, 6, 23
    hidden = torch.randn(B, T, d, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, d, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 1] = labels[1, 2]  # repeated targets exercise [y_t = y_s]
    mask = (torch.rand(B, T, generator=g) > 0.25).to(dtype)
    mask[2, :2] = 0.5  # fractional token weights (tool masks are 0/1, the maths takes any)
    return hidden, weight, b, labels, mask


def _full(hidden, weight, b, labels, mask, temperature):
    logits = F.linear(hidden, weight, b) / temperature
    logp = logits.log_softmax(-1)
    token = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    gram = ntk.kernel_token_pairs(hidden, logits, labels, mask)
    return token, entropy, gram


@pytest.mark.parametrize("budget", [7, 40, 10_000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_pass_matches_full_values_and_gradients(budget, temperature, bias):
    hidden, weight, b, labels, mask = _problem(0, bias)
    B, T, _ = hidden.shape
    sample = torch.arange(B).repeat_interleave(T)
    flat = hidden.reshape(B * T, -1)
    logps, entropy, gram = ntk.fused_logps_and_gram(flat, weight, labels.reshape(-1), sample, B,
                                                    weights=mask.reshape(-1), bias=b, temperature=temperature,
                                                    budget=budget)
    want_logps, want_entropy, want_gram = _full(hidden, weight, b, labels, mask, temperature)
    torch.testing.assert_close(logps.double(), want_logps.reshape(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy.double(), want_entropy.reshape(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gram.double(), want_gram, atol=1e-5, rtol=1e-5)
    # a loss using both outputs, as the trainer's (GRPO term on log-probs + InfoNCE on the cosine)
    g = torch.Generator().manual_seed(5)
    up_logps, up_gram = torch.randn(B * T, generator=g), torch.randn(B, B, generator=g)
    params = [hidden, weight] + ([b] if bias else [])
    got = torch.autograd.grad((logps * up_logps).sum() + (gram * up_gram).sum(), params)
    want = torch.autograd.grad((want_logps.reshape(-1) * up_logps).sum() + (want_gram * up_gram).sum(), params)
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x.double(), y, atol=1e-5, rtol=1e-5)


def test_fused_gram_through_cosine_and_info_nce():
    """The trainer's own composition: InfoNCE of the cosine of K, backpropagated to hidden states and head."""
    hidden, weight, _, labels, mask = _problem(3, False, torch.float32)
    B, T, _ = hidden.shape
    sample = torch.arange(B).repeat_interleave(T)
    _, _, gram = ntk.fused_logps_and_gram(hidden.reshape(B * T, -1), weight, labels.reshape(-1), sample, B,
                                          weights=mask.reshape(-1), budget=9)
    loss = ntk.info_nce(ntk.cosine_from_gram(gram), 0.54, 0.54)
    got = torch.autograd.grad(loss, [hidden, weight])
    ref = ntk.info_nce(ntk.cosine_from_gram(_full(hidden, weight, None, labels, mask, 1.0)[2]), 0.54, 0.54)
    want = torch.autograd.grad(ref, [hidden, weight])
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_policy_forward_with_gram_matches_explicit_forward(tiny_model_dirs, family):
    """The trainer's fused loss forward gives TRL's per-token log-probs / entropies and the NTK Gram of an
    explicit full-logits forward, with the same gradients for every trained parameter."""
    from PIL import Image

    from prefopt.grpo.fused_head import policy_forward_with_gram, supports_fused_head
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(str(tiny_model_dirs[family]))
    model = adapter.model.float()
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
               for q in ("Is there a circle?", "Which shape is red?")]
    images = [[Image.new("RGB", (56, 56), (200, 40 * i, 40))] for i in range(2)]
    enc = adapter.encode_prompts(prompts, images)
    torch.manual_seed(0)
    completion_ids = torch.randint(5, 60, (2, 6))
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0
    ntk_mask = completion_mask.clone()
    ntk_mask[0, 1] = 0  # a tool token: scored by the loss, not in the kernel
    input_ids = torch.cat([enc["input_ids"], completion_ids], dim=1)
    attention = torch.cat([enc["attention_mask"], completion_mask], dim=1)
    media = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in media:
            media[key] = torch.cat([media[key], torch.zeros_like(completion_ids)], dim=1)
    assert supports_fused_head(model)
    temperature, k = 0.9, completion_ids.size(1)
    params = [p for p in model.parameters() if p.requires_grad]
    logps, entropy, gram = policy_forward_with_gram(model, model, input_ids, attention, k, ntk_mask, temperature,
                                                    dict(media, num_images=[1, 1]))
    g = torch.Generator().manual_seed(1)
    up, gam = torch.randn(2, k, generator=g), torch.randn(2, 2, generator=g)
    got = torch.autograd.grad((logps * up).sum() + (gram * gam).sum(), params, allow_unused=True)

    out = model(input_ids=input_ids, attention_mask=attention, output_hidden_states=True, **media)
    p = enc["input_ids"].size(1)
    logits = out.logits[:, p - 1 : p - 1 + k].float() / temperature
    logp = logits.log_softmax(-1)
    want_logps = logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) * completion_mask
    want_entropy = -(logp.exp() * logp).sum(-1) * completion_mask
    # padded positions are not scored: mask them out of the explicit kernel too
    want_gram = ntk.gradient_kernel(out.hidden_states[-1][:, p - 1 : p - 1 + k], logits, completion_ids,
                                    ntk_mask * completion_mask)
    torch.testing.assert_close(logps, want_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, want_entropy.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gram, want_gram, atol=1e-5, rtol=1e-5)
    want = torch.autograd.grad((want_logps * up).sum() + (want_gram * gam).sum(), params, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_grpo_run_takes_the_fused_path_and_matches_the_recompute(tiny_qwen_dir, tmp_path, monkeypatch):
    """Two tiny GRPO runs from the same seed: the fused loss forward (default) and TRL's head + the old
    recompute give the same losses and NTK terms; the fused one never recomputes logits from hidden states."""
    import json

    from PIL import Image

    import prefopt.grpo.fused_head as fused_head
    from prefopt.cli import main
    from prefopt.grpo import trainer as grpo_trainer

    rows = []
    for i, q in enumerate(("Is there a circle?", "Is there a star?", "Is there a square?", "Is there a cross?")):
        Image.new("RGB", (56, 56), (60 * i, 90, 200 - 40 * i)).save(tmp_path / f"p{i}.png")
        rows.append({"problem": q, "solution": "<answer>yes</answer>", "problem_type": "yes/no",
                     "data_type": "image", "path": f"p{i}.png", "problem_id": i})
    (tmp_path / "grpo.json").write_text(json.dumps(rows))
    calls = {"fused": 0, "recompute": 0}
    real_fused, real_features = fused_head.policy_forward_with_gram, grpo_trainer.ntk_features

    def counting_fused(*args, **kwargs):
        calls["fused"] += 1
        return real_fused(*args, **kwargs)

    def counting_features(*args, **kwargs):
        calls["recompute"] += 1
        return real_features(*args, **kwargs)

    monkeypatch.setattr(fused_head, "policy_forward_with_gram", counting_fused)
    monkeypatch.setattr(grpo_trainer, "ntk_features", counting_features)

    def run(name):
        out = tmp_path / name
        assert main(["grpo", "--config", "recipes/tiny/qwen_grpo.yaml", f"model.name_or_path={tiny_qwen_dir}",
                     f"data.path={tmp_path / 'grpo.json'}", f"data.image_root={tmp_path}", "rewards.caption=false",
                     f"training.output_dir={out}"]) == 0
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return [row for row in history if "ntk/loss" in row]

    fused = run("fused")
    assert calls == {"fused": 2, "recompute": 0}
    monkeypatch.setattr(grpo_trainer.GroundedGRPOTrainer, "_fused_ntk_request", lambda self, model, inputs: None)
    recompute = run("recompute")
    assert calls == {"fused": 2, "recompute": 2}
    for a, b in zip(fused, recompute, strict=True):
        for key in ("loss", "ntk/loss", "ntk/positives", "entropy"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
