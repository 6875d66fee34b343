"""Tune the demo's cold start: make-data, tiny-model, SFT and POPE for one seed, with profile overrides.

    OMP_NUM_THREADS=1 python scripts/cold_start_probe.py --seed 1 --out /tmp/probe/s1 \\
        --set sft.learning_rate=4e-3 --set world.train=1200 --set model.num_attention_heads=8

Runs the first three stages of ``prefopt demo`` (default profile, resumable the same way) and
``prefopt eval pope`` on the held-out scenes, then prints one line: POPE accuracy and yes-ratio, how often
the verdict in ``<think>`` agrees with the model's own caption, and how often that caption is right about
the asked shape. Those two rates tell a vision failure (wrong captions) from a reading failure (the
verdict ignores the caption). docs/demo/tuning.md lists the settings measured with it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: the verdict of the four-stage think (prefopt.data.synthetic.four_stage_answer)
_VERDICT = re.compile(r"A (\w+) is (\w+); the caption (names|does not name) \2")
_CAPTION = re.compile(r"<caption>(.*?)</caption>", re.S)


def reading_rates(predictions: list[dict]) -> dict[str, float]:
    """Share of answers whose think verdict matches their own caption, and whose caption is right.

    ``predictions`` are rows of ``prefopt eval pope``'s predictions.jsonl (``text``, ``label``). Rows
    without a caption or a verdict in the demo's wording count in ``unread``.
    """
    agree = right = read = 0
    for row in predictions:
        verdict, caption = _VERDICT.search(row["text"]), _CAPTION.search(row["text"])
        if not (verdict and caption):
            continue
        read += 1
        named = re.search(rf"\b{verdict.group(2)}\b", caption.group(1)) is not None
        agree += named == (verdict.group(3) == "names")
        right += named == (row["label"] == "yes")
    n = len(predictions)
    return {"verdict_follows_caption": agree / read if read else 0.0,
            "caption_right": right / read if read else 0.0, "unread": (n - read) / n if n else 0.0}


def _override(prof, item: str) -> None:
    """Apply ``section.key=value`` (section: world, model or sft; the value read as YAML)."""
    import yaml

    key, _, value = item.partition("=")
    section, _, name = key.partition(".")
    target = {"world": prof.world, "model": prof.model, "sft": prof.sft["training"]}.get(section)
    if target is None or not name or not _:
        raise SystemExit(f"--set {item!r}: expected world.KEY=V, model.KEY=V or sft.KEY=V")
    target[name] = yaml.safe_load(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--family", default="qwen2_5_vl")
    args = parser.parse_args()
    from prefopt.cli import main as prefopt_main
    from prefopt.demo.pipeline import Demo
    from prefopt.demo.profiles import profile

    prof = profile("default")
    for item in args.set:
        _override(prof, item)
    demo = Demo(args.out, prof, args.family, args.seed, False, print)
    demo.stage(1, 3, "make-data", demo.data, demo.make_data)
    demo.stage(2, 3, "tiny-model", demo.base, demo.tiny_model)
    demo.stage(3, 3, "cold-start SFT", demo.runs / "sft", demo.sft)
    target = demo.out / "eval_pope"
    code = prefopt_main(["eval", "pope", "--model", str(demo.runs / "sft"), "--image-root", str(demo.data),
                         "--data", str(demo.data / "pope.jsonl"), "--out", str(target), "--template", "four_stage",
                         "--max-new-tokens", "96", "--batch-size", "32", "--bootstrap-rounds", "20",
                         "--seed", str(args.seed), "--device", "cpu"])
    if code != 0:
        return code
    metrics = json.loads((target / "metrics.json").read_text())["metrics"]
    rows = [json.loads(line) for line in (target / "predictions.jsonl").read_text().splitlines() if line]
    rates = reading_rates(rows)
    print(f"seed {args.seed} {' '.join(args.set) or '(defaults)'}: POPE accuracy {metrics['accuracy']['value']:.3f}, "
          f"yes-ratio {metrics['yes_ratio']['value']:.3f}, verdict follows caption "
          f"{rates['verdict_follows_caption']:.3f}, caption right {rates['caption_right']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
