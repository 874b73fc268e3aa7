"""Benchmark items as the chat prompts the model is evaluated with.

Evaluation must ask in the same words the model was trained with, so every prompt is built from
``psyche_utils.prompts``: the model's own system prompts and think instruction, and the same
choice-question layout. Case questions (PCEB case choice and essays) get the case system prompt
and the case text in front of the question.
"""

from __future__ import annotations

from collections.abc import Sequence

from psyche_utils.evaluation.loaders import DialogueSample, EvalItem
from psyche_utils.llm import Messages
from psyche_utils.prompts import THINK_INSTRUCTION, build_messages, format_choice_question, format_reasoned_reply

ESSAY_HINT = "（案例问答题：请结合案例，分点作答。）"


def _with_case(item: EvalItem, question_text: str) -> str:
    if not item.context:
        return question_text
    return f"案例信息：\n{item.context}\n\n问题：\n{question_text}"


def choice_text(item: EvalItem) -> str:
    """The user text of a choice question (without the think instruction)."""
    return _with_case(item, format_choice_question(item.question, item.options, item.question_type))


def choice_prompt(item: EvalItem, shots: Sequence[EvalItem] = ()) -> Messages:
    """The prompt for one choice question, optionally after worked examples (few-shot).

    Each shot is a finished exchange in the model's own format: the question with the think
    instruction, then a reply whose think block holds the explanation and whose answer line
    gives the letters.
    """
    history: list[dict[str, str]] = []
    for shot in shots:
        history.append({"role": "user", "content": f"{THINK_INSTRUCTION}\n{choice_text(shot)}"})
        reasoning = shot.explanation or "根据题干和各选项逐一分析。"
        history.append({"role": "assistant", "content": format_reasoned_reply(reasoning, f"答案：{shot.answer}")})
    return build_messages(choice_text(item), case=bool(item.context), history=history)


def few_shot_examples(pool: Sequence[EvalItem], item: EvalItem, k: int = 5) -> list[EvalItem]:
    """``k`` training items of the same question type, same subject first, in a fixed order.

    A pool item with the same question text as ``item`` is never used (no answer leakage).
    """
    if k <= 0:
        return []
    candidates = [s for s in pool if s.question_type == item.question_type and s.question != item.question and s.answer]
    candidates.sort(key=lambda s: (s.subject != item.subject, s.task, s.id))
    if len(candidates) < k:
        raise ValueError(f"only {len(candidates)} {item.question_type} examples in the few-shot pool, {k} requested")
    return candidates[:k]


def essay_prompt(item: EvalItem) -> Messages:
    """The prompt for one PCEB case essay question."""
    return build_messages(_with_case(item, f"{item.question}\n{ESSAY_HINT}"), case=True)


def dialogue_prompt(sample: DialogueSample) -> Messages:
    """The prompt for one PsyDT turn: the conversation so far, then the help-seeker's message.

    The dataset's own system prompt is replaced by the model's general one, so the model is
    evaluated as it would be deployed.
    """
    return build_messages(sample.user, history=sample.history)
