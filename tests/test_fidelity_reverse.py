"""Seed parity of REVERSE (issue 16, items 9-12).

Seed rules (tsunghan-wu/reverse_vlm): ``llava/train/train.py`` calls ``query_injection(sources, 0.2)`` on every
item it serves (``qwenvl/train/data.py`` the same), appending "(Hint: potential incorrect phrases -> …)"
to the question with probability 0.2; ``qwenvl/eval/inference_utils.py`` regenerates from the accepted
prefix with the phrase "Format Error" when ``check_special_token_mismatch`` finds unmatched or out-of-order
tags; the released training scripts pass no tag weighting; ``scripts/add_new_token_to_qwen.py`` resizes
Qwen's embedding to ``len(tokenizer)``.
"""

from __future__ import annotations

import pytest
import torch

from prefopt.data.schema import ConversationExample, message_text, user_message
from prefopt.reverse.resample import FORMAT_ERROR, ResampleConfig, retrospective_generate

NEG = -1e9


class Plan:
    """Logits processor that forces a fixed token sequence, one token per sampling step, over the whole run."""

    def __init__(self, tokens):
        self.tokens, self.step, self.seen = list(tokens), 0, []

    def __call__(self, input_ids, scores):
        self.seen.append(input_ids[0].tolist())
        out = torch.full_like(scores, NEG)
        out[0, self.tokens[min(self.step, len(self.tokens) - 1)]] = 0.0
        self.step += 1
        return out


@pytest.fixture(scope="module")
def tagged(tiny_model_dirs):
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens

    adapter = load_adapter(str(tiny_model_dirs["qwen2_5_vl"]), dtype="float32")
    ids = add_special_tokens(adapter, REVERSE_TOKENS)
    adapter.model.eval()
    words = {w: adapter.tokenizer.encode(" " + w, add_special_tokens=False)[0] for w in ("cat", "dog")}
    return adapter, tuple(ids[t] for t in REVERSE_TOKENS), words


def _run(tagged, plan, **cfg):
    from PIL import Image

    adapter = tagged[0]
    proc = Plan(plan)
    msgs = [user_message("Describe the image.", 1)]
    res = retrospective_generate(adapter, msgs, [Image.new("RGB", (56, 56))], ResampleConfig(tau=0.5, **cfg), proc)
    return res, proc


@pytest.mark.parametrize("case", ["close_without_span", "nested_span", "ends_inside_span"])
def test_malformed_span_structure_is_regenerated(tagged, case):
    # Seed rule: check_special_token_mismatch fails -> back_track_idx 0, hallucination_phrase "Format Error".
    adapter, (span, cn, un), w = tagged
    eos = adapter.tokenizer.eos_token_id
    bad = {"close_without_span": [w["cat"], cn], "nested_span": [span, w["cat"], span],
           "ends_inside_span": [span, w["cat"], eos]}[case]
    good = [span, w["dog"], cn, eos]
    res, proc = _run(tagged, bad + good)
    assert res.success and res.text == "dog"
    assert res.attempts == 1 and res.format_errors == 1 and res.flagged == [FORMAT_ERROR]
    assert res.events[0]["format_error"] and res.events[0]["backtrack_to"] == 0
    # the regeneration's prompt carries the seed's hint
    assert "(Hint: potential incorrect phrases -> format error)" in adapter.tokenizer.decode(proc.seen[-1])


def test_well_formed_answer_has_no_format_error(tagged):
    adapter, (span, cn, un), w = tagged
    res, _ = _run(tagged, [span, w["cat"], cn, w["dog"], span, w["dog"], cn, adapter.tokenizer.eos_token_id])
    assert res.success and res.attempts == 0 and res.format_errors == 0


def test_format_errors_count_toward_the_attempt_limit(tagged):
    _, (span, cn, un), w = tagged
    res, _ = _run(tagged, [cn], max_attempts=3)  # every step closes a span that was never opened
    assert not res.success and res.attempts == 3 and res.format_errors == 3


# ---- item 9: hint augmentation is wired into REVERSE SFT --------------------------------------------------
def _flagged_example(i):
    return ConversationExample(
        id=str(i), messages=[user_message("What is shown?", 0),
                             {"role": "assistant", "content": "<SPAN>a cat</CN> and <SPAN>a dog</UN>"}],
    )


def test_hinted_dataset_draws_per_item_with_the_seed_probability():
    from prefopt.reverse.data import HintedDataset

    items = [_flagged_example(i) for i in range(2000)]
    always = HintedDataset(items, probability=1.0)
    assert message_text(always[0].messages[0]) == "What is shown? (Hint: potential incorrect phrases -> a dog)"
    assert message_text(items[0].messages[0]) == "What is shown?"  # the stored record is untouched
    never = HintedDataset(items, probability=0.0)
    assert message_text(never[0].messages[0]) == "What is shown?"
    seeded = HintedDataset(items, probability=0.2, seed=3)
    hinted = sum("Hint" in message_text(seeded[i].messages[0]) for i in range(len(items)))
    assert 0.17 < hinted / len(items) < 0.23  # binomial(2000, 0.2): mean 400, sd 17.9
    # the draw is per visit, as the seed's query_injection in __getitem__: a second epoch draws afresh
    again = HintedDataset(items, probability=0.2, seed=3)
    first = [("Hint" in message_text(again[i].messages[0])) for i in range(200)]
    second = [("Hint" in message_text(again[i].messages[0])) for i in range(200)]
    assert first != second
    replay = HintedDataset(items, probability=0.2, seed=3)
    assert [("Hint" in message_text(replay[i].messages[0])) for i in range(200)] == first  # reproducible by seed


def test_sft_recipe_hint_prob_defaults_to_the_seed_and_reaches_the_trainer(tiny_model_dirs, tmp_path):
    import json

    from prefopt.reverse.data import HintedDataset
    from prefopt.sft.config import SFTRecipe, load_recipe
    from prefopt.sft.trainer import build_trainer

    assert SFTRecipe().hint_prob == 0.2
    rows = [{"id": "0", "conversations": [
        {"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "<SPAN>a cat</CN>."}]}]
    data = tmp_path / "r.json"
    data.write_text(json.dumps(rows))
    recipe = load_recipe("recipes/tiny/qwen_reverse_sft.yaml", [
        f"model.name_or_path={tiny_model_dirs['qwen2_5_vl']}", f"data.path={data}",
        f"training.output_dir={tmp_path / 'out'}"])
    trainer = build_trainer(recipe)
    assert isinstance(trainer.train_dataset, HintedDataset) and trainer.train_dataset.probability == 0.2
    off = build_trainer(load_recipe("recipes/tiny/qwen_reverse_sft.yaml", [
        f"model.name_or_path={tiny_model_dirs['qwen2_5_vl']}", f"data.path={data}", "hint_prob=0",
        f"training.output_dir={tmp_path / 'out'}"]))
    assert not isinstance(off.train_dataset, HintedDataset)



# ---- item 11: tag weight ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llava15_7b_sft.yaml", "qwen2_5_vl_3b_sft.yaml"])
def test_reverse_recipes_use_the_released_scripts_unweighted_loss(name):
    # Seed rule: scripts/train/reverse_*_sft.sh pass no --loss_mode, so LLaVA's default "naive" cross entropy
    # (and Qwen's unweighted loss) trains the tags at weight 1; cnun_penalty_weight 2.0 is never switched on.
    from prefopt.sft.config import SFTRecipe, load_recipe

    assert SFTRecipe().tag_weight == 1.0
    recipe = load_recipe(f"recipes/reverse/{name}")
    assert recipe.tag_weight == 1.0 and recipe.hint_prob == 0.2
    text = open(f"recipes/reverse/{name}").read()
    assert "seed 2.0" not in text and "cnun_penalty" in text


# ---- item 12: what the seed does to Qwen's embedding -----------------------------------------------------
def test_tokens_docstring_describes_the_seed_qwen_resize():
    # Seed rule: scripts/add_new_token_to_qwen.py calls model.resize_token_embeddings(len(tokenizer)), which
    # for Qwen2.5-VL shrinks 151936 rows to 151665 + 3 = 151668; the tags reuse spare rows.
    from prefopt.models import tokens

    doc = tokens.__doc__
    assert "len(tokenizer)" in doc and "SHRINKS" in doc and "151668" in doc
    assert "left the new rows at\ntheir random initialisation" not in doc  # the old claim, true for LLaVA only

