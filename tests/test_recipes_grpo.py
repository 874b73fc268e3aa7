"""The verl -> TRL translation and the GRPO recipe files built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from psyche_utils.paths import CONFIGS_DIR
from psyche_utils.recipes import RecipeError, VerlGrpoSettings, check_trl_batches, verl_to_trl
from psyche_utils.train.common import read_recipe
from psyche_utils.train.grpo import load_recipe

RECIPES = sorted((CONFIGS_DIR / "grpo").glob("*.yaml"))

# Settings whose TRL default has changed between releases (or that TRL derives silently):
# every recipe must state them.
DRIFTING = {
    "beta",
    "loss_type",
    "scale_rewards",
    "num_iterations",
    "epsilon",
    "epsilon_high",
    "generation_batch_size",
    "temperature",
    "top_p",
    "top_k",
    "max_completion_length",
    "use_vllm",
    "vllm_mode",
    "vllm_gpu_memory_utilization",
    "vllm_importance_sampling_correction",
    "mask_truncated_completions",
    "importance_sampling_level",
    "use_bias_correction_kl",
    "multi_objective_aggregation",
    "activation_checkpointing",
    "disable_dropout",
    "lr_scheduler_type",
    "warmup_steps",
    "learning_rate",
}


def test_card_numbers_map_to_the_documented_trl_values():
    mapping = verl_to_trl()
    config = mapping.config
    assert config["num_generations"] == 5
    assert config["per_device_train_batch_size"] == 20
    assert config["gradient_accumulation_steps"] == 1
    assert config["generation_batch_size"] == 640  # 128 prompts x 5
    assert mapping.steps_per_generation == 4  # 640 / (20 x 8)
    assert mapping.updates_per_rollout_batch == 4  # 128 / 32
    assert mapping.completions_per_update == 160  # 32 x 5
    assert config["beta"] == 0.001
    assert config["learning_rate"] == 1e-6
    assert config["warmup_steps"] == 10
    assert config["num_train_epochs"] == 2
    assert (config["epsilon"], config["epsilon_high"]) == (0.2, 0.2)
    assert config["loss_type"] == "dapo"
    assert config["scale_rewards"] == "group"
    assert config["num_iterations"] == 1


def test_rows_say_what_is_from_the_card_and_what_is_inferred():
    rows = {row.trl_name: row for row in verl_to_trl().rows}
    assert rows["num_generations"].status == "inferred"
    assert "multiple of 5" in rows["num_generations"].why
    assert rows["max_completion_length"].status == "inferred"
    assert rows["beta"].status == "card"
    assert rows["learning_rate"].status == "card"
    assert rows["gradient_accumulation_steps"].status == "derived"
    assert set(rows) == set(verl_to_trl().config)
    assert {"trl_name", "value", "verl_source", "status", "why"} <= set(verl_to_trl().table()[0])


def test_one_gpu_keeps_completions_per_update():
    mapping = verl_to_trl(n_gpus=1, per_device_train_batch_size=10)
    assert mapping.config["per_device_train_batch_size"] == 10
    assert mapping.config["gradient_accumulation_steps"] == 16
    assert mapping.completions_per_update == 160
    assert mapping.steps_per_generation == 64  # 640 / 10: four updates of 16 micro steps


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rollout_n": 4}, "not divisible by ppo_micro_batch_size_per_gpu=20"),  # 32 x 4 / 8 = 16
        ({"rollout_n": 3}, "= 12 responses per GPU"),  # 32 x 3 / 8 = 12
        ({"n_gpus": 3}, "do not split evenly over 3 GPUs"),  # 160 / 3
        ({"train_batch_size": 100}, "not a multiple of ppo_mini_batch_size"),
        ({"rollout_n": 1}, "at least 2"),
        ({"loss_agg_mode": "token-sum"}, "Unknown verl loss_agg_mode"),
    ],
)
def test_verl_divisibility_rules(changes, message):
    with pytest.raises(RecipeError, match=message):
        verl_to_trl(**changes)


def test_rollout_n_must_be_a_multiple_of_five_on_the_card_batches():
    accepted = [n for n in range(2, 21) if _accepted(n)]
    assert accepted == [5, 10, 15, 20]


def _accepted(rollout_n: int) -> bool:
    try:
        verl_to_trl(rollout_n=rollout_n)
    except RecipeError:
        return False
    return True


def test_per_device_batch_must_divide_the_update():
    with pytest.raises(RecipeError, match="choose a per-device batch that divides 160"):
        verl_to_trl(n_gpus=1, per_device_train_batch_size=7)


def test_trl_batch_rules():
    assert check_trl_batches({"num_generations": 5, "per_device_train_batch_size": 20, "generation_batch_size": 640}, 8) == 4
    with pytest.raises(RecipeError, match="not divisible by num_generations=8"):
        check_trl_batches({"num_generations": 8, "per_device_train_batch_size": 4, "generation_batch_size": 12}, 1)
    with pytest.raises(RecipeError, match="whole number of micro steps"):
        check_trl_batches({"num_generations": 5, "per_device_train_batch_size": 20, "generation_batch_size": 100}, 8)
    with pytest.raises(RecipeError, match="not both"):
        check_trl_batches(
            {"num_generations": 2, "per_device_train_batch_size": 2, "generation_batch_size": 4, "steps_per_generation": 2},
            1,
        )
    with pytest.raises(RecipeError, match="at least 2"):
        check_trl_batches({"num_generations": 1, "per_device_train_batch_size": 2}, 1)


def test_recipes_exist():
    assert {path.name for path in RECIPES} == {"full_8gpu.yaml", "qlora_1gpu.yaml", "tiny_cpu.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_sets_every_drifting_default(path: Path):
    raw = read_recipe(path)
    missing = DRIFTING - set(raw)
    assert not missing, f"{path.name} leaves TRL defaults in charge of {sorted(missing)}"
    text = path.read_text(encoding="utf-8")
    for banned in ("max_prompt_length", "max_seq_length", "torch_dtype", "evaluation_strategy"):
        assert banned not in text


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_loads_into_grpo_config(path: Path, tmp_path: Path):
    raw = read_recipe(path)
    recipe = load_recipe(path, {"output_dir": str(tmp_path)})
    for key, value in raw.items():
        assert _plain(recipe.get(key)) == _plain(value), f"{path.name}: the parser changed {key}"
    assert recipe.trainer.use_cpu  # no GPU here: the precision flags come from the machine, not the file
    assert not recipe.trainer.bf16


def _plain(value):
    """TrainingArguments turns some strings into enums, and report_to 'none' into []."""
    value = getattr(value, "value", value)
    return [] if value == "none" else value


def test_full_recipe_is_the_card_through_the_mapping():
    raw = read_recipe(CONFIGS_DIR / "grpo" / "full_8gpu.yaml")
    expected = verl_to_trl().config
    assert {key: raw[key] for key in expected} == expected
    assert check_trl_batches(raw, num_processes=8) == 4
    assert raw["profile"] == "full" and raw["init_from"] == "sft" and raw["use_lora"] is False


def test_qlora_recipe_differs_from_the_mapping_only_where_it_says():
    raw = read_recipe(CONFIGS_DIR / "grpo" / "qlora_1gpu.yaml")
    expected = verl_to_trl(n_gpus=1, per_device_train_batch_size=10).config
    differing = {key for key in expected if raw[key] != expected[key]}
    assert differing == set(raw["deviations"])
    assert raw["per_device_train_batch_size"] * raw["gradient_accumulation_steps"] == 160
    assert check_trl_batches(raw, num_processes=1) == 16
    recipe = load_recipe(CONFIGS_DIR / "grpo" / "qlora_1gpu.yaml")
    assert recipe["profile"] == "qlora" and recipe["use_vllm"] is False
    assert (recipe["lora_r"], recipe["lora_alpha"], recipe["lora_target_modules"]) == (16, 32, "all-linear")
    assert load_recipe(CONFIGS_DIR / "grpo" / "full_8gpu.yaml")["use_lora"] is False


def test_tiny_recipe_is_small_and_cpu_friendly():
    recipe = load_recipe(CONFIGS_DIR / "grpo" / "tiny_cpu.yaml")
    config = recipe.trainer
    assert recipe["profile"] == "tiny"
    assert config.use_vllm is False and config.activation_checkpointing is False
    assert config.generation_batch_size % config.num_generations == 0
    assert config.beta == verl_to_trl().config["beta"]  # same KL weight as the card
    assert VerlGrpoSettings().kl_loss_coef == config.beta


def test_importance_sampling_correction_is_listed_as_our_choice():
    """TRL 1.16's default mode masks whole sequences; the recipes must not call it verl's or a reweighting."""
    assert grpo_default("vllm_importance_sampling_mode") == "sequence_mask"
    for path in RECIPES:
        text = path.read_text(encoding="utf-8")
        line = next(line for line in text.splitlines() if line.startswith("vllm_importance_sampling_correction"))
        assert "corrects" not in line
    full = (CONFIGS_DIR / "grpo" / "full_8gpu.yaml").read_text(encoding="utf-8")
    assert "Our choice, not part of verl's recipe" in full and "masks out whole completions" in full


def grpo_default(name: str):
    from trl import GRPOConfig

    return GRPOConfig.__dataclass_fields__[name].default
