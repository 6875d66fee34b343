"""Integration: `prefopt symmpo` through ``prefopt.cli.main`` on the tiny models, 2 steps each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from test_resume import _png, write_symmpo_pairs

import prefopt.dpo.reference as reference_module
from prefopt.cli import main
from prefopt.config import load_config
from prefopt.dpo.config import SymMPOConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "llava": ROOT / "recipes/tiny/llava_symmpo.yaml",
    "qwen2_5_vl": ROOT / "recipes/tiny/qwen_symmpo.yaml",
}


@pytest.fixture(scope="module")
def symmpo_parquet(tmp_path_factory) -> Path:
    """Four SymMPO rows with PNG bytes for image_1 / image_2."""
    return write_symmpo_pairs(tmp_path_factory.mktemp("dpo-data"), n=4)


@pytest.fixture(scope="module")
def preference_parquet(tmp_path_factory) -> Path:
    """RLAIF-V-style rows: no contrastive image and no contrastive answer."""
    path = tmp_path_factory.mktemp("dpo-pref") / "rlaifv.parquet"
    rows = [
        {
            "idx": i,
            "question": "What do you see?",
            "chosen": "A red circle.",
            "rejected": "A blue star.",
            "image": {"bytes": _png(i), "path": None},
        }
        for i in range(4)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def _run(family, model_dir, data, out, *extra) -> int:
    return main(
        [
            "symmpo",
            "--config",
            str(TINY[family]),
            f"model.name_or_path={model_dir}",
            f"data.path={data}",
            f"training.output_dir={out}",
            *extra,
        ]
    )


def _history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def _check_run(out: Path, expected_metrics: list[str]) -> None:
    logged = [row for row in _history(out) if "loss" in row]
    assert len(logged) == 2  # two steps, logging_steps 1
    for row in logged:
        assert math.isfinite(row["loss"])
        for name in expected_metrics:
            assert name in row and math.isfinite(row[name])
    assert (out / "prefopt_config.yaml").is_file() and (out / "training_curves.png").is_file()


@pytest.fixture
def count_reference_forwards(monkeypatch):
    calls = []
    original = reference_module._reference_forward

    def counting(model, batch):
        calls.append(batch["input_ids"].shape[0])
        return original(model, batch)

    monkeypatch.setattr(reference_module, "_reference_forward", counting)
    return calls


@pytest.mark.parametrize(
    "loss,metrics",
    [
        ("dpo", ["rewards/margins", "rewards/accuracies", "loss/dpo"]),
        ("mdpo", ["rewards/image_margins", "loss/image", "loss/anchor"]),
        ("symmpo", ["rewards/pair_image_margins", "rewards/pair_contrastive_accuracies", "loss/consistency"]),
    ],
)
def test_each_loss_on_tiny_llava(
    tiny_llava_dir, symmpo_parquet, tmp_path, loss, metrics, count_reference_forwards
):
    out = tmp_path / loss
    assert (
        _run(
            "llava",
            tiny_llava_dir,
            symmpo_parquet,
            out,
            "--loss",
            loss,
            f"reference_cache_dir={tmp_path / 'cache'}",
        )
        == 0
    )
    _check_run(out, metrics)
    # dpo reads 2 sequences per example, mdpo 3, symmpo 5: 4 examples in batches of 2
    per_example = {"dpo": 2, "mdpo": 3, "symmpo": 5}[loss]
    assert sum(count_reference_forwards) == 4 * per_example
    first, second = [row for row in _history(out) if "loss" in row]
    # step 1: the policy is the reference, so the cached rows must line up with the batch exactly
    assert abs(first["rewards/margins"]) < 1e-5 and abs(first["rewards/chosen"]) < 1e-5
    # one optimiser step along the loss gradient widens the chosen-vs-rejected margin
    assert second["rewards/margins"] > 0
    assert (out / "model.safetensors").is_file()


def test_symmpo_qwen_lora_cache_reused_on_resume(tiny_qwen_dir, symmpo_parquet, tmp_path, count_reference_forwards,
                                                  caplog):
    cache, out = tmp_path / "cache", tmp_path / "run"
    first = ["training.max_steps=1", "training.save_steps=1", f"reference_cache_dir={cache}"]
    assert _run("qwen2_5_vl", tiny_qwen_dir, symmpo_parquet, out, *first) == 0
    files = list(cache.glob("pairs.parquet.ref-logps-*.safetensors"))
    assert len(files) == 1 and sum(count_reference_forwards) == 4 * 5
    stamp = files[0].stat().st_mtime_ns
    assert (out / "checkpoint-1").is_dir() and (out / "adapter_config.json").is_file()
    count_reference_forwards.clear()
    caplog.set_level("INFO")
    # second run in the same folder: resumes from checkpoint-1 and reads the cache
    assert _run("qwen2_5_vl", tiny_qwen_dir, symmpo_parquet, out, f"reference_cache_dir={cache}") == 0
    assert count_reference_forwards == []  # no reference forward at all
    assert list(cache.glob("*.safetensors")) == files and files[0].stat().st_mtime_ns == stamp
    assert "resuming from" in caplog.text and "reusing" in caplog.text
    _check_run(out, ["rewards/margins", "rewards/pair_image_margins", "loss/anchor"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_mdpo_online_reference_with_built_contrastive(
    tiny_qwen_dir, preference_parquet, tmp_path, count_reference_forwards, caplog
):
    out = tmp_path / "online"
    caplog.set_level("INFO")
    assert (
        _run(
            "qwen2_5_vl",
            tiny_qwen_dir,
            preference_parquet,
            out,
            "--loss",
            "mdpo",
            "reference=online",
            "contrastive=corrupt",
        )
        == 0
    )
    _check_run(out, ["rewards/image_margins", "loss/image"])
    assert count_reference_forwards == []  # online: computed in the step with the adapter disabled
    assert not list(preference_parquet.parent.glob("*.ref-logps-*"))
    assert "built with 'corrupt'" in caplog.text


def test_symmpo_without_contrastive_answer_is_a_clear_error(
    tiny_qwen_dir, preference_parquet, tmp_path, capsys
):
    assert _run("qwen2_5_vl", tiny_qwen_dir, preference_parquet, tmp_path / "x", "contrastive=similar") == 2
    err = capsys.readouterr().err
    assert "rows 1, 2, 3" in err and "contrastive_chosen" in err and "--loss mdpo" in err


@pytest.mark.parametrize(
    "recipe",
    sorted((ROOT / "recipes/symmpo").glob("*.yaml")) + sorted((ROOT / "recipes/tiny").glob("*symmpo*.yaml")),
    ids=lambda p: p.name,
)
def test_recipes_parse(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# ") and "symmpo --config " + str(recipe.relative_to(ROOT)) in first
    config = load_config(SymMPOConfig, recipe)
    assert config.loss.name in ("symmpo", "dpo", "mdpo")
