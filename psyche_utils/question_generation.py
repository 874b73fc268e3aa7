"""Question generation: a teacher LLM writes multiple-choice questions grounded in textbook passages.

The teacher is asked for a JSON array in a fixed shape. Whatever comes back is parsed and every
item goes through the same validation as the seed bank, so a malformed generation (prose instead
of JSON, a truncated array, an answer letter that is not an option) is counted and reported with
its reason, never allowed to crash the run or slip into the data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyche_utils.answers import split_reasoning
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.schema import DataError, Question, Rejection, display_path, parse_question, read_records


@dataclass(frozen=True)
class Passage:
    """A short textbook passage that questions are written from."""

    id: str
    subject: str
    subfield: str
    title: str
    text: str


def load_passages(path: str | Path) -> list[Passage]:
    """Passages from a JSONL file; raises DataError naming file, line and field of every bad one."""
    numbered, rejections, unit = read_records(path)
    passages = []
    for number, record in numbered:
        missing = [name for name in Passage.__dataclass_fields__ if not str((record or {}).get(name) or "").strip()]
        if missing:
            record_id = record.get("id") if isinstance(record, dict) else None
            rejections += [Rejection(display_path(Path(path)), number, record_id, name, "missing or empty", unit) for name in missing]
            continue
        passages.append(Passage(**{name: str(record[name]).strip() for name in Passage.__dataclass_fields__}))
    if rejections:
        raise DataError(rejections)
    return passages


GENERATION_SYSTEM_PROMPT = (
    "你是一名资深的心理学命题专家，熟悉心理咨询师职业资格考试和心理学专业考试的命题规范。"
    "你只根据给定的教材段落命题，不引入段落以外的知识，并且只输出JSON。"
)

_TYPE_INSTRUCTIONS = {
    "single": "全部为单选题（只有一个正确选项）",
    "multi": "全部为多选题（两个或以上正确选项）",
    "mixed": "单选题和多选题都要有（多选题有两个或以上正确选项）",
}

OUTPUT_EXAMPLE = (
    '[{"question": "题干（ ）。", "options": {"A": "……", "B": "……", "C": "……", "D": "……"}, '
    '"answer": "B", "question_type": "single", "kind": "knowledge", "explanation": "为什么B正确、其他选项为什么错误"}]'
)


def generation_prompt(passage: Passage, n_questions: int = 2, question_mix: str = "mixed") -> Messages:
    """The chat prompt that asks for ``n_questions`` four-option questions about one passage."""
    if question_mix not in _TYPE_INSTRUCTIONS:
        raise ValueError(f"question_mix must be one of {', '.join(_TYPE_INSTRUCTIONS)}, got {question_mix!r}")
    user = (
        f"教材段落（{passage.subject}：{passage.title}）：\n{passage.text}\n\n"
        f"请根据上面的段落编写{n_questions}道四选项（A、B、C、D）选择题，要求：\n"
        f"1. {_TYPE_INSTRUCTIONS[question_mix]}；\n"
        "2. 正确答案必须能由段落内容直接支持，且唯一、无争议；\n"
        "3. 干扰项要似是而非，不使用“以上都对”“以上都不对”之类的选项；\n"
        "4. 可以编写简短的案例题（kind 填 case），其余为知识题（kind 填 knowledge）；\n"
        "5. 每道题给出解析，说明正确选项的依据和错误选项的问题。\n"
        f"只输出一个JSON数组，不要输出其他文字，格式如下：\n{OUTPUT_EXAMPLE}"
    )
    return [{"role": "system", "content": GENERATION_SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class GenerationFailure:
    """One generation, or one item of it, that did not yield a valid question."""

    passage_id: str
    item: int | None  # position in the returned array, None when the whole reply failed
    category: str  # "no_json", "invalid_json", "not_a_list", "invalid_item"
    reason: str
    excerpt: str


@dataclass
class GenerationResult:
    """Valid questions, every failure with its reason, and the raw replies for inspection."""

    questions: list[Question] = field(default_factory=list)
    failures: list[GenerationFailure] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    items_seen: int = 0

    def summary(self) -> dict[str, int]:
        categories = Counter(failure.category for failure in self.failures)
        return {
            "replies": len(self.replies),
            "items_in_json": self.items_seen,
            "valid_questions": len(self.questions),
            **{f"failed_{name}": categories.get(name, 0) for name in ("no_json", "invalid_json", "not_a_list", "invalid_item")},
        }


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json_text(reply: str) -> str | None:
    """The JSON part of a reply: a fenced block if there is one, else the outermost [...] or {...}.

    Reasoning models may think first; only the text after ``</think>`` is searched then.
    """
    _, answer = split_reasoning(reply)
    fenced = _FENCE.search(answer)
    if fenced:
        return fenced.group(1).strip()
    starts = [index for index in (answer.find("["), answer.find("{")) if index >= 0]
    if not starts:
        return None
    start = min(starts)
    end = answer.rfind("]" if answer[start] == "[" else "}")
    return answer[start : end + 1] if end > start else answer[start:]


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def question_id(passage_id: str, stem: str) -> str:
    """A stable id: the same stem from the same passage always gets the same id."""
    digest = hashlib.sha1(f"{passage_id}\n{stem.strip()}".encode("utf-8")).hexdigest()[:10]
    return f"gen-{passage_id}-{digest}"


def parse_generation(reply: str, passage: Passage, source: str = "generated") -> tuple[list[Question], list[GenerationFailure], int]:
    """Parse one teacher reply into validated questions; never raises.

    Returns (questions, failures, number of items found in the JSON). Subject comes from the
    passage, ids from ``question_id``; everything else is checked like a seed record.
    """
    json_text = extract_json_text(reply)
    if json_text is None:
        return [], [GenerationFailure(passage.id, None, "no_json", "the reply contains no JSON", _excerpt(reply))], 0
    try:
        data: Any = json.loads(json_text)
    except json.JSONDecodeError as error:
        return [], [GenerationFailure(passage.id, None, "invalid_json", f"not valid JSON: {error.msg}", _excerpt(json_text))], 0
    if isinstance(data, dict):
        data = data.get("questions", [data])
    if not isinstance(data, list):
        return [], [GenerationFailure(passage.id, None, "not_a_list", f"expected a JSON array, got {type(data).__name__}", _excerpt(json_text))], 0
    questions: list[Question] = []
    failures: list[GenerationFailure] = []
    for position, item in enumerate(data, 1):
        if isinstance(item, dict):
            stem = str(item.get("question") or "")
            item = {**item, "id": question_id(passage.id, stem), "subject": passage.subject, "source": f"{source}:{passage.id}"}
        question, problems = parse_question(item)
        if question is None:
            reason = "; ".join(f"{name}: {why}" for name, why in problems)
            failures.append(GenerationFailure(passage.id, position, "invalid_item", reason, _excerpt(json.dumps(item, ensure_ascii=False))))
        else:
            questions.append(question)
    return questions, failures, len(data)


def generate_questions(
    backend: ChatBackend,
    passages: Sequence[Passage],
    *,
    questions_per_passage: int = 2,
    question_mix: str = "mixed",
    settings: GenerationSettings | None = None,
    source: str = "generated",
) -> GenerationResult:
    """Ask the teacher once per passage (one batched call) and parse every reply.

    ``source`` prefixes each question's ``source`` field (``"scripted:passage-01"``), so records
    written by the scripted teacher stay recognisable in every later file.
    """
    settings = settings or GenerationSettings(max_new_tokens=1024)
    prompts = [generation_prompt(passage, questions_per_passage, question_mix) for passage in passages]
    result = GenerationResult(replies=backend.generate(prompts, settings))
    seen: set[str] = set()
    for passage, reply in zip(passages, result.replies):
        questions, failures, items = parse_generation(reply, passage, source)
        result.items_seen += items
        result.failures += failures
        for question in questions:
            if question.id in seen:
                result.failures.append(GenerationFailure(passage.id, None, "invalid_item", f"repeats question {question.id}", _excerpt(question.question)))
                continue
            seen.add(question.id)
            result.questions.append(question)
    return result
