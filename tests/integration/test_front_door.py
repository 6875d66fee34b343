"""The front door (issue 17): typed recipes, one output-folder policy, media paths, REVERSE data, local judge.

Every error case goes through the real CLI and must end with exit status 2 and ONE line on stderr naming the
culprit, with no traceback. The config cases give a model path that does not exist: the config error must
still be the one reported, which proves it comes before any model is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from prefopt.cli import main
from tests.helpers import ROOT
from tests.helpers import cli_fails as fail

SFT = str(ROOT / "recipes/tiny/qwen_sft.yaml")
GRPO = str(ROOT / "recipes/tiny/qwen_grpo.yaml")
SELECT = str(ROOT / "recipes/tiny/qwen_select.yaml")
SYMMPO = str(ROOT / "recipes/tiny/qwen_symmpo.yaml")
NO_MODEL = "/nonexistent/model-that-must-never-be-loaded"





def sft(world, tmp_path, *overrides):
    return ["sft", "--config", SFT, f"model.name_or_path={NO_MODEL}", f"data.path={world / 'sft.json'}",
            f"training.output_dir={tmp_path / 'run'}", *overrides]


def grpo(world, tmp_path, *overrides):
    return ["grpo", "--config", GRPO, f"model.name_or_path={NO_MODEL}", f"data.path={world / 'grpo.json'}",
            "rewards.caption=false", f"training.output_dir={tmp_path / 'run'}", *overrides]


def symmpo(world, tmp_path, *overrides):
    return ["symmpo", "--config", SYMMPO, f"model.name_or_path={NO_MODEL}",
            f"data.path={world / 'symmpo.parquet'}", f"data.image_root={world}",
            f"training.output_dir={tmp_path / 'run'}", *overrides]


def select(world, tmp_path, *options):
    return ["select", "--config", SELECT, "--out", tmp_path / "sel", f"model.name_or_path={NO_MODEL}",
            f"data.path={world / 'grpo.json'}", *options]


# ---- typed config ------------------------------------------------------------------------------------
def test_yaml_exponent_floats_are_numbers(tmp_path):
    from prefopt.grpo.config import load_recipe as grpo_recipe
    from prefopt.sft.config import load_recipe as sft_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(SFT).read_text().replace("learning_rate: 1.0e-4", "learning_rate: 1e-4"))
    assert sft_recipe(recipe).training["learning_rate"] == 1e-4
    assert sft_recipe(SFT, ["training.learning_rate=1e-5"]).training_args()["learning_rate"] == 1e-5
    assert grpo_recipe(GRPO, ["training.learning_rate=1e-5", "training.max_steps=1e1"]).training == {
        **grpo_recipe(GRPO).training, "learning_rate": 1e-5, "max_steps": 10}


@pytest.mark.parametrize(("kind", "override", "culprits"), [
    ("sft", "training.learning_rate=abc", ("training.learning_rate", "expected a number")),
    ("sft", "training.max_steps=abc", ("training.max_steps", "expected an integer", "'abc'")),
    ("sft", "training.learning_rate=-1e-5", ("training.learning_rate must be > 0",)),
    ("sft", "training.per_device_train_batch_size=0", ("per_device_train_batch_size must be >= 1",)),
    ("sft", "training.num_train_epochs=0", ("num_train_epochs must be > 0",)),
    ("sft", "training.lr_scheduler_type=cosinus", ("lr_scheduler_type", "expected one of", "cosinus")),
    ("sft", "training.learnig_rate=1e-5", ("training.learnig_rate is not a TrainingArguments field",
                                           "learning_rate")),
    ("sft", "tag_weight=-1", ("tag_weight must be >= 0",)),
    ("grpo", "training.num_generations=two", ("training.num_generations", "expected an integer", "'two'")),
    ("grpo", "training.num_generations=1", ("num_generations must be >= 2",)),
    ("grpo", "training.num_generations=3", ("divisible by training.num_generations = 3",)),
    ("grpo", "training.max_steps=abc", ("training.max_steps", "expected an integer")),
    ("grpo", "training.max_steps=0", ("training.max_steps must be -1",)),
    ("grpo", "training.top_p=1.5", ("training.top_p must be in (0, 1]",)),
    ("grpo", "training.save_strategy=sometimes", ("save_strategy", "'sometimes'")),
    ("grpo", "training.beta=-0.1", ("training.beta must be >= 0",)),
    ("grpo", "ntk.temperature=0", ("ntk.temperature must be > 0",)),
    ("symmpo", "training.learning_rate=-1", ("training.learning_rate must be > 0",)),
    ("symmpo", "training.per_device_train_batch_size=0", ("per_device_train_batch_size must be >= 1",)),
    ("symmpo", "training.extra.max_grad_norm=abc", ("training.extra.max_grad_norm", "expected a number")),
    ("symmpo", "training.extra.weight_decai=0.1", ("training.extra.weight_decai is not a TrainingArguments",)),
    ("symmpo", "loss.beta=0", ("loss.beta must be > 0",)),
])
def test_config_errors_come_before_the_model(world, tmp_path, capsys, kind, override, culprits):
    argv = {"sft": sft, "grpo": grpo, "symmpo": symmpo}[kind](world, tmp_path, override)
    line = fail(argv, capsys, *culprits)
    assert "qwen_" in line  # the recipe file is named
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("kind", ["sft", "grpo", "symmpo"])
def test_missing_data_file_and_image_root_before_the_model(world, tmp_path, capsys, kind):
    build = {"sft": sft, "grpo": grpo, "symmpo": symmpo}[kind]
    missing = tmp_path / "nothere.json"
    fail([*build(world, tmp_path), f"data.path={missing}"], capsys, "data.path", "not found", str(missing))
    fail([*build(world, tmp_path), f"data.image_root={tmp_path / 'nodir'}"], capsys,
         "data.image_root", "does not exist")
    afile = world / "sft.json"
    fail([*build(world, tmp_path), f"data.image_root={afile}"], capsys, "data.image_root", "is a file")


@pytest.mark.parametrize(("options", "culprits"), [
    (["--keep", "1.5"], ("--keep must be in (0, 1]", "1.5")),
    (["--keep", "0"], ("--keep must be in (0, 1]",)),
    (["--k", "1"], ("--k must be at least 2",)),
])
def test_select_arguments_before_sampling(world, tmp_path, capsys, options, culprits):
    fail(select(world, tmp_path, *options), capsys, *culprits)


# ---- output folders -----------------------------------------------------------------------------------
def _old_run(folder: Path, command: str = "sft", config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    (folder / "prefopt_config.yaml").write_text(yaml.safe_dump(config or {"model": {"name_or_path": "x"}}))
    (folder / "run_info.json").write_text(json.dumps({"command": command, "status": "done"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("kind", ["sft", "grpo", "symmpo", "select"])
def test_output_path_that_is_a_file(world, tmp_path, capsys, kind):
    target = tmp_path / "a_file"
    target.write_text("x")
    if kind == "select":
        argv = ["select", "--config", SELECT, "--out", target, f"model.name_or_path={NO_MODEL}",
                f"data.path={world / 'grpo.json'}"]
        fail(argv, capsys, "--out", str(target), "is a file, not a folder")
    else:
        argv = {"sft": sft, "grpo": grpo, "symmpo": symmpo}[kind](world, tmp_path, f"training.output_dir={target}")
        fail(argv, capsys, "training.output_dir", str(target), "is a file, not a folder")


def test_eval_and_generate_out_of_the_wrong_kind(world, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    fail(["eval", "pope", "--predictions", world / "pope.jsonl", "--out", target], capsys, "is a file")
    fail(["generate", "--model", NO_MODEL, "--data", world / "pope.jsonl", "--out", tmp_path], capsys,
         "--out", "is a folder")
    fail(["eval", "pope", "--model", NO_MODEL, "--data", world / "pope.jsonl", "--limit", "-3", "--out",
          tmp_path / "ev"], capsys, "--limit must be at least 1")


@pytest.mark.parametrize("kind", ["sft", "grpo", "symmpo", "select"])
def test_folder_of_another_run_is_refused(world, tmp_path, capsys, kind):
    if kind == "select":
        _old_run(tmp_path / "sel", "select")
        argv = select(world, tmp_path)
        fail(argv, capsys, str(tmp_path / "sel"), "already holds a select done run", "--resume", "--overwrite")
    else:
        _old_run(tmp_path / "run", kind)
        argv = {"sft": sft, "grpo": grpo, "symmpo": symmpo}[kind](world, tmp_path)
        fail(argv, capsys, str(tmp_path / "run"), f"already holds a {kind} done run", "--resume", "--overwrite")


def test_overwrite_replaces_a_run_and_only_a_run(world, tmp_path, capsys):
    old = _old_run(tmp_path / "run")
    # --overwrite clears the old run; the nonexistent model then fails, and the folder says so
    fail([*sft(world, tmp_path), "--overwrite"], capsys, NO_MODEL)
    assert not (old / "model.safetensors").exists()
    info = json.loads((old / "run_info.json").read_text())
    assert info["status"] == "failed" and NO_MODEL in info["message"] and info["command"] == "sft"
    # a failed run that wrote nothing else may be retried in place without a flag
    fail(sft(world, tmp_path), capsys, NO_MODEL)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    fail([*sft(world, tmp_path, f"training.output_dir={stranger}"), "--overwrite"], capsys,
         "holds no prefopt run")
    assert (stranger / "notes.txt").read_text() == "mine"


def test_symmpo_no_longer_resumes_by_default_and_resume_names_changed_keys(world, tmp_path, capsys):
    from prefopt.config import load_config, to_dict
    from prefopt.dpo.config import SymMPOConfig

    argv = symmpo(world, tmp_path)
    saved = to_dict(load_config(SymMPOConfig, argv[2], argv[3:]))
    _old_run(tmp_path / "run", "symmpo", saved)
    fail(argv, capsys, "already holds a symmpo done run", "--resume")
    line = fail([*argv, "--loss", "dpo", "--resume"], capsys, "--resume continues the same recipe",
                "loss.name ('symmpo' -> 'dpo')", "contrastive")
    assert "training.resume" not in line  # keys a resume may change are not reported
    line = fail([*argv, "--resume", "training.max_steps=3"], capsys, NO_MODEL)  # same recipe: accepted
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["status"] == "failed"


def test_resume_and_overwrite_exclude_each_other(world, tmp_path, capsys):
    fail([*symmpo(world, tmp_path), "--resume", "--overwrite"], capsys, "--resume and --overwrite")
    with pytest.raises(SystemExit):
        main([*sft(world, tmp_path), "--resume", "--overwrite"])


def test_failed_eval_leaves_failed_run_info(world, tmp_path, capsys):
    out = tmp_path / "ev"
    fail(["eval", "pope", "--model", NO_MODEL, "--data", world / "pope.jsonl", "--out", out, "--device", "cpu"],
         capsys, NO_MODEL)
    info = json.loads((out / "run_info.json").read_text())
    assert info["status"] == "failed" and NO_MODEL in info["message"]


def test_recipe_changes_lists_only_run_altering_keys():
    from prefopt.commands._outdir import recipe_changes

    old = {"loss": {"name": "symmpo"}, "training": {"max_steps": 2, "learning_rate": 1e-4},
           "rewards": {"judge": {"base_url": "http://127.0.0.1:1/v1", "model": "a"}}}
    new = {"loss": {"name": "symmpo"}, "training": {"max_steps": 9, "learning_rate": 2e-4},
           "rewards": {"judge": {"base_url": "http://127.0.0.1:2/v1", "model": "b"}}}
    assert recipe_changes(old, new) == ["rewards.judge.model ('a' -> 'b')",
                                        "training.learning_rate (0.0001 -> 0.0002)"]


# ---- media paths -----------------------------------------------------------------------------------------
def test_media_paths_resolve_against_the_data_file_not_the_cwd(world, tmp_path, monkeypatch):
    from prefopt.data.formats import read_llava_conversations, read_video_r1
    from prefopt.data.paths import media_root, with_absolute_media
    from prefopt.errors import ImageError

    monkeypatch.chdir(tmp_path)  # nowhere near the images
    assert read_llava_conversations(world / "sft.json")[0].images[0].startswith(str(world))
    assert read_video_r1(world / "grpo.json")[0].images[0].startswith(str(world))
    # select's output: absolute media paths, so selected.json works from its own folder
    row = json.loads((world / "grpo.json").read_text())[0]
    fixed = with_absolute_media(row, media_root(world / "grpo.json", None))
    moved = tmp_path / "elsewhere" / "selected.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps([fixed]))
    assert read_video_r1(moved)[0].images == read_video_r1(world / "grpo.json")[:1][0].images
    # an explicit image root stays a fence
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([dict(row, path="../../etc/passwd")]))
    with pytest.raises(ImageError, match="escapes the image root"):
        read_video_r1(bad, image_root=tmp_path)


def test_make_data_writes_reverse_data(world):
    from prefopt.reverse.data import load_reverse_conversations

    examples = load_reverse_conversations(world / "reverse.json")
    texts = [ex.messages[-1]["content"][0]["text"] for ex in examples]
    assert len(examples) == 16 and all("<SPAN>" in t and "</CN>" in t for t in texts)
    assert any(t.endswith("</UN>") for t in texts)  # some captions flag a hallucinated partner shape


# ---- prefopt judge serve ------------------------------------------------------------------------------
def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "prefopt.cli", "judge", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, line


def test_judge_serve_answers_like_the_demo_judge():
    from prefopt.rewards.caption import judge_prompt

    proc, line = _serve("--port", "0", "--max-seconds", "60")
    try:
        assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split("listening on ", 1)[1].strip()
        prompt = judge_prompt("There is a red circle and a blue square.", "Is there a circle in the image?", "yes/no")
        body = json.dumps({"model": "judge", "messages": [{"role": "user", "content": prompt}]}).encode()
        req = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())["choices"][0]["message"]["content"]
        assert answer.endswith("<answer>yes</answer>"), answer
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "judge stopped after 1 requests" in proc.stdout.read()


def test_judge_serve_busy_port_is_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # a hang (instead of a one-line refusal) surfaces as TimeoutExpired: no wall-clock assert needed
        proc = subprocess.run([sys.executable, "-m", "prefopt.cli", "judge", "serve", "--port", str(port)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"prefopt judge: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [
    ["make-data", "--out", "{f}"],
    ["tiny-model", "--family", "qwen2_5_vl", "--out", "{f}/sub"],
    ["add-tokens", "--model", NO_MODEL, "--tokens", "reverse", "--out", "{f}"],
    ["merge-lora", "--adapter", NO_MODEL, "--base", NO_MODEL, "--out", "{f}"],
    ["compare", NO_MODEL, "--out", "{f}"],
    ["demo", "--quick", "--out", "{f}"],
], ids=lambda a: a[0])
def test_every_out_that_is_a_file_is_one_line(tmp_path, capsys, argv):
    target = tmp_path / "a_file"
    target.write_text("x")
    fail([a.replace("{f}", str(target)) for a in argv], capsys, str(target), "is a file, not a folder")


def test_eval_and_generate_inputs_before_the_model(world, tmp_path, capsys):
    fail(["eval", "pope", "--model", NO_MODEL, "--data", tmp_path / "no.jsonl", "--out", tmp_path / "ev"],
         capsys, "--data", "not found")
    fail(["eval", "pope", "--model", NO_MODEL, "--data", world / "pope.jsonl", "--image-root", tmp_path / "nodir",
          "--out", tmp_path / "ev"], capsys, "--image-root", "not a folder")
    fail(["generate", "--model", NO_MODEL, "--data", world / "pope.jsonl", "--image-root", tmp_path / "nodir",
          "--out", tmp_path / "a.jsonl"], capsys, "--image-root", "not a folder")


def test_generate_reads_pope_files_with_images_next_to_them(world, tmp_path, monkeypatch):
    from prefopt.commands.generate import load_items

    monkeypatch.chdir(tmp_path)
    items = load_items(str(world / "pope.jsonl"))
    first = json.loads((world / "pope.jsonl").read_text().splitlines()[0])
    assert items[0]["id"] == str(first["question_id"]) and items[0]["question"] == first["text"]
    assert items[0]["images"] == [str(world / first["image"])]


def test_sft_run_done_then_refused_then_resumed_then_changed(world, tmp_path, tiny_qwen_dir, capsys):
    out = tmp_path / "run"
    argv = ["sft", "--config", SFT, f"model.name_or_path={tiny_qwen_dir}", f"data.path={world / 'sft.json'}",
            f"training.output_dir={out}", "training.save_strategy=steps", "training.save_steps=1",
            "training.learning_rate=1e-5"]
    assert main(argv) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["status"] == "done" and info["command"] == "sft"
    fail(argv, capsys, "already holds a sft done run", "--resume")  # a finished run is never overwritten
    fail([*argv, "--resume", "training.learning_rate=2e-5"], capsys,
         "training.learning_rate (1e-05 -> 2e-05)")
    assert main([*argv, "--resume", "training.max_steps=2"]) == 0  # the same recipe, one step further
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
