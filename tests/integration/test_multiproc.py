"""Two ranks on the CPU: tiny `prefopt grpo` and `prefopt symmpo` runs under `accelerate launch` with
recipes/accelerate/cpu_2proc.yaml, checking that the ranks trained on different batches yet finished with
identical parameters (DDP's gradient all-reduce over gloo keeps them in step).

Each rank runs the real CLI through a small probe script that fingerprints the batches it drew and, after
``Trainer.train``, hashes its unwrapped parameters into ``$PROBE_OUT/rank<RANK>.json``.
"""

from __future__ import annotations

import pytest

from tests.helpers import PRESET, assert_in_sync, launch_two_ranks

pytestmark = pytest.mark.slow  # real 2-process launches: about 30-40 s each


def test_preset_starts_two_processes_not_the_simple_launcher():
    """accelerate 1.15 launches a MULTI_CPU config as one process (no mpirun hostfile); the preset must not."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(PRESET))
    assert config.num_processes == 2 and config.use_cpu
    assert config.distributed_type.value == "MULTI_GPU"  # -> torch.distributed.run, see the preset's header


def test_grpo_two_ranks_stay_in_sync(tiny_qwen_dir, shapes, tmp_path):
    args = [
        "grpo",
        "--config",
        "recipes/tiny/qwen_grpo.yaml",
        f"model.name_or_path={tiny_qwen_dir}",
        f"data.path={shapes / 'grpo.json'}",
        f"data.image_root={shapes}",
        "rewards.caption=false",
        "training.save_strategy='no'",
        f"training.output_dir={tmp_path / 'run'}",
    ]
    ranks = launch_two_ranks(tmp_path, args, {"PROBE_CANNED": "1"})
    assert_in_sync(ranks)


def test_symmpo_two_ranks_stay_in_sync(tiny_qwen_dir, shapes, tmp_path):
    args = [
        "symmpo",
        "--config",
        "recipes/tiny/qwen_symmpo.yaml",
        f"model.name_or_path={tiny_qwen_dir}",
        f"data.path={shapes / 'symmpo.parquet'}",
        f"data.image_root={shapes}",
        "training.save_steps=100",  # no mid-run checkpoint
        f"training.output_dir={tmp_path / 'run'}",
    ]
    ranks = launch_two_ranks(tmp_path, args, {})
    assert_in_sync(ranks)
    assert (tmp_path / "run" / "adapter_config.json").is_file()  # rank 0 saved the final adapter
