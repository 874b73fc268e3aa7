"""The SFT recipes and accelerate configs: real fields of the pinned stack, and the card's arithmetic."""

from __future__ import annotations

import pytest
import yaml
from trl import SFTConfig

from psyche_utils.paths import CONFIGS_DIR
from psyche_utils.profiles import PROFILES
from psyche_utils.train.common import RECIPE_FOR_PROFILE, REMOVED_KEYS, RecipeError, effective_batch_size, read_recipe
from psyche_utils.train.sft import load_recipe

RECIPES = sorted(path.stem for path in (CONFIGS_DIR / "sft").glob("*.yaml"))
PRECISION = {"bf16", "fp16", "use_cpu"}


def test_every_profile_has_a_recipe():
    assert set(RECIPE_FOR_PROFILE) == set(PROFILES)
    assert set(RECIPE_FOR_PROFILE.values()) <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_into_sft_config(name, tmp_path):
    raw = read_recipe(CONFIGS_DIR / "sft" / f"{name}.yaml")
    assert not set(raw) & set(REMOVED_KEYS), "a removed key would break on the pinned stack"
    recipe = load_recipe(name, {"output_dir": str(tmp_path)})
    assert isinstance(recipe.trainer, SFTConfig)
    # Every recipe value reached its config with the value the file states.
    for key, value in raw.items():
        got = recipe.get(key)
        got = getattr(got, "value", got)
        if key == "report_to":  # transformers turns "none" into []
            continue
        assert got == value, key
    profile = PROFILES[recipe["profile"]]
    assert recipe.trainer.max_length == profile.max_length, "notebook 02 filtered the data to the profile's budget"
    assert recipe.trainer.assistant_only_loss is True


@pytest.mark.parametrize("name", ["full_8gpu", "qlora_1gpu"])
def test_gpu_recipes_leave_precision_to_the_machine(name):
    assert not PRECISION & set(read_recipe(CONFIGS_DIR / "sft" / f"{name}.yaml"))
    config = load_recipe(name).trainer
    assert config.use_cpu and not config.bf16 and not config.fp16  # this machine has no GPU


def test_full_recipe_is_the_model_card():
    config = load_recipe("full_8gpu").trainer
    assert effective_batch_size(config, num_processes=8) == 256
    assert config.learning_rate == 1e-5 and isinstance(config.learning_rate, float)
    assert config.seed == 42
    assert config.per_device_train_batch_size == 2
    assert config.gradient_accumulation_steps == 16
    assert (config.adam_beta1, config.adam_beta2, config.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert config.optim == "adamw_torch"
    assert config.lr_scheduler_type == "cosine"
    assert config.warmup_steps == 0.1
    assert config.num_train_epochs == 2
    assert config.per_device_eval_batch_size * 8 == 8


def test_qlora_recipe_keeps_the_effective_batch():
    recipe = load_recipe("qlora_1gpu")
    config = recipe.trainer
    assert effective_batch_size(config, num_processes=1) == 256
    assert recipe["use_lora"] and recipe["lora_target_modules"] == "all-linear"
    assert config.optim == "paged_adamw_8bit"
    assert config.learning_rate > 1e-5
    full = load_recipe("full_8gpu").trainer
    for key in ("seed", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type", "warmup_steps", "num_train_epochs"):
        assert getattr(config, key) == getattr(full, key), key


def test_tiny_recipe_runs_on_the_cpu_as_written():
    raw = read_recipe(CONFIGS_DIR / "sft" / "tiny_cpu.yaml")
    assert raw["use_cpu"] is True and raw["bf16"] is False
    config = load_recipe("tiny_cpu").trainer
    assert config.use_cpu and not config.bf16


def test_recipes_are_found_by_name_by_path_and_from_another_directory(monkeypatch, tmp_path):
    from psyche_utils.train.common import recipe_path

    expected = CONFIGS_DIR / "sft" / "tiny_cpu.yaml"
    assert recipe_path("tiny_cpu", "sft") == expected
    monkeypatch.chdir(tmp_path)
    assert recipe_path("configs/sft/tiny_cpu.yaml", "sft").resolve() == expected.resolve()
    with pytest.raises(RecipeError, match="recipes for sft: .*'tiny_cpu'"):
        recipe_path("no_such_recipe", "sft")


def test_unknown_and_removed_keys_are_refused_with_the_file_name(tmp_path):
    with pytest.raises(RecipeError, match=r"max_seq_length.*use max_length"):
        load_recipe("tiny_cpu", {"max_seq_length": 128})
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: tiny\nlearning_rat: 0.001\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"bad\.yaml: unknown key 'learning_rat'"):
        load_recipe(bad)


def test_zero3_accelerate_config_is_eight_processes_of_zero3():
    config = yaml.safe_load((CONFIGS_DIR / "accelerate" / "zero3_8gpu.yaml").read_text(encoding="utf-8"))
    assert config["distributed_type"] == "DEEPSPEED"
    assert config["deepspeed_config"]["zero_stage"] == 3
    assert config["deepspeed_config"]["zero3_save_16bit_model"] is True
    assert config["num_processes"] == 8 and config["num_machines"] == 1
    assert config["mixed_precision"] == "bf16"


def test_single_gpu_accelerate_config_is_one_process_on_one_gpu():
    config = yaml.safe_load((CONFIGS_DIR / "accelerate" / "single_gpu.yaml").read_text(encoding="utf-8"))
    assert config["distributed_type"] == "NO"
    assert config["num_processes"] == 1
    assert config["gpu_ids"] == "0", "with 'all', one process would see every GPU and DataParallel would kick in"
    assert config["mixed_precision"] == "bf16"
