"""``scripts/gpu_check.py --device cpu --config tiny``: every check passes and the JSON holds every figure."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

#: check -> figures its JSON entry must hold
FIGURES = {
    "prepare": ["qwen2_5_vl", "llava"],
    "sft": ["losses", "tensors_moved", "step_s", "reload_equal"],
    "gwys_grpo": ["losses", "tensors_moved", "step_s", "tokens_per_s", "mfu", "model_flops_per_step",
                  "judge_requests", "ntk_logged", "reward_keys"],
    "trl_grpo": ["step_s", "tokens_per_s", "mfu", "prefopt_over_trl_step_time"],
    "symmpo": ["losses", "tensors_moved", "examples_per_s", "tokens_per_s", "mfu", "adapter_saved"],
    "dpo": ["losses", "tensors_moved", "examples_per_s", "tokens_per_s", "mfu"],
    "trl_dpo": ["examples_per_s", "tokens_per_s", "symmpo_over_trl_examples_per_s", "dpo_over_trl_examples_per_s"],
    "ntk_cost": ["ntk_s", "lm_head_fwd_bwd_s", "ntk_over_lm_head"],
    "reverse_sft": ["losses", "tensors_moved", "tag_rows_moved"],
    "resample": ["flagged_attempts", "same_text", "forward_tokens", "retrospective_over_generate"],
    "grounded_grpo": ["losses", "tensors_moved", "rounds"],
    "merge_lora": ["merged_dir", "generated_tokens"],
}


@pytest.mark.slow
def test_gpu_check_tiny_cpu_passes_every_check(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPTS / "gpu_check.py"), "--device", "cpu", "--config", "tiny",
           "--out", str(tmp_path / "out"), "--threads", "1", "--budget-s", "600"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["failed"] == 0 and report["skipped"] == 0
    assert "6*N*T" in report["flop_formula"].replace(" ", "") or "k*N*T" in report["flop_formula"]
    assert report["env"]["peak_flops"] is None  # CPU: MFU is n/a, never a made-up number
    for name, keys in FIGURES.items():
        check = report["checks"][name]
        assert check["status"] == "passed", (name, check.get("traceback"))
        missing = [k for k in keys if k not in check["figures"]]
        assert not missing, f"{name}: figures {missing} missing"
    for name in ("sft", "gwys_grpo", "symmpo", "dpo", "reverse_sft", "grounded_grpo"):
        assert all(math.isfinite(v) for v in report["checks"][name]["figures"]["losses"])
        assert report["checks"][name]["figures"]["tensors_moved"] > 0
    assert report["checks"]["gwys_grpo"]["figures"]["mfu"] is None
    # the table comes last on stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("total ")


def test_real_configs_match_the_public_checkpoints(tmp_path):
    """Parameter counts of the real configs built on the meta device: 3.75 B (Qwen2.5-VL-3B), 7.06 B (LLaVA-1.5-7B)."""
    sys.path.insert(0, str(SCRIPTS))
    from gpucheck import models

    from prefopt.models.tiny import build_tiny

    counts = {}
    for family, extra in (("qwen2_5_vl", {}), ("llava", {"image_size": 336})):
        tiny = build_tiny(family, tmp_path / family, **extra)
        counts[family] = models.model_shape(family, tiny, "real")
    qwen, llava = counts["qwen2_5_vl"], counts["llava"]
    assert (qwen["layers"], qwen["hidden"], qwen["vocab"]) == (36, 2048, 151936)
    assert (llava["layers"], llava["hidden"], llava["vocab"]) == (32, 4096, 32064)
    # the model cards' totals: Qwen2.5-VL-3B 3.75 B, llava-1.5-7b-hf 7.06 B
    assert round(qwen["params_total"] / 1e9, 2) == 3.75
    assert round(llava["params_total"] / 1e9, 2) == 7.06
    assert models.train_flops(qwen, [10], 6) == 6 * qwen["params_decoder"] * 10 + 12 * 36 * 2048 * 100
