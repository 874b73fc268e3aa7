"""GRPO training: from a recipe file to a trained model, on one CPU or eight GPUs.

The same function runs in a notebook, from the command line and under ``accelerate launch``:

    python -m psyche_utils.train grpo --config configs/grpo/tiny_cpu.yaml --max_steps 10
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml \\
        -m psyche_utils.train grpo --config configs/grpo/full_8gpu.yaml

A recipe is one flat YAML file read by TRL's parser: the profile, the model to start from (the
SFT output), the data, the rewards, the LoRA adapters if any, and every ``GRPOConfig`` value that
has changed default between TRL releases. Resuming, saving (LoRA: adapter plus merged model), the log and
the model card work as for SFT (``psyche_utils.train.common``). A run also writes
``rollouts.jsonl`` (every sampled completion with its rewards) and ``run_summary.json`` (logged
metrics, where the time went, what the data filter removed), so the notebook can plot and
inspect what happened.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from psyche_utils import paths
from psyche_utils.formatting import Exclusion, filter_by_tokens, read_dataset
from psyche_utils.profiles import PROFILES, Profile, get_profile, select_precision
from psyche_utils.recipes import check_trl_batches
from psyche_utils.rewards import completion_text, reward_functions
from psyche_utils.train.common import (
    LOSS_LOG_NAME,
    LoraArguments,
    ModelArguments,
    Recipe,
    RecipeError,
    ResumeDecision,
    RunArguments,
    check_single_device,
    default_recipe_for,
    display_path,
    hyperparameters,
    launch,
    launch_command_for,
    lora_from,
    parse_recipe,
    pin_one_device,
    precision_defaults,
    prepare_output_dir,
    resolve_data_path,
    run_cli,
    save_trained_model,
    sha256_file,
    split_config_argument,
    write_loss_log,
    write_model_card,
)

STAGE = "grpo"
ROLLOUTS_FILE = "rollouts.jsonl"
SUMMARY_FILE = "run_summary.json"


@dataclass
class GrpoModelArguments(ModelArguments):
    """The profile, and the checkpoint GRPO starts from."""

    init_from: str = field(
        default="sft", metadata={"help": "'sft' (the profile's SFT output), 'base', or a model folder"}
    )


@dataclass
class GrpoRunArguments(RunArguments):
    """Run settings, plus the documented departures from the card's mapping."""

    deviations: list[str] = field(
        default_factory=list,
        metadata={"help": "keys that differ from psyche_utils.recipes.verl_to_trl on purpose (reasons in comments)"},
    )


@dataclass
class GrpoDataArguments:
    """The prompts GRPO trains on, and the prompt budget."""

    train_file: str | None = field(
        default=None, metadata={"help": "GRPO prompts (JSON lines); default outputs/data/grpo.jsonl from notebook 02"}
    )
    max_prompt_tokens: int | None = field(
        default=None, metadata={"help": "prompts longer than this (chat template included) are removed and reported"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "train on the first N prompts only"})
    refuse_overlong: bool = field(
        default=False, metadata={"help": "stop with an error when a prompt exceeds max_prompt_tokens"}
    )


@dataclass
class RewardArguments:
    """Which reward functions score the completions (weights: GRPOConfig's reward_weights)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy"], metadata={"help": "names in psyche_utils.rewards"}
    )


#: The dataclasses a GRPO recipe's keys belong to, by part name.
GRPO_PARTS = {
    "model": GrpoModelArguments,
    "run": GrpoRunArguments,
    "data": GrpoDataArguments,
    "rewards": RewardArguments,
    "lora": LoraArguments,
    "trainer": GRPOConfig,
}


# ---------------------------------------------------------------------------------------------
# Recipes


def default_recipe(profile_name: str | None = None) -> Path:
    """The recipe for a profile (by default the active one)."""
    return default_recipe_for(STAGE, profile_name)


def _defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keys a recipe leaves to the machine: the output folder and the precision flags."""
    return {"output_dir": str(paths.model_dir(str(values.get("profile", "tiny")), STAGE)), **precision_defaults(values)}


def load_recipe(
    recipe: str | Path | Recipe | None = None, overrides: Mapping[str, Any] | None = None, argv: Sequence[str] = ()
) -> Recipe:
    """A GRPO recipe (path or name under ``configs/grpo/``; default: the active profile's) with overrides.

    Besides the type checks of TRL's parser, the batch sizes are checked against TRL's rules and
    vLLM is refused with a 4-bit base (see :func:`check_recipe`).
    """
    if isinstance(recipe, Recipe):
        if not overrides and not argv:
            return recipe
        loaded = parse_recipe(STAGE, GRPO_PARTS, recipe.source, {**recipe.raw, **dict(overrides or {})}, argv, _defaults)
    else:
        loaded = parse_recipe(STAGE, GRPO_PARTS, recipe if recipe is not None else default_recipe(), overrides, argv, _defaults)
    check_recipe(loaded)
    return loaded


def check_recipe(recipe: Recipe) -> None:
    """What TRL would refuse late, or get silently wrong, refused now with the reason.

    vLLM with a 4-bit base: TRL's vLLM path merges the LoRA adapter into the base weights before
    every rollout and unmerges it after; on 4-bit weights PEFT dequantizes, adds and
    re-quantizes each time, so the frozen base drifts a little further at every step.
    """
    config: GRPOConfig = recipe.trainer
    profile = PROFILES[recipe.parts["model"].profile]
    if config.use_vllm and profile.quantization is not None:
        raise RecipeError(
            f"{recipe.shown_source}: use_vllm with the {profile.name!r} profile's {profile.quantization} 4-bit base "
            "would corrupt it (TRL merges the adapter into the quantized weights and unmerges it on every rollout, "
            "re-quantizing each time): set use_vllm false, or train the full profile with vLLM"
        )
    names = recipe.parts["rewards"].reward_funcs
    if config.reward_weights is not None and len(config.reward_weights) != len(names):
        raise RecipeError(
            f"{recipe.shown_source}: {len(config.reward_weights)} reward_weights for {len(names)} reward_funcs {names}"
        )
    try:
        check_trl_batches(
            {
                "num_generations": config.num_generations,
                "per_device_train_batch_size": config.per_device_train_batch_size,
                "generation_batch_size": config.generation_batch_size,
            },
            num_processes=config.world_size,
        )
    except ValueError as error:
        raise RecipeError(f"{recipe.shown_source}: {error}") from error


def resolve_init_path(init_from: str, profile: Profile) -> Path | None:
    """The checkpoint GRPO starts from: the SFT output by default, None for the base model."""
    if init_from == "base":
        return None
    path = paths.model_dir(profile.name, "sft") if init_from == "sft" else Path(init_from)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"GRPO starts from the SFT model, but {path} holds no model: run notebooks/03_sft.ipynb first "
            "(or set init_from to 'base' or to a model folder)."
        )
    return path


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class GrpoData:
    """The prompts GRPO trains on, and what was left out on the way."""

    path: Path
    records: list[dict[str, Any]]
    exclusions: list[Exclusion]
    prompt_tokens: list[int]
    records_read: int = 0


def load_grpo_data(data: GrpoDataArguments, tokenizer: Any) -> GrpoData:
    """Read the prompts, drop those over the token budget (reported, or refused) and apply the limit.

    TRL no longer truncates prompts, so a long prompt would cost memory at every step; the
    budget is enforced here and each removal is reported.
    """
    path = resolve_data_path(data.train_file, paths.outputs_path("data", "grpo.jsonl"))
    records = read_dataset(path, "grpo")
    if data.max_prompt_tokens is None:
        kept, exclusions, lengths = list(records), [], []
    else:
        kept, exclusions, lengths = filter_by_tokens(records, tokenizer, data.max_prompt_tokens, kind="grpo")
    if exclusions and data.refuse_overlong:
        shown = ", ".join(f"{item.id} ({item.detail})" for item in exclusions[:20])
        raise RecipeError(
            f"{display_path(path)}: {len(exclusions)} prompt(s) exceed max_prompt_tokens {data.max_prompt_tokens}: "
            f"{shown}; raise the budget, filter the data, or unset refuse_overlong"
        )
    limit = data.max_train_samples
    if limit is not None and len(kept) > limit:
        exclusions += [
            Exclusion(r["id"], "grpo_limit", "beyond max_train_samples", f"limit {limit}") for r in kept[limit:]
        ]
        kept = kept[:limit]
    if not kept:
        raise RecipeError(
            f"{display_path(path)}: no GRPO prompt is left after the token budget and limit ({len(exclusions)} removed)."
        )
    return GrpoData(path, kept, exclusions, lengths, len(records))


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


def epoch_seeded(sampler: Any) -> Any:
    """TRL's ``RepeatSampler``, made to draw each epoch's prompt order from ``seed + epoch``.

    TRL's sampler keeps one random generator for the whole run, so epoch 2's order depends on
    having drawn epoch 1's; a run resumed in epoch 2 builds a fresh sampler and repeats epoch
    1's order instead. The Trainer calls ``set_epoch`` before every epoch (also after a resume),
    so reseeding there gives an interrupted run the same prompts as an uninterrupted one.
    """
    from trl.trainer.utils import RepeatSampler

    if not isinstance(sampler, RepeatSampler) or sampler.seed is None:
        return sampler

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(self.seed + epoch)

    seeded = EpochSeededRepeatSampler.__new__(EpochSeededRepeatSampler)
    seeded.__dict__.update(sampler.__dict__)
    return seeded


def timed_trainer_class() -> type:
    """``GRPOTrainer`` that also measures where the time goes.

    Generation (sampling completions), scoring (rewards plus the log-probabilities of the old and
    reference policies) and the rest (forward, backward, optimizer: the update) are timed
    separately. The two hooks are methods of TRL 1.16's trainer; a test fails if they move.
    """
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def _get_train_sampler(self, dataset: Any = None) -> Any:
            return epoch_seeded(super()._get_train_sampler(dataset))

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
    recipe: str | Path | Recipe | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
) -> GrpoResult:
    """Train (or resume) one GRPO run; save the model, its card, its log and its rollouts.

    ``recipe`` is a path, a name under ``configs/grpo/`` or a loaded :class:`Recipe` (default:
    the active profile's recipe); ``overrides`` replace recipe keys, like ``--key value``.
    A recipe's ``cpu_threads`` applies to this run only (on a CPU); the previous count is restored.
    """
    import torch
    from accelerate import PartialState

    pinned = pin_one_device(PartialState().num_processes)
    loaded = load_recipe(recipe, overrides)
    if pinned and PartialState().is_main_process:
        print(pinned)
    threads = loaded.parts["run"].cpu_threads
    previous_threads = torch.get_num_threads()
    if threads and not torch.cuda.is_available():
        torch.set_num_threads(int(threads))
    try:
        return _train(loaded, callbacks)
    finally:
        torch.set_num_threads(previous_threads)


def _train(recipe: Recipe, callbacks: Sequence[Any] | None) -> GrpoResult:
    """The run itself, for :func:`run_grpo`."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset

    from psyche_utils.models import load_model_and_tokenizer
    from psyche_utils.notebook import seed_everything

    started = time.perf_counter()
    model_args, run_args, data_args = recipe.parts["model"], recipe.parts["run"], recipe.parts["data"]
    args: GRPOConfig = recipe.trainer
    profile = get_profile(model_args.profile)
    state = PartialState()
    if state.is_main_process:
        print(f"GRPO: {recipe.describe()}")
    check_single_device(args)
    seed_everything(int(args.seed))
    output_dir = Path(args.output_dir)
    peft_config = lora_from(recipe.parts["lora"], profile)
    # Arguments first: under DeepSpeed ZeRO-3 they must exist before the model loads, so that
    # from_pretrained creates the weights already sharded across the processes.
    init_path = resolve_init_path(model_args.init_from, profile)
    model, tokenizer = load_model_and_tokenizer(profile, init_path, for_training=True)
    data = load_grpo_data(data_args, tokenizer)
    over_budget = [item for item in data.exclusions if item.reason == "over token budget"]
    if over_budget and state.is_main_process:
        print(f"Removed {len(over_budget)} of {data.records_read} prompts over max_prompt_tokens "
              f"{data_args.max_prompt_tokens}: {', '.join(f'{item.id} ({item.detail})' for item in over_budget)}")

    reward_names = recipe.parts["rewards"].reward_funcs
    fingerprint = {
        "stage": STAGE,
        "profile": profile.name,
        "init_from": str(init_path) if init_path else "base",
        "train_file_sha256": sha256_file(data.path),
        "records": len(data.records),
        "use_lora": peft_config is not None,
        **{f"hp.{key}": value for key, value in hyperparameters(
            recipe, {"reward_funcs": reward_names, "max_prompt_tokens": data_args.max_prompt_tokens}).items()},
    }
    decision = prepare_output_dir(
        output_dir, fingerprint, resume=run_args.resume,
        allow_changed_hyperparameters=run_args.allow_changed_hyperparameters, state=state,
    )
    checkpoint = decision.checkpoint

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
        reward_funcs=[recorder.wrap(function) for function in reward_functions(reward_names)],
        args=args,
        train_dataset=Dataset.from_list(data.records),
        peft_config=peft_config,
        callbacks=list(callbacks or []),
        recorder=recorder,
    )
    before_train = time.perf_counter()
    with warnings.catch_warnings():
        # TRL 1.16 reads transformers 5's deprecated alias `is_gradient_checkpointing` on every
        # rollout; the value is right, and the warning would repeat in every notebook run.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_time = time.perf_counter() - before_train
    recorder.flush()

    save_trained_model(
        trainer, output_dir, merge_lora=recipe.parts["lora"].merge_lora, merged_dtype=select_precision().dtype
    )
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
        _write_run_files(result, recipe)
        _write_card(result, recipe, profile, data, peft_config is not None, decision)
    state.wait_for_everyone()
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _write_run_files(result: GrpoResult, recipe: Recipe) -> None:
    with (result.output_dir / ROLLOUTS_FILE).open("w", encoding="utf-8") as handle:
        for row in result.rollouts:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "recipe": recipe.given,
        "recipe_source": recipe.shown_source,
        "overrides": list(recipe.overrides),
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


def _write_card(
    result: GrpoResult, recipe: Recipe, profile: Profile, data: GrpoData, use_lora: bool, decision: ResumeDecision
) -> None:
    steps = result.step_metrics()
    outcome = {
        "global_step": result.global_step,
        "resumed_from": result.resumed_from.name if result.resumed_from else None,
        "first_logged_reward": round(steps[0]["reward"], 4) if steps else None,
        "last_logged_reward": round(steps[-1]["reward"], 4) if steps else None,
        "train_time_s": round(result.train_time_s, 1),
        "time_shares": {row["phase"]: row["share"] for row in result.timing_table()},
    }
    over_budget = [item.id for item in data.exclusions if item.reason == "over token budget"]
    beyond_limit = [item.id for item in data.exclusions if item.reason == "beyond max_train_samples"]
    layout = "a merged full model; the LoRA adapter alone is in `adapter/`" if use_lora else "a full model"
    write_model_card(
        result.output_dir,
        title=f"Psyche-R1 tutorial: GRPO model ({profile.name} profile)",
        summary=(
            "GRPO on the challenging questions, starting from the SFT model, with the rewards "
            f"{', '.join(recipe.parts['rewards'].reward_funcs)}. This folder holds {layout}, the log "
            f"`{LOSS_LOG_NAME}`, every scored completion in `{ROLLOUTS_FILE}` and the run summary `{SUMMARY_FILE}`."
        ),
        recipe=recipe,
        data={
            "file": display_path(data.path),
            "sha256": sha256_file(data.path),
            "prompts_read": data.records_read,
            "prompts_trained_on": len(data.records),
            f"removed_over_max_prompt_tokens_{recipe.parts['data'].max_prompt_tokens}": len(over_budget),
            **({"removed_ids": over_budget} if over_budget else {}),
            "left_out_beyond_max_train_samples": len(beyond_limit),
        },
        result=outcome,
        usage=(
            "from psyche_utils.models import load_model_and_tokenizer\n"
            "from psyche_utils.paths import model_dir\n"
            "from psyche_utils.profiles import get_profile\n\n"
            f"profile = get_profile({profile.name!r})\n"
            f"model, tokenizer = load_model_and_tokenizer(profile, model_dir({profile.name!r}, 'grpo'))"
        ),
        resume=decision,
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


def run_or_launch(
    profile: Profile, recipe: str | Path | Recipe | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train from a notebook: in this process, or through ``accelerate launch`` for a multi-process profile.

    Either way the run's summary and rollouts are read back from its output folder, so the
    notebook code after training is the same for one CPU and eight GPUs.
    """
    loaded = load_recipe(recipe or default_recipe(profile.name), overrides)
    if profile.num_processes > 1:
        launch(STAGE, profile.name, loaded.source, loaded.raw)
    else:
        run_grpo(loaded)
    return load_run(Path(loaded.trainer.output_dir))


def _main(argv: Sequence[str]) -> int:
    from accelerate import PartialState

    recipe, rest = split_config_argument(argv)
    result = run_grpo(load_recipe(recipe, argv=rest))
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m psyche_utils.train grpo --config FILE [--key value ...]``."""
    return run_cli(STAGE, list(argv or []), _main)
