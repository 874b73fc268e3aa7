"""The multi-GPU path, proven on two CPU processes: ``accelerate launch -m psyche_utils.train``.

Each case launches the real entry point through ``accelerate launch`` with an accelerate config
derived from the repository's own (same distributed type and DeepSpeed settings, only the
hardware keys changed for a CPU), trains the tiny model for a few steps and checks what it
saved. To cover another stage, add a ``LaunchCase`` to ``CASES``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sft_fixture import write_fixture

from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.train import common

pytestmark = pytest.mark.slow

#: What turns a GPU accelerate config into a two-process CPU one. Plain DDP keeps the MULTI_GPU
#: type: with use_cpu, accelerate starts it with torchrun and the processes talk over gloo.
CPU_TWO_PROCESSES = {"num_processes": 2, "use_cpu": True, "mixed_precision": "no", "gpu_ids": None}


@dataclass(frozen=True)
class LaunchCase:
    """One ``accelerate launch`` run: config, stage arguments, and the check of its output."""

    name: str
    accelerate_config: dict
    stage_args: Callable[[Path], list[str]]  # (tmp_path) -> arguments after ``-m psyche_utils.train``
    check: Callable[[Path, str], None]  # (tmp_path, combined output) -> assertions


def cpu_variant(config_name: str, **changes) -> dict:
    """A repository accelerate config with the hardware keys changed for two CPU processes."""
    config = yaml.safe_load((CONFIGS_DIR / "accelerate" / config_name).read_text(encoding="utf-8"))
    config.update(CPU_TWO_PROCESSES, **changes)
    return {key: value for key, value in config.items() if value is not None}


def sft_args(tmp_path: Path) -> list[str]:
    train_file = write_fixture(tmp_path / "sft.jsonl", 8)
    return [
        "sft", "--config", "configs/sft/tiny_cpu.yaml",
        "--train_file", str(train_file), "--output_dir", str(tmp_path / "model"),
        "--per_device_train_batch_size", "2", "--max_steps", "2", "--logging_steps", "1",
        "--save_strategy", "no", "--disable_tqdm", "true",
    ]


def check_sft(tmp_path: Path, output: str) -> None:
    model_dir = tmp_path / "model"
    assert "2 process(es)" in output, "both processes should take part in every update"
    log = common.read_loss_log(model_dir / common.LOSS_LOG_NAME)
    assert [entry["step"] for entry in log] == [1, 2]
    # Each logged step saw 2 processes x 2 examples of real tokens.
    assert log[0]["num_tokens"] > 4 * 100
    saved = load_file(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    embedding = saved["model.embed_tokens.weight"]
    assert embedding.shape == (config["vocab_size"], config["hidden_size"]), "the whole embedding was saved"
    assert torch.isfinite(embedding).all()
    assert (model_dir / common.MODEL_CARD_NAME).exists()


#: DeepSpeed ZeRO-3 runs through the same entry point with the 8-GPU recipes themselves in
#: tests/test_qlora_cpu.py, which also checks that the sharded weights were gathered on save.
CASES = [
    LaunchCase("sft-ddp", cpu_variant("single_gpu.yaml", distributed_type="MULTI_GPU"), sft_args, check_sft),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_accelerate_launch_on_two_cpu_processes(case: LaunchCase, tmp_path: Path, tiny_model_path: Path):
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text(yaml.safe_dump(case.accelerate_config), encoding="utf-8")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
        "-m", "psyche_utils.train", *case.stage_args(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    case.check(tmp_path, output)


# ---------------------------------------------------------------------------------------------
# GRPO: its own launch test, because a GRPO step also generates, scores and gathers rewards
# across processes before it updates.


def grpo_fixture(path: Path) -> Path:
    from psyche_utils.formatting import grpo_record, write_dataset
    from psyche_utils.schema import Question

    questions = [
        Question(
            id=f"grpo-{index}",
            question=f"“{theory}”由谁提出？",
            options={"A": person, "B": "冯特", "C": "詹姆斯", "D": "铁钦纳"},
            answer="A",
            question_type="single",
            subject="普通心理学",
            explanation=f"{theory}由{person}提出。",
        )
        for index, (theory, person) in enumerate([("经典条件反射", "巴甫洛夫"), ("需要层次理论", "马斯洛"),
                                                  ("合理情绪疗法", "艾利斯"), ("依恋理论", "鲍尔比")])
    ]
    write_dataset([grpo_record(q) for q in questions], path, kind="grpo", settings={"fixture": True})
    return path


@pytest.mark.parametrize(
    "accelerate_config", [cpu_variant("single_gpu.yaml", distributed_type="MULTI_GPU")], ids=["grpo-ddp"]
)
def test_grpo_accelerate_launch_on_two_cpu_processes(accelerate_config: dict, tmp_path: Path, tiny_model_path: Path):
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text(yaml.safe_dump(accelerate_config), encoding="utf-8")
    model_dir = tmp_path / "model"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
        "-m", "psyche_utils.train", "grpo", "--config", "configs/grpo/tiny_cpu.yaml",
        "--init_from", "base", "--train_file", str(grpo_fixture(tmp_path / "grpo.jsonl")),
        "--output_dir", str(model_dir), "--num_generations", "4", "--per_device_train_batch_size", "8",
        "--generation_batch_size", "16", "--max_steps", "2", "--max_completion_length", "8",
        "--disable_tqdm", "true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "8 x 2 process(es)" in output, "both processes should take part in every update"

    summary = json.loads((model_dir / "run_summary.json").read_text(encoding="utf-8"))
    steps = [row for row in summary["history"] if "reward" in row]
    assert [row["step"] for row in steps] == [1, 2]
    # A rollout of 16 completions per step is split over the processes: each scores its own 8
    # (the main process's rewards are what rollouts.jsonl records), then TRL gathers all 16.
    rollouts = [json.loads(line) for line in (model_dir / "rollouts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rollouts) == 2 * 8
    saved = load_file(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    embedding = saved["model.embed_tokens.weight"]
    assert embedding.shape == (config["vocab_size"], config["hidden_size"]), "the whole embedding was saved"
    assert torch.isfinite(embedding).all()
    assert (model_dir / common.MODEL_CARD_NAME).exists()
