"""How much does the shared-prompt cache save when a solver scores answer candidates?

``LikelihoodSolver`` compares the log-probability of every allowed answer ("答案：A" ... for a
single choice, the 11 sets of two or more letters for a four-option multiple choice). Three ways
to get one answer per question from the same tiny model, on the shipped question bank:

1. naive: one full forward pass per candidate (prompt + answer), one sequence at a time;
2. ``LikelihoodSolver``: the prompt once per question, batched and left-padded, then only the
   answer tokens of each candidate on top of its cached keys and values;
3. generation: ``ChatSolver`` over ``TransformersBackend`` with a short ``max_new_tokens``, what a
   chat model does when it answers (a random model rarely writes a letter, so this is for speed only).

Prints seconds per question and the ratios, and checks that 1 and 2 pick the same answers.

Run: python benchmarks/cross_selection_scoring.py [--questions 24] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from psyche_utils.llm import GenerationSettings, TransformersBackend
from psyche_utils.paths import DATA_DIR
from psyche_utils.schema import load_questions
from psyche_utils.selection import ChatSolver, LikelihoodSolver, answer_candidates
from psyche_utils.tiny import load_tiny


def naive_answers(model, solver: LikelihoodSolver, questions) -> list[str]:
    """Score every candidate with its own unpadded, uncached forward pass."""
    answers = []
    for question in questions:
        prompt, continuations = solver.encode(question)
        scores = []
        for tokens in continuations:
            with torch.inference_mode():
                logprobs = model(input_ids=torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
            scores.append(sum(logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(tokens)))
        answers.append(answer_candidates(question)[scores.index(max(scores))])
    return answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()

    bank, _ = load_questions(DATA_DIR / "seed_questions.jsonl", strict=False)
    questions = bank[: args.questions]
    model, tokenizer = load_tiny(seed=1)
    solver = LikelihoodSolver(model, tokenizer, "tiny-seed1", progress=False)
    candidates = sum(len(answer_candidates(q)) for q in questions)
    print(f"{len(questions)} questions, {candidates} answer candidates, {torch.get_num_threads()} threads")

    started = time.perf_counter()
    naive = naive_answers(model, solver, questions)
    naive_s = time.perf_counter() - started

    started = time.perf_counter()
    cached = [reply.removeprefix("答案：") for reply in solver.solve(questions, GenerationSettings())]
    cached_s = time.perf_counter() - started

    chat = ChatSolver(TransformersBackend(model, tokenizer, "tiny-seed1", batch_size=16, progress=False))
    started = time.perf_counter()
    chat.solve(questions, GenerationSettings(max_new_tokens=args.new_tokens))
    generate_s = time.perf_counter() - started

    per_question = {"naive per-candidate": naive_s, "LikelihoodSolver": cached_s, f"generate {args.new_tokens} tokens": generate_s}
    for name, seconds in per_question.items():
        print(f"{name:>22}: {seconds / len(questions) * 1000:7.1f} ms/question")
    print(f"naive / LikelihoodSolver: {naive_s / cached_s:.1f}x")
    print(f"generation / LikelihoodSolver: {generate_s / cached_s:.1f}x")
    agree = sum(a == b for a, b in zip(naive, cached))
    print(f"same answer as the naive scoring: {agree}/{len(questions)}")
    if agree != len(questions):
        raise SystemExit("the cached scoring disagrees with the naive scoring")


if __name__ == "__main__":
    main()
