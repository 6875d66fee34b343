"""Item 4 of issue 21: how much of a SymMPO step the vision tower costs, to decide whether encoding each
distinct image once per step pays.

A SymMPO example has 5 sequences over 2 distinct images (1w/1l/12 share m, 2w/22 share m'), so the tower
runs 5 times where 2 would do; a GRPO group of G completions shares one prompt image. This script times one
policy forward + backward of the 5·B-row batch and the time spent inside the model's image encoder
(``get_image_features`` of the language-vision base model, wrapped), and reports the share and the saving
deduplication could give at most: ``share × (1 - distinct / encoded)``.

    python -m benchmarks.vision_share [--quick] [--family qwen2_5_vl] [--config tiny|real-vocab] [--batch 2]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import common


def measure(family: str, args, n: int) -> dict:
    """Median step seconds, seconds inside the image encoder, images encoded and distinct per step."""
    from prefopt.data.formats import read_dataset
    from prefopt.data.synthetic import WorldSizes, write_world
    from prefopt.dpo.collator import PreferenceCollator, sequence_logps
    from prefopt.dpo.contrastive import ContrastiveImages
    from prefopt.dpo.losses import loss_keys
    from prefopt.models.adapter import load_adapter

    adapter = load_adapter(common.model_dir(family, args), dtype="float32")
    adapter.freeze_vision(True)
    model = adapter.model.train()
    base = model.base_model
    spent = {"s": 0.0, "images": 0}
    encode = base.get_image_features

    def timed_encode(pixel_values, *a, **k):
        start = time.perf_counter()
        out = encode(pixel_values, *a, **k)
        spent["s"] += time.perf_counter() - start
        grid = k.get("image_grid_thw", a[0] if a else None)
        spent["images"] += int(grid.size(0)) if grid is not None else int(pixel_values.size(0))
        return out

    base.get_image_features = timed_encode
    with tempfile.TemporaryDirectory() as tmp:
        files = write_world(Path(tmp), WorldSizes(train=2, grpo=2, preference=args.batch, eval=2, grounded=0))
        examples = read_dataset(str(files["symmpo.parquet"]), image_root=tmp)
        collator = PreferenceCollator(adapter, loss_keys("symmpo"), ContrastiveImages(examples, "none"))
        batch = collator([{"index": i, "example": ex} for i, ex in enumerate(examples)])
    steps, encoder = [], []
    for _ in range(n + 1):
        spent["s"], spent["images"] = 0.0, 0
        start = time.perf_counter()
        sequence_logps(model, batch).sum().backward()
        steps.append(time.perf_counter() - start)
        encoder.append(spent["s"])
        model.zero_grad(set_to_none=True)
    return {"family": family, "batch": args.batch, "step_s": common.summary(steps[1:]),
            "encoder_s": common.summary(encoder[1:]), "images_encoded": spent["images"],
            "images_distinct": 2 * args.batch}


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2, help="SymMPO examples per step")
    args = p.parse_args(argv)
    n = common.repeats(args)
    runs = [measure(f, args, n) for f in common.families(args)]
    ratios = []
    for r in runs:
        share = r["encoder_s"]["median"] / r["step_s"]["median"]
        saving = share * (1 - r["images_distinct"] / max(1, r["images_encoded"]))
        r["share"], r["max_saving"] = share, saving
        print(f"{r['family']}: step {common.fmt_stats(r['step_s'])}, encoder {common.fmt_stats(r['encoder_s'])}, "
              f"{r['images_encoded']} images encoded, {r['images_distinct']} distinct", flush=True)
        ratios.append((f"vision {r['family']}: encoder share of a SymMPO fwd+bwd", share, "report"))
        ratios.append((f"vision {r['family']}: most a once-per-image encoder saves", saving, "report"))
    common.emit("vision_share", {"config": args.config, "runs": runs}, ratios)


if __name__ == "__main__":
    main()
