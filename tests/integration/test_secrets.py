"""Secrets and unsafe loading: with a judge API key set in the environment, a judged GRPO run (and its
resume) and a judged eval leave the key in no file under the output folder, no log line (DEBUG included)
and no printed output; resuming loads no pickle (every ``torch.load`` is ``weights_only``, weights are
safetensors); ``trust_remote_code`` stays off unless the recipe sets it."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from pathlib import Path

import torch

from prefopt.cli import main
from prefopt.testing.judge_server import JudgeServer
from tests.helpers import judge_knows, mmhal_answer, write_prompts

KEY_ENV = "PREFOPT_TEST_KEY"


def _mmhal_rows(path: Path) -> Path:
    rows = [
        {
            "question_type": "attribute",
            "question": "What is shown?",
            "gt_answer": "A cat.",
            "image_content": ["cat"],
            "image_src": f"http://x/{i}.jpg",
            "text": name,
        }
        for i, name in enumerate(["alpha", "gamma"])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge_answer(messages):
    """The GRPO caption judge and the MMHal rater behind one server."""
    text = json.dumps(messages)
    return mmhal_answer(messages) if "LMM Response to Evaluate" in text else judge_knows(messages)


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_key_appears_in_no_file_log_or_output(
    tiny_qwen_dir,
    tmp_path,
    monkeypatch,
    scripted_policy,  # noqa: F811
    caplog,
    capfd,
):
    key = f"sk-prefopt-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)  # every logger, the OpenAI/httpx clients' request logs included
    root = tmp_path / "outputs"
    data, out = write_prompts(tmp_path), root / "grpo"
    loads: list[dict] = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    with JudgeServer(answer=_judge_answer) as server:
        grpo = [
            "grpo",
            "--config",
            "recipes/tiny/qwen_grpo.yaml",
            f"model.name_or_path={tiny_qwen_dir}",
            f"data.path={data}",
            f"data.image_root={tmp_path}",
            f"rewards.judge.base_url={server.base_url}",
            f"rewards.judge.api_key_env={KEY_ENV}",
            f"rewards.judge.cache_dir={out / 'judge_cache'}",
            "ntk.enabled=false",
            "training.save_steps=1",
            f"training.output_dir={out}",
        ]
        assert main(grpo) == 0
        shutil.rmtree(
            out / "checkpoint-2"
        )  # resume from checkpoint-1: optimizer, scheduler and RNG state load
        monkeypatch.setattr(torch, "load", spy_load)
        assert main([*grpo, "--resume"]) == 0
        monkeypatch.setattr(torch, "load", real_load)
        preds = _mmhal_rows(tmp_path / "mmhal.jsonl")
        evaluation = [
            "eval",
            "mmhal",
            "--predictions",
            str(preds),
            "--out",
            str(root / "eval"),
            "--judge-url",
            server.base_url,
            "--judge-model",
            "fake",
            "--judge-api-key-env",
            KEY_ENV,
            "--scoring",
            "robust",
        ]
        assert main(evaluation) == 0
        headers = list(server.seen_headers)
    # the key really was used, so a leak would have had something to leak
    assert headers and all(h.get("authorization") == f"Bearer {key}" for h in headers)
    assert json.loads((root / "eval" / "metrics.json").read_text())["metrics"]["score"]["value"] == 5.0
    needles = [key.encode(), key.split("-")[-1].encode()]  # the whole key and its random part
    assert _files_holding(root, needles) == []
    printed = capfd.readouterr()
    for text in (caplog.text, printed.out, printed.err):
        assert key.split("-")[-1] not in text
    assert KEY_ENV in (out / "prefopt_config.yaml").read_text()  # the config names the variable only
    # resume read optimizer/scheduler/RNG state, all through the restricted (non-pickle) loader
    assert len(loads) >= 3 and all(kw.get("weights_only") is True for kw in loads)
    assert (out / "checkpoint-1" / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) or {p.name for p in out.rglob("*.bin")} == {"training_args.bin"}


def test_trust_remote_code_is_off_unless_asked(tiny_qwen_dir, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from prefopt.models.settings import LoraSettings, ModelSettings
    from prefopt.training.common import prepare_policy

    seen: list[bool] = []
    for cls in (AutoProcessor, AutoModelForImageTextToText):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    prepare_policy(ModelSettings(name_or_path=str(tiny_qwen_dir)), LoraSettings())
    assert seen == [False, False]
    seen.clear()
    prepare_policy(ModelSettings(name_or_path=str(tiny_qwen_dir), trust_remote_code=True), LoraSettings())
    assert seen == [True, True]
