"""scripts/cold_start_probe.py: its reading rates on answers in the demo's own four-stage wording."""

import importlib.util

from prefopt.data.synthetic import four_stage_answer
from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("cold_start_probe", ROOT / "scripts" / "cold_start_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def _row(objects, asked, present, label):
    return {"text": four_stage_answer(objects, asked, present), "label": label}


def test_rates_count_verdicts_against_their_own_caption_and_captions_against_labels():
    rows = [
        _row(["square", "circle"], "square", True, "yes"),  # verdict follows caption, caption right
        _row(["circle"], "star", False, "no"),  # both right
        _row(["circle", "star"], "star", True, "no"),  # hallucinated star: verdict follows, caption wrong
    ]
    # a verdict that contradicts its caption: the caption names the square (blue), the verdict says it does not
    contradicting = _row(["square"], "square", True, "yes")
    contradicting["text"] = contradicting["text"].replace("the caption names blue", "the caption does not name blue")
    rows.append(contradicting)
    rows.append({"text": "<answer>yes</answer>", "label": "yes"})  # no think in the demo's wording
    rates = probe.reading_rates(rows)
    assert rates["verdict_follows_caption"] == 3 / 4
    assert rates["caption_right"] == 3 / 4
    assert rates["unread"] == 1 / 5


def test_empty_predictions_give_zero_rates():
    assert probe.reading_rates([]) == {"verdict_follows_caption": 0.0, "caption_right": 0.0, "unread": 0.0}
