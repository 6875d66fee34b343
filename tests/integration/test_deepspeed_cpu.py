"""DeepSpeed ZeRO-2 on the CPU: a tiny `prefopt symmpo` run with 2 ranks under recipes/accelerate/cpu_zero2.yaml
(DeepSpeed's CPU accelerator over gloo) keeps the ranks bit-identical while they train on different batches.

ZeRO-2 shards the optimizer state and gradients; the all-gather after each step must give every rank the same
parameters. The rank probe and checks are those of test_multiproc.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT, assert_in_sync, launch_two_ranks

pytest.importorskip("deepspeed")

PRESET = ROOT / "recipes" / "accelerate" / "cpu_zero2.yaml"
pytestmark = pytest.mark.slow  # real 2-process launches: about 30-40 s each


def test_preset_is_zero2_on_cpu():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(PRESET))
    assert config.distributed_type.value == "DEEPSPEED" and config.use_cpu
    assert config.deepspeed_config["zero_stage"] == 2 and config.num_processes == 2


def test_symmpo_zero2_two_ranks_stay_in_sync(tiny_qwen_dir, shapes, tmp_path):
    args = [
        "symmpo",
        "--config",
        "recipes/tiny/qwen_symmpo.yaml",
        f"model.name_or_path={tiny_qwen_dir}",
        f"data.path={shapes / 'symmpo.parquet'}",
        f"data.image_root={shapes}",
        "training.save_steps=100",
        f"training.output_dir={tmp_path / 'run'}",
    ]
    ranks = launch_two_ranks(tmp_path, args, {"PROBE_NO_SHM": "1"}, preset=PRESET)
    assert_in_sync(ranks, distributed_type="DEEPSPEED")
    assert (tmp_path / "run" / "adapter_config.json").is_file()
