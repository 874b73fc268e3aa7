"""Tiny SFT with and without packing: wall time and real tokens per second.

Both runs train the tiny recipe for the same number of epochs over the same records, so they
process the same real (non-padding) tokens; packing only changes how those tokens are laid out.
Without packing, each batch is padded to its longest example; with packing (TRL's best-fit
decreasing, padding-free), examples are placed end to end in rows of ``max_length`` tokens and
position ids restart at each example so that no example attends to another.

    python benchmarks/sft_packing.py [--epochs 2] [--repeats 2] [--train-file outputs/data/sft.jsonl]

Prints a table and the packed / unpacked ratios. Timing is wall clock on this machine: run it on
an otherwise idle machine, and compare ratios rather than absolute numbers. Each setting runs
``--repeats`` times, alternating, and the fastest run counts (the least disturbed one).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from psyche_utils.paths import outputs_dir, outputs_path
from psyche_utils.train.sft import load_recipe, run_sft


def run_once(packing: bool, epochs: float, train_file: Path) -> dict[str, float]:
    """Train the tiny recipe once and return its timing and token counts."""
    output_dir = outputs_dir() / "benchmarks" / "sft_packing" / ("packed" if packing else "padded")
    started = time.perf_counter()
    run = run_sft(
        "tiny_cpu",
        {
            "packing": packing,
            "max_steps": -1,
            "num_train_epochs": epochs,
            "train_file": str(train_file),
            "output_dir": str(output_dir),
            "resume": False,
            "save_strategy": "no",
            "logging_steps": 1,
            "disable_tqdm": True,
        },
    )
    return {
        "packing": packing,
        "updates": run.global_step,
        "train_s": round(run.train_runtime, 2),
        "wall_s_incl_load_and_save": round(time.perf_counter() - started, 2),
        "real_tokens": run.train_tokens,
        "tokens_per_s": round(run.tokens_per_second, 1),
        "final_loss": round(run.final_loss, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-file", type=Path, default=outputs_path("data", "sft.jsonl"))
    args = parser.parse_args()

    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for packing in (False, True):
            runs[packing].append(run_once(packing, args.epochs, args.train_file))
    rows = [min(runs[packing], key=lambda row: row["train_s"]) for packing in (False, True)]
    padded, packed = rows
    run_args = load_recipe("tiny_cpu").parts["run"]
    threads = run_args.cpu_threads or torch.get_num_threads()
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), training threads {threads}, "
          f"load average {os.getloadavg()[0]:.2f}, fastest of {args.repeats} run(s) each")
    header = list(padded)
    print(" | ".join(f"{name:>24}" for name in header))
    for row in rows:
        print(" | ".join(f"{str(row[name]):>24}" for name in header))
    print()
    print(f"same real tokens in both runs: {padded['real_tokens'] == packed['real_tokens']} "
          f"({padded['real_tokens']:,} vs {packed['real_tokens']:,})")
    print(f"updates             packed / padded = {packed['updates'] / padded['updates']:.2f}")
    print(f"training time       packed / padded = {packed['train_s'] / padded['train_s']:.2f}")
    print(f"tokens per second   packed / padded = {packed['tokens_per_s'] / padded['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
