"""Scale-out configuration: every accelerate preset parses with accelerate's own loader and launches the way
its header says, and the GRPO recipe's ``vllm:`` section maps onto the right TRL ``GRPOConfig`` fields
(vLLM itself needs a GPU and is not installed here; see docs/reliability.md, Scale-out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefopt.config import ConfigError
from prefopt.grpo.config import load_recipe
from tests.helpers import ROOT

REPO = ROOT
PRESETS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
VLLM_RECIPE = "recipes/gwys/qwen2_5_vl_7b_grpo_vllm.yaml"


def test_presets_cover_the_documented_setups():
    names = {p.stem for p in PRESETS}
    wanted = {
        "single_gpu",
        "multi_gpu",
        "zero2",
        "zero3",
        "zero3_offload",
        "fsdp2",
        "multi_node_zero3",
        "cpu_2proc",
    }
    assert wanted <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_parses_and_names_its_launch(preset):
    """accelerate 1.15 loads the file (unknown keys or bad enums raise) and the header launches this very file."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(preset))
    header = preset.read_text().splitlines()[0]
    assert header.startswith("# accelerate launch --config_file recipes/accelerate/" + preset.name)
    assert "-m prefopt.cli " in header
    assert config.num_processes >= 1 and config.num_machines >= 1
    assert config.num_processes % config.num_machines == 0
    if config.distributed_type == DistributedType.DEEPSPEED:
        stage = config.deepspeed_config["zero_stage"]
        offload = config.deepspeed_config["offload_param_device"]
        assert (stage, offload) == {
            "zero2": (2, "none"),
            "cpu_zero2": (2, "none"),
            "zero3": (3, "none"),
            "zero3_offload": (3, "cpu"),
            "multi_node_zero3": (3, "none"),
        }[preset.stem]
    if config.distributed_type == DistributedType.FSDP:
        assert str(config.fsdp_config["fsdp_version"]) == "2"
    if preset.stem == "multi_node_zero3":
        assert config.num_machines == 2 and "--machine_rank" in header


def test_vllm_off_by_default():
    recipe = load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo.yaml")
    args = recipe.training_args()
    assert args["use_vllm"] is False and not any(k.startswith("vllm_") for k in args)


def test_vllm_server_mode_maps_to_grpo_config():
    """One override switches the stock recipe (training.use_vllm: false) to a vLLM server."""
    from trl import GRPOConfig

    overrides = [
        "vllm.mode=server",
        "vllm.server_host=10.0.0.5",
        "vllm.server_port=8011",
        "vllm.server_timeout=600",
    ]
    recipe = load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo.yaml", overrides)
    args = {**recipe.training_args(), "bf16": False, "use_cpu": True, "output_dir": "unused"}
    config = GRPOConfig(**args)
    assert config.use_vllm is True and config.vllm_mode == "server"
    assert (config.vllm_server_host, config.vllm_server_port) == ("10.0.0.5", 8011)
    assert config.vllm_server_timeout == 600.0 and config.vllm_server_base_url is None


def test_vllm_colocate_mode_maps_to_grpo_config():
    from trl import GRPOConfig

    overrides = [
        "vllm.mode=colocate",
        "vllm.gpu_memory_utilization=0.45",
        "vllm.tensor_parallel_size=2",
        "vllm.max_model_length=4096",
        "vllm.enable_sleep_mode=true",
    ]
    recipe = load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo.yaml", overrides)
    config = GRPOConfig(**{**recipe.training_args(), "bf16": False, "use_cpu": True, "output_dir": "unused"})
    assert config.use_vllm is True and config.vllm_mode == "colocate"
    assert config.vllm_gpu_memory_utilization == 0.45 and config.vllm_tensor_parallel_size == 2
    assert config.vllm_max_model_length == 4096 and config.vllm_enable_sleep_mode is True
    assert "vllm_server_host" not in recipe.training_args()  # server fields stay at TRL's defaults


def test_vllm_gpu_recipe():
    """The GPU recipe runs GRPO against `trl vllm-serve`; its header holds both launch commands."""
    recipe = load_recipe(VLLM_RECIPE)
    args = recipe.training_args()
    assert args["use_vllm"] is True and args["vllm_mode"] == "server"
    header = [line for line in Path(REPO / VLLM_RECIPE).read_text().splitlines() if line.startswith("#")]
    assert "accelerate launch --config_file recipes/accelerate/zero3.yaml" in header[0]
    assert any("trl vllm-serve --model" in line for line in header)


def test_vllm_bad_mode_and_contradiction():
    with pytest.raises(ConfigError, match=r"vllm\.mode must be one of \['off', 'server', 'colocate'\]"):
        load_recipe("recipes/gwys/qwen2_5_vl_7b_grpo.yaml", ["vllm.mode=remote"])
    with pytest.raises(ConfigError, match=r"training\.vllm_server_port=9000 contradicts the vllm: section"):
        load_recipe(
            "recipes/gwys/qwen2_5_vl_7b_grpo.yaml", ["vllm.mode=server", "training.vllm_server_port=9000"]
        )


def test_vllm_refused_for_grounded_rollouts():
    """Grounded multi-round rollouts generate with transformers; the vllm section cannot sneak past that."""
    with pytest.raises(ConfigError, match="use_vllm=false"):
        load_recipe("recipes/ground_r1/qwen2_5_vl_7b_grpo.yaml", ["vllm.mode=colocate"])
