"""Items per second when evaluating in batches versus one question at a time (tiny model, CPU).

Batching pays because one forward pass over a padded batch costs little more than one over a
single prompt; the runner also sorts prompts by length so batches carry little padding.

    python benchmarks/eval_batching.py [--items 32] [--max-new-tokens 32] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from psyche_utils.evaluation import load_pceb  # noqa: E402
from psyche_utils.evaluation.prompts import choice_prompt  # noqa: E402
from psyche_utils.llm import GenerationSettings, TransformersBackend, generation_preset  # noqa: E402
from psyche_utils.notebook import seed_everything  # noqa: E402
from psyche_utils.paths import EVAL_DATA_DIR  # noqa: E402
from psyche_utils.tiny import load_tiny  # noqa: E402


def items_per_second(backend: TransformersBackend, prompts: list, settings: GenerationSettings, repeats: int) -> float:
    """Best of ``repeats`` timed runs (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        backend.generate(prompts, settings)
        best = min(best, time.perf_counter() - start)
    return len(prompts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    seed_everything(0)
    model, tokenizer = load_tiny()
    choice_items = [item for item in load_pceb(EVAL_DATA_DIR / "pceb") if item.question_type != "essay"]
    prompts = [choice_prompt(item) for item in choice_items[: args.items]]
    settings = generation_preset("greedy", max_new_tokens=args.max_new_tokens)

    batched = TransformersBackend(model, tokenizer, "tiny", batch_size=args.batch_size, progress=False)
    single = TransformersBackend(model, tokenizer, "tiny", batch_size=1, progress=False)
    batched.generate(prompts[:2], settings)  # warm-up: first-call allocations
    if batched.generate(prompts, settings) != single.generate(prompts, settings):
        print("note: batched and one-at-a-time greedy replies differ (padding changes float rounding)")

    fast = items_per_second(batched, prompts, settings, args.repeats)
    slow = items_per_second(single, prompts, settings, args.repeats)
    print(f"{len(prompts)} PCEB prompts, decoding preset {settings.label}, tiny model on CPU")
    print(f"batched (batch {args.batch_size}): {fast:.2f} items/s")
    print(f"one at a time:        {slow:.2f} items/s")
    print(f"ratio batched / one-at-a-time: {fast / slow:.2f}x")


if __name__ == "__main__":
    main()
