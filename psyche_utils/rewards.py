"""Reward functions for GRPO on multiple-choice psychology questions.

GRPO learns only from differences between completions of the same prompt, so a reward has to be
cheap, deterministic and hard to game. Psyche-R1's reward is reported as "format + correctness":

- ``format_reward``: 1.0 when ``psyche_utils.answers.is_well_formed`` accepts the reply (exactly
  one non-empty ``<think>`` block at the start, then a non-empty answer), else 0.0. The same
  function checks the SFT data, so both stages agree on the format; it is also what a model that
  has never been trained can still vary on.
- ``accuracy_reward``: 1.0 when the option set after ``</think>`` equals the gold set (PCEB's
  strict rule), else 0.0.
- ``elastic_accuracy_reward``: PCEB's partial-credit rule, for ablations: a proper subset of the
  gold set earns ``|pred| / |gold|``, any wrong option earns 0.

Every function follows TRL's calling convention: ``completions`` is a list of strings (plain
prompts) or of message lists (conversational prompts); dataset columns arrive as keyword
arguments with one value per completion (``answer``, ``id`` ...); one float comes back per
completion.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from psyche_utils.answers import OPTION_LETTERS, extract_answer, is_well_formed, normalize_letters

__all__ = [
    "REWARD_FUNCTIONS",
    "accuracy_reward",
    "completion_text",
    "elastic_accuracy_reward",
    "elastic_score",
    "extract_answer",
    "format_reward",
    "is_well_formed",
    "reward_functions",
]

def completion_text(completion: str | Sequence[dict[str, str]]) -> str:
    """The generated text of one completion, plain or conversational.

    TRL hands a conversational completion over as ``[{"role": "assistant", "content": ...}]``.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(turn, dict) for turn in completion):
        return "".join(str(turn.get("content", "")) for turn in completion if turn.get("role") == "assistant")
    raise TypeError(f"A completion must be a string or a list of message dicts, got {type(completion).__name__}")


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for a reply ``is_well_formed`` accepts, else 0.0."""
    return [1.0 if is_well_formed(completion_text(completion)) else 0.0 for completion in completions]


def _gold_answers(completions: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
    """The gold option sets, checked: a reward must never silently score against a broken label."""
    if "answer" not in kwargs:
        raise KeyError(
            "The reward needs the gold answers: the GRPO dataset must have an 'answer' column "
            "(outputs/data/grpo.jsonl, written by notebook 02)."
        )
    answers = list(kwargs["answer"])
    if len(answers) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(answers)} gold answers.")
    ids = kwargs.get("id") or [None] * len(answers)
    gold: list[str] = []
    for index, (raw, record_id) in enumerate(zip(answers, ids, strict=True)):
        folded = unicodedata.normalize("NFKC", str(raw or "")).upper()
        letters = normalize_letters(folded)
        stray = set(re.findall(r"[A-Z]", folded)) - set(OPTION_LETTERS)
        if not letters or stray:
            where = f"record id {record_id!r}" if record_id is not None else f"completion {index}"
            raise ValueError(
                f"Gold answer {raw!r} for {where} (field 'answer') is not a set of option letters "
                f"{OPTION_LETTERS}; fix the record in the GRPO data."
            )
        gold.append(letters)
    return gold


def accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the extracted option set equals the gold set exactly, else 0.0."""
    gold = _gold_answers(completions, kwargs)
    return [
        1.0 if extract_answer(completion_text(completion)) == answer else 0.0
        for completion, answer in zip(completions, gold, strict=True)
    ]


def elastic_score(predicted: str, gold: str) -> float:
    """PCEB's elastic accuracy for one item: 1 exact, |pred|/|gold| for a proper subset, else 0."""
    pred, want = set(normalize_letters(predicted)), set(normalize_letters(gold))
    if not pred or not want or not pred <= want:
        return 0.0
    return len(pred) / len(want)


def elastic_accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Partial credit for an incomplete but correct option set (PCEB's elastic rule)."""
    gold = _gold_answers(completions, kwargs)
    return [
        elastic_score(extract_answer(completion_text(completion)), answer)
        for completion, answer in zip(completions, gold, strict=True)
    ]


REWARD_FUNCTIONS = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "elastic_accuracy": elastic_accuracy_reward,
}


def reward_functions(names: Sequence[str]) -> list:
    """Look reward functions up by the short names a recipe uses."""
    unknown = [name for name in names if name not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"Unknown reward(s) {unknown}; choose from {sorted(REWARD_FUNCTIONS)}.")
    return [REWARD_FUNCTIONS[name] for name in names]
