"""Rationale generation with iterative prompt-rationale optimization (the paper's step 3).

For a question q with gold answer a and an instruction prompt P, the teacher writes a rationale
r and an answer â. The triple (P, q, r) is kept only when â equals a: a rationale that reaches
the wrong answer would teach the wrong reasoning. Then, for T rounds, a candidate prompt P* is
proposed, the teacher answers again, and the record is *updated* to (P*, q, r*) when the new
answer is correct or *reverted* to the previous version when it is not.

The paper publishes neither T nor how candidate prompts are proposed. Here T is ``rounds`` and
the proposer is pluggable: ``TeacherProposer`` asks the teacher to rewrite the instruction for
the question (without ever showing it the gold answer, which would leak into the rationale),
and ``LibraryProposer`` picks from a fixed library of instruction variants, which needs no
model and is the offline fallback. Every round of every question is recorded in a history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from psyche_utils.progress import progress

from psyche_utils.answers import extract_answer, split_reasoning
from psyche_utils.formatting import Exclusion, question_user_text
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.prompts import SYSTEM_PROMPT_CASE, SYSTEM_PROMPT_GENERAL
from psyche_utils.schema import Question

#: Appended by code to every instruction, including teacher-written ones, so that a rewritten
#: prompt can change how the teacher reasons but never the format the parser relies on.
OUTPUT_FORMAT = (
    "输出格式：先在<think>和</think>之间写出完整的推理过程；然后在</think>之后另起一行，"
    "只写“答案：”和所选选项的字母（多选题按字母顺序写出全部正确选项），不要再写别的内容。"
)


@dataclass(frozen=True)
class RationalePrompt:
    """An instruction that asks the teacher for a rationale.

    ``applies_to`` limits a library variant to the questions it makes sense for: "any",
    "case" (case-based questions) or "multi" (multiple-answer questions).
    """

    id: str
    instruction: str
    applies_to: str = "any"
    origin: str = "library"

    def fits(self, question: Question) -> bool:
        """Whether this variant makes sense for the question."""
        if self.applies_to == "case":
            return question.kind == "case"
        if self.applies_to == "multi":
            return question.question_type == "multi"
        return True


PROMPT_LIBRARY: tuple[RationalePrompt, ...] = (
    RationalePrompt(
        "step_by_step",
        "请一步一步地分析下面这道心理学选择题：先弄清题干问的是什么，再结合相关的心理学知识进行推理，最后得出答案。",
    ),
    RationalePrompt(
        "concept_first",
        "请先指出这道题考查的核心概念、理论或标准，准确回忆它的定义和要点，再用它逐一检验各个选项，得出答案。",
    ),
    RationalePrompt(
        "option_by_option",
        "请逐一分析每个选项：说明它为什么正确或为什么错误，并给出依据，最后汇总得出答案。",
    ),
    RationalePrompt(
        "eliminate",
        "请先排除明显错误的选项并说明排除理由，再比较剩下的选项之间的关键差别，选出最符合题意的答案。",
    ),
    RationalePrompt(
        "case_formulation",
        "这是一道案例题。请先概括求助者的关键信息（年龄、主诉、主要症状、持续时间、社会功能、诱因），"
        "再对照相应的诊断标准或咨询理论进行分析，最后作答。",
        applies_to="case",
    ),
    RationalePrompt(
        "multi_check",
        "这是一道多选题，可能有两个或更多正确选项。请对每个选项独立判断真伪并说明理由，"
        "既不要遗漏正确选项，也不要多选，最后按字母顺序写出全部正确选项。",
        applies_to="multi",
    ),
)

BASE_PROMPT = PROMPT_LIBRARY[0]


def teacher_messages(question: Question, prompt: RationalePrompt) -> Messages:
    """The chat prompt the teacher answers: expert system prompt, instruction, format, question."""
    system = SYSTEM_PROMPT_CASE if question.kind == "case" else SYSTEM_PROMPT_GENERAL
    user = f"{prompt.instruction.strip()}\n{OUTPUT_FORMAT}\n\n{question_user_text(question)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Judgement:
    """What the teacher's reply says: its rationale, its answer, and whether both are usable."""

    rationale: str
    predicted: str
    correct: bool
    reason: str


def judge_reply(question: Question, reply: str) -> Judgement:
    """Parse a teacher reply and compare its answer with the gold answer.

    A usable reply has a closed, non-empty think block (the rationale) and an answer after it
    that equals the gold option set exactly.
    """
    rationale, _ = split_reasoning(reply)
    predicted = extract_answer(reply)
    if rationale is None:
        return Judgement("", predicted, False, "no closed <think> block")
    if not rationale:
        return Judgement("", predicted, False, "empty rationale")
    if not predicted:
        return Judgement(rationale, "", False, "no option letter after </think>")
    if predicted != question.answer:
        return Judgement(rationale, predicted, False, f"answered {predicted}, gold is {question.answer}")
    return Judgement(rationale, predicted, True, f"answered {predicted}, matches gold")


# ---------------------------------------------------------------------------------------------
# Candidate prompt proposers


class PromptProposer(Protocol):
    """Proposes one candidate prompt per question for a round (in one batch)."""

    name: str

    def propose(
        self, questions: Sequence[Question], current: Sequence[RationalePrompt], round_index: int
    ) -> list[tuple[RationalePrompt, str]]:
        """One (candidate prompt, note on how it was chosen) per question."""
        ...


def _stable_index(text: str, modulo: int) -> int:
    """A deterministic index (Python's ``hash`` changes between processes)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % modulo


@dataclass
class LibraryProposer:
    """Picks a library variant that fits the question and differs from the current prompt.

    The starting point in the library depends on the question id and the seed, so different
    questions try variants in different orders, reproducibly.
    """

    library: Sequence[RationalePrompt] = PROMPT_LIBRARY
    seed: int = 42
    name: str = "library"

    def pick(self, question: Question, current: RationalePrompt, round_index: int) -> RationalePrompt:
        """The library variant for this question and round."""
        candidates = [p for p in self.library if p.fits(question) and p.id != current.id]
        if not candidates:
            raise ValueError(f"question {question.id}: the prompt library has no variant besides {current.id!r}")
        start = _stable_index(f"{self.seed}:{question.id}", len(candidates))
        return candidates[(start + round_index - 1) % len(candidates)]

    def propose(
        self, questions: Sequence[Question], current: Sequence[RationalePrompt], round_index: int
    ) -> list[tuple[RationalePrompt, str]]:
        return [(self.pick(q, p, round_index), "library variant") for q, p in zip(questions, current)]


REWRITE_SYSTEM = "你是一名心理学教育专家，擅长设计能引导出严谨推理过程的提示词。"
REWRITE_TEMPLATE = (
    "下面是一条让模型为心理学选择题写推理过程的指令，以及它将要用于的题目。\n"
    "请改写这条指令，使它更有针对性地引导出正确、严谨的推理：例如点明应当回忆的理论或标准、"
    "应当比较的选项、容易混淆的概念。不要解答题目，不要透露或暗示任何选项是否正确，"
    "不要规定输出格式。只输出改写后的指令本身。\n\n"
    "【原指令】\n{instruction}\n\n【题目】\n{question}"
)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_STATED_ANSWER = re.compile(r"(?:答案|应选|选)\s*(?:是|为|应为)?\s*[:：]?\s*[A-E](?![A-Za-z])")


@dataclass
class TeacherProposer:
    """Asks the teacher to rewrite the instruction for each question; falls back to the library.

    A rewrite is rejected (and the library variant used, with the reason in the note) when it
    is empty, outside the length bounds, not mostly Chinese, or tries to state an answer.
    """

    backend: ChatBackend
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))
    fallback: LibraryProposer = field(default_factory=LibraryProposer)
    min_chars: int = 10
    max_chars: int = 400
    name: str = "teacher"

    def rewrite_messages(self, question: Question, current: RationalePrompt) -> Messages:
        """The chat prompt asking for a rewritten instruction (no gold answer in it)."""
        user = REWRITE_TEMPLATE.format(instruction=current.instruction, question=question_user_text(question))
        return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]

    def check_rewrite(self, text: str) -> tuple[str, str]:
        """(cleaned instruction, "") when usable, else ("", why not)."""
        reasoning, after = split_reasoning(text)
        if reasoning is None and "<think>" in text:
            return "", "rewrite never closed its think block"
        cleaned = after.strip().strip("\"'“”「」").strip()
        if not cleaned:
            return "", "rewrite is empty"
        if not self.min_chars <= len(cleaned) <= self.max_chars:
            return "", f"rewrite has {len(cleaned)} characters, outside {self.min_chars}-{self.max_chars}"
        letters = sum(1 for ch in cleaned if not ch.isspace())
        if len(_CJK.findall(cleaned)) < 0.5 * letters:
            return "", "rewrite is not mostly Chinese"
        if _STATED_ANSWER.search(cleaned):
            return "", "rewrite states an answer"
        return cleaned, ""

    def propose(
        self, questions: Sequence[Question], current: Sequence[RationalePrompt], round_index: int
    ) -> list[tuple[RationalePrompt, str]]:
        settings = replace(self.settings, seed=self.settings.seed + round_index)
        replies = self.backend.generate([self.rewrite_messages(q, p) for q, p in zip(questions, current)], settings)
        proposals = []
        for question, prompt, reply in zip(questions, current, replies):
            instruction, problem = self.check_rewrite(reply)
            if problem:
                proposals.append((self.fallback.pick(question, prompt, round_index), f"library fallback: {problem}"))
                continue
            digest = hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:8]
            candidate = RationalePrompt(f"teacher_r{round_index}_{digest}", instruction, origin="teacher")
            proposals.append((candidate, "teacher rewrite"))
        return proposals


# ---------------------------------------------------------------------------------------------
# The optimization loop


@dataclass(frozen=True)
class RoundRecord:
    """One attempt at one question: which prompt, what the teacher answered, what was decided.

    ``decision`` is "accepted"/"rejected" in round 0 and "updated"/"reverted" afterwards.
    """

    question_id: str
    round: int
    prompt_id: str
    prompt_origin: str
    proposal_note: str
    predicted: str
    gold: str
    correct: bool
    decision: str
    reason: str


@dataclass
class RationaleResult:
    """The version of a question's rationale that survived, plus its full history."""

    question_id: str
    prompt: RationalePrompt
    rationale: str = ""
    accepted: bool = False
    history: list[RoundRecord] = field(default_factory=list)


def optimize_rationales(
    questions: Sequence[Question],
    teacher: ChatBackend,
    *,
    rounds: int = 2,
    settings: GenerationSettings | None = None,
    proposer: PromptProposer | None = None,
    initial_prompt: RationalePrompt = BASE_PROMPT,
    refine_accepted: bool = True,
    show_progress: bool = True,
) -> list[RationaleResult]:
    """Run the accept/update/revert loop for every question; one batched teacher call per round.

    ``refine_accepted=True`` follows the paper (every question goes through all T rounds, and
    a correct candidate replaces an already-correct rationale). ``False`` only retries the
    questions still without an accepted rationale, which costs fewer teacher calls.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids must be unique")
    settings = settings or GenerationSettings()
    proposer = proposer or LibraryProposer(seed=settings.seed)
    results = [RationaleResult(q.id, initial_prompt) for q in questions]
    if not questions:
        return results

    bar = progress(total=rounds + 1, desc="rationale rounds", show=show_progress)
    replies = teacher.generate([teacher_messages(q, initial_prompt) for q in questions], settings)
    for question, result, reply in zip(questions, results, replies):
        verdict = judge_reply(question, reply)
        result.accepted = verdict.correct
        result.rationale = verdict.rationale if verdict.correct else ""
        result.history.append(
            RoundRecord(
                question.id, 0, initial_prompt.id, "initial", "initial prompt", verdict.predicted,
                question.answer, verdict.correct, "accepted" if verdict.correct else "rejected", verdict.reason,
            )
        )
    bar.update(1)

    for round_index in range(1, rounds + 1):
        active = [i for i, r in enumerate(results) if refine_accepted or not r.accepted]
        if active:
            batch = [questions[i] for i in active]
            proposals = proposer.propose(batch, [results[i].prompt for i in active], round_index)
            round_settings = replace(settings, seed=settings.seed + round_index)
            replies = teacher.generate(
                [teacher_messages(q, candidate) for q, (candidate, _) in zip(batch, proposals)], round_settings
            )
            for i, question, (candidate, note), reply in zip(active, batch, proposals, replies):
                result = results[i]
                verdict = judge_reply(question, reply)
                if verdict.correct:
                    result.prompt, result.rationale, result.accepted = candidate, verdict.rationale, True
                    reason = verdict.reason
                else:
                    kept = "previous accepted version" if result.accepted else "no accepted version yet"
                    reason = f"{verdict.reason}; kept {kept}"
                result.history.append(
                    RoundRecord(
                        question.id, round_index, candidate.id, candidate.origin, note, verdict.predicted,
                        question.answer, verdict.correct, "updated" if verdict.correct else "reverted", reason,
                    )
                )
        bar.update(1)
    bar.close()
    return results


def history_rows(results: Sequence[RationaleResult]) -> list[dict[str, Any]]:
    """Every round of every question as flat rows (for a table or a plot)."""
    return [asdict(record) for result in results for record in result.history]


def acceptance_by_round(results: Sequence[RationaleResult]) -> list[dict[str, Any]]:
    """Per round: attempts, correct attempts, and questions holding an accepted rationale after it."""
    if not results:
        return []
    last_round = max(record.round for result in results for record in result.history)
    rows = []
    for round_index in range(last_round + 1):
        attempts = [rec for result in results for rec in result.history if rec.round == round_index]
        holding = sum(
            1 for result in results if any(rec.correct for rec in result.history if rec.round <= round_index)
        )
        rows.append(
            {
                "round": round_index,
                "attempts": len(attempts),
                "correct_attempts": sum(rec.correct for rec in attempts),
                "questions_with_rationale": holding,
                "acceptance_rate": holding / len(results),
            }
        )
    return rows


def reason_category(reason: str) -> str:
    """A countable category for a judgement reason ("answered B, gold is C; ..." -> "wrong answer")."""
    first = reason.split(";", 1)[0]
    return "wrong answer" if first.startswith("answered") else first


def unaccepted(results: Sequence[RationaleResult]) -> list[Exclusion]:
    """One entry per question the teacher never got right, with the reason of its last attempt."""
    return [
        Exclusion(r.question_id, "teacher_rationale", reason_category(r.history[-1].reason), r.history[-1].reason)
        for r in results
        if not r.accepted and r.history
    ]


# ---------------------------------------------------------------------------------------------
# Choosing the rationale each SFT question is trained on


@dataclass(frozen=True)
class Rationale:
    """The rationale a question is trained on and where it came from."""

    question_id: str
    text: str
    origin: str
    prompt_id: str | None = None


def choose_rationales(
    questions: Sequence[Question],
    results: Sequence[RationaleResult],
    *,
    use_seed_explanations: bool = True,
) -> tuple[dict[str, Rationale], list[Exclusion]]:
    """An accepted teacher rationale when there is one, else the question's written explanation.

    ``results`` may cover only some questions (a run can limit how many go through the
    teacher). A question with neither is reported, never silently dropped.
    """
    by_id = {result.question_id: result for result in results}
    chosen: dict[str, Rationale] = {}
    exclusions: list[Exclusion] = []
    for question in questions:
        result = by_id.get(question.id)
        if result is not None and result.accepted:
            chosen[question.id] = Rationale(question.id, result.rationale, "teacher", result.prompt.id)
        elif use_seed_explanations and question.explanation.strip():
            chosen[question.id] = Rationale(question.id, question.explanation.strip(), "seed_explanation")
        else:
            why = "teacher rationale not accepted" if result is not None else "not sent to the teacher"
            if use_seed_explanations:
                why += " and no written explanation"
            exclusions.append(Exclusion(question.id, "rationale", "no usable rationale", why))
    return chosen, exclusions
