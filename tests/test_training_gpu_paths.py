"""GPU-route behaviour checked on a CPU: device pinning, precision, the launch command, and what a
saved checkpoint tells ``generate()``. CUDA is simulated by monkeypatching torch's queries."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sft_fixture import write_fixture

from psyche_utils.paths import CONFIGS_DIR
from psyche_utils.profiles import get_profile
from psyche_utils.train import common, grpo, sft
from psyche_utils.train.common import RecipeError, check_single_device, pin_one_device, read_recipe


# ---------------------------------------------------------------------------------------------
# One process, one GPU


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # restored after the test
    return monkeypatch


def test_one_process_on_a_two_gpu_host_is_pinned_to_one_gpu(two_gpus):
    import os

    assert "GPU 0 only" in pin_one_device(num_processes=1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    two_gpus.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert "GPU 3 only" in pin_one_device(num_processes=1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert pin_one_device(num_processes=2) is None, "a launched multi-process run keeps its devices"


def test_a_started_cuda_with_two_gpus_is_refused(two_gpus):
    two_gpus.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RecipeError, match="sees 2 GPUs.*CUDA_VISIBLE_DEVICES=0"):
        pin_one_device(num_processes=1)


def test_a_trainer_that_would_use_dataparallel_is_refused():
    with pytest.raises(RecipeError, match="sees 2 GPUs in one process and would multiply the batch by 2"):
        check_single_device(SimpleNamespace(world_size=1, n_gpu=2))
    check_single_device(SimpleNamespace(world_size=1, n_gpu=1))
    check_single_device(SimpleNamespace(world_size=8, n_gpu=1))


# ---------------------------------------------------------------------------------------------
# Precision from the GPU, not from the recipe


@pytest.mark.parametrize(("bf16_supported", "expected"), [(False, {"bf16": False, "fp16": True}),
                                                          (True, {"bf16": True, "fp16": False})],
                         ids=["pre-ampere", "ampere"])
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_precision_comes_from_the_gpu(monkeypatch, bf16_supported, expected, stage):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    module = sft if stage == "sft" else grpo
    for name in ("qlora_1gpu", "full_8gpu"):
        raw = read_recipe(CONFIGS_DIR / stage / f"{name}.yaml")
        assert not {"bf16", "fp16", "use_cpu"} & set(raw), f"{stage}/{name} hard-codes precision"
        defaults = module._defaults(raw)
        assert {key: defaults[key] for key in expected} == expected and defaults["use_cpu"] is False
    # An explicit choice in a recipe or override wins over the machine's.
    assert "fp16" not in sft._defaults({"bf16": True})


# ---------------------------------------------------------------------------------------------
# Launching through this Python's accelerate


def test_launch_command_uses_this_python_for_both_stages():
    for stage in ("sft", "grpo"):
        recipe = CONFIGS_DIR / stage / "full_8gpu.yaml"
        command = common.launch_argv(stage, "full", recipe, {"max_steps": 5, "resume": False,
                                                             "reward_funcs": ["format", "accuracy"]})
        assert command == [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero3_8gpu.yaml",
            "-m", "psyche_utils.train", stage, "--config", f"configs/{stage}/full_8gpu.yaml",
            "--max_steps", "5", "--resume", "false", "--reward_funcs", "format", "accuracy",
        ]
    assert common.launch_argv("sft", "qlora", CONFIGS_DIR / "sft" / "qlora_1gpu.yaml")[4] == \
        "configs/accelerate/single_gpu.yaml"
    with pytest.raises(RecipeError, match="None cannot be passed"):
        common.override_args({"max_train_samples": None})


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_run_or_launch_launches_the_multi_gpu_profile_with_the_same_overrides(monkeypatch, stage, tmp_path):
    module = sft if stage == "sft" else grpo
    launched = []
    monkeypatch.setattr(common.subprocess, "run", lambda command, **kwargs: launched.append((command, kwargs)))
    monkeypatch.setattr(module, "load_run", lambda output_dir: ("read back", output_dir))
    overrides = {"max_steps": 3, "output_dir": str(tmp_path / "out")}
    result = module.run_or_launch(get_profile("full", gpu_count=8), None, overrides)
    assert result == ("read back", tmp_path / "out")
    (command, kwargs), = launched
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert kwargs["check"] is True
    # The launched process parses its arguments into the same recipe as the notebook's dict.
    argv = command[command.index("--config") + 2 :]
    assert module.load_recipe("full_8gpu", argv=argv).trainer.to_dict() == \
        module.load_recipe("full_8gpu", overrides).trainer.to_dict()


# ---------------------------------------------------------------------------------------------
# What a saved checkpoint tells generate()


@pytest.mark.slow
def test_saved_sft_model_samples_with_the_official_settings(tmp_path: Path, tiny_model_path):
    from transformers import GenerationConfig

    output_dir = tmp_path / "model"
    sft.run_sft("tiny_cpu", {"train_file": str(write_fixture(tmp_path / "sft.jsonl", 4)), "output_dir": str(output_dir),
                             "max_steps": 1, "per_device_train_batch_size": 2, "save_strategy": "no",
                             "disable_tqdm": True})
    saved = GenerationConfig.from_pretrained(output_dir)
    assert (saved.do_sample, saved.temperature, saved.top_p, saved.top_k, saved.repetition_penalty) == \
        (True, 0.7, 0.9, 0, 1.0)
    written = json.loads((output_dir / "generation_config.json").read_text(encoding="utf-8"))
    assert written["top_k"] == 0 and written["temperature"] == 0.7 and written["do_sample"] is True
    card = (output_dir / common.MODEL_CARD_NAME).read_text(encoding="utf-8")
    assert "## Generation settings" in card and "top_k=0" in card and "repetition_penalty=1.0" in card


def test_generation_defaults_replace_inherited_qwen_values(tiny_model_and_tokenizer):
    import copy

    model, tokenizer = tiny_model_and_tokenizer
    model = copy.deepcopy(model)
    model.generation_config.top_k, model.generation_config.repetition_penalty = 20, 1.05  # as Qwen2.5 ships
    common.set_generation_defaults(model, tokenizer)
    config = model.generation_config
    assert (config.top_k, config.repetition_penalty, config.temperature, config.top_p, config.do_sample) == \
        (0, 1.0, 0.7, 0.9, True)
