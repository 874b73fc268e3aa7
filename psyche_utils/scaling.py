"""Beyond one machine: batch sizes for N nodes x 8 GPUs, and how long a vLLM teacher takes.

Two questions come up before a multi-node run. First, which per-GPU batch and gradient
accumulation keep the model card's effective batch when the number of GPUs changes (the
global batch is what the hyperparameters were tuned for; the per-GPU batch is only a memory
knob). Second, how long generating the data set takes through a vLLM server: replies are
bounded by the server's aggregate decode rate, so the arithmetic is tokens over tokens per second.

``python -m psyche_utils.scaling --nodes 2`` prints both for a given machine count;
``--overrides-for sft`` prints only the trainer flags, which ``scripts/slurm/train_multinode.sbatch``
appends to the recipe.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

#: The model card's SFT batch: 256 sequences per optimizer step (2 per GPU x 8 GPUs x 16).
SFT_GLOBAL_BATCH = 256
SFT_PER_DEVICE = 2
#: The card's GRPO batches (verl): 128 prompts per rollout, 32 per update, 5 completions each.
GRPO_PROMPTS_PER_ROLLOUT = 128
GRPO_PROMPTS_PER_UPDATE = 32
GRPO_NUM_GENERATIONS = 5
GRPO_PER_DEVICE = 20


class ScalingError(ValueError):
    """The requested machine count cannot reproduce the recipe's batch exactly."""


@dataclass(frozen=True)
class BatchPlan:
    """Per-GPU batch and accumulation for one stage on ``world_size`` GPUs."""

    stage: str
    nodes: int
    gpus_per_node: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    global_batch: int
    generation_batch_size: int | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def overrides(self) -> str:
        """Command-line overrides for ``python -m psyche_utils.train`` that set this plan."""
        parts = [
            f"--per_device_train_batch_size {self.per_device_train_batch_size}",
            f"--gradient_accumulation_steps {self.gradient_accumulation_steps}",
        ]
        if self.generation_batch_size is not None:
            parts.append(f"--generation_batch_size {self.generation_batch_size}")
        return " ".join(parts)

    def describe(self) -> str:
        unit = "completions" if self.stage == "grpo" else "sequences"
        return (
            f"{self.stage}: {self.nodes} node(s) x {self.gpus_per_node} GPUs = {self.world_size}; "
            f"{self.per_device_train_batch_size} per GPU x {self.world_size} x {self.gradient_accumulation_steps} "
            f"accumulation = {self.global_batch} {unit} per update"
            + (f"; generation_batch_size {self.generation_batch_size}" if self.generation_batch_size else "")
        )


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, min(value, limit) + 1) if value % d == 0)


def sft_batch_plan(
    nodes: int, gpus_per_node: int = 8, *, global_batch: int = SFT_GLOBAL_BATCH, max_per_device: int = SFT_PER_DEVICE
) -> BatchPlan:
    """Keep ``global_batch`` sequences per update: per-GPU batch up to ``max_per_device``, the rest accumulation."""
    world = nodes * gpus_per_node
    if nodes < 1 or gpus_per_node < 1:
        raise ScalingError(f"need at least one node and one GPU, got {nodes} x {gpus_per_node}")
    if global_batch % world:
        raise ScalingError(f"a global batch of {global_batch} cannot be split evenly over {world} GPUs")
    per_device = _largest_divisor_at_most(global_batch // world, max_per_device)
    accumulation = global_batch // (world * per_device)
    return BatchPlan("sft", nodes, gpus_per_node, per_device, accumulation, per_device * world * accumulation)


def grpo_batch_plan(
    nodes: int,
    gpus_per_node: int = 8,
    *,
    prompts_per_update: int = GRPO_PROMPTS_PER_UPDATE,
    prompts_per_rollout: int = GRPO_PROMPTS_PER_ROLLOUT,
    num_generations: int = GRPO_NUM_GENERATIONS,
    max_per_device: int = GRPO_PER_DEVICE,
) -> BatchPlan:
    """Keep the card's completions per update and per rollout on ``nodes`` x ``gpus_per_node`` GPUs.

    TRL counts ``per_device_train_batch_size`` in completions; one update sees
    ``prompts_per_update x num_generations`` of them, and a rollout generates
    ``prompts_per_rollout x num_generations``, which must be a whole number of micro steps.
    """
    world = nodes * gpus_per_node
    if nodes < 1 or gpus_per_node < 1:
        raise ScalingError(f"need at least one node and one GPU, got {nodes} x {gpus_per_node}")
    per_update = prompts_per_update * num_generations
    generation_batch = prompts_per_rollout * num_generations
    if per_update % world:
        raise ScalingError(
            f"{per_update} completions per update ({prompts_per_update} prompts x {num_generations}) cannot be "
            f"split evenly over {world} GPUs; use a GPU count that divides {per_update}"
        )
    per_device = _largest_divisor_at_most(per_update // world, max_per_device)
    accumulation = per_update // (world * per_device)
    if generation_batch % (per_device * world):
        raise ScalingError(f"generation batch {generation_batch} is not a whole number of {per_device} x {world} micro steps")
    return BatchPlan("grpo", nodes, gpus_per_node, per_device, accumulation, per_update, generation_batch)


@dataclass(frozen=True)
class GenerationEstimate:
    """Wall-clock time to generate ``replies`` replies through one or more vLLM servers."""

    replies: int
    tokens: int
    tokens_per_second: float
    servers: int

    @property
    def seconds(self) -> float:
        return self.tokens / (self.tokens_per_second * self.servers)

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def describe(self) -> str:
        return (
            f"{self.replies:,} replies x {self.tokens // max(self.replies, 1):,} tokens = {self.tokens / 1e6:.1f}M tokens; "
            f"at {self.tokens_per_second:,.0f} tokens/s per server x {self.servers} server(s): {self.hours:.1f} h"
        )


def generation_time(
    questions: int, tokens_per_reply: int, server_tokens_per_second: float, *, replies_per_question: int = 1, servers: int = 1
) -> GenerationEstimate:
    """Decode-bound time for a data-generation stage (prompt prefill is small next to 1-2k-token replies).

    ``server_tokens_per_second`` is the server's aggregate output rate with enough requests in
    flight (``PSYCHE_TEACHER_CONCURRENCY``); measure it on the real server (vLLM logs "Avg
    generation throughput") and put that number in.
    """
    if min(questions, tokens_per_reply, replies_per_question, servers) < 1 or server_tokens_per_second <= 0:
        raise ScalingError("questions, tokens per reply, replies per question, servers and tokens/s must all be positive")
    replies = questions * replies_per_question
    return GenerationEstimate(replies, replies * tokens_per_reply, server_tokens_per_second, servers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--questions", type=int, default=75_000, help="questions to generate replies for")
    parser.add_argument("--tokens-per-reply", type=int, default=1500)
    parser.add_argument("--replies-per-question", type=int, default=1)
    parser.add_argument("--server-tokens-per-second", type=float, default=2500.0, help="measured aggregate decode rate")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument(
        "--overrides-for", choices=["sft", "grpo"], help="print only that stage's command-line overrides (for scripts)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.overrides_for:
            plan_for = sft_batch_plan if args.overrides_for == "sft" else grpo_batch_plan
            print(plan_for(args.nodes, args.gpus_per_node).overrides())
            return 0
        for plan in (sft_batch_plan(args.nodes, args.gpus_per_node), grpo_batch_plan(args.nodes, args.gpus_per_node)):
            print(plan.describe())
            print(f"  overrides: {plan.overrides()}")
        estimate = generation_time(
            args.questions, args.tokens_per_reply, args.server_tokens_per_second,
            replies_per_question=args.replies_per_question, servers=args.servers,
        )
    except ScalingError as error:
        print(f"error: {error}")
        return 2
    print(f"data generation: {estimate.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
