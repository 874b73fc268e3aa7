"""Translate the model card's verl GRPO numbers into TRL's ``GRPOConfig``.

Psyche-R1 was trained with verl, whose batch sizes count prompts in some places and responses in
others; TRL counts completions everywhere. Getting this wrong silently changes how many samples
one optimizer update sees, so the translation is code, with every number explained and both
frameworks' divisibility rules checked.

Where the card is silent (rollouts per prompt, scheduler shape, clip ratio ...) the value is verl's
own default or its 7B GRPO example, and the row says so (status "inferred" or "verl default").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: How verl aggregates the token losses -> TRL's ``loss_type``.
LOSS_AGG_TO_TRL = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}


@dataclass(frozen=True)
class VerlGrpoSettings:
    """verl's GRPO settings, with the Psyche-R1 model card's values as defaults."""

    train_batch_size: int = 128  # card: prompts per rollout batch
    ppo_mini_batch_size: int = 32  # card: prompts per optimizer update (global)
    ppo_micro_batch_size_per_gpu: int = 20  # card: responses per forward/backward on one GPU
    kl_loss_coef: float = 0.001  # card
    learning_rate: float = 1e-6  # card
    lr_warmup_steps: int = 10  # card
    total_epochs: int = 2  # card
    n_gpus: int = 8  # card
    seed: int = 42  # card
    rollout_n: int = 5  # inferred: verl's 7B GRPO example, and the divisibility rule below
    max_response_length: int = 1024  # inferred: verl's 7B GRPO example
    temperature: float = 1.0  # verl default rollout temperature
    top_p: float = 1.0  # verl default
    clip_ratio: float = 0.2  # verl default
    ppo_epochs: int = 1  # verl default
    loss_agg_mode: str = "token-mean"  # verl default
    norm_adv_by_std_in_grpo: bool = True  # verl default
    weight_decay: float = 0.01  # verl default for the actor's AdamW
    grad_clip: float = 1.0  # verl default
    entropy_coeff: float = 0.0  # verl default in recent releases


CARD_FIELDS = {
    "train_batch_size",
    "ppo_mini_batch_size",
    "ppo_micro_batch_size_per_gpu",
    "kl_loss_coef",
    "learning_rate",
    "lr_warmup_steps",
    "total_epochs",
    "n_gpus",
    "seed",
}
INFERRED_FIELDS = {
    "rollout_n": "not on the card; verl requires 32*n/8 = 4n responses per GPU to be divisible by the micro "
    "batch 20, so n is a multiple of 5, and verl's own 7B GRPO example uses n=5",
    "max_response_length": "not on the card; verl's 7B GRPO example uses 1024 response tokens",
}


@dataclass(frozen=True)
class MappingRow:
    """One TRL setting, where it comes from, and why it has this value."""

    trl_name: str
    value: Any
    verl_source: str
    status: str  # "card", "inferred", "verl default", "derived" or "TRL safeguard"
    why: str


@dataclass(frozen=True)
class TrlGrpoMapping:
    """The result of :func:`verl_to_trl`: ``GRPOConfig`` keyword arguments plus their story."""

    config: dict[str, Any]
    rows: list[MappingRow]
    completions_per_update: int
    updates_per_rollout_batch: int
    steps_per_generation: int
    settings: VerlGrpoSettings = field(repr=False)

    def table(self) -> list[dict[str, Any]]:
        """Rows for a pandas DataFrame."""
        return [asdict(row) for row in self.rows]


class RecipeError(ValueError):
    """A combination of batch sizes that verl or TRL would reject."""


def _status(settings_field: str) -> str:
    if settings_field in CARD_FIELDS:
        return "card"
    if settings_field in INFERRED_FIELDS:
        return "inferred"
    return "verl default"


def check_verl_batches(settings: VerlGrpoSettings) -> None:
    """verl's own rules: whole updates per rollout batch and whole micro batches per GPU."""
    s = settings
    if s.rollout_n < 2:
        raise RecipeError(f"rollout_n={s.rollout_n}: GRPO compares completions of one prompt, it needs at least 2.")
    if s.train_batch_size % s.ppo_mini_batch_size:
        raise RecipeError(
            f"train_batch_size {s.train_batch_size} is not a multiple of ppo_mini_batch_size {s.ppo_mini_batch_size}: "
            "the last update of every rollout batch would see fewer prompts."
        )
    mini_responses = s.ppo_mini_batch_size * s.rollout_n
    if mini_responses % s.n_gpus:
        raise RecipeError(
            f"ppo_mini_batch_size x rollout_n = {mini_responses} responses do not split evenly over {s.n_gpus} GPUs."
        )
    per_gpu = mini_responses // s.n_gpus
    if per_gpu % s.ppo_micro_batch_size_per_gpu:
        raise RecipeError(
            f"verl scales the mini batch to {s.ppo_mini_batch_size} x {s.rollout_n} / {s.n_gpus} = {per_gpu} responses "
            f"per GPU, which is not divisible by ppo_micro_batch_size_per_gpu={s.ppo_micro_batch_size_per_gpu}."
        )


def check_trl_batches(config: dict[str, Any], num_processes: int) -> int:
    """TRL's rules for a GRPO recipe; returns steps_per_generation.

    The generation batch must hold whole groups (divisible by ``num_generations``) and whole
    micro steps on every process (divisible by ``per_device_train_batch_size x num_processes``).
    A hand-edited recipe is checked here, with the numbers in the message, before TRL starts.
    """
    generations = int(config["num_generations"])
    per_device = int(config["per_device_train_batch_size"])
    if generations < 2:
        raise RecipeError(f"num_generations={generations}: GRPO needs at least 2 completions per prompt.")
    if "generation_batch_size" in config and "steps_per_generation" in config:
        raise RecipeError("Set generation_batch_size or steps_per_generation, not both (TRL refuses both).")
    micro_step = per_device * num_processes
    if "generation_batch_size" in config:
        generation_batch = int(config["generation_batch_size"])
    else:
        steps = config.get("steps_per_generation") or config.get("gradient_accumulation_steps", 1)
        generation_batch = micro_step * int(steps)
    if generation_batch % generations:
        raise RecipeError(
            f"generation batch {generation_batch} is not divisible by num_generations={generations}: "
            "a group of completions would be split."
        )
    if generation_batch % micro_step:
        raise RecipeError(
            f"generation batch {generation_batch} is not a whole number of micro steps of "
            f"{per_device} completions x {num_processes} process(es)."
        )
    return generation_batch // micro_step


def verl_to_trl(
    settings: VerlGrpoSettings | None = None,
    *,
    per_device_train_batch_size: int | None = None,
    **changes: Any,
) -> TrlGrpoMapping:
    """TRL ``GRPOConfig`` values equivalent to a verl GRPO run.

    ``changes`` override fields of :class:`VerlGrpoSettings` (for example ``n_gpus=1`` or
    ``rollout_n=10``). ``per_device_train_batch_size`` is TRL's memory knob: by default it is
    verl's micro batch; a smaller value keeps the completions per optimizer update constant by
    raising ``gradient_accumulation_steps``. Raises :class:`RecipeError` when verl or TRL would
    reject the batch sizes.
    """
    s = replace(settings or VerlGrpoSettings(), **changes)
    check_verl_batches(s)
    if s.loss_agg_mode not in LOSS_AGG_TO_TRL:
        raise RecipeError(f"Unknown verl loss_agg_mode {s.loss_agg_mode!r}; known: {sorted(LOSS_AGG_TO_TRL)}.")

    per_device = per_device_train_batch_size or s.ppo_micro_batch_size_per_gpu
    completions_per_update = s.ppo_mini_batch_size * s.rollout_n
    completions_per_micro_step = per_device * s.n_gpus
    if completions_per_update % completions_per_micro_step:
        raise RecipeError(
            f"{completions_per_update} completions per update cannot be made of micro steps of "
            f"{per_device} x {s.n_gpus} GPUs = {completions_per_micro_step}; choose a per-device batch that divides "
            f"{completions_per_update // s.n_gpus}."
        )
    accumulation = completions_per_update // completions_per_micro_step
    generation_batch = s.train_batch_size * s.rollout_n
    steps_per_generation = generation_batch // completions_per_micro_step
    updates_per_rollout = s.train_batch_size // s.ppo_mini_batch_size

    rows = [
        MappingRow("num_generations", s.rollout_n, "actor_rollout_ref.rollout.n", _status("rollout_n"),
                   INFERRED_FIELDS["rollout_n"] if "rollout_n" not in changes else "samples per prompt, as given"),
        MappingRow("per_device_train_batch_size", per_device, "actor.ppo_micro_batch_size_per_gpu",
                   _status("ppo_micro_batch_size_per_gpu") if per_device_train_batch_size is None else "derived",
                   "completions in one forward/backward on one GPU (a memory knob in both frameworks)"),
        MappingRow("gradient_accumulation_steps", accumulation, "actor.ppo_mini_batch_size", "derived",
                   f"one update sees {s.ppo_mini_batch_size} prompts x {s.rollout_n} = {completions_per_update} "
                   f"completions = {per_device} per GPU x {s.n_gpus} GPUs x {accumulation} accumulation steps"),
        MappingRow("generation_batch_size", generation_batch, "data.train_batch_size", "derived",
                   f"one rollout batch is {s.train_batch_size} prompts x {s.rollout_n} = {generation_batch} completions; "
                   f"TRL splits it into steps_per_generation = {steps_per_generation} micro steps, "
                   f"i.e. {updates_per_rollout} optimizer updates per rollout batch"),
        MappingRow("num_iterations", s.ppo_epochs, "actor.ppo_epochs", _status("ppo_epochs"),
                   "passes over each rollout batch"),
        MappingRow("beta", s.kl_loss_coef, "actor.kl_loss_coef (use_kl_loss, low_var_kl)", _status("kl_loss_coef"),
                   "KL-to-reference weight; TRL's per-token KL is the k3 estimator verl calls low_var_kl"),
        MappingRow("epsilon", s.clip_ratio, "actor.clip_ratio", _status("clip_ratio"), "PPO clip, lower side"),
        MappingRow("epsilon_high", s.clip_ratio, "actor.clip_ratio_high (defaults to clip_ratio)",
                   _status("clip_ratio"), "PPO clip, upper side; set so a TRL default cannot change it"),
        MappingRow("loss_type", LOSS_AGG_TO_TRL[s.loss_agg_mode], f"actor.loss_agg_mode={s.loss_agg_mode}",
                   _status("loss_agg_mode"), "token-mean averages over all tokens of the batch, which is TRL's 'dapo'"),
        MappingRow("scale_rewards", "group" if s.norm_adv_by_std_in_grpo else "none",
                   "algorithm.norm_adv_by_std_in_grpo", _status("norm_adv_by_std_in_grpo"),
                   "divide each advantage by its group's reward std"),
        MappingRow("learning_rate", s.learning_rate, "actor.optim.lr", _status("learning_rate"), "from the card"),
        MappingRow("warmup_steps", s.lr_warmup_steps, "actor.optim.lr_warmup_steps", _status("lr_warmup_steps"),
                   "from the card"),
        MappingRow("lr_scheduler_type", "constant_with_warmup", "actor.optim.warmup_style=constant", "verl default",
                   "the card gives warmup but no decay; verl's default holds the rate constant after warmup"),
        MappingRow("num_train_epochs", s.total_epochs, "trainer.total_epochs", _status("total_epochs"), "from the card"),
        MappingRow("seed", s.seed, "seed", _status("seed"), "from the card"),
        MappingRow("max_completion_length", s.max_response_length, "data.max_response_length",
                   _status("max_response_length"), INFERRED_FIELDS["max_response_length"]),
        MappingRow("temperature", s.temperature, "rollout.temperature", _status("temperature"),
                   "sample at the policy's own distribution during training"),
        MappingRow("top_p", s.top_p, "rollout.top_p", _status("top_p"), "no nucleus truncation during training"),
        MappingRow("weight_decay", s.weight_decay, "actor.optim.weight_decay", _status("weight_decay"),
                   "AdamW weight decay"),
        MappingRow("max_grad_norm", s.grad_clip, "actor.grad_clip", _status("grad_clip"), "gradient clipping"),
        MappingRow("entropy_coef", s.entropy_coeff, "actor.entropy_coeff", _status("entropy_coeff"),
                   "no entropy bonus"),
        MappingRow("use_bias_correction_kl", False, "(verl: plain KL loss)", "verl default",
                   "verl does not weight the KL term by the importance ratio; TRL 1.x does unless told not to"),
        MappingRow("importance_sampling_level", "token", "(verl: token-level ratio)", "verl default",
                   "PPO ratio per token, not per sequence (GSPO)"),
        MappingRow("multi_objective_aggregation", "sum_then_normalize", "(verl: one summed reward)", "verl default",
                   "add the reward functions first, then normalise within the group"),
        MappingRow("mask_truncated_completions", False, "(verl: truncated responses still count)", "verl default",
                   "a completion cut at max length still contributes to the loss"),
    ]
    config = {row.trl_name: row.value for row in rows}
    check_trl_batches(config, num_processes=s.n_gpus)
    return TrlGrpoMapping(
        config=config,
        rows=rows,
        completions_per_update=completions_per_update,
        updates_per_rollout_batch=updates_per_rollout,
        steps_per_generation=steps_per_generation,
        settings=s,
    )
