"""GRPO training: from a recipe file to a trained model, on one CPU or eight GPUs.

The same function runs in a notebook, from the command line and under ``accelerate launch``:

    python -m psyche_utils.train grpo --config configs/grpo/tiny_cpu.yaml --max_steps 10
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml \\
        -m psyche_utils.train grpo --config configs/grpo/full_8gpu.yaml

A recipe names the profile, the model to start from (the SFT output), the data, the rewards, the
LoRA adapters if any, and in its ``grpo`` section every ``GRPOConfig`` value that has changed
default between TRL releases. Resuming, saving (LoRA: adapter plus merged model), the log and
the model card work as for SFT (``psyche_utils.train.common``). A run also writes
``rollouts.jsonl`` (every sampled completion with its rewards) and ``run_summary.json`` (logged
metrics, where the time went, what the data filter removed), so the notebook can plot and
inspect what happened.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections import Counter, defaultdict
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
from psyche_utils.train.common import (
    LOSS_LOG_NAME,
    RecipeError,
    check_keys,
    lora_config as common_lora_config,
    prepare_output_dir,
    read_recipe,
    default_recipe_for,
    launch_command_for,
    recipe_path,
    save_trained_model,
    sha256_file,
    write_loss_log,
    write_model_card,
)

STAGE = "grpo"
RECIPE_SECTIONS = {
    "profile", "init_from", "data", "rewards", "lora", "output_dir", "resume", "cpu_threads", "deviations", "grpo",
}
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "run_summary.json"


# ---------------------------------------------------------------------------------------------
# Recipes


def default_recipe(profile_name: str | None = None) -> Path:
    """The recipe for a profile (by default the active one)."""
    return default_recipe_for(STAGE, profile_name)


def load_recipe(recipe: str | Path) -> dict[str, Any]:
    """Read a GRPO recipe: a path, or a name under ``configs/grpo/`` ("tiny_cpu").

    The ``grpo`` section must hold only ``GRPOConfig`` fields; keys that the pinned TRL removed
    (``max_prompt_length`` ...) are refused with their replacement named.
    """
    from trl import GRPOConfig

    path = recipe_path(recipe, STAGE)
    values = read_recipe(path)
    unknown = set(values) - RECIPE_SECTIONS
    if unknown:
        raise RecipeError(f"{path}: unknown section(s) {sorted(unknown)}; allowed: {sorted(RECIPE_SECTIONS)}")
    for section in ("profile", "data", "rewards", "grpo"):
        if section not in values:
            raise RecipeError(f"{path}: missing section {section!r}")
    check_keys(values["grpo"], (GRPOConfig,), source=f"{path} (section 'grpo')")
    values["_source"] = str(path)
    return values


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
        raise RecipeError(f"overrides come in '--key value' pairs, got {list(pairs)}")
    overrides: dict[str, Any] = {}
    for flag, raw in zip(pairs[::2], pairs[1::2]):
        if not flag.startswith("--"):
            raise RecipeError(f"expected '--key', got {flag!r}")
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
    """A PEFT ``LoraConfig`` when the recipe trains adapters (its ``lora`` section), else None."""
    settings = recipe.get("lora")
    if not settings:
        return None
    return common_lora_config(settings["r"], settings["alpha"], settings["dropout"], settings["target_modules"])


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class GrpoData:
    """The prompts GRPO trains on, and what was left out on the way."""

    path: Path
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
    return GrpoData(path, kept, exclusions, lengths)


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
    global_step: int
    resumed_from: Path | None = None
    exclusions: list[Exclusion] = field(default_factory=list)

    def step_metrics(self) -> list[dict[str, Any]]:
        """One row per logged optimizer step that carries rewards."""
        return [row for row in self.history if "reward" in row]

    def timing_table(self) -> list[dict[str, Any]]:
        """Seconds and share of the training time spent generating, scoring and updating."""
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


def run_grpo(
    recipe: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
) -> GrpoResult:
    """Train (or resume) one GRPO run; save the model, its card, its log and its rollouts.

    ``recipe`` is a path, a name under ``configs/grpo/`` or an already loaded recipe (default:
    the active profile's recipe); ``overrides`` replace recipe values, like ``--key value``.
    A recipe's ``cpu_threads`` applies to this run only (on a CPU); the previous count is restored.
    """
    import torch

    recipe = recipe if recipe is not None else default_recipe()
    loaded = dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe)
    settings = apply_overrides(loaded, overrides)
    threads = settings.get("cpu_threads")
    previous_threads = torch.get_num_threads()
    if threads and not torch.cuda.is_available():
        torch.set_num_threads(int(threads))
    try:
        return _train(settings, callbacks)
    finally:
        torch.set_num_threads(previous_threads)


def _train(settings: dict[str, Any], callbacks: Sequence[Any] | None) -> GrpoResult:
    """The run itself, for :func:`run_grpo`."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset

    from psyche_utils.models import load_model_and_tokenizer
    from psyche_utils.notebook import seed_everything

    started = time.perf_counter()
    profile = get_profile(settings["profile"])
    state = PartialState()
    seed_everything(int(settings["grpo"].get("seed", 42)))
    output_dir = output_dir_for(settings, profile)
    # Arguments first: under DeepSpeed ZeRO-3 they must exist before the model loads, so that
    # from_pretrained creates the weights already sharded across the processes.
    args = build_grpo_config(settings, output_dir)
    init_path = resolve_init_path(settings, profile)
    model, tokenizer = load_model_and_tokenizer(profile, init_path, for_training=True)
    data = load_grpo_data(settings, tokenizer)

    fingerprint = {
        "stage": STAGE,
        "profile": profile.name,
        "init_from": str(init_path) if init_path else "base",
        "data_sha256": sha256_file(data.path),
        "prompts": len(data.records),
        "lora": bool(settings.get("lora")),
    }
    checkpoint = prepare_output_dir(
        output_dir, fingerprint, resume=bool(settings.get("resume", False)), is_main_process=state.is_main_process
    )
    state.wait_for_everyone()

    if state.is_main_process:
        per_update = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        left_out = Counter(item.reason for item in data.exclusions)
        print(
            f"GRPO on profile {profile.name!r}: {len(data.records)} prompts "
            f"(left out: {dict(left_out) if left_out else 'none'}), "
            f"{args.num_generations} completions per prompt, {per_update} completions per update "
            f"({args.per_device_train_batch_size} x {args.world_size} process(es) x {args.gradient_accumulation_steps} "
            f"accumulation), rollout batch {args.generation_batch_size}, output {output_dir}"
        )

    recorder = RolloutRecorder()
    trainer = timed_trainer_class()(
        model=model,
        processing_class=tokenizer,
        reward_funcs=[recorder.wrap(function) for function in reward_functions(settings["rewards"]["names"])],
        args=args,
        train_dataset=Dataset.from_list(data.records),
        peft_config=lora_config(settings),
        callbacks=list(callbacks or []),
        recorder=recorder,
    )
    before_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_time = time.perf_counter() - before_train
    recorder.flush()

    save_trained_model(trainer, output_dir, merge_lora=True, merged_dtype=select_precision().dtype)
    timings = trainer.timings
    result = GrpoResult(
        output_dir=output_dir,
        history=list(trainer.state.log_history),
        rollouts=recorder.rows,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time,
        generation_s=timings["generation_s"],
        scoring_s=max(timings["rollout_s"] - timings["generation_s"], 0.0),
        update_s=max(train_time - timings["rollout_s"], 0.0),
        num_prompts=len(data.records),
        global_step=trainer.state.global_step,
        resumed_from=checkpoint,
        exclusions=data.exclusions,
    )
    if state.is_main_process:
        write_loss_log(trainer.state.log_history, output_dir / LOSS_LOG_NAME)
        _write_run_files(result, settings)
        _write_card(result, settings, profile, data)
    state.wait_for_everyone()
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


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
        "global_step": result.global_step,
        "exclusions": [asdict(item) for item in result.exclusions],
    }
    text = json.dumps(summary, ensure_ascii=False, indent=2, default=str)
    (result.output_dir / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")


def _shown(path: Path) -> str:
    """A path as the card shows it: relative to the repository when it is inside it."""
    try:
        return path.resolve().relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def _write_card(result: GrpoResult, recipe: Mapping[str, Any], profile: Profile, data: GrpoData) -> None:
    steps = result.step_metrics()
    outcome = {
        "global_step": result.global_step,
        "resumed_from": result.resumed_from.name if result.resumed_from else None,
        "first_logged_reward": round(steps[0]["reward"], 4) if steps else None,
        "last_logged_reward": round(steps[-1]["reward"], 4) if steps else None,
        "train_time_s": round(result.train_time_s, 1),
        "time_shares": {row["phase"]: row["share"] for row in result.timing_table()},
    }
    layout = "a merged full model; the LoRA adapter alone is in `adapter/`" if recipe.get("lora") else "a full model"
    write_model_card(
        result.output_dir,
        title=f"Psyche-R1 tutorial: GRPO model ({profile.name} profile)",
        summary=(
            "GRPO on the challenging questions, starting from the SFT model, with the rewards "
            f"{', '.join(recipe['rewards']['names'])}. This folder holds {layout}, the log `{LOSS_LOG_NAME}`, "
            f"every scored completion in `{ROLLOUTS_FILE}` and the run summary `{SUMMARY_FILE}`."
        ),
        recipe_source=_shown(Path(recipe.get("_source", "configs/grpo"))),
        recipe={key: value for key, value in recipe.items() if not key.startswith("_")},
        data={
            "file": _shown(data.path),
            "sha256": sha256_file(data.path),
            "prompts_used": len(data.records),
            "excluded": len(data.exclusions),
        },
        result=outcome,
        usage=(
            "from psyche_utils.models import load_model_and_tokenizer\n"
            "from psyche_utils.paths import model_dir\n"
            "from psyche_utils.profiles import get_profile\n\n"
            f"profile = get_profile({profile.name!r})\n"
            f"model, tokenizer = load_model_and_tokenizer(profile, model_dir({profile.name!r}, 'grpo'))"
        ),
    )


def load_run(output_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and the rollouts of a finished run (for plots without retraining)."""
    summary_path = output_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} does not exist: run GRPO first (notebooks/04_grpo.ipynb)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    rollouts_path = output_dir / ROLLOUTS_FILE
    rollouts = [json.loads(line) for line in rollouts_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return summary, rollouts


# ---------------------------------------------------------------------------------------------
# Command line


def launch_command(profile_name: str) -> str:
    """The shell command that trains a profile with this stage's recipe."""
    return launch_command_for(STAGE, profile_name)


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"max_steps": 5, "rewards.names": [...]}`` as ``--key value`` arguments (JSON is valid YAML)."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)]
    return args


def run_or_launch(
    profile: Profile, recipe: str | Path | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train from a notebook: in this process, or through ``accelerate launch`` for a multi-GPU profile.

    Either way the run's summary and rollouts are read back from its output folder, so the
    notebook code after training is the same for one CPU and eight GPUs.
    """
    import shlex
    import subprocess

    loaded = dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe or default_recipe(profile.name))
    overrides = dict(overrides or {})
    if profile.num_processes > 1:
        command = shlex.split(launch_command(profile.name))
        command[command.index("--config") + 1] = loaded["_source"]
        command += override_args(overrides)
        print("running:", shlex.join(command))
        subprocess.run(command, check=True, cwd=paths.REPO_ROOT)
        return load_run(output_dir_for(apply_overrides(loaded, overrides), profile))
    result = run_grpo(loaded, overrides)
    return load_run(result.output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m psyche_utils.train grpo --config FILE [--key value ...]``."""
    from accelerate import PartialState

    parser = argparse.ArgumentParser(prog="python -m psyche_utils.train grpo")
    parser.add_argument("--config", default=None, help="a recipe file or a name in configs/grpo/")
    known, rest = parser.parse_known_args(list(argv or []))
    result = run_grpo(known.config, parse_cli_overrides(rest))
    if PartialState().is_main_process:
        steps = result.step_metrics()
        print(json.dumps(
            {
                "output_dir": str(result.output_dir),
                "global_step": result.global_step,
                "first_reward": steps[0]["reward"] if steps else None,
                "last_reward": steps[-1]["reward"] if steps else None,
                "wall_time_s": round(result.wall_time_s, 2),
                "time_shares": {row["phase"]: row["share"] for row in result.timing_table()},
            },
            indent=2,
        ))
    return 0
