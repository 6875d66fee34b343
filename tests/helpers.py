"""Helpers shared by test files of both tiers (import as ``from tests.helpers import ...``; fixtures live in
tests/conftest.py). Nothing here loads a model at import time."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: Vendored samples of public benchmark files (tests/data/<name>/, each with a README).
DATA = ROOT / "tests" / "data"
PRESET = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"

# --- parameters moved --------------------------------------------------------------------------------


def snapshot_params(model: torch.nn.Module, lora_only: bool = False) -> dict[str, torch.Tensor]:
    """Copies of every trainable parameter (or, with ``lora_only``, every LoRA parameter) by name."""
    return {
        name: p.detach().float().cpu().clone()
        for name, p in model.named_parameters()
        if p.requires_grad and (not lora_only or "lora_" in name)
    }


def checkpoint_tensors(folder: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a saved checkpoint folder (``model*.safetensors`` or ``adapter_model.safetensors``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("adapter_model.safetensors")) or sorted(folder.glob("model*.safetensors"))
    assert files, f"no safetensors in {folder}: {sorted(p.name for p in folder.iterdir())}"
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update({k: v.float() for k, v in load_file(str(f)).items()})
    return out


def lora_init(after: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The known initial value of a saved adapter's ``lora_B`` tensors: PEFT initialises them to zero."""
    return {k: torch.zeros_like(v) for k, v in after.items() if "lora_B" in k}


def _strip(name: str) -> str:
    # A saved checkpoint drops PEFT's / accelerate's wrapper prefixes and the adapter name.
    name = re.sub(r"^(module\.)?(base_model\.model\.)?", "", name)
    return name.replace(".default.", ".")


def assert_params_changed(
    before: Mapping[str, torch.Tensor],
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    exempt: Mapping[str, str] | None = None,
) -> None:
    """Every tensor of ``before`` differs in ``model`` (a module or a checkpoint's tensors), by name.

    ``exempt`` maps a regex over parameter names to the reason that parameter may legitimately stay put.
    """
    assert before, "nothing to compare: no trainable parameters were recorded"
    exempt = dict(exempt or {})
    if isinstance(model, torch.nn.Module):
        after = {n: p.detach().float().cpu() for n, p in model.named_parameters()}
    else:
        after = dict(model)
    after = {_strip(k): v for k, v in after.items()}
    unchanged, missing = [], []
    for name, old in before.items():
        if any(re.search(pattern, name) for pattern in exempt):
            continue
        new = after.get(_strip(name))
        if new is None:
            missing.append(name)
        elif torch.equal(old.float().cpu(), new.float().cpu()):
            unchanged.append(name)
    assert not missing, f"{len(missing)} parameters not found after training, e.g. {missing[:5]}"
    assert not unchanged, f"{len(unchanged)} of {len(before)} parameters did not change, e.g. {unchanged[:8]}"


def assert_checkpoint_changed(out: Path | str, base: Path | str, n_trainable: int) -> None:
    """The run's saved weights hold the update: a LoRA adapter's every ``lora_B`` left its zero init; a full
    checkpoint differs from the base checkpoint in exactly ``n_trainable`` tensors (the rest are frozen)."""
    after = checkpoint_tensors(out)
    if (Path(out) / "adapter_model.safetensors").is_file():
        # lora_A's seeded random init is not saved anywhere; lora_B starts at zero, so its change is the proof.
        assert_params_changed(lora_init(after), after)
        return
    before = checkpoint_tensors(base)
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    unchanged = [k for k in before if k not in changed]
    assert len(changed) == n_trainable, (
        f"{len(changed)} saved tensors changed, {n_trainable} were trainable; unchanged e.g. {unchanged[:8]}"
    )


# --- GRPO prompts ------------------------------------------------------------------------------------

CANNED = "<prethink>look</prethink><caption>a red circle</caption><think>so</think><answer>yes</answer>"
ROWS = [
    {"problem": "Is there a circle?", "solution": "<answer>yes</answer>", "problem_type": "yes/no"},
    {
        "problem": "Which shape is red?",
        "options": ["A. circle", "B. square"],
        "solution": "<answer>A</answer>",
        "problem_type": "multiple choice",
    },
    {"problem": "How many shapes are there?", "solution": "<answer>2</answer>", "problem_type": "numerical"},
    {"problem": "Is there a star?", "solution": "<answer>no</answer>", "problem_type": "yes/no"},
]


def write_prompts(folder):
    """Four image prompts in the Video-R1 / GWYS JSON layout, images drawn with PIL."""
    rows = []
    for i, row in enumerate(ROWS):
        Image.new("RGB", (56, 56), (60 * i, 90, 200 - 40 * i)).save(folder / f"p{i}.png")
        rows.append({**row, "data_type": "image", "path": f"p{i}.png", "problem_id": i})
    path = folder / "grpo.json"
    path.write_text(json.dumps(rows))
    return path


def judge_knows(messages):
    """A judge that answers every question correctly (so each canned caption earns caption reward 1)."""
    text = json.dumps(messages)
    row = next(r for r in ROWS if r["problem"] in text)
    return f"<think>from the description</think>{row['solution']}"


def write_clip(path, n_frames=4, rate=2, size=56, step=40):
    """A tiny MPEG-4 clip (PyAV) whose frame i is a flat grey of value ``step * i`` (a frame's mean names it).

    ``size`` is one side of a square frame, or ``(width, height)``.
    """
    import av

    width, height = (size, size) if isinstance(size, int) else size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            array = np.full((height, width, 3), step * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mixed_prompts(folder):
    """Two image and two video prompts (Video-R1 layout), so batches hold both media kinds."""
    rows = json.loads(write_prompts(folder).read_text())
    for i in (2, 3):
        write_clip(folder / f"v{i}.mp4")
        rows[i] = {**rows[i], "data_type": "video", "path": f"v{i}.mp4"}
    path = folder / "mixed.json"
    path.write_text(json.dumps(rows))
    return path


# --- judge replies -----------------------------------------------------------------------------------

MMHAL_REPLIES = {
    "alpha": "Accurate and detailed. Rating: 6",
    "beta": "Rating: 5 ... on reflection, Rating: 2",
    "gamma": "**Rating:** 4",
    "delta": "I cannot tell.",
}


def mmhal_answer(messages):
    """Reply chosen by the response under review (the word after the prompt's last section heading)."""
    text = messages[-1]["content"]
    return MMHAL_REPLIES[re.search(r"### LMM Response to Evaluate\n(\w+)", text).group(1)]


# --- SymMPO pairs ------------------------------------------------------------------------------------


def png_bytes(seed: int) -> bytes:
    """A 56×56 random-noise PNG."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((56, 56, 3)) * 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def write_symmpo_pairs(folder: Path, n: int = 6) -> Path:
    """``n`` SymMPO rows with random PNG bytes (six: an epoch is three steps of two)."""
    rows = [
        {
            "idx": i,
            "question": "Describe the image.",
            "resp_1_w": f"There is a red circle and {i} squares.",
            "resp_1_l": "There is a blue star.",
            "resp_2_w": "There is a green triangle.",
            "image_1": png_bytes(i),
            "image_2": png_bytes(100 + i),
        }
        for i in range(n)
    ]
    path = folder / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def symmpo_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """``prefopt symmpo`` arguments for a four-step tiny run saving every step."""
    return [
        "symmpo",
        "--config",
        str(ROOT / "recipes/tiny/qwen_symmpo.yaml"),
        f"model.name_or_path={model_dir}",
        f"data.path={data}",
        f"reference_cache_dir={data.parent}",
        "training.max_steps=4",
        "training.save_steps=1",
        "training.save_total_limit=1",
        f"training.output_dir={out}",
        *extra,
    ]


# --- two CPU ranks -----------------------------------------------------------------------------------

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
    model = self.accelerator.unwrap_model(self.model)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.numel()}
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
        "trainable": sorted(start),
        "unchanged": sorted(n for n, p in model.named_parameters() if n in start and torch.equal(p, start[n])),
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
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(preset)]
    cmd += ["--main_process_port", "0", str(probe), *cli_args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = sorted(records.glob("rank*.json"))
    assert [p.name for p in found] == ["rank0.json", "rank1.json"], proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in found]


def assert_in_sync(ranks: list[dict], distributed_type: str = "MULTI_CPU") -> None:
    """Both ranks ran distributed, drew different batches, took real steps, moved every trainable parameter
    and ended with equal weights."""
    for rank in ranks:
        assert rank["world"] == 2
        assert rank["distributed_type"] == f"DistributedType.{distributed_type}"
        assert len(rank["grad_norm"]) == 2
        assert all(math.isfinite(g) and g > 0 for g in rank["grad_norm"])
        assert rank["trainable"], "no trainable parameters"
        assert not rank["unchanged"], f"parameters did not change: {rank['unchanged'][:8]}"
    assert ranks[0]["batches"] != ranks[1]["batches"]  # the sampler split the data between ranks
    assert ranks[0]["grad_norm"] == ranks[1]["grad_norm"]  # norms of the all-reduced gradient
    assert ranks[0]["params"] == ranks[1]["params"]


def cli_fails(argv: list, capsys, *culprits: str) -> str:
    """Run the CLI; assert exit 2 and one ``prefopt CMD: error:`` line naming every culprit, no traceback.

    Returns the line (also printed, so ``pytest -rP`` shows the messages users see).
    """
    from prefopt.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("prefopt ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith(f"prefopt {argv[0]}: error: "), line
    for culprit in culprits:
        assert culprit in line, f"{culprit!r} not named in: {line}"
    print(line)
    return line

