"""GRPO training: from a recipe file to a trained model, on one CPU or eight GPUs.

The same function runs in a notebook, from the command line and under ``accelerate launch``:

    python -m psyche_utils.train grpo --config configs/grpo/tiny_cpu.yaml --max_steps 10
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml \\
        -m psyche_utils.train grpo --config configs/grpo/full_8gpu.yaml

A recipe names the profile, the model to start from (the SFT output), the data, the rewards and
every ``GRPOConfig`` value that has changed default between TRL releases. Besides the model, a
run writes ``rollouts.jsonl`` (every sampled completion with its rewards) and
``run_summary.json`` (logged metrics, timings, what the data filter removed) into the output
folder, so the notebook can plot and inspect what happened.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psyche_utils import paths
from psyche_utils.formatting import Exclusion, filter_by_tokens, read_dataset
from psyche_utils.profiles import Profile, get_profile, select_precision
from psyche_utils.recipes import check_trl_batches
from psyche_utils.rewards import completion_text, reward_functions

RECIPE_SECTIONS = {"profile", "init_from", "data", "rewards", "lora", "output_dir", "resume", "deviations", "grpo"}
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "run_summary.json"


class RecipeFileError(ValueError):
    """A recipe file is missing a section or has a value of the wrong kind."""


# ---------------------------------------------------------------------------------------------
# Recipes


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a GRPO recipe (YAML); relative paths are taken from the repository root."""
    recipe_path = Path(path)
    if not recipe_path.is_absolute() and not recipe_path.exists():
        recipe_path = paths.REPO_ROOT / recipe_path
    if not recipe_path.exists():
        raise FileNotFoundError(f"GRPO recipe {path} not found (recipes live in configs/grpo/).")
    recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    if not isinstance(recipe, dict):
        raise RecipeFileError(f"{recipe_path}: a recipe must be a mapping of sections")
    unknown = set(recipe) - RECIPE_SECTIONS
    if unknown:
        raise RecipeFileError(f"{recipe_path}: unknown section(s) {sorted(unknown)}; allowed: {sorted(RECIPE_SECTIONS)}")
    for section in ("profile", "data", "rewards", "grpo"):
        if section not in recipe:
            raise RecipeFileError(f"{recipe_path}: missing section {section!r}")
    recipe["_source"] = str(recipe_path)
    return recipe


def apply_overrides(recipe: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``recipe`` with dotted keys replaced ("grpo.max_steps": 5, "data.limit": 8).

    A key without a dot names a top-level section if there is one, else a ``GRPOConfig`` field,
    so ``--max_steps 5`` on the command line means ``grpo.max_steps``.
    """
    result = copy.deepcopy(dict(recipe))
    for key, value in (overrides or {}).items():
        parts = key.split(".") if "." in key else ([key] if key in RECIPE_SECTIONS else ["grpo", key])
        target = result
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return result


def parse_cli_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["--max_steps", "5", "--data.limit", "8"]`` -> ``{"max_steps": 5, "data.limit": 8}`` (YAML-typed)."""
    if len(pairs) % 2:
        raise SystemExit(f"overrides come in '--key value' pairs, got {list(pairs)}")
    overrides: dict[str, Any] = {}
    for flag, raw in zip(pairs[::2], pairs[1::2]):
        if not flag.startswith("--"):
            raise SystemExit(f"expected '--key', got {flag!r}")
        overrides[flag[2:].replace("-", "_") if "." not in flag else flag[2:]] = yaml.safe_load(raw)
    return overrides


def resolve_init_path(recipe: Mapping[str, Any], profile: Profile) -> Path | None:
    """The checkpoint GRPO starts from: the SFT output by default, None for the base model."""
    init_from = recipe.get("init_from", "sft")
    if init_from == "base":
        return None
    path = paths.model_dir(profile.name, "sft") if init_from == "sft" else Path(init_from)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"GRPO starts from the SFT model, but {path} holds no model: run notebooks/03_sft.ipynb first "
            "(or set init_from to 'base' or to a model folder)."
        )
    return path


def output_dir_for(recipe: Mapping[str, Any], profile: Profile) -> Path:
    """Where the trained model goes: ``outputs/models/<profile>/grpo`` unless the recipe says otherwise."""
    return Path(recipe["output_dir"]) if recipe.get("output_dir") else paths.model_dir(profile.name, "grpo")


def build_grpo_config(recipe: Mapping[str, Any], output_dir: Path) -> Any:
    """``GRPOConfig`` from the recipe's ``grpo`` section plus this machine's precision flags."""
    from trl import GRPOConfig

    values = dict(recipe["grpo"])
    precision = select_precision()
    values.setdefault("bf16", precision.bf16)
    values.setdefault("fp16", precision.fp16)
    values.setdefault("use_cpu", precision.use_cpu)
    rewards = recipe["rewards"]
    if rewards.get("weights") is not None:
        values["reward_weights"] = list(rewards["weights"])
    config = GRPOConfig(output_dir=str(output_dir), **values)
    check_trl_batches(
        {
            "num_generations": config.num_generations,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "generation_batch_size": config.generation_batch_size,
        },
        num_processes=config.world_size,
    )
    return config


def lora_config(recipe: Mapping[str, Any]) -> Any:
    """A PEFT ``LoraConfig`` when the recipe trains adapters, else None."""
    settings = recipe.get("lora")
    if not settings:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **settings)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class GrpoData:
    """The prompts GRPO trains on, and what was left out on the way."""

    records: list[dict[str, Any]]
    exclusions: list[Exclusion]
    prompt_tokens: list[int]


def load_grpo_data(recipe: Mapping[str, Any], tokenizer: Any) -> GrpoData:
    """Read ``grpo.jsonl``, drop prompts over the token budget (reported) and apply ``limit``.

    TRL no longer truncates prompts, so a long prompt would cost memory at every step; the
    budget is enforced here and each removal is reported.
    """
    data = recipe["data"]
    path = Path(data.get("path", "data/grpo.jsonl"))
    path = path if path.is_absolute() else paths.outputs_dir() / path
    records = read_dataset(path, "grpo")
    kept, exclusions, lengths = filter_by_tokens(records, tokenizer, int(data["max_prompt_tokens"]), kind="grpo")
    limit = data.get("limit")
    if limit is not None and len(kept) > limit:
        exclusions += [Exclusion(r["id"], "grpo_limit", "beyond data.limit", f"limit {limit}") for r in kept[limit:]]
        kept = kept[:limit]
    if not kept:
        raise ValueError(f"{path}: no GRPO prompt is left after the token budget and limit ({len(exclusions)} removed).")
    return GrpoData(kept, exclusions, lengths)


# ---------------------------------------------------------------------------------------------
# Observing a run


class RolloutRecorder:
    """Wraps reward functions so that every scored completion is kept with its rewards.

    Only TRL's public reward-function convention is used: each call receives the completions,
    the dataset columns and ``trainer_state``. The wrapped functions keep their names, so TRL's
    logged metrics are still called ``rewards/format_reward/mean`` and so on. A rollout is
    complete when a function is called again: then its rows move to ``rows``.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._rollout = 0

    def wrap(self, function: Callable[..., list[float]]) -> Callable[..., list[float]]:
        name = function.__name__

        def recorded(completions: Sequence[Any], **kwargs: Any) -> list[float]:
            scores = function(completions, **kwargs)
            if self._pending and name in self._pending[0]["rewards"]:
                self.flush()
            if not self._pending:
                state = kwargs.get("trainer_state")
                ids = kwargs.get("id") or [None] * len(completions)
                answers = kwargs.get("answer") or [None] * len(completions)
                self._pending = [
                    {
                        "rollout": self._rollout,
                        "step": int(state.global_step) if state is not None else 0,
                        "id": ids[index],
                        "answer": answers[index],
                        "completion": completion_text(completion),
                        "rewards": {},
                    }
                    for index, completion in enumerate(completions)
                ]
            for row, score in zip(self._pending, scores, strict=True):
                row["rewards"][name] = float(score)
            return scores

        recorded.__name__ = name
        recorded.__qualname__ = name
        return recorded

    def flush(self) -> None:
        """Close the current rollout: its rows join ``rows``."""
        if self._pending:
            self.rows.extend(self._pending)
            self._pending = []
            self._rollout += 1


def timed_trainer_class() -> type:
    """``GRPOTrainer`` that also measures where the time goes.

    Generation (sampling completions), scoring (rewards plus the log-probabilities of the old and
    reference policies) and the rest (forward, backward, optimizer: the update) are timed
    separately. The two hooks are methods of TRL 1.16's trainer; a test fails if they move.
    """
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, recorder: RolloutRecorder | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timings: dict[str, float] = defaultdict(float)
            self.recorder = recorder

        def _generate(self, prompts: list) -> Any:
            start = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                self.timings["generation_s"] += time.perf_counter() - start

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            start = time.perf_counter()
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                self.timings["rollout_s"] += time.perf_counter() - start
                self.timings["rollouts"] += 1
                if self.recorder is not None:
                    self.recorder.flush()

    return TimedGRPOTrainer


@dataclass
class GrpoResult:
    """What a GRPO run produced and measured."""

    output_dir: Path
    history: list[dict[str, Any]]
    rollouts: list[dict[str, Any]]
    wall_time_s: float
    train_time_s: float
    generation_s: float
    scoring_s: float
    update_s: float
    num_prompts: int
    exclusions: list[Exclusion] = field(default_factory=list)

    def step_metrics(self) -> list[dict[str, Any]]:
        """One row per optimizer step that logged rewards."""
        return [row for row in self.history if "reward" in row]

    def timing_table(self) -> list[dict[str, Any]]:
        total = self.generation_s + self.scoring_s + self.update_s
        return [
            {"phase": phase, "seconds": round(seconds, 2), "share": round(seconds / total, 3) if total else 0.0}
            for phase, seconds in (
                ("generation", self.generation_s),
                ("scoring (rewards + log-probs)", self.scoring_s),
                ("update (forward, backward, optimizer)", self.update_s),
            )
        ]


def group_reward_std(rollouts: Sequence[Mapping[str, Any]], num_generations: int) -> list[float]:
    """Sample std of the total reward inside every group of completions, in rollout order.

    Completions of one prompt are consecutive in a rollout (TRL repeats each prompt
    ``num_generations`` times in a row), so groups are read off in blocks.
    """
    totals = [sum(row["rewards"].values()) for row in rollouts]
    stds = []
    for start in range(0, len(totals) - num_generations + 1, num_generations):
        group = rollouts[start : start + num_generations]
        if len({(row["rollout"], row["id"]) for row in group}) != 1:
            raise ValueError(f"Rollout rows {start}..{start + num_generations - 1} do not form one prompt's group.")
        stds.append(statistics.stdev(totals[start : start + num_generations]))
    return stds


# ---------------------------------------------------------------------------------------------
# Training


def run_grpo(recipe: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> GrpoResult:
    """Train with GRPO as the recipe says; save the model and the run's records; return them."""
    import torch
    from datasets import Dataset

    from psyche_utils.models import load_model_and_tokenizer
    from psyche_utils.notebook import seed_everything

    started = time.perf_counter()
    loaded = load_recipe(recipe) if isinstance(recipe, (str, Path)) else dict(recipe)
    settings = apply_overrides(loaded, overrides)
    profile = get_profile(settings["profile"])
    seed_everything(int(settings["grpo"].get("seed", 42)))
    output_dir = output_dir_for(settings, profile)
    # Arguments first: under DeepSpeed ZeRO-3 they must exist before the model loads, so that
    # from_pretrained partitions the weights across processes instead of loading them whole.
    args = build_grpo_config(settings, output_dir)
    init_path = resolve_init_path(settings, profile)
    model, tokenizer = load_model_and_tokenizer(profile, init_path, for_training=True)
    # Generation pads on the left; TRL pads prompts itself, and Qwen's pad token is kept.
    tokenizer.padding_side = "left"
    data = load_grpo_data(settings, tokenizer)

    recorder = RolloutRecorder()
    rewards = [recorder.wrap(function) for function in reward_functions(settings["rewards"]["names"])]
    trainer = timed_trainer_class()(
        model=model,
        processing_class=tokenizer,
        reward_funcs=rewards,
        args=args,
        train_dataset=Dataset.from_list(data.records),
        peft_config=lora_config(settings),
        recorder=recorder,
    )
    resume = _checkpoint_to_resume(settings, output_dir)
    before_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_time = time.perf_counter() - before_train

    trainer.save_model(str(output_dir))
    timings = trainer.timings
    generation = timings["generation_s"]
    scoring = max(timings["rollout_s"] - generation, 0.0)
    result = GrpoResult(
        output_dir=output_dir,
        history=list(trainer.state.log_history),
        rollouts=recorder.rows,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time,
        generation_s=generation,
        scoring_s=scoring,
        update_s=max(train_time - timings["rollout_s"], 0.0),
        num_prompts=len(data.records),
        exclusions=data.exclusions,
    )
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output_dir))
        _write_run_files(result, settings)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _checkpoint_to_resume(recipe: Mapping[str, Any], output_dir: Path) -> str | None:
    """The newest ``checkpoint-*`` folder when the recipe says ``resume: auto``."""
    if recipe.get("resume") != "auto" or not output_dir.exists():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir))


def _write_run_files(result: GrpoResult, recipe: Mapping[str, Any]) -> None:
    with (result.output_dir / ROLLOUTS_FILE).open("w", encoding="utf-8") as handle:
        for row in result.rollouts:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "recipe": {key: value for key, value in recipe.items() if not key.startswith("_")},
        "history": result.history,
        "timing": result.timing_table(),
        "wall_time_s": round(result.wall_time_s, 2),
        "train_time_s": round(result.train_time_s, 2),
        "num_prompts": result.num_prompts,
        "exclusions": [asdict(item) for item in result.exclusions],
    }
    (result.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m psyche_utils.train grpo --config FILE [--key value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.train grpo")
    parser.add_argument("--config", required=True, help="a recipe in configs/grpo/")
    known, rest = parser.parse_known_args(argv)
    result = run_grpo(known.config, parse_cli_overrides(rest))
    steps = result.step_metrics()
    if steps:
        print(f"GRPO: {len(steps)} steps, reward {steps[0]['reward']:.3f} -> {steps[-1]['reward']:.3f}")
    print(f"GRPO: model saved to {result.output_dir} in {result.wall_time_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
