"""Kill-and-resume: `prefopt grpo` / `prefopt symmpo` killed mid-run (SIGKILL while saving, SIGTERM between
steps) resume from their last complete checkpoint and repeat the uninterrupted run's logged trajectory
(loss, grad norm, rewards, NTK term, ...) within 1e-6; plus unit tests of the checkpoint marker.

SIGKILL: the run is a subprocess of this file (``python tests/test_resume.py kill STEP READY -- ARGS``) that
applies the same scripted GRPO policy as the in-process runs and pauses inside the save of checkpoint-STEP,
after every Trainer file but before the completion marker, writing ``READY`` so the test knows when to kill.
SIGTERM: the run is in-process and sends SIGTERM to its own process in the middle of step 2; the handler
must carry it to the end of the step, save checkpoint-2 and stop with a clear error.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CANNED = "<prethink>look</prethink><caption>a red circle</caption><think>so</think><answer>yes</answer>"
QUESTIONS = [
    ("Is there a circle?", "<answer>yes</answer>", "yes/no"),
    ("How many shapes are there?", "<answer>2</answer>", "numerical"),
    ("Is there a star?", "<answer>no</answer>", "yes/no"),
    ("Is the circle red?", "<answer>yes</answer>", "yes/no"),
]
TIMING_KEYS = ("runtime", "per_second", "latency", "step_time", "total_flos", "train_loss")


# --- shared by the test process and the worker subprocess -----------------------------------------


def install_scripted_policy(setattr_fn=setattr) -> None:
    """Every other GRPO completion becomes a well-formed four-stage answer, so advantages are not zero."""
    from prefopt.grpo.trainer import GroundedGRPOTrainer

    original = GroundedGRPOTrainer._generate_single_turn

    def scripted(self, *args, **kwargs):
        ids, logprobs = original(self, *args, **kwargs)
        canned = self._tokenizer.encode(CANNED, add_special_tokens=False) + [self.eos_token_ids[0]]
        return [canned if i % 2 == 0 else c for i, c in enumerate(ids)], logprobs

    setattr_fn(GroundedGRPOTrainer, "_generate_single_turn", scripted)


def install_pause(step: int, ready: Path) -> None:
    """Hang inside the save of checkpoint-``step``, after Trainer's files and before the completion marker."""
    from prefopt.training import reliability

    original_marker = reliability.write_marker

    def slow_marker(folder, at_step):
        if at_step == step:
            ready.write_text("paused inside the checkpoint save")
            time.sleep(300)  # the test SIGKILLs us here
        return original_marker(folder, at_step)

    reliability.write_marker = slow_marker


def sigterm_during_step(monkeypatch, step: int) -> None:
    """Send SIGTERM to this process while optimizer step ``step`` (1-based) is being computed."""
    from prefopt.training.reliability import ReliableTrainerMixin

    original = ReliableTrainerMixin.training_step
    sent: list[int] = []

    def with_signal(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step + 1 == step and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(ReliableTrainerMixin, "training_step", with_signal)


def _worker(argv: list[str]) -> int:
    step, ready = int(argv[1]), Path(argv[2])  # argv[0] is "kill"
    install_scripted_policy()
    install_pause(step, ready)
    from prefopt.cli import main

    return main(argv[4:])  # argv[3] is "--"


# --- data ------------------------------------------------------------------------------------------


def write_grpo_prompts(folder: Path) -> Path:
    """Eight image prompts (an epoch is four steps of two prompts × two generations)."""
    rows = []
    for i in range(8):
        problem, solution, kind = QUESTIONS[i % 4]
        Image.new("RGB", (56, 56), (30 * i, 90, 200 - 20 * i)).save(folder / f"p{i}.png")
        rows.append(
            {
                "problem": problem,
                "solution": solution,
                "problem_type": kind,
                "data_type": "image",
                "path": f"p{i}.png",
                "problem_id": i,
            }
        )
    path = folder / "grpo.json"
    path.write_text(json.dumps(rows))
    return path


def _png(seed: int) -> bytes:
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
            "image_1": _png(i),
            "image_2": _png(100 + i),
        }
        for i in range(n)
    ]
    path = folder / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def grpo_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "grpo",
        "--config",
        str(ROOT / "recipes/tiny/qwen_grpo.yaml"),
        f"model.name_or_path={model_dir}",
        f"data.path={data}",
        f"data.image_root={data.parent}",
        "data.max_samples=8",
        "rewards.caption=false",
        "training.max_steps=4",
        "training.save_steps=1",
        "training.seed=3",
        f"training.output_dir={out}",
        *extra,
    ]


def symmpo_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
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


# --- helpers ---------------------------------------------------------------------------------------


def steps_of(out: Path) -> dict[int, dict]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {row["step"]: row for row in history if "loss" in row}


def assert_same_trajectory(reference: dict[int, dict], resumed: dict[int, dict]) -> int:
    """Every logged number of every step agrees within 1e-6; returns how many values were compared."""
    assert sorted(resumed) == sorted(reference) == [1, 2, 3, 4]
    compared = 0
    for step, row in reference.items():
        for key, value in row.items():
            if not isinstance(value, int | float) or any(t in key for t in TIMING_KEYS):
                continue
            assert key in resumed[step], (step, key)
            other = resumed[step][key]
            assert math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-6), (step, key, value, other)
            compared += 1
    return compared


def run_killed(args: list[str], step: int, tmp_path: Path) -> int:
    """Start the worker, wait until it hangs inside the save of checkpoint-``step``, SIGKILL it."""
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__)), "kill", str(step), str(ready), "--", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not ready.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(
                    f"worker never paused (rc {proc.poll()}):\n{proc.stdout.read().decode()[-3000:]}"
                )
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def interrupt(argv: list[str], monkeypatch, capsys) -> None:
    """Run in-process with SIGTERM arriving during step 2: a clean stop after saving checkpoint-2."""
    from prefopt.cli import main

    sigterm_during_step(monkeypatch, 2)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at step 2; checkpoint" in err and "--resume" in err, err
    monkeypatch.undo()


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo_setup(tiny_qwen_dir, tmp_path_factory):
    """The prompts and the uninterrupted 4-step GRPO run's per-step logs."""
    from prefopt.cli import main

    folder = tmp_path_factory.mktemp("resume-grpo")
    data = write_grpo_prompts(folder)
    with pytest.MonkeyPatch.context() as mp:
        install_scripted_policy(mp.setattr)
        assert main(grpo_args(tiny_qwen_dir, data, folder / "reference")) == 0
    return data, steps_of(folder / "reference")


@pytest.fixture(scope="module")
def symmpo_setup(tiny_qwen_dir, tmp_path_factory):
    """The pairs and the uninterrupted 4-step SymMPO (LoRA) run's per-step logs."""
    from prefopt.cli import main

    folder = tmp_path_factory.mktemp("resume-symmpo")
    data = write_symmpo_pairs(folder)
    assert main(symmpo_args(tiny_qwen_dir, data, folder / "reference")) == 0
    return data, steps_of(folder / "reference")


# --- tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["kill", "term"])
def test_grpo_killed_run_resumes_on_the_same_trajectory(
    mode, grpo_setup, tiny_qwen_dir, tmp_path, monkeypatch, capsys
):
    from prefopt.cli import main
    from prefopt.training.common import last_checkpoint

    data, reference = grpo_setup
    out = tmp_path / "run"
    if mode == "kill":  # SIGKILL while checkpoint-3 is being saved
        assert run_killed(grpo_args(tiny_qwen_dir, data, out), 3, tmp_path) == -signal.SIGKILL
        # checkpoint-3 holds every Trainer file (trainer_state.json too) but no marker: not a checkpoint
        assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    else:  # SIGTERM during step 2, no periodic checkpoints: the handler's checkpoint is the only one
        install_scripted_policy(monkeypatch.setattr)
        interrupt(grpo_args(tiny_qwen_dir, data, out, "training.save_steps=100"), monkeypatch, capsys)
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    install_scripted_policy(monkeypatch.setattr)
    assert main([*grpo_args(tiny_qwen_dir, data, out), "--resume"]) == 0
    assert assert_same_trajectory(reference, steps_of(out)) >= 120
    if mode == "kill":
        assert len(list(out.glob("incomplete-checkpoint-3-*"))) == 1  # set aside, not resumed from


@pytest.mark.parametrize("mode", ["kill", "term"])
def test_symmpo_killed_run_resumes_on_the_same_trajectory(
    mode, symmpo_setup, tiny_qwen_dir, tmp_path, monkeypatch, capsys
):
    from prefopt.cli import main
    from prefopt.training.common import last_checkpoint

    data, reference = symmpo_setup
    out = tmp_path / "run"
    if mode == "kill":
        assert run_killed(symmpo_args(tiny_qwen_dir, data, out), 3, tmp_path) == -signal.SIGKILL
        # save_total_limit=1: rotation waits for the marker, so checkpoint-2 survived the kill at checkpoint-3
    else:
        interrupt(symmpo_args(tiny_qwen_dir, data, out, "training.save_steps=100"), monkeypatch, capsys)
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    assert main([*symmpo_args(tiny_qwen_dir, data, out), "--resume"]) == 0
    assert assert_same_trajectory(reference, steps_of(out)) >= 90
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]


def test_marker_lists_files_and_detects_truncation(tmp_path):
    from prefopt.training.common import last_checkpoint
    from prefopt.training.reliability import checkpoint_complete, set_aside_incomplete, write_marker

    for step in (1, 2, 3):
        folder = tmp_path / f"checkpoint-{step}"
        (folder / "sub").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 10)
        (folder / "sub" / "state.json").write_text("{}")
        if step < 3:
            write_marker(folder, step)
    assert checkpoint_complete(tmp_path / "checkpoint-2") and not checkpoint_complete(
        tmp_path / "checkpoint-3"
    )
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"x" * 4)  # truncated after marking
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    (tmp_path / "checkpoint-1" / "sub" / "state.json").unlink()
    assert last_checkpoint(tmp_path) is None
    moved = set_aside_incomplete(tmp_path)
    assert sorted(p.name.rsplit("-", 1)[0] for p in moved) == [
        f"incomplete-checkpoint-{s}" for s in (1, 2, 3)
    ]
    assert not list(tmp_path.glob("checkpoint-*"))


@pytest.mark.parametrize(
    ("steps_per_generation", "num_iterations", "accumulation", "expected"),
    [(1, 1, 1, 1), (4, 1, 4, 1), (4, 1, 2, 2), (2, 2, 1, 4), (3, 1, 2, 3), (2, 1, 4, 1)],
)
def test_grpo_resume_alignment_is_a_generation_batch(
    steps_per_generation, num_iterations, accumulation, expected
):
    """TRL generates every ``steps_per_generation · num_iterations`` micro-steps; a checkpoint after optimizer
    step s (micro-step s · accumulation) is exact only where that is a multiple of it."""
    from types import SimpleNamespace

    from prefopt.grpo.trainer import GroundedGRPOTrainer

    args = SimpleNamespace(
        steps_per_generation=steps_per_generation, gradient_accumulation_steps=accumulation
    )
    fake = SimpleNamespace(args=args, num_iterations=num_iterations)
    assert GroundedGRPOTrainer.resume_alignment(fake) == expected


def test_sigterm_waits_for_an_aligned_step(tmp_path):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from prefopt.training.reliability import ReliabilityCallback

    callback = ReliabilityCallback(align_steps=2)
    callback.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # only sets the flag
        args = SimpleNamespace(device="cpu", output_dir=str(tmp_path))
        control = callback.on_step_end(args, SimpleNamespace(global_step=3), TrainerControl())
        assert callback.stop_requested and not control.should_save and not control.should_training_stop
        control = callback.on_step_end(args, SimpleNamespace(global_step=4), TrainerControl())
        assert control.should_save and control.should_training_stop and callback.interrupted
    finally:
        callback.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not callback._on_sigterm


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
