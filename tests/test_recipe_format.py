"""One flat recipe format for both stages, read by TRL's parser: types, removed keys, old format, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig, SFTConfig, TrlParser

from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.train import grpo, sft
from psyche_utils.train.common import REMOVED_KEYS, RecipeError, override_args

ALL_RECIPES = sorted((CONFIGS_DIR / stage / f"{name}.yaml", stage) for stage in ("sft", "grpo")
                     for name in ("tiny_cpu", "qlora_1gpu", "full_8gpu"))
PARTS = {"sft": sft.SFT_PARTS, "grpo": grpo.GRPO_PARTS}
LOADERS = {"sft": sft.load_recipe, "grpo": grpo.load_recipe}


@pytest.mark.parametrize(("path", "stage"), ALL_RECIPES, ids=lambda item: str(item)[-20:])
def test_trl_parser_reads_every_recipe(path: Path, stage: str):
    """The pinned TrlParser itself (no project code in between) accepts every recipe file."""
    parser = TrlParser(list(PARTS[stage].values()))
    parsed = parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true", "--bf16", "false"])
    trainer = parsed[-1]
    assert isinstance(trainer, SFTConfig if stage == "sft" else GRPOConfig)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"learning_rate": "1e-5"}, 1e-5),  # PyYAML reads 1e-5 (no dot) as a string
        ({"max_steps": "30"}, 30),
        ({"assistant_only_loss": "false"}, False),
        ({"assistant_only_loss": "true"}, True),
        ({"learning_rate": 2}, 2.0),
    ],
)
def test_values_become_their_declared_type(overrides, expected):
    recipe = sft.load_recipe("tiny_cpu", overrides)
    (key,) = overrides
    value = recipe.get(key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": "30.5"}, r"max_steps must be an integer, got '30.5'"),
        ({"max_steps": 30.0}, r"max_steps must be an integer"),
        ({"assistant_only_loss": "maybe"}, r"assistant_only_loss must be a boolean"),
        ({"assistant_only_loss": 1}, r"assistant_only_loss must be a boolean"),
        ({"save_strategy": False}, r"save_strategy must be one of no, steps.*quote the word"),
        ({"lr_scheduler_type": "cosinus"}, r"lr_scheduler_type must be one of"),
        ({"lora_r": None}, r"lora_r must be an integer, got None"),
        ({"train_file": ["a"]}, r"train_file must be a string"),
    ],
)
def test_wrong_types_are_refused_naming_key_and_type(overrides, message):
    with pytest.raises(RecipeError, match=message):
        sft.load_recipe("tiny_cpu", overrides)


def test_yaml_file_values_are_type_checked_and_named(tmp_path: Path):
    bad = tmp_path / "typed.yaml"
    bad.write_text("profile: tiny\nuse_cpu: true\nbf16: false\nlearning_rate: 1e-5\nmax_steps: '30'\n", encoding="utf-8")
    recipe = sft.load_recipe(bad)
    assert recipe.trainer.learning_rate == 1e-5 and recipe.trainer.max_steps == 30
    bad.write_text("profile: tiny\nuse_cpu: true\nbf16: false\nmax_steps: thirty\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"typed\.yaml: max_steps must be an integer, got 'thirty'"):
        sft.load_recipe(bad)


@pytest.mark.parametrize("key", sorted(REMOVED_KEYS))
def test_removed_keys_are_refused_in_files_overrides_and_the_command_line(key, tmp_path: Path):
    reason = REMOVED_KEYS[key].split(":")[0]
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"profile: tiny\n{key}: 1\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=rf"old\.yaml: key '{key}' is not accepted: {reason}"):
        grpo.load_recipe(recipe)
    with pytest.raises(RecipeError, match=rf"'{key}' is not accepted"):
        sft.load_recipe("tiny_cpu", {key: 1})
    with pytest.raises(RecipeError, match=rf"command line: --{key} is not accepted: {reason}"):
        grpo.load_recipe("tiny_cpu", argv=[f"--{key}", "1"])


def test_gradient_checkpointing_is_named_as_a_deprecated_alias():
    assert "deprecated alias of activation_checkpointing" in REMOVED_KEYS["gradient_checkpointing"]


def test_unknown_keys_name_the_file_and_the_classes(tmp_path: Path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("profile: tiny\nnum_generation: 4\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"typo\.yaml: unknown key 'num_generation'.*GRPOConfig"):
        grpo.load_recipe(bad)
    with pytest.raises(RecipeError, match=r"command line: unknown argument\(s\) \['--learning_rat'"):
        sft.load_recipe("tiny_cpu", argv=["--learning_rat", "1e-3"])


def test_old_sectioned_recipe_gets_conversion_instructions(tmp_path: Path):
    old = tmp_path / "old_grpo.yaml"
    old.write_text(
        "profile: tiny\ndata:\n  path: data/grpo.jsonl\n  limit: 8\nrewards:\n  names: [format]\nlora: null\n"
        "grpo:\n  max_steps: 3\n",
        encoding="utf-8",
    )
    with pytest.raises(RecipeError, match=r"old sectioned recipe format.*move every key of `grpo:` to the top level"
                                          r".*data\.limit -> max_train_samples.*rewards\.names -> reward_funcs"):
        grpo.load_recipe(old)
    with pytest.raises(RecipeError, match=r"data\.path -> train_file"):
        grpo.load_recipe("tiny_cpu", {"data.path": "x"})


def test_command_line_values_are_parsed_like_the_cli_not_as_yaml():
    recipe = grpo.load_recipe("tiny_cpu", argv=["--save_strategy", "no", "--max_steps", "3", "--learning_rate", "1e-5",
                                                 "--reward_funcs", "format", "elastic_accuracy"])
    assert recipe.trainer.save_strategy == "no" and recipe.trainer.max_steps == 3
    assert recipe.trainer.learning_rate == 1e-5
    assert recipe["reward_funcs"] == ["format", "elastic_accuracy"]
    assert set(recipe.overrides) == {"save_strategy", "max_steps", "learning_rate", "reward_funcs"}
    with pytest.raises(RecipeError, match=r"command line: argument --max_steps.*invalid int value: 'x'"):
        grpo.load_recipe("tiny_cpu", argv=["--max_steps", "x"])


def test_command_line_and_notebook_overrides_give_the_same_config(tmp_path: Path):
    overrides = {"learning_rate": 2e-3, "num_train_epochs": 3, "packing": True, "output_dir": str(tmp_path),
                 "resume": False}
    from_cli = sft.load_recipe("tiny_cpu", argv=override_args(overrides))
    from_dict = sft.load_recipe("tiny_cpu", overrides)
    assert from_cli.trainer.to_dict() == from_dict.trainer.to_dict()
    assert from_cli.parts["run"] == from_dict.parts["run"]
    assert from_cli.overrides == from_dict.overrides


def test_both_stages_share_one_set_of_project_keys():
    shared = {"profile", "resume", "cpu_threads", "allow_changed_hyperparameters", "train_file", "max_train_samples",
              "refuse_overlong", "use_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora"}
    for stage in ("sft", "grpo"):
        names = {f for part, dtype in PARTS[stage].items() if part != "trainer" for f in dtype.__dataclass_fields__}
        assert shared <= names, stage


def test_grpo_refuses_vllm_with_a_4bit_base():
    with pytest.raises(RecipeError, match=r"use_vllm with the 'qlora' profile's nf4 4-bit base would corrupt it"):
        grpo.load_recipe("qlora_1gpu", {"use_vllm": True})
    text = (CONFIGS_DIR / "grpo" / "qlora_1gpu.yaml").read_text(encoding="utf-8")
    assert "then use_vllm: true" not in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "psyche_utils.train", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_cli_errors_are_one_line_and_exit_status_2(tmp_path: Path):
    missing = _cli("sft")
    assert missing.returncode == 2 and "needs --config FILE" in missing.stderr
    removed = _cli("grpo", "--config", "configs/grpo/tiny_cpu.yaml", "--max_prompt_length", "5")
    assert removed.returncode == 2, removed.stderr
    assert "Traceback" not in removed.stderr
    lines = removed.stderr.strip().splitlines()
    assert lines[-1].startswith("error: command line: --max_prompt_length is not accepted")
    data = _cli("sft", "--config", "configs/sft/tiny_cpu.yaml", "--train_file", str(tmp_path / "none.jsonl"),
                "--output_dir", str(tmp_path / "out"))
    assert data.returncode == 2 and "Traceback" not in data.stderr
    assert "none.jsonl does not exist" in data.stderr.strip().splitlines()[-1]
    assert "recipe configs/sft/tiny_cpu.yaml; overrides: train_file=" in data.stdout
