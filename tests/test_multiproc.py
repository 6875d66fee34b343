"""Two ranks on the CPU: tiny `prefopt grpo` and `prefopt symmpo` runs under `accelerate launch` with
recipes/accelerate/cpu_2proc.yaml, checking that the ranks trained on different batches yet finished with
identical parameters (DDP's gradient all-reduce over gloo keeps them in step).

Each rank runs the real CLI through a small probe script that fingerprints the batches it drew and, after
``Trainer.train``, hashes its unwrapped parameters into ``$PROBE_OUT/rank<RANK>.json``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"
pytestmark = pytest.mark.slow  # real 2-process launches: about 30-40 s each

PROBE = '''
import hashlib, json, os, sys
import torch, transformers
from prefopt.cli import main

RANK = int(os.environ.get("RANK", 0))
SEEN = hashlib.sha256()


def fingerprint(obj, h):
    """Feed the data in obj (tensors, text, numbers, nested containers) into hash h."""
    if isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            fingerprint(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            fingerprint(item, h)
    elif isinstance(obj, (str, int, float, bool)):
        h.update(repr(obj).encode())


_batches = transformers.Trainer.get_batch_samples
_train = transformers.Trainer.train


def get_batch_samples(self, *args, **kwargs):
    batches, n_items = _batches(self, *args, **kwargs)
    fingerprint(batches, SEEN)
    return batches, n_items


def train(self, *args, **kwargs):
    result = _train(self, *args, **kwargs)
    model = self.accelerator.unwrap_model(self.model)
    params = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        params.update(name.encode())
        params.update(p.detach().float().cpu().numpy().tobytes())
    record = {
        "params": params.hexdigest(),
        "batches": SEEN.hexdigest(),
        "world": self.accelerator.num_processes,
        "distributed_type": str(self.accelerator.distributed_type),
        "grad_norm": [row["grad_norm"] for row in self.state.log_history if "grad_norm" in row],
    }
    with open(os.path.join(os.environ["PROBE_OUT"], f"rank{RANK}.json"), "w") as f:
        json.dump(record, f)
    return result


if os.environ.get("PROBE_NO_SHM"):
    import deepspeed.ops

    # DeepSpeed's shared-memory all-reduce serves inference only; skip its 2-minute JIT build
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
transformers.Trainer.get_batch_samples = get_batch_samples
transformers.Trainer.train = train
if os.environ.get("PROBE_CANNED"):
    from prefopt.grpo.trainer import GroundedGRPOTrainer

    CANNED = "<prethink>look</prethink><caption>a shape</caption><think>so</think><answer>yes</answer>"
    _generate = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, *args, **kwargs):
        # a random policy earns no reward at all; every other completion is well formed so advantages are non-zero
        ids, logprobs = _generate(self, *args, **kwargs)
        canned = self._tokenizer.encode(CANNED, add_special_tokens=False) + [self.eos_token_ids[0]]
        return [canned if i % 2 == 0 else c for i, c in enumerate(ids)], logprobs

    GroundedGRPOTrainer._generate_single_turn = scripted
sys.exit(main(sys.argv[1:]))
'''


def launch_two_ranks(tmp_path: Path, cli_args: list[str], env_extra: dict[str, str], preset: Path = PRESET):
    """Run the probe under ``accelerate launch`` with a 2-process CPU preset; the two ranks' records."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    records = tmp_path / "records"
    records.mkdir()
    env = {
        **os.environ,
        **env_extra,
        "PROBE_OUT": str(records),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # two ranks share the machine's cores
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(preset)]
    cmd += ["--main_process_port", "0", str(probe), *cli_args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = sorted(records.glob("rank*.json"))
    assert [p.name for p in found] == ["rank0.json", "rank1.json"], proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in found]


def assert_in_sync(ranks: list[dict], distributed_type: str = "MULTI_CPU") -> None:
    """Both ranks ran distributed, drew different batches, took real steps and ended with equal weights."""
    for rank in ranks:
        assert rank["world"] == 2
        assert rank["distributed_type"] == f"DistributedType.{distributed_type}"
        assert len(rank["grad_norm"]) == 2
        assert all(math.isfinite(g) and g > 0 for g in rank["grad_norm"])
    assert ranks[0]["batches"] != ranks[1]["batches"]  # the sampler split the data between ranks
    assert ranks[0]["grad_norm"] == ranks[1]["grad_norm"]  # norms of the all-reduced gradient
    assert ranks[0]["params"] == ranks[1]["params"]


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
