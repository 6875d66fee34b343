"""benchmarks/report.py renders every issue-21 target's table from run_all's results."""

from benchmarks.report import render


def _stats(v):
    return {"median": v, "min": v * 0.9, "max": v * 1.1}


def test_new_targets_have_tables_with_their_numbers():
    results = [
        {"target": "ntk_training_path", "d": 3584, "vocab": 32768, "ratios": [
            {"name": "ntk N=6144: (fused - head) / head fwd+bwd", "value": 1.2, "goal": "<= 0.3"}],
         "rows": [{"tokens": 6144, "side": "fused", "seconds": _stats(120.0), "maxrss_mib": 4000.0, "added_mib": 700.0}]},
        {"target": "vocab_memory", "steps": 3, "batch": 4, "repeats": 3, "vocab": 152064,
         "tiny": {"maxrss_mib": _stats(1450.0), "seconds": _stats(20.0)},
         "real": {"maxrss_mib": _stats(1500.0), "seconds": _stats(30.0)},
         "ratios": [{"name": "real-vocab added peak MiB", "value": 50.0, "goal": "<= 600"}]},
        {"target": "vision_share", "ratios": [], "runs": [
            {"family": "llava", "step_s": _stats(0.5), "encoder_s": _stats(0.02), "images_encoded": 10,
             "images_distinct": 4, "share": 0.04, "max_saving": 0.024}]},
        {"target": "symmpo", "ratios": [], "runs": [
            {"family": "qwen2_5_vl", "loss": "dpo", "examples_per_s": {"prefopt": _stats(6.0), "trl": _stats(1.5)},
             "examples_per_s_cache_charged": {"prefopt": _stats(1.0), "trl": _stats(1.5)},
             "step_s": {"prefopt": _stats(0.3), "trl": _stats(1.3)}, "peak_mib": {"prefopt": 20, "trl": 80},
             "reference_cache_build_s": 7.0, "load": _stats(1.0)}]},
        {"target": "grpo", "ratios": [], "runs": [
            {"family": "llava", "judge_latency_s": 1.0, "batch": 16, "group": 4, "times": {"prefopt": _stats(3.0),
             "trl": _stats(3.5)}, "cpu_s": {"prefopt": _stats(2.0), "trl": _stats(2.1)}, "peak_mib": {},
             "judge_requests": 64, "load": _stats(1.0)}]},
    ]
    text = render(results)
    assert "| 6144 | fused | 120 (108–132) | 4000 | 700 |" in text
    assert "d = 3584, V = 32768" in text
    assert "| resized to 152,064 | 1500 (1350–1650) | 30 (27–33) |" in text
    assert "| llava | 0.5 (0.45–0.55) | 0.02 (0.018–0.022) | 10 / 4 | 0.040 | 0.024 |" in text
    assert "| qwen2_5_vl | dpo | 6 (5.4–6.6) | 1.5 (1.35–1.65) | 1 (0.9–1.1) |" in text
    assert "| llava | 1 | 16, 4 | 3 (2.7–3.3) | 3.5 (3.15–3.85) |" in text
    assert "| ntk N=6144: (fused - head) / head fwd+bwd | 1.200 | <= 0.3 | MISSED |" in text
