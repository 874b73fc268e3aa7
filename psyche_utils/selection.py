"""Multi-LLM cross-selection (the paper's step 5): which questions are hard enough for GRPO.

A panel of different models answers every question. If at least one of them gets it right,
the question is learnable by imitation and goes to the SFT pool; if all of them get it wrong,
it is "challenging" and goes to the GRPO pool, where the model must find the answer by
exploring. Models from different families (the paper's figure shows Microsoft, Meta and
Alibaba ones) fail on different questions, which is why a panel beats any single judge.

The rule's threshold is a parameter (``min_correct``; the paper's rule is 1), and every
question keeps a record of what each solver answered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from psyche_utils.answers import extract_answer
from psyche_utils.formatting import question_messages
from psyche_utils.llm import ChatBackend, GenerationSettings, OpenAICompatibleBackend
from psyche_utils.schema import Question

SOLVERS_ENV_VAR = "PSYCHE_SOLVER_URLS"
SOLVER_KEY_ENV_VAR = "PSYCHE_SOLVER_KEY"


@dataclass(frozen=True)
class SelectionRecord:
    """One question's verdict: each solver's answer, how many were right, and the pool."""

    question_id: str
    gold: str
    predictions: dict[str, str]
    n_correct: int
    pool: str


def assign_pool(n_correct: int, min_correct: int = 1) -> str:
    """The paper's rule: at least ``min_correct`` correct solvers -> "sft", otherwise "grpo"."""
    return "sft" if n_correct >= min_correct else "grpo"


def cross_select(
    questions: Sequence[Question],
    solvers: Sequence[ChatBackend],
    *,
    settings: GenerationSettings | None = None,
    min_correct: int = 1,
) -> list[SelectionRecord]:
    """Every solver answers every question (one batched call per solver); split by the rule.

    Solvers see the same prompt the model is trained and evaluated with, and are scored with
    the same strict rule (the exact option set after ``</think>``).
    """
    if not solvers:
        raise ValueError("cross-selection needs at least one solver")
    names = [solver.name for solver in solvers]
    if len(set(names)) != len(names):
        raise ValueError(f"solver names must be unique, got {names}")
    if not 1 <= min_correct <= len(solvers):
        raise ValueError(f"min_correct must be between 1 and the number of solvers ({len(solvers)}), got {min_correct}")
    settings = settings or GenerationSettings()
    prompts = [question_messages(q) for q in questions]
    answers = {solver.name: [extract_answer(reply) for reply in solver.generate(prompts, settings)] for solver in solvers}
    records = []
    for index, question in enumerate(questions):
        predictions = {name: answers[name][index] for name in names}
        n_correct = sum(predicted == question.answer for predicted in predictions.values())
        records.append(
            SelectionRecord(question.id, question.answer, predictions, n_correct, assign_pool(n_correct, min_correct))
        )
    return records


def resplit(records: Sequence[SelectionRecord], min_correct: int) -> list[SelectionRecord]:
    """The same answers under another threshold (no solver is asked again)."""
    return [
        SelectionRecord(r.question_id, r.gold, r.predictions, r.n_correct, assign_pool(r.n_correct, min_correct))
        for r in records
    ]


def pool_ids(records: Sequence[SelectionRecord], pool: str) -> list[str]:
    """Question ids in one pool ("sft" or "grpo"), in input order."""
    if pool not in {"sft", "grpo"}:
        raise ValueError(f"pool must be 'sft' or 'grpo', got {pool!r}")
    return [record.question_id for record in records if record.pool == pool]


def solver_accuracy(records: Sequence[SelectionRecord]) -> dict[str, float]:
    """Each solver's strict accuracy over the questions."""
    if not records:
        return {}
    names = list(records[0].predictions)
    return {name: sum(r.predictions[name] == r.gold for r in records) / len(records) for name in names}


def solvers_from_env(var: str = SOLVERS_ENV_VAR, key_var: str = SOLVER_KEY_ENV_VAR) -> list[OpenAICompatibleBackend]:
    """The solver panel the environment describes; [] when ``var`` is unset.

    Format: comma-separated ``MODEL@BASE_URL`` entries, for example
    ``Qwen/Qwen2.5-7B-Instruct@http://gpu1:8000/v1,microsoft/phi-4@http://gpu2:8000/v1``.
    One API key (``key_var``) is used for all of them.
    """
    value = os.environ.get(var, "").strip()
    if not value:
        return []
    solvers = []
    for position, entry in enumerate(value.split(","), start=1):
        model, at, url = entry.strip().partition("@")
        if not at or not model.strip() or not url.strip():
            raise ValueError(f"{var} entry {position} ({entry.strip()!r}) must look like MODEL@BASE_URL")
        solvers.append(
            OpenAICompatibleBackend(url.strip(), model.strip(), api_key=os.environ.get(key_var, "EMPTY"))
        )
    return solvers
