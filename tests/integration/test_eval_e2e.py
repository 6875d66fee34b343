"""End to end: tiny models answer a POPE-format file through ``prefopt eval``, resume, and compare."""

from __future__ import annotations

import json

import pytest

from prefopt.cli import main


@pytest.fixture
def pope_file(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    rows = []
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (40, 32), colour).save(root / f"{i}.png")
        rows.append(
            {
                "question_id": i,
                "image": f"{i}.png",
                "text": f"Is there a {colour} square in the image?",
                "label": "yes" if i != 1 else "no",
            }
        )
    path = tmp_path / "coco_pope_random.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, root


def _eval(model, data, root, out):
    return main(
        [
            "eval",
            "pope",
            "--model",
            str(model),
            "--data",
            str(data),
            "--image-root",
            str(root),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--max-new-tokens",
            "3",
            "--bootstrap-rounds",
            "20",
        ]
    )


def test_eval_resume_and_compare(tiny_qwen_dir, tiny_llava_dir, pope_file, tmp_path, monkeypatch, capsys):
    data, root = pope_file
    out_q = tmp_path / "runs" / "qwen"
    assert _eval(tiny_qwen_dir, data, root, out_q) == 0
    preds_path = out_q / "predictions.jsonl"
    lines = preds_path.read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert all(isinstance(r["text"], str) and r["category"] == "random" and r["image"] for r in rows)
    metrics = json.loads((out_q / "metrics.json").read_text())
    assert metrics["n"] == 3 and set(metrics["metrics"]) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "yes_ratio",
    }
    assert set(metrics["categories"]) == {"random"}
    info = json.loads((out_q / "run_info.json").read_text())
    assert info["n_generated"] == 3 and info["max_new_tokens"] == 3

    # a run killed while writing the third answer: it is redone, the first two are kept as they were
    preds_path.write_text("\n".join(lines[:2]) + '\n{"id": "2", "te')
    assert _eval(tiny_qwen_dir, data, root, out_q) == 0
    resumed = preds_path.read_text().splitlines()
    assert resumed[:2] == lines[:2] and len(resumed) == 3 and json.loads(resumed[2])["id"] == "2"
    info = json.loads((out_q / "run_info.json").read_text())
    assert (info["n_resumed"], info["n_generated"], info["status"]) == (2, 1, "done")

    # everything answered: the model is not even loaded
    def no_load(*a, **k):
        raise AssertionError("model loaded although every question was answered")

    monkeypatch.setattr("prefopt.eval.runner._load", no_load)
    assert _eval(tiny_qwen_dir, data, root, out_q) == 0
    monkeypatch.undo()
    assert preds_path.read_text().splitlines() == resumed

    # another model must not resume (and silently mix with) these answers
    assert _eval(tiny_llava_dir, data, root, out_q) == 2
    assert "would mix runs" in capsys.readouterr().err

    out_l = tmp_path / "runs" / "llava"
    assert _eval(tiny_llava_dir, data, root, out_l) == 0
    assert len((out_l / "predictions.jsonl").read_text().splitlines()) == 3

    report = tmp_path / "report"
    assert main(["compare", str(out_q), str(out_l), "--baseline", "qwen", "--out", str(report)]) == 0
    table = (report / "comparison.md").read_text()
    assert "qwen (baseline)" in table and "Δ llava − qwen" in table and "| pope | f1 |" in table
    assert (report / "comparison.png").stat().st_size > 0


def test_eval_needs_data_and_unique_ids(tiny_qwen_dir, pope_file, tmp_path, capsys):
    data, root = pope_file
    assert main(["eval", "pope", "--model", str(tiny_qwen_dir), "--out", str(tmp_path / "o")]) == 2
    assert "--model needs --data" in capsys.readouterr().err
    dup = tmp_path / "dup.jsonl"
    dup.write_text(data.read_text().splitlines()[0] + "\n" + data.read_text().splitlines()[0] + "\n")
    assert _eval(tiny_qwen_dir, dup, root, tmp_path / "o2") == 2
    assert "duplicate question id '0'" in capsys.readouterr().err


def test_refcoco_records_image_size_for_relative_boxes(tiny_qwen_dir, pope_file, tmp_path):
    """Relative boxes need the image size; generation stores it from the loaded image (40 x 32)."""
    _, root = pope_file
    data = tmp_path / "refcoco.jsonl"
    data.write_text(json.dumps({"image": "0.png", "sent": "the red square", "bbox": [0, 0, 20, 16]}) + "\n")
    out = tmp_path / "ref"
    args = ["eval", "refcoco", "--model", str(tiny_qwen_dir), "--data", str(data), "--image-root", str(root)]
    assert main([*args, "--out", str(out), "--box-scale", "unit", "--max-new-tokens", "2"]) == 0
    row = json.loads((out / "predictions.jsonl").read_text())
    assert (row["width"], row["height"]) == (40, 32) and row["bbox"] == [0.0, 0.0, 20.0, 16.0]
    # the same row answered with a relative box covering the top-left quarter scores IoU 1
    (tmp_path / "p.jsonl").write_text(json.dumps({**row, "text": "[0, 0, 0.5, 0.5]"}) + "\n")
    args = ["eval", "refcoco", "--predictions", str(tmp_path / "p.jsonl"), "--box-scale", "unit"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["metrics"]["acc_iou50"]["value"] == 1.0


@pytest.mark.parametrize("scoring", ["official", "robust"])
def test_eval_pope_both_scorings(tiny_qwen_dir, pope_file, tmp_path, scoring):
    data, root = pope_file
    out = tmp_path / scoring
    args = ["eval", "pope", "--model", str(tiny_qwen_dir), "--data", str(data), "--image-root", str(root)]
    assert main([*args, "--out", str(out), "--max-new-tokens", "3", "--bootstrap-rounds", "5", "--scoring", scoring]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scoring"] == scoring and metrics["n"] == 3
    assert isinstance(metrics["parse_disagreements"], int) and metrics["n_unparsed"] == 0


def test_four_stage_answers_without_tag_warn(tiny_qwen_dir, pope_file, tmp_path, capsys):
    """A tiny model never writes <answer>: the run says so loudly instead of printing a silent 0.000."""
    data, root = pope_file
    out = tmp_path / "four"
    args = ["eval", "pope", "--model", str(tiny_qwen_dir), "--data", str(data), "--image-root", str(root)]
    assert main([*args, "--out", str(out), "--max-new-tokens", "3", "--bootstrap-rounds", "5",
                 "--template", "four_stage"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_unparsed"] == 3 and metrics["warnings"]
    assert "WARNING: pope: 3 of 3 answers could not be parsed" in capsys.readouterr().err
