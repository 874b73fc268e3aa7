"""GRPO: the arithmetic by hand, then a real tiny run that must show learning."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from psyche_utils import grpo_math
from psyche_utils.formatting import grpo_record, sft_question_record, write_dataset
from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.schema import Question
from psyche_utils.train.common import RecipeError

TINY_RECIPE = CONFIGS_DIR / "grpo" / "tiny_cpu.yaml"
SFT_STEPS = 60  # enough for the tiny model to write the think layout about half of the time

# Handmade exam-style questions: a short explanation each, so a brief SFT teaches the layout.
FIXTURE_QUESTIONS = [
    ("“合理情绪疗法”由谁提出？", ("皮亚杰", "弗洛伊德", "巴甫洛夫", "艾利斯"), "D", "艾利斯创立了合理情绪疗法，强调非理性信念。"),
    ("认知疗法的代表人物是？", ("贝克", "荣格", "斯金纳", "马斯洛"), "A", "贝克提出认知疗法，关注自动化思维。"),
    ("来访者中心疗法的创始人是？", ("华生", "罗杰斯", "班杜拉", "阿德勒"), "B", "罗杰斯提出来访者中心疗法，强调无条件积极关注。"),
    ("提出需要层次理论的是？", ("埃里克森", "鲍尔比", "马斯洛", "塞利格曼"), "C", "马斯洛提出需要层次理论，最高层为自我实现。"),
    ("经典条件反射由谁发现？", ("巴甫洛夫", "桑代克", "费斯汀格", "荣格"), "A", "巴甫洛夫通过狗的唾液实验发现经典条件反射。"),
    ("习得性无助由谁提出？", ("罗杰斯", "塞利格曼", "皮亚杰", "贝克"), "B", "塞利格曼在动物实验中发现习得性无助。"),
    ("集体潜意识是谁的概念？", ("弗洛伊德", "阿德勒", "荣格", "华生"), "C", "荣格提出集体潜意识与原型。"),
    ("社会学习理论的代表人物是？", ("斯金纳", "马斯洛", "艾利斯", "班杜拉"), "D", "班杜拉提出社会学习理论，强调观察学习。"),
    ("以下属于焦虑的躯体症状的有？", ("心悸", "出汗", "幻听", "手抖"), "ABD", "心悸、出汗和手抖是焦虑的躯体表现，幻听属于精神病性症状。"),
    ("以下属于心理防御机制的有？", ("压抑", "投射", "共情", "升华"), "ABD", "压抑、投射、升华是防御机制，共情是咨询技术。"),
]


def fixture_questions() -> list[Question]:
    return [
        Question(
            id=f"fx-{index}",
            question=stem,
            options=dict(zip("ABCD", options)),
            answer=answer,
            question_type="single" if len(answer) == 1 else "multi",
            subject="普通心理学",
            explanation=explanation,
        )
        for index, (stem, options, answer, explanation) in enumerate(FIXTURE_QUESTIONS)
    ]


# ---------------------------------------------------------------------------------------------
# The arithmetic, by hand


def test_group_advantages_by_hand():
    # Group [2, 1, 1, 0]: mean 1, sample std sqrt(2/3) = 0.816497; +-1 / (0.816497 + 1e-4).
    advantages = grpo_math.group_advantages([2.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0], 4)
    assert advantages[:4] == pytest.approx([1.224595, 0.0, 0.0, -1.224595], abs=1e-6)
    assert advantages[4:] == [0.0, 0.0, 0.0, 0.0]  # all equal: no signal, as on a random model
    assert grpo_math.group_advantages([2.0, 1.0, 1.0, 0.0], 4, scale_rewards="none") == [1.0, 0.0, 0.0, -1.0]


def test_batch_scaling_uses_the_std_of_all_rewards():
    # Means 1.5 and 0.5; batch [1,2,0,1] has sample std sqrt(2/3).
    advantages = grpo_math.group_advantages([1.0, 2.0, 0.0, 1.0], 2, scale_rewards="batch")
    assert advantages == pytest.approx([-0.5 / 0.816597, 0.5 / 0.816597, -0.5 / 0.816597, 0.5 / 0.816597], abs=1e-6)


def test_group_advantages_match_trl():
    from trl.trainer.utils import nanstd

    generator = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 3, (24,), generator=generator).float()
    grouped = rewards.view(-1, 6)
    expected = (rewards - grouped.mean(dim=1).repeat_interleave(6)) / (
        nanstd(grouped, dim=1).repeat_interleave(6) + 1e-4
    )
    assert grpo_math.group_advantages(rewards.tolist(), 6) == pytest.approx(expected.tolist(), abs=1e-5)


def test_group_advantages_reject_bad_groups():
    with pytest.raises(ValueError, match="at least 2"):
        grpo_math.group_advantages([1.0], 1)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        grpo_math.group_advantages([1.0, 0.0, 1.0], 4)
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_math.group_advantages([1.0, 0.0], 2, scale_rewards="global")


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected"),
    [
        (1.5, 1.0, -1.2),  # good completion, ratio already past 1 + eps: the gain is capped
        (0.5, 1.0, -0.5),  # good completion made less likely: the full (unclipped) penalty counts
        (0.5, -1.0, 0.8),  # bad completion already pushed down past 1 - eps: capped
        (1.5, -1.0, 1.5),  # bad completion made more likely: full penalty
        (1.0, 2.0, -2.0),
    ],
)
def test_clipped_token_loss(ratio, advantage, expected):
    assert grpo_math.clipped_token_loss(ratio, advantage) == pytest.approx(expected)


def test_k3_kl():
    assert grpo_math.k3_kl(-1.0, -1.0) == 0.0
    # p = 0.5, p_ref = 0.25: exp(-ln 2) + ln 2 - 1 = 0.5 + 0.693147 - 1
    assert grpo_math.k3_kl(math.log(0.5), math.log(0.25)) == pytest.approx(0.193147, abs=1e-6)
    assert grpo_math.k3_kl(math.log(0.25), math.log(0.5)) == pytest.approx(2 - math.log(2) - 1, abs=1e-6)


def test_worked_example_rows():
    rows = grpo_math.worked_example(
        {"q1": [("<think>…</think>答案：B", 1.0, 1.0), ("<think>…</think>答案：A", 1.0, 0.0), ("答案：B", 0.0, 1.0), ("…", 0.0, 0.0)]}
    )
    assert [row.total_reward for row in rows] == [2.0, 1.0, 1.0, 0.0]
    assert [round(row.advantage, 4) for row in rows] == [1.2246, 0.0, 0.0, -1.2246]
    with pytest.raises(ValueError, match="same number of completions"):
        grpo_math.worked_example({"q1": [("a", 1.0, 0.0), ("b", 0.0, 0.0)], "q2": [("c", 0.0, 0.0)]})


# ---------------------------------------------------------------------------------------------
# A real tiny run


def test_trainer_hooks_exist_in_the_pinned_trl():
    from trl import GRPOTrainer

    for hook in ("_generate", "_generate_and_score_completions"):
        assert callable(getattr(GRPOTrainer, hook, None)), f"TRL moved {hook}: update timed_trainer_class"


@pytest.fixture(scope="module")
def grpo_workdir(tmp_path_factory, tiny_model_path: Path) -> Path:
    """GRPO data plus a briefly SFT-trained tiny model, as notebooks 02 and 03 would leave them.

    GRPO needs a starting model whose completions differ in reward: the random tiny model never
    writes a think block, so every group would score the same and nothing would be learned.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    workdir = tmp_path_factory.mktemp("grpo")
    questions = fixture_questions()
    write_dataset([grpo_record(q) for q in questions], workdir / "grpo.jsonl", kind="grpo", settings={"fixture": True})
    sft_rows = [sft_question_record(q, q.explanation, "seed_explanation")["messages"] for q in questions]

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(workdir / "sft-run"),
        use_cpu=True,
        bf16=False,
        max_length=384,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        max_steps=SFT_STEPS,
        assistant_only_loss=True,
        activation_checkpointing=False,
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        seed=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": m} for m in sft_rows] * 8),
        processing_class=tokenizer,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains faster on one thread of a 2-core machine (see tiny_cpu.yaml)
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    trainer.model.save_pretrained(workdir / "sft")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(workdir / "sft")
    return workdir


def overrides_for(workdir: Path, **extra) -> dict:
    return {
        "init_from": str(workdir / "sft"),
        "train_file": str(workdir / "grpo.jsonl"),
        "output_dir": str(workdir / "grpo-out"),
        **extra,
    }


@pytest.mark.slow
def test_tiny_grpo_learns(grpo_workdir: Path):
    from transformers import AutoModelForCausalLM

    from psyche_utils.train.grpo import ROLLOUTS_FILE, SUMMARY_FILE, group_reward_std, load_recipe, run_grpo

    recipe = load_recipe(TINY_RECIPE)
    result = run_grpo(recipe, overrides_for(grpo_workdir))
    steps = result.step_metrics()
    assert len(steps) == recipe.trainer.max_steps

    totals = [row["reward"] for row in steps]
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last > first, f"mean total reward did not rise: first 5 steps {first:.3f}, last 5 {last:.3f}"

    stds = group_reward_std(result.rollouts, recipe.trainer.num_generations)
    assert len(stds) == recipe.trainer.max_steps * 4  # 4 prompts per rollout, one rollout per step
    assert sum(std > 0 for std in stds) / len(stds) > 0.5, "most groups must disagree, or GRPO has no signal"
    assert all("kl" in row for row in steps) and steps[-1]["kl"] > 0

    before = AutoModelForCausalLM.from_pretrained(grpo_workdir / "sft")
    after = AutoModelForCausalLM.from_pretrained(result.output_dir)
    changed = [
        name for name, tensor in after.state_dict().items() if not torch.equal(tensor, before.state_dict()[name])
    ]
    assert changed, "GRPO saved a model identical to its starting point"

    assert result.generation_s > 0 and result.update_s > 0
    assert (result.output_dir / ROLLOUTS_FILE).exists()
    summary = json.loads((result.output_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert [row["phase"] for row in summary["timing"]][0] == "generation"
    assert summary["num_prompts"] == len(FIXTURE_QUESTIONS)


@pytest.mark.slow
def test_cli_runs_and_overrides(grpo_workdir: Path):
    output = grpo_workdir / "cli-out"
    command = [
        sys.executable, "-m", "psyche_utils.train", "grpo", "--config", str(TINY_RECIPE),
        "--init_from", str(grpo_workdir / "sft"), "--train_file", str(grpo_workdir / "grpo.jsonl"),
        "--output_dir", str(output), "--max_steps", "2", "--max_completion_length", "8",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert '"global_step": 2' in completed.stdout
    summary = json.loads((output / "run_summary.json").read_text(encoding="utf-8"))
    assert summary["recipe"]["max_steps"] == 2 and "max_steps" in summary["overrides"]
    assert (output / "config.json").exists() and (output / "tokenizer_config.json").exists()
    shutil.rmtree(output)


@pytest.mark.slow
def test_lora_run_saves_adapter_and_merged_model(grpo_workdir: Path):
    from psyche_utils.models import load_model_and_tokenizer
    from psyche_utils.profiles import get_profile
    from psyche_utils.train.grpo import run_grpo

    output = grpo_workdir / "lora-out"
    run_grpo(TINY_RECIPE, overrides_for(
        grpo_workdir, output_dir=str(output), max_steps=1, max_completion_length=8,
        use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules="all-linear",
    ))
    assert (output / "adapter" / "adapter_config.json").exists()
    assert (output / "config.json").exists() and (output / "model.safetensors").exists()
    model, _ = load_model_and_tokenizer(get_profile("tiny"), output)
    assert not hasattr(model, "peft_config"), "the top-level folder is the merged model"
    shutil.rmtree(output)


def test_missing_sft_model_says_which_notebook_to_run(tmp_path: Path):
    from psyche_utils.profiles import get_profile
    from psyche_utils.train.grpo import resolve_init_path

    with pytest.raises(FileNotFoundError, match="notebooks/03_sft.ipynb"):
        resolve_init_path(str(tmp_path / "nothing"), get_profile("tiny"))
    assert resolve_init_path("base", get_profile("tiny")) is None


def test_missing_grpo_data_says_which_notebook_to_run(tmp_path: Path, tiny_model_and_tokenizer):
    from psyche_utils.train.grpo import GrpoDataArguments, load_grpo_data

    _, tokenizer = tiny_model_and_tokenizer
    with pytest.raises(FileNotFoundError, match="notebooks/02"):
        load_grpo_data(GrpoDataArguments(train_file=str(tmp_path / "grpo.jsonl"), max_prompt_tokens=300), tokenizer)


def test_prompt_budget_and_limit_are_reported(tmp_path: Path, tiny_model_and_tokenizer):
    from psyche_utils.train.grpo import GrpoDataArguments, load_grpo_data

    _, tokenizer = tiny_model_and_tokenizer
    questions = fixture_questions()
    path = tmp_path / "grpo.jsonl"
    write_dataset([grpo_record(q) for q in questions], path, kind="grpo", settings={})
    data = load_grpo_data(GrpoDataArguments(str(path), max_prompt_tokens=4096, max_train_samples=6), tokenizer)
    assert [r["id"] for r in data.records] == [f"fx-{i}" for i in range(6)]
    assert [(e.id, e.reason) for e in data.exclusions] == [(f"fx-{i}", "beyond max_train_samples") for i in (6, 7, 8, 9)]
    tight = sorted(data.prompt_tokens)[3]
    data = load_grpo_data(GrpoDataArguments(str(path), max_prompt_tokens=tight), tokenizer)
    assert len(data.records) + len(data.exclusions) == len(questions) and data.records_read == len(questions)
    assert all(e.reason == "over token budget" for e in data.exclusions) and data.exclusions
    over = sorted(e.id for e in data.exclusions)
    assert over == sorted(q.id for q, n in zip(questions, data.prompt_tokens) if n > tight)
    with pytest.raises(RecipeError, match=rf"{len(over)} prompt\(s\) exceed max_prompt_tokens {tight}: {over[0]}"):
        load_grpo_data(GrpoDataArguments(str(path), max_prompt_tokens=tight, refuse_overlong=True), tokenizer)
    with pytest.raises(RecipeError, match="no GRPO prompt is left"):
        load_grpo_data(GrpoDataArguments(str(path), max_prompt_tokens=5), tokenizer)


@pytest.mark.slow
def test_prompts_over_the_budget_are_reported_in_the_card(grpo_workdir: Path):
    from psyche_utils.formatting import read_dataset, token_lengths
    from psyche_utils.models import load_model_and_tokenizer
    from psyche_utils.profiles import get_profile
    from psyche_utils.train.grpo import run_grpo

    _, tokenizer = load_model_and_tokenizer(get_profile("tiny"), grpo_workdir / "sft")
    records = read_dataset(grpo_workdir / "grpo.jsonl", "grpo")
    lengths = token_lengths(tokenizer, [r["prompt"] for r in records], add_generation_prompt=True)
    budget = sorted(lengths)[len(lengths) // 2]
    over = [r["id"] for r, n in zip(records, lengths) if n > budget]
    output = grpo_workdir / "budget-out"
    result = run_grpo(TINY_RECIPE, overrides_for(grpo_workdir, output_dir=str(output), max_steps=1,
                                                 max_completion_length=8, max_prompt_tokens=budget))
    assert result.num_prompts == len(records) - len(over)
    card = (output / "README.md").read_text(encoding="utf-8")
    assert f"| `prompts_trained_on` | {len(records) - len(over)} |" in card
    assert f"| `removed_over_max_prompt_tokens_{budget}` | {len(over)} |" in card
    assert all(rid in card for rid in over)
    shutil.rmtree(output)
