"""End to end through ``prefopt.cli.main``: add-tokens -> sft --reverse (2 steps) -> generate --reverse."""

from __future__ import annotations

import json

from PIL import Image
from safetensors import safe_open

from prefopt import cli
from prefopt.models.tokens import REVERSE_TOKENS

ANSWERS = [
    "<SPAN>A red circle</CN> and <SPAN>a blue square</CN>.",
    "<SPAN>A green triangle</CN> next to <SPAN>a yellow star</UN>",
    "<SPAN>One blue square</CN>.",
    "<SPAN>A red circle</CN> beside <SPAN>a purple cross</UN>",
]


def _write_data(root):
    rows, questions = [], []
    for i, answer in enumerate(ANSWERS):
        Image.new("RGB", (56, 56), (40 * i, 90, 200 - 40 * i)).save(root / f"img{i}.png")
        rows.append({"id": f"r{i}", "image": f"img{i}.png",
                     "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                       {"from": "gpt", "value": answer}]})
        questions.append({"id": f"q{i}", "image": f"img{i}.png", "question": "Describe the image."})
    (root / "reverse.json").write_text(json.dumps(rows))
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return root / "reverse.json", root / "questions.jsonl"


def _tag_rows(model_dir):
    """Input-embedding rows of the tag tokens, read from the saved safetensors."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [tok.convert_tokens_to_ids(t) for t in REVERSE_TOKENS]
    files = sorted(model_dir.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():
                if key.endswith("embed_tokens.weight"):
                    return fh.get_tensor(key)[ids].clone()
    raise AssertionError(f"no embed_tokens in {files}")


def test_add_tokens_sft_reverse_generate(tmp_path, tiny_model_dirs, family, capsys):
    src = tiny_model_dirs[family]
    short = "llava" if family == "llava" else "qwen"
    data, questions = _write_data(tmp_path)
    base = tmp_path / "base"
    assert cli.main(["add-tokens", "--model", str(src), "--tokens", "reverse", "--out", str(base)]) == 0
    sft_dir = tmp_path / "sft"
    assert cli.main(["sft", "--reverse", "--config", f"recipes/tiny/{short}_reverse_sft.yaml",
                     f"model.name_or_path={base}", f"data.path={data}", f"data.image_root={tmp_path}", f"training.output_dir={sft_dir}"]) == 0
    model_dir = sft_dir
    if family == "llava":  # the tiny LLaVA recipe trains LoRA: merge it (tag rows included) before serving
        model_dir = tmp_path / "merged"
        assert cli.main(["merge-lora", "--adapter", str(sft_dir), "--base", str(base), "--out", str(model_dir)]) == 0
    # The tag rows learnt (LoRA: through trainable_token_indices; full fine-tune: directly).
    assert not _tag_rows(model_dir).allclose(_tag_rows(base))

    out = tmp_path / "results.jsonl"
    args = ["generate", "--model", str(model_dir), "--data", str(questions), "--out", str(out), "--reverse",
            "--max-new-tokens", "6", "--temperature", "0.7", "--tau", "0.5", "--max-attempts", "3"]
    assert cli.main(args + ["--limit", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    for row in rows:
        assert set(row) == {"id", "question", "text", "raw", "flagged", "attempts", "success"}
        assert not any(t in row["text"] for t in REVERSE_TOKENS)
        assert row["question"] == "Describe the image." and isinstance(row["attempts"], int)
    # Resume: a killed run's cut-off line is dropped, answered ids are skipped, the rest is appended.
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + "\n" + '{"id": "q2", "te')
    assert cli.main(args) == 0
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in again] == ["q0", "q1", "q2", "q3"]
    assert again[2] == rows[2]  # same seed per example: the regenerated answer is identical
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "0 to answer" in capsys.readouterr().out


def test_generate_plain_and_bad_input(tmp_path, tiny_qwen_dir, capsys):
    _, questions = _write_data(tmp_path)
    out = tmp_path / "plain.jsonl"
    assert cli.main(["generate", "--model", str(tiny_qwen_dir), "--data", str(questions), "--out", str(out),
                     "--max-new-tokens", "4", "--batch-size", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"] and all(set(r) == {"id", "question", "text"} for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "ok"}\n{"id": 2, "question": ""}\n')
    assert cli.main(["generate", "--model", str(tiny_qwen_dir), "--data", str(bad), "--out", str(out)]) == 2
    assert "bad.jsonl, row 2" in capsys.readouterr().err
    # --reverse on a model without the tags says what to do.
    assert cli.main(["generate", "--model", str(tiny_qwen_dir), "--data", str(questions), "--out",
                     str(tmp_path / "r.jsonl"), "--reverse"]) == 2
    assert "add-tokens" in capsys.readouterr().err
