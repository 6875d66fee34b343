"""Regenerate the messy answer files of this folder from the vendored question samples (deterministic).

Run from this folder: ``python make_answers.py``.  Roughly 3 in 5 answers agree with the label; the
wording cycles through styles real models produce, including the ones the official POPE rule misreads.
"""

import json
import re
from pathlib import Path

YES = ["Yes", "yes", "Yes.", "YES", "Yes, there is a {o}.", "There is a {o} in the image.", "**Yes**",
       "(Yes)", "Yes;", "yes\nIt is on the left.", "Yes, I can see a {o}. It is not small.", "Sure"]
NO = ["No", "no", "No.", "NO", "No, there is no {o}.", "Not really.", "(No)", "**No**", "No;",
      "No\nIt is absent.", "There is not a {o}.", "I don't see one, no.", "Nope.", "no, not at all"]
HERE = Path(__file__).parent


def answer(i: int, row: dict) -> str:
    obj = re.sub(r"^Is there an? (.*) in the image\?$", r"\1", row["text"])
    right = i % 5 not in (2, 3)
    says_yes = (row["label"] == "yes") == right
    styles = YES if says_yes else NO
    return styles[(i * 5 + len(obj) + i // 4) % len(styles)].format(o=obj)


def main() -> None:
    for split in ("random", "popular", "adversarial"):
        rows = [json.loads(x) for x in (HERE / f"coco_pope_{split}.json").read_text().splitlines()]
        with (HERE / f"answers_{split}.jsonl").open("w") as fh:  # LLaVA's layout
            for i, r in enumerate(rows):
                prompt = r["text"] + "\nAnswer the question using a single word or phrase."
                fh.write(json.dumps({"question_id": r["question_id"], "prompt": prompt, "text": answer(i, r),
                                     "model_id": "messy"}) + "\n")
    rows = [json.loads(x) for x in (HERE / "coco_pope_random_2910.json").read_text().splitlines()]
    with (HERE / "answers_random_2910_pope_layout.jsonl").open("w") as fh:  # POPE's layout, joined by position
        for i, r in enumerate(rows):
            fh.write(json.dumps({"question": r["text"].lower(), "answer": answer(i + 1, r)}) + "\n")


if __name__ == "__main__":
    main()
