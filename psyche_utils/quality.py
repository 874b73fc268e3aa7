"""The quality filter: cheap structural checks first, then an LLM judge scoring against a rubric.

The paper filters generated questions with an LLM before human review. A judge call costs money,
so questions that are broken in a way a rule can see (two identical options, three options, a
stem too short to be a question) are rejected before the judge is asked. Every question leaves
with a decision and the reason for it, so the review step (and the learner) can see why.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from psyche_utils.answers import split_reasoning
from psyche_utils.dedup import normalize_for_matching
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.prompts import format_choice_question
from psyche_utils.schema import Question

# --------------------------------------------------------------------------- structural checks


def _option_key(text: str) -> str:
    """Options compared for sameness: width and case folded, spaces dropped ("-2" stays unlike "2")."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


def structural_problems(question: Question, *, expected_options: int = 4, min_stem_chars: int = 4) -> list[str]:
    """Problems a rule can see without understanding psychology; an empty list means none.

    "Every option correct" is not a problem: exam banks have real ABCD multiple-answer items.
    """
    problems = []
    if len(question.options) != expected_options:
        problems.append(f"has {len(question.options)} options, expected {expected_options}")
    texts = [_option_key(text) for text in question.options.values()]
    repeated = sorted(letter for letter, text in zip(question.options, texts) if texts.count(text) > 1)
    if repeated:
        problems.append(f"options {', '.join(repeated)} say the same thing")
    if len(normalize_for_matching(question.question)) < min_stem_chars:
        problems.append(f"stem shorter than {min_stem_chars} characters")
    if not question.explanation.strip():
        problems.append("no explanation")
    return problems


# --------------------------------------------------------------------------- the LLM judge

RUBRIC = (
    "1. 答案正确：标准答案符合心理学教材的公认观点，且是唯一正确（多选题为全部正确）的选项组合；\n"
    "2. 题干清楚：没有歧义，不需要猜测出题人的意图；\n"
    "3. 干扰项合理：错误选项似是而非，不能一眼排除；\n"
    "4. 考查专业知识：考查心理学概念、理论或其在案例中的应用，而不是常识；\n"
    "5. 解析一致：解析与标准答案一致，并说明了理由。"
)
JUDGE_SYSTEM_PROMPT = "你是一名严谨的心理学考试审题专家，负责评估选择题的质量。"


def rubric_prompt(question: Question) -> Messages:
    """The judge's prompt: the question with its gold answer and explanation, the rubric, a JSON reply."""
    body = format_choice_question(question.question, question.options, question.question_type)
    user = (
        f"请根据以下五条标准评估这道题的质量：\n{RUBRIC}\n\n"
        f"【题目】\n{body}\n【标准答案】{question.answer}\n【解析】{question.explanation or '（无）'}\n\n"
        '请给出1到5分的整数总评分（5分最好，3分及以上表示可以使用），只输出JSON：{"score": 分数, "reason": "一句话理由"}'
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


_SCORE_PATTERNS = (
    re.compile(r'"score"\s*:\s*"?([1-5])(?![\d.])'),
    re.compile(r"(?:评分|分数|总分|得分|score)\s*[:：为是]?\s*([1-5])(?![\d.])", re.IGNORECASE),
    re.compile(r"(?<![\d.])([1-5])\s*分(?!之)"),
)


def parse_score(reply: str) -> tuple[int | None, str]:
    """(score 1-5 or None, reason) from a judge reply; JSON first, then "评分：4"-style text."""
    _, answer = split_reasoning(reply)
    start, end = answer.find("{"), answer.rfind("}")
    if 0 <= start < end:
        try:
            data = json.loads(answer[start : end + 1])
            score = data.get("score") if isinstance(data, dict) else None
            if isinstance(score, (int, float, str)) and str(score).strip().isdigit() and 1 <= int(str(score).strip()) <= 5:
                return int(str(score).strip()), str(data.get("reason", "")).strip()
        except json.JSONDecodeError:
            pass
    for pattern in _SCORE_PATTERNS:
        match = pattern.search(answer)
        if match:
            return int(match.group(1)), " ".join(answer.split())[:120]
    return None, ""


# --------------------------------------------------------------------------- the filter


@dataclass(frozen=True)
class QualityDecision:
    """The verdict on one question and why."""

    id: str
    decision: str  # "keep" or "reject"
    why: str
    structural: tuple[str, ...] = ()
    score: int | None = None
    judge_reason: str = ""
    needs_review: bool = False


@dataclass
class QualityResult:
    kept: list[Question] = field(default_factory=list)
    rejected: list[Question] = field(default_factory=list)
    decisions: list[QualityDecision] = field(default_factory=list)

    def by_id(self) -> dict[str, QualityDecision]:
        return {decision.id: decision for decision in self.decisions}

    def summary(self) -> dict[str, int]:
        reasons = Counter(
            "structure" if d.structural else "low_score" if d.score is not None else "unscored"
            for d in self.decisions
            if d.decision == "reject"
        )
        return {
            "kept": len(self.kept),
            "rejected_structure": reasons.get("structure", 0),
            "rejected_low_score": reasons.get("low_score", 0),
            "rejected_unscored": reasons.get("unscored", 0),
            "scored": sum(d.score is not None for d in self.decisions),
            "unscored_kept_for_review": sum(d.needs_review for d in self.decisions),
        }


def quality_filter(
    questions: Sequence[Question],
    judge: ChatBackend | None,
    *,
    threshold: int = 3,
    on_unscored: str = "keep",
    settings: GenerationSettings | None = None,
    expected_options: int = 4,
    min_stem_chars: int = 4,
) -> QualityResult:
    """Reject structurally broken questions, then keep those the judge scores >= ``threshold``.

    ``on_unscored`` decides what happens when the judge reply has no readable score: "keep"
    (the question goes on, flagged for human review) or "reject". With ``judge=None`` only the
    structural checks run and every survivor is flagged for review.
    """
    if on_unscored not in {"keep", "reject"}:
        raise ValueError(f"on_unscored must be 'keep' or 'reject', got {on_unscored!r}")
    settings = settings or GenerationSettings(max_new_tokens=128)
    result = QualityResult()
    structural = {q.id: structural_problems(q, expected_options=expected_options, min_stem_chars=min_stem_chars) for q in questions}
    to_judge = [q for q in questions if not structural[q.id]]
    replies = judge.generate([rubric_prompt(q) for q in to_judge], settings) if judge and to_judge else []
    verdicts = {q.id: parse_score(reply) for q, reply in zip(to_judge, replies)}
    for question in questions:
        problems = structural[question.id]
        score, reason = verdicts.get(question.id, (None, ""))
        if problems:
            decision = QualityDecision(question.id, "reject", "structure: " + "; ".join(problems), tuple(problems))
        elif score is None:
            why = "no judge configured" if judge is None else "the judge reply had no readable score"
            keep = on_unscored == "keep"
            decision = QualityDecision(
                question.id, "keep" if keep else "reject", why + ("; kept for human review" if keep else ""), needs_review=keep
            )
        elif score >= threshold:
            decision = QualityDecision(question.id, "keep", f"score {score} >= {threshold}", score=score, judge_reason=reason)
        else:
            decision = QualityDecision(question.id, "reject", f"score {score} < {threshold}", score=score, judge_reason=reason)
        result.decisions.append(decision)
        (result.kept if decision.decision == "keep" else result.rejected).append(question)
    return result
