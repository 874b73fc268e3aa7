"""Where does a GRPO step spend its time: sampling completions, scoring them, or updating?

Runs the tiny recipe (configs/grpo/tiny_cpu.yaml) for a few steps from the untrained tiny
model on the shipped seed questions, at several completion lengths. The untrained model rarely
writes an end-of-turn token, so completions run to the length limit and the settings differ
only in how much is generated. For each it prints seconds and shares of

* generation: ``model.generate`` sampling the completions (TRL's ``_generate``),
* scoring: rewards plus the reference model's log-probabilities for the KL term,
* update: the policy's forward and backward pass over prompt + completion, and the optimizer,

and the ratio update / generation. On the tiny model prompts are long (~190 tokens) and
completions short, so the update dominates; as completions grow, generation (one token at a
time) takes over, which is why real runs generate with vLLM.

Run: python benchmarks/grpo_profile.py [--steps 4] [--lengths 32 128 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from psyche_utils.formatting import grpo_record, write_dataset
from psyche_utils.paths import DATA_DIR
from psyche_utils.schema import load_questions
from psyche_utils.train.grpo import run_grpo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        questions, _ = load_questions(DATA_DIR / "seed_questions.jsonl", strict=False)  # skips the planted bad rows
        data = work / "grpo.jsonl"
        write_dataset([grpo_record(q) for q in questions], data, kind="grpo", settings={"benchmark": True})
        rows = []
        for length in args.lengths:
            result = run_grpo(
                "tiny_cpu",
                {
                    "init_from": "base",
                    "train_file": str(data),
                    "output_dir": str(work / f"run-{length}"),
                    "max_steps": args.steps,
                    "max_completion_length": length,
                    "disable_tqdm": True,
                },
            )
            shares = {row["phase"].split(" ")[0]: row for row in result.timing_table()}
            rows.append((length, result, shares))

    print(f"\nGRPO on the tiny model, {args.steps} steps of 4 prompts x 8 completions each")
    print(f"{'max tokens':>10} {'s/step':>7} {'generation':>16} {'scoring':>16} {'update':>16} {'update/gen':>10}")
    for length, result, shares in rows:
        per_step = result.train_time_s / args.steps
        cells = [f"{shares[p]['seconds']:6.1f}s {shares[p]['share']:6.1%}" for p in ("generation", "scoring", "update")]
        ratio = result.update_s / result.generation_s if result.generation_s else float("inf")
        print(f"{length:>10} {per_step:>7.2f} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {ratio:>10.2f}")
    (short, short_result, _), (long, long_result, _) = rows[0], rows[-1]  # shortest and longest
    print(
        f"\n{long} vs {short} tokens: generation x{long_result.generation_s / short_result.generation_s:.2f}, "
        f"update x{long_result.update_s / short_result.update_s:.2f}"
    )


if __name__ == "__main__":
    main()
