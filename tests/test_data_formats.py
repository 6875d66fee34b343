"""Format readers: each public layout parsed from a small file written here, and every error it reports."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from prefopt.data.formats import (
    guess_format,
    read_dataset,
    read_llava_conversations,
    read_preference_dataset,
    read_symmpo_parquet,
    read_video_r1,
    read_viscot_jsonl,
    render_problem,
)
from prefopt.data.images import load_image
from prefopt.data.schema import ConversationExample, PreferenceExample, PromptExample, message_text
from prefopt.errors import DataError, ImageError


def _png(colour=(200, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def root(tmp_path):
    media = tmp_path / "media"
    (media / "img").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (media / "img" / f"{name}.png").write_bytes(_png())
    (media / "clip.mp4").write_bytes(b"not decoded by the reader")
    return media


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _json(path, rows):
    path.write_text(json.dumps(rows, indent=1))
    return path


VIDEO_R1 = [
    {"problem_id": 7, "problem": "What colour is it?", "options": ["A. red", "B. blue"],
     "solution": "<answer>A</answer>", "problem_type": "multiple choice", "data_type": "image",
     "path": "./img/a.png", "process": "<think>red</think>", "data_source": "toy"},
    {"problem_id": 8, "problem": "How many seconds?", "options": [], "solution": "<answer>2</answer>",
     "problem_type": "numerical", "data_type": "video", "path": "clip.mp4"},
]


def test_video_r1(tmp_path, root):
    records = read_video_r1(_json(tmp_path / "rl.json", VIDEO_R1), image_root=root)
    first, second = records
    assert isinstance(first, PromptExample) and first.id == "7"
    assert first.images == [str(root / "img" / "a.png")] and first.videos == []
    assert first.options == ["A. red", "B. blue"] and first.problem_type == "multiple choice"
    assert first.messages == [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What colour is it?Options:\nA. red\nB. blue"}]}]
    assert first.extra == {"problem_id": 7, "process": "<think>red</think>", "data_source": "toy"}
    assert second.data_type == "video" and second.videos == [str(root / "clip.mp4")] and second.images == []
    assert second.messages[0]["content"][0] == {"type": "video"}
    assert message_text(second.messages[0]) == "How many seconds?"
    assert load_image(first.images[0]).getpixel((0, 0)) == (200, 0, 0)


def test_render_problem():
    assert render_problem("Q?", []) == "Q?"
    assert render_problem("Q?", ["A. x", "B. y"]) == "Q?Options:\nA. x\nB. y"


def test_video_r1_bad_rows(tmp_path, root):
    rows = [dict(VIDEO_R1[0]), dict(VIDEO_R1[0])]
    del rows[1]["solution"]
    with pytest.raises(DataError, match=r"rl\.json, row 2: missing field 'solution'"):
        read_video_r1(_json(tmp_path / "rl.json", rows), image_root=root)
    rows[1] = dict(VIDEO_R1[0], problem_type="essay")
    with pytest.raises(DataError, match=r"row 2: field 'problem_type' is 'essay'"):
        read_video_r1(_json(tmp_path / "rl2.json", rows), image_root=root)


LLAVA = [
    {"id": "single", "image": "img/a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A square."},
        {"from": "human", "value": "And its colour?"}, {"from": "gpt", "value": "Red."}]},
    {"id": "multi", "image": ["img/b.png", "img/c.png"], "conversations": [
        {"from": "human", "value": "Compare <image> with <image> please."},
        {"from": "gpt", "value": "They match."}]},
    {"id": "cot", "image": "img/c.png", "conversations": [  # LLaVA-CoT: no <image> placeholder
        {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "<SUMMARY>s</SUMMARY>"}]},
    {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
]


def test_llava_conversations(tmp_path, root):
    records = read_llava_conversations(_json(tmp_path / "sft.json", LLAVA), image_root=root)
    single, multi, cot, text = records
    assert isinstance(single, ConversationExample) and single.id == "single"
    assert [m["role"] for m in single.messages] == ["user", "assistant", "user", "assistant"]
    assert single.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    assert single.messages[3]["content"] == [{"type": "text", "text": "Red."}]
    assert single.images == [str(root / "img" / "a.png")]
    assert multi.images == [str(root / "img" / "b.png"), str(root / "img" / "c.png")]
    assert multi.messages[0]["content"] == [
        {"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": "with"},
        {"type": "image"}, {"type": "text", "text": "please."}]
    assert cot.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Why?"}]
    assert text.images == [] and text.messages[0]["content"] == [{"type": "text", "text": "Hi"}]


@pytest.mark.parametrize("bad, message", [
    ({"id": "x", "image": "img/a.png"}, "missing field 'conversations'"),
    ({"id": "x", "image": ["img/a.png"], "conversations": [{"from": "human", "value": "<image><image>q"},
                                                           {"from": "gpt", "value": "a"}]},
     r"2 <image> placeholder\(s\) .* but 1 image"),
    ({"id": "x", "conversations": [{"from": "gpt", "value": "a"}]}, "start with a human turn"),
    ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
     r"conversations\[1\]"),
])
def test_llava_bad_rows(tmp_path, root, bad, message):
    path = _json(tmp_path / "sft.json", [LLAVA[0], LLAVA[1], bad])
    with pytest.raises(DataError, match=r"sft\.json, row 3: .*" + message):
        read_llava_conversations(path, image_root=root)


def test_media_errors_name_row_and_path(tmp_path, root):
    rows = [LLAVA[0], dict(LLAVA[0], image="img/nope.png")]
    with pytest.raises(ImageError, match=r"sft\.json, row 2: field 'image': image file not found: .*nope\.png"):
        read_llava_conversations(_json(tmp_path / "sft.json", rows), image_root=root)
    rows[1] = dict(LLAVA[0], image="../secret.png")
    with pytest.raises(ImageError, match=r"row 2: .*escapes the image root"):
        read_llava_conversations(_json(tmp_path / "sft.json", rows), image_root=root)


def test_corrupt_image_is_reported_when_decoded(tmp_path, root):
    (root / "img" / "broken.png").write_bytes(b"\x89PNG broken")
    rows = [dict(LLAVA[0], image="img/broken.png")]
    record = read_llava_conversations(_json(tmp_path / "sft.json", rows), image_root=root)[0]
    with pytest.raises(ImageError, match=r"cannot decode image .*broken\.png"):
        load_image(record.images[0])


VISCOT = [
    {"image": "img/a.png", "width": 640, "height": 480, "bboxs": [[10, 20, 110, 220]], "dataset": "gqa",
     "problem": "What is on the table?", "solution": "a cup", "problem_id": "gqa_1"},
    {"image": ["img/b.png"], "width": 32, "height": 16.0, "bboxs": [], "dataset": "textvqa",
     "problem": "Read it.", "solution": "STOP", "problem_id": 2},
]


def test_viscot(tmp_path, root):
    first, second = read_viscot_jsonl(_jsonl(tmp_path / "viscot.jsonl", VISCOT), image_root=root)
    assert first.id == "gqa_1" and first.images == [str(root / "img" / "a.png")]
    assert first.extra == {"width": 640, "height": 480, "bboxs": [[10.0, 20.0, 110.0, 220.0]],
                           "dataset": "gqa", "problem_id": "gqa_1"}
    assert first.solution == "a cup" and first.problem_type == "free-form"
    assert first.messages[0]["content"][0] == {"type": "image"}
    assert second.id == "2" and second.extra["height"] == 16 and second.extra["bboxs"] == []


def test_viscot_bad_box(tmp_path, root):
    rows = [VISCOT[0], dict(VISCOT[0], bboxs=[[1, 2, 3]])]
    with pytest.raises(DataError, match=r"viscot\.jsonl, row 2: bboxs\[0\] must be"):
        read_viscot_jsonl(_jsonl(tmp_path / "viscot.jsonl", rows), image_root=root)


def test_jsonl_syntax_error_names_line(tmp_path, root):
    path = tmp_path / "viscot.jsonl"
    path.write_text(json.dumps(VISCOT[0]) + "\n\n" + '{"image": "img/a.png", "width": 6\n')
    with pytest.raises(DataError, match=r"viscot\.jsonl: invalid JSON on line 3, column"):
        read_viscot_jsonl(path, image_root=root)


def test_json_syntax_error_names_line(tmp_path, root):
    path = tmp_path / "rl.json"
    path.write_text('[\n {"problem": "q",\n  "solution": oops}\n]\n')
    with pytest.raises(DataError, match=r"rl\.json: invalid JSON on line 3, column 15"):
        read_video_r1(path, image_root=root)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: the dataset is empty"):
        read_viscot_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="empty"):
        read_video_r1(tmp_path / "empty.json")
    with pytest.raises(DataError, match=r"nothing\.json: dataset file not found"):
        read_video_r1(tmp_path / "nothing.json")
    with pytest.raises(DataError, match="unknown file type"):
        (tmp_path / "data.csv").write_text("a,b\n")
        read_dataset(tmp_path / "data.csv")


def _symmpo_frame(root):
    return pd.DataFrame([
        {"idx": 0, "question": "Describe.", "resp_1_w": "A red box.", "resp_1_l": "A cat.", "resp_2_w": "A cat.",
         "image_1": {"bytes": _png((1, 2, 3)), "path": "x.png"}, "image_2": {"bytes": None, "path": "img/b.png"}},
        {"idx": 1, "question": "Describe.", "resp_1_w": "w", "resp_1_l": "l", "resp_2_w": "w2",
         "image_1": {"bytes": None, "path": "img/a.png"}, "image_2": {"bytes": _png(), "path": None}},
    ])


def test_symmpo_parquet_bytes_and_paths(tmp_path, root):
    path = tmp_path / "symmpo.parquet"
    _symmpo_frame(root).to_parquet(path)
    first, second = read_symmpo_parquet(path, image_root=root)
    assert isinstance(first, PreferenceExample) and first.id == "0"
    assert isinstance(first.image, bytes) and load_image(first.image).getpixel((0, 0)) == (1, 2, 3)
    assert first.contrastive_image == str(root / "img" / "b.png")
    assert (first.chosen, first.rejected, first.contrastive_chosen) == ("A red box.", "A cat.", "A cat.")
    assert second.image == str(root / "img" / "a.png") and isinstance(second.contrastive_image, bytes)


def test_symmpo_parquet_plain_bytes_and_path_columns(tmp_path, root):
    path = tmp_path / "plain.parquet"
    pd.DataFrame([{"idx": 3, "question": "q", "resp_1_w": "w", "resp_1_l": "l", "resp_2_w": "w2",
                   "image_1": "img/a.png", "image_2": "img/c.png"}]).to_parquet(path)
    (record,) = read_symmpo_parquet(path, image_root=root)
    assert record.image == str(root / "img" / "a.png") and record.contrastive_image == str(root / "img" / "c.png")
    path = tmp_path / "raw.parquet"
    pd.DataFrame([{"idx": 4, "question": "q", "resp_1_w": "w", "resp_1_l": "l", "resp_2_w": "w2",
                   "image_1": _png(), "image_2": _png((0, 9, 0))}]).to_parquet(path)
    (record,) = read_symmpo_parquet(path)
    assert load_image(record.contrastive_image).getpixel((0, 0)) == (0, 9, 0)


def test_symmpo_missing_field(tmp_path, root):
    frame = _symmpo_frame(root)
    frame.loc[1, "resp_1_l"] = None
    frame.to_parquet(tmp_path / "symmpo.parquet")
    with pytest.raises(DataError, match=r"symmpo\.parquet, row 2: missing field 'resp_1_l'"):
        read_symmpo_parquet(tmp_path / "symmpo.parquet", image_root=root)


def test_preference_dataset_layouts(tmp_path, root):
    rows = [
        {"idx": 5, "question": "<image>\nWhat is here?", "chosen": "A box.", "rejected": "A dog.",
         "image": "img/a.png", "ds_name": "toy"},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
         "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]}],
         "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}],
         "images": ["img/b.png"]},
    ]
    first, second = read_preference_dataset(_jsonl(tmp_path / "pref.jsonl", rows), image_root=root)
    assert (first.id, first.question, first.chosen, first.rejected) == ("5", "What is here?", "A box.", "A dog.")
    assert first.image == str(root / "img" / "a.png") and first.contrastive_image is None
    assert first.extra == {"ds_name": "toy"}
    assert (second.question, second.chosen, second.rejected) == ("Colour?", "Red.", "Blue.")
    assert second.image == str(root / "img" / "b.png")


def test_preference_dataset_errors(tmp_path, root):
    rows = [{"question": "q", "chosen": "c", "rejected": "r", "image": "img/a.png"},
            {"chosen": "c", "rejected": "r", "image": "img/a.png"}]
    with pytest.raises(DataError, match=r"row 2: missing field 'question' or 'prompt'"):
        read_preference_dataset(_jsonl(tmp_path / "p.jsonl", rows), image_root=root)
    rows[1] = {"question": "q", "chosen": "c", "rejected": "r", "images": ["img/a.png", "img/b.png"]}
    with pytest.raises(DataError, match=r"row 2: field 'images' must hold exactly one image, got 2"):
        read_preference_dataset(_jsonl(tmp_path / "p2.jsonl", rows), image_root=root)


def test_hub_name_path_exists_but_fails_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"no-such-owner/no-such-dataset: cannot load hub dataset"):
        read_preference_dataset("no-such-owner/no-such-dataset")


def test_read_dataset_dispatch(tmp_path, root):
    assert guess_format(["question", "resp_1_w", "resp_1_l", "image_1"]) == "symmpo"
    assert guess_format(["id", "image", "conversations"]) == "llava"
    assert guess_format(["image", "bboxs", "problem"]) == "viscot"
    assert guess_format(["problem", "solution", "path"]) == "video_r1"
    assert guess_format(["prompt", "chosen", "rejected"]) == "preference"
    assert guess_format(["text"]) is None
    assert isinstance(read_dataset(_json(tmp_path / "sft.json", LLAVA), image_root=root)[0], ConversationExample)
    by_name = read_dataset(_jsonl(tmp_path / "v.jsonl", VISCOT), format="Ground-R1", image_root=root)
    assert by_name[0].extra["bboxs"]
    with pytest.raises(DataError, match="unknown dataset format 'csv'"):
        read_dataset(tmp_path / "v.jsonl", format="csv")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        read_dataset(_jsonl(tmp_path / "odd.jsonl", [{"text": "hi"}]))


def test_reads_the_synthetic_world(tmp_path):
    from prefopt.data.synthetic import WorldSizes, write_world

    files = write_world(tmp_path / "world", WorldSizes(train=2, grpo=2, preference=2, eval=1))
    root = tmp_path / "world"
    assert len(read_dataset(files["sft.json"], image_root=root)) == 6  # a caption and two yes/no answers per scene
    prompts = read_dataset(files["grpo.json"], image_root=root)
    assert prompts[0].problem_type == "yes/no" and prompts[0].images[0].startswith(str(root))
    pairs = read_dataset(files["symmpo.parquet"], image_root=root)
    assert pairs[0].contrastive_chosen == pairs[0].rejected


def test_image_features_stay_undecoded(tmp_path):
    """A parquet written by ``datasets`` with ``Image`` features (the RLAIF-V hub layout) keeps raw bytes."""
    import datasets

    rows = {"question": ["q0", "q1"], "chosen": ["c0", "c1"], "rejected": ["r0", "r1"],
            "image": [Image.new("RGB", (3, 3), (5, 6, 7)), Image.new("RGB", (3, 3), (8, 9, 10))]}
    features = datasets.Features({"question": datasets.Value("string"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string"), "image": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "rlaif.parquet")
    first, second = read_preference_dataset(tmp_path / "rlaif.parquet")
    assert isinstance(first.image, bytes) and load_image(second.image).getpixel((0, 0)) == (8, 9, 10)

    listed = {"prompt": ["q"], "chosen": ["c"], "rejected": ["r"], "images": [[Image.new("RGB", (2, 2))]]}
    features = datasets.Features({k: datasets.Value("string") for k in ("prompt", "chosen", "rejected")}
                                 | {"images": datasets.List(datasets.Image())})
    datasets.Dataset.from_dict(listed, features=features).to_parquet(tmp_path / "listed.parquet")
    (record,) = read_dataset(tmp_path / "listed.parquet")
    assert isinstance(record, PreferenceExample) and isinstance(record.image, bytes)


def test_video_r1_sft(tmp_path, root):
    rows = [dict(VIDEO_R1[0], process_and_answer="<think>red</think><answer>A</answer>")]
    (record,) = read_dataset(_json(tmp_path / "cold.json", rows), format="video_r1_sft", image_root=root)
    assert isinstance(record, ConversationExample) and record.images == [str(root / "img" / "a.png")]
    assert [m["role"] for m in record.messages] == ["user", "assistant"]
    assert message_text(record.messages[1]) == "<think>red</think><answer>A</answer>"
    assert record.extra["solution"] == "<answer>A</answer>" and "process_and_answer" not in record.extra
    with pytest.raises(DataError, match=r"row 1: missing field 'process_and_answer'"):
        read_dataset(_json(tmp_path / "rl.json", VIDEO_R1[:1]), format="video_r1_sft", image_root=root)


def test_jsonl_in_a_json_file_and_pretty_json_errors(tmp_path, root):
    path = tmp_path / "lines.json"
    path.write_text(json.dumps(VISCOT[0]) + "\n" + json.dumps(VISCOT[1])[:-3] + "\n")
    with pytest.raises(DataError, match=r"lines\.json: invalid JSON on line 2"):
        read_viscot_jsonl(path, image_root=root)
    path = tmp_path / "pretty.json"
    path.write_text('{\n "data": [\n  {"problem": "q",}\n ]\n}\n')
    with pytest.raises(DataError, match=r"pretty\.json: invalid JSON on line 3"):
        read_video_r1(path, image_root=root)
    path.write_text(json.dumps({"version": 2, "data": VIDEO_R1}, indent=1))
    assert [r.id for r in read_video_r1(path, image_root=root)] == ["7", "8"]
