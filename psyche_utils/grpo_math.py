"""The arithmetic of one GRPO step, small enough to check by hand.

GRPO replaces PPO's learned value function with a comparison inside a group: sample G
completions of the same prompt, score them, and use each score's distance from the group mean
(divided by the group's standard deviation) as the advantage of every token of that completion.
These functions compute exactly what TRL's ``GRPOTrainer`` computes (sample standard deviation
with Bessel's correction, plus 1e-4 in the denominator), in plain Python so a notebook can show
every number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

STD_EPSILON = 1e-4  # TRL adds this to the group std so a zero-variance group cannot divide by 0


def group_advantages(
    rewards: Sequence[float], num_generations: int, *, scale_rewards: str = "group"
) -> list[float]:
    """Advantage of every completion: reward minus its group's mean, optionally over the group std.

    ``rewards`` holds consecutive groups of ``num_generations`` completions of one prompt each.
    ``scale_rewards`` is TRL's option: "group" divides by each group's std (verl's
    ``norm_adv_by_std_in_grpo=True``), "batch" by the std of all rewards, "none" not at all
    (Dr. GRPO). A group whose rewards are all equal gets advantage 0 everywhere: no signal.
    """
    if num_generations < 2:
        raise ValueError("GRPO needs at least 2 completions per prompt to compare them.")
    if len(rewards) % num_generations:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {num_generations}.")
    if scale_rewards not in {"group", "batch", "none"}:
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    batch_std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    advantages: list[float] = []
    for start in range(0, len(rewards), num_generations):
        group = list(rewards[start : start + num_generations])
        mean = statistics.fmean(group)
        std = {"group": statistics.stdev(group), "batch": batch_std, "none": None}[scale_rewards]
        advantages += [(r - mean) / (std + STD_EPSILON) if std is not None else r - mean for r in group]
    return advantages


def clipped_token_loss(ratio: float, advantage: float, epsilon_low: float = 0.2, epsilon_high: float = 0.2) -> float:
    """PPO's clipped surrogate for one token, as a loss (to be minimised).

    ``ratio`` is pi_new(token) / pi_old(token). Taking the smaller of the clipped and unclipped
    terms means a step never gains by moving the ratio outside [1 - eps_low, 1 + eps_high].
    """
    clipped = min(max(ratio, 1.0 - epsilon_low), 1.0 + epsilon_high)
    return -min(ratio * advantage, clipped * advantage)


def k3_kl(logprob: float, ref_logprob: float) -> float:
    """Per-token KL estimate to the reference model (Schulman's k3, verl's ``low_var_kl``).

    exp(ref - logp) - (ref - logp) - 1: never negative, zero when the two models agree, and
    unbiased for KL(pi || pi_ref) when the token was sampled from pi.
    """
    delta = ref_logprob - logprob
    return math.exp(delta) - delta - 1.0


@dataclass(frozen=True)
class WorkedCompletion:
    """One row of the worked example."""

    prompt: str
    completion: str
    format_reward: float
    accuracy_reward: float
    total_reward: float
    advantage: float


def worked_example(
    groups: dict[str, list[tuple[str, float, float]]], *, scale_rewards: str = "group"
) -> list[WorkedCompletion]:
    """Score a few groups the way GRPO does: total reward, then group-normalised advantage.

    ``groups`` maps a prompt to its completions as (text, format reward, accuracy reward).
    """
    sizes = {len(items) for items in groups.values()}
    if len(sizes) != 1:
        raise ValueError(f"Every prompt needs the same number of completions, got sizes {sorted(sizes)}.")
    num_generations = sizes.pop()
    flat = [(prompt, *item) for prompt, items in groups.items() for item in items]
    totals = [fmt + acc for _, _, fmt, acc in flat]
    advantages = group_advantages(totals, num_generations, scale_rewards=scale_rewards)
    return [
        WorkedCompletion(prompt, text, fmt, acc, total, adv)
        for (prompt, text, fmt, acc), total, adv in zip(flat, totals, advantages, strict=True)
    ]
