"""CHAIR: synonym mapping, lemmatisation and the three metrics on hand-made captions (the CLI end; the pure tests are in tests/unit/test_eval_chair.py)."""

from __future__ import annotations

import json

from prefopt.eval.common import EvalOptions
from prefopt.eval.runner import get_benchmark
from tests.benchdata.chair import CAPTIONS, _expected


def test_chair_with_coco_instances(tmp_path):
    """The same captions keyed by image_id, ground truth from a COCO instances json (same numbers)."""
    from prefopt.cli import main

    cats = {"person": 1, "horse": 19, "hot dog": 58, "dining table": 67, "teddy bear": 88, "car": 3}
    anns, images = [], []
    for i, (_, objs) in enumerate(CAPTIONS):
        images.append({"id": 100 + i, "file_name": f"img{i}.jpg"})
        anns += [{"image_id": 100 + i, "category_id": cats[o]} for o in objs]
    inst = tmp_path / "instances.json"
    inst.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": v, "name": k} for k, v in cats.items()],
            }
        )
    )
    caps = tmp_path / "captions.jsonl"
    caps.write_text(
        "".join(json.dumps({"image_id": 100 + i, "caption": c}) + "\n" for i, (c, _) in enumerate(CAPTIONS))
    )
    out = tmp_path / "out"
    args = ["eval", "chair", "--predictions", str(caps), "--annotations", str(inst)]
    assert main([*args, "--out", str(out), "--scoring", "robust"]) == 0
    _expected(json.loads((out / "metrics.json").read_text()))
    assert main([*args, "--out", str(tmp_path / "official")]) == 0
    official = json.loads((tmp_path / "official" / "metrics.json").read_text())
    _expected(official, chair_s=0.5)
    assert official["ground_truth"].startswith("instances only") and official["warnings"]
    items = get_benchmark("chair").load_items(inst, EvalOptions())
    assert [it.images for it in items][:2] == [["img0.jpg"], ["img1.jpg"]]
    assert items[1].meta["objects"] == ["dining table", "hot dog"]
