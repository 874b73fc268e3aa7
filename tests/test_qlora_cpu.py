"""The qlora and full recipes' own code paths, run on the CPU with the tiny model.

``PSYCHE_EMULATE_GPU_ON_CPU=1`` makes every profile load the tiny model (qlora: 4-bit NF4 through
bitsandbytes' CPU kernels); the recipes are the real GPU files, shrunk by overrides only where a
CPU cannot afford their size (steps, batch, lengths, LoRA rank).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sft_fixture import write_fixture

from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.train import common

pytestmark = pytest.mark.slow

EMULATE = "PSYCHE_EMULATE_GPU_ON_CPU"
SMALL_SFT = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 384,
             "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True, "cpu_threads": 1, "resume": False}


@pytest.fixture
def emulate(monkeypatch, tiny_model_path):
    monkeypatch.setenv(EMULATE, "1")
    return monkeypatch


@pytest.fixture(scope="module")
def qlora_sft(tmp_path_factory, tiny_model_path) -> Path:
    """The qlora SFT recipe trained for two steps on a 4-bit tiny base, with its own paged 8-bit AdamW."""
    from psyche_utils.train.sft import run_sft

    os.environ[EMULATE] = "1"
    try:
        work = tmp_path_factory.mktemp("qlora")
        run_sft("qlora_1gpu", {**SMALL_SFT, "train_file": str(write_fixture(work / "sft.jsonl", 8)),
                               "output_dir": str(work / "sft"), "lora_r": 4, "lora_alpha": 8})
    finally:
        del os.environ[EMULATE]
    return work


def test_qlora_sft_trains_lora_on_a_4bit_base_and_saves_adapter_and_merged_model(qlora_sft: Path):
    from transformers import AutoModelForCausalLM

    out = qlora_sft / "sft"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["r"] == 4 and adapter["target_modules"]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert not getattr(merged.config, "quantization_config", None), "the merged copy is a plain full-precision model"
    card = (out / common.MODEL_CARD_NAME).read_text(encoding="utf-8")
    assert "configs/sft/qlora_1gpu.yaml" in card and "activation_checkpointing" in card


def test_qlora_sft_loads_the_base_in_4bit_with_activation_checkpointing(emulate, tmp_path: Path):
    from transformers import TrainerCallback

    from psyche_utils.train.sft import run_sft

    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            base = model.get_base_model()
            seen["4bit"] = any(type(m).__name__ == "Linear4bit" for m in base.modules())
            seen["checkpointing"] = base.is_activation_checkpointing
            inner = kwargs["optimizer"].optimizer
            seen["optimizer"] = (type(inner).__module__.split(".")[0], inner.args.optim_bits, inner.is_paged)
            control.should_training_stop = True

    run_sft("qlora_1gpu", {**SMALL_SFT, "train_file": str(write_fixture(tmp_path / "sft.jsonl", 4)), "lora_r": 4,
                           "output_dir": str(tmp_path / "out"), "merge_lora": False},
            callbacks=[Inspect()])
    # bitsandbytes 0.50.2 runs the recipe's paged 8-bit AdamW on the CPU (paging itself only matters on a GPU).
    assert seen == {"4bit": True, "checkpointing": True, "optimizer": ("bitsandbytes", 8, True)}


def test_qlora_grpo_trains_lora_on_the_4bit_sft_model(emulate, qlora_sft: Path, tmp_path: Path):
    from test_grpo import fixture_questions

    from psyche_utils.formatting import grpo_record, write_dataset
    from psyche_utils.train.grpo import run_grpo

    data = tmp_path / "grpo.jsonl"
    write_dataset([grpo_record(q) for q in fixture_questions()], data, kind="grpo", settings={"fixture": True})
    out = tmp_path / "grpo"
    result = run_grpo("qlora_1gpu", {
        "init_from": str(qlora_sft / "sft"), "train_file": str(data), "output_dir": str(out), "max_steps": 1,
        "num_generations": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "generation_batch_size": 4, "max_completion_length": 8, "lora_r": 4, "lora_alpha": 8, "save_strategy": "no",
        "logging_steps": 1, "disable_tqdm": True, "cpu_threads": 1, "resume": False,
    })
    assert result.global_step == 1
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "model.safetensors").exists()


def _launch(tmp_path: Path, stage_args: list[str]) -> str:
    config = yaml.safe_load((CONFIGS_DIR / "accelerate" / "zero3_8gpu.yaml").read_text(encoding="utf-8"))
    config.update({"num_processes": 2, "use_cpu": True, "mixed_precision": "no"})
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", EMULATE: "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "-m", "psyche_utils.train", *stage_args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_full_sft_recipe_under_zero3_on_two_cpu_processes(tmp_path: Path, tiny_model_path):
    out = tmp_path / "sft"
    output = _launch(tmp_path, ["sft", "--config", "configs/sft/full_8gpu.yaml",
                                "--train_file", str(write_fixture(tmp_path / "sft.jsonl", 8)), "--output_dir", str(out),
                                *common.override_args({**SMALL_SFT, "gradient_accumulation_steps": 1,
                                                       "dataloader_num_workers": 0})])
    assert "2 process(es)" in output and "recipe configs/sft/full_8gpu.yaml" in output
    saved = load_file(out / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    embedding = saved["model.embed_tokens.weight"]
    assert embedding.shape == (config["vocab_size"], config["hidden_size"]), "ZeRO-3 shards were gathered on save"


def test_full_grpo_recipe_under_zero3_on_two_cpu_processes(tmp_path: Path, tiny_model_path):
    from test_grpo import fixture_questions

    from psyche_utils.formatting import grpo_record, write_dataset

    data = tmp_path / "grpo.jsonl"
    write_dataset([grpo_record(q) for q in fixture_questions()], data, kind="grpo", settings={"fixture": True})
    out = tmp_path / "grpo"
    output = _launch(tmp_path, ["grpo", "--config", "configs/grpo/full_8gpu.yaml", "--init_from", "base",
                                "--train_file", str(data), "--output_dir", str(out), *common.override_args({
                                    "use_vllm": False, "num_generations": 2, "per_device_train_batch_size": 2,
                                    "generation_batch_size": 4, "max_completion_length": 8, "max_steps": 1,
                                    "save_strategy": "no", "disable_tqdm": True, "cpu_threads": 1})])
    assert "2 x 2 process(es)" in output and "recipe configs/grpo/full_8gpu.yaml" in output
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 1
