"""The cost recorder: forward/generated token counting, meters, sections of cost.json, the trainer callback."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from prefopt import cost
from prefopt.training.cost_callback import CostCallback


class Toy(torch.nn.Module):
    def forward(self, input_ids=None, inputs_embeds=None, past_key_values=None):
        return input_ids


def test_watch_counts_forward_and_generation_tokens():
    model = cost.watch(cost.watch(Toy()))  # twice: counted once
    meter = cost.Meter()
    model(input_ids=torch.zeros(2, 5, dtype=torch.long))  # a training/prefill forward: 10 tokens
    model(input_ids=torch.zeros(2, 1, dtype=torch.long), past_key_values=object())  # a decode step: 2 + 2
    model(inputs_embeds=torch.zeros(3, 4, 8))  # 12 positions
    got = meter.read(judge_calls=3)
    assert (got["forward_tokens"], got["forward_calls"], got["generated_tokens"]) == (24, 3, 2)
    assert got["judge_calls"] == 3 and got["wall_s"] >= 0 and got["cpu_s"] >= 0


def test_sections_are_kept_and_added(tmp_path):
    cost.record_section(tmp_path, "train", {"wall_s": 1.5, "forward_tokens": 10})
    with cost.measured(tmp_path, "reference_cache", examples=4) as rec:
        pass
    data = json.loads((tmp_path / "cost.json").read_text())
    assert set(data) == {"train", "reference_cache"} and data["reference_cache"]["examples"] == 4
    assert rec["forward_tokens"] == 0
    assert cost.add(data["train"], {"wall_s": 0.5, "gpu_s": None}, None) == {"wall_s": 2.0, "forward_tokens": 10}
    assert cost.read_cost(tmp_path / "missing") == {}


def test_callback_writes_train_section_with_cumulative_judge_counters(tmp_path):
    cb = CostCallback()
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=3, is_world_process_zero=True)
    model = Toy()
    cb.on_train_begin(args, state, None, model=model)
    model(input_ids=torch.zeros(1, 7, dtype=torch.long))
    for calls in (4.0, 9.0):  # the caption reward logs counters since the trainer started
        cb.on_log(args, state, None, logs={"judge/calls": calls, "judge/cache_hits": 1.0, "loss": 0.1})
    cb.on_train_end(args, state, None)
    train = json.loads((tmp_path / "cost.json").read_text())["train"]
    assert train["judge_calls"] == 9 and train["judge_cache_hits"] == 1
    assert train["forward_tokens"] == 7 and train["optimizer_steps"] == 3
