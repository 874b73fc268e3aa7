"""Multi-LLM cross-selection (the paper's step 5): which questions are hard enough for GRPO.

A panel of different models answers every question. If at least one of them gets it right,
the question is learnable by imitation and goes to the SFT pool; if all of them get it wrong,
it is "challenging" and goes to the GRPO pool, where the model must find the answer by
exploring. Models from different families (the paper's figure shows Microsoft, Meta and
Alibaba ones) fail on different questions, which is why a panel beats any single judge.

The rule's threshold is a parameter (``min_correct``; the paper's rule is 1), and every
question keeps a record of what each solver answered.

A solver is anything with ``solve(questions, settings) -> replies``. A chat model answers by
generating (``ChatSolver``, the paper's setting). ``LikelihoodSolver`` answers without
generating: it asks which answer string ("答案：A", "答案：AC", ...) the model finds most
probable after the prompt, the cheap zero-shot scoring many benchmark harnesses use. On the
tiny random-weight models it turns each one into a seeded random guesser; on a real model it
is a fast first pass (it measures knowledge, not reasoning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol

import torch
from psyche_utils.progress import progress

from psyche_utils.answers import extract_answer
from psyche_utils.formatting import final_answer_text, question_messages
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


class Solver(Protocol):
    """Answers questions; replies are read with the same extractor as the evaluation."""

    name: str

    def solve(self, questions: Sequence[Question], settings: GenerationSettings) -> list[str]: ...


class ChatSolver:
    """A chat model as a solver: it reads the training prompt and generates its answer."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend
        self.name = backend.name

    def solve(self, questions: Sequence[Question], settings: GenerationSettings) -> list[str]:
        return self.backend.generate([question_messages(q) for q in questions], settings)


#: What the scored continuation is appended to: an empty think block, then the answer marker.
SCORING_SCAFFOLD = "<think>\n\n</think>\n\n"


def answer_candidates(question: Question) -> list[str]:
    """Every answer a question allows: one letter (single) or any two or more letters (multi)."""
    letters = sorted(letter for letter, text in question.options.items() if text and text.strip())
    if question.question_type == "single":
        return letters
    return ["".join(combo) for size in range(2, len(letters) + 1) for combo in combinations(letters, size)]


class LikelihoodSolver:
    """Picks the answer string the model assigns the highest log-probability after the prompt.

    Each candidate is the conversation (chat template + scaffold) followed by "答案：<letters>".
    All candidates of a question share the prompt, so the prompt runs through the model once
    (batched over questions, left-padded) and only the few answer tokens of each candidate
    are run on top of its cached keys and values.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 16, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.progress = progress

    def encode(self, question: Question) -> tuple[list[int], list[list[int]]]:
        """The shared prompt tokens and, per candidate, the answer tokens that follow them.

        Byte-level BPE may merge the answer marker with the first letter, so the split point
        is where the candidates' token sequences first differ from the prompt's.
        """
        prompt = self.tokenizer.apply_chat_template(
            question_messages(question), tokenize=False, add_generation_prompt=True
        ) + SCORING_SCAFFOLD
        alone = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(
            [prompt + final_answer_text(c) for c in answer_candidates(question)], add_special_tokens=False
        )["input_ids"]
        shared = max(1, min(_common_prefix(alone, ids) for ids in full))
        return full[0][:shared], [ids[shared:] for ids in full]

    def score(self, encoded: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Log-probability of each candidate's answer tokens given its prompt, per question."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        scores: list[list[float]] = [[] for _ in encoded]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in progress(batches, desc=f"score ({self.name})", show=self.progress):
            for i, values in zip(batch, self._score_batch([encoded[i] for i in batch])):
                scores[i] = values
        return scores

    def _score_batch(self, items: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        width = max(len(prompt) for prompt, _ in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (prompt, _) in enumerate(items):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                use_cache=True,
                logits_to_keep=1,
            )
            first = out.logits[:, -1].float().log_softmax(-1).cpu()
            owners = [row for row, (_, answers) in enumerate(items) for _ in answers]
            answers = [answer for _, item_answers in items for answer in item_answers]
            scores = [first[row, answer[0]].item() for row, answer in zip(owners, answers)]
            rest = max(len(answer) for answer in answers) - 1
            if rest > 0:
                tail = torch.full((len(answers), rest), pad, dtype=torch.long)
                tail_mask = torch.zeros((len(answers), rest), dtype=torch.long)
                for row, answer in enumerate(answers):
                    tail[row, : len(answer) - 1] = torch.tensor(answer[:-1])
                    tail_mask[row, : len(answer) - 1] = 1
                lengths = mask.sum(-1)[owners]
                cache = out.cache
                cache.batch_select_indices(torch.tensor(owners, device=device))
                logits = self.model(
                    input_ids=tail.to(device),
                    attention_mask=torch.cat([mask[owners], tail_mask], dim=-1).to(device),
                    position_ids=(lengths.unsqueeze(-1) + torch.arange(rest)).to(device),
                    cache=cache,
                ).logits.float().log_softmax(-1).cpu()
                for row, answer in enumerate(answers):
                    targets = torch.tensor(answer[1:])
                    scores[row] += logits[row, : len(targets)].gather(-1, targets.unsqueeze(-1)).sum().item()
        grouped, position = [], 0
        for _, item_answers in items:
            grouped.append(scores[position : position + len(item_answers)])
            position += len(item_answers)
        return grouped

    def solve(self, questions: Sequence[Question], settings: GenerationSettings) -> list[str]:
        """One reply per question: "答案：" and the best-scoring letters (settings are unused)."""
        scores = self.score([self.encode(question) for question in questions])
        replies = []
        for question, values in zip(questions, scores):
            candidates = answer_candidates(question)
            replies.append(final_answer_text(candidates[values.index(max(values))]))
        return replies


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def as_solver(solver: Solver | ChatBackend) -> Solver:
    """A solver as is, or a chat backend wrapped so that it generates its answers."""
    return solver if hasattr(solver, "solve") else ChatSolver(solver)


def assign_pool(n_correct: int, min_correct: int = 1) -> str:
    """The paper's rule: at least ``min_correct`` correct solvers -> "sft", otherwise "grpo"."""
    return "sft" if n_correct >= min_correct else "grpo"


def cross_select(
    questions: Sequence[Question],
    solvers: Sequence[Solver | ChatBackend],
    *,
    settings: GenerationSettings | None = None,
    min_correct: int = 1,
) -> list[SelectionRecord]:
    """Every solver answers every question (one batched call per solver); split by the rule.

    Chat solvers see the same prompt the model is trained and evaluated with, and every reply
    is scored with the same strict rule (the exact option set after ``</think>``).
    """
    solvers = [as_solver(solver) for solver in solvers]
    if not solvers:
        raise ValueError("cross-selection needs at least one solver")
    names = [solver.name for solver in solvers]
    if len(set(names)) != len(names):
        raise ValueError(f"solver names must be unique, got {names}")
    if not 1 <= min_correct <= len(solvers):
        raise ValueError(f"min_correct must be between 1 and the number of solvers ({len(solvers)}), got {min_correct}")
    settings = settings or GenerationSettings()
    answers = {solver.name: [extract_answer(reply) for reply in solver.solve(questions, settings)] for solver in solvers}
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


def guesser_expectation(questions: Sequence[Question], n_solvers: int) -> tuple[float, float]:
    """Mean and standard deviation of the SFT pool size for ``n_solvers`` independent uniform guessers.

    A question with ``k`` allowed answers (``answer_candidates``) is solved by at least one guesser
    with probability ``p = 1 - (1 - 1/k) ** n_solvers``; the pool size is a sum of independent
    Bernoulli(p) draws, so its mean is ``sum p`` and its variance ``sum p (1 - p)``. A measured
    pool more than two standard deviations away says the solvers are not independent uniform guessers.
    """
    if n_solvers < 1:
        raise ValueError(f"n_solvers must be at least 1, got {n_solvers}")
    chances = [1 - (1 - 1 / len(answer_candidates(q))) ** n_solvers for q in questions]
    return sum(chances), sum(p * (1 - p) for p in chances) ** 0.5
