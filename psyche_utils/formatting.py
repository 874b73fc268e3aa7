"""Turn curated questions and dialogues into the two training files, with a card beside each.

SFT records are chat ``messages`` (system, user, assistant) whose assistant turn is the exact
text the model must learn to write: ``<think>`` rationale ``</think>`` then the answer. GRPO
records carry only the prompt plus the gold ``answer`` and ``question_type`` the rewards need.
User turns come from ``psyche_utils.prompts``, so training, rewards and evaluation read the same
wording. TRL no longer truncates GRPO prompts, and a truncated SFT example loses its answer
(it sits at the end), so over-long records are filtered here and every removal is reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psyche_utils import datafiles
from psyche_utils.answers import is_well_formed
from psyche_utils.prompts import build_messages, format_choice_question, format_reasoned_reply
from psyche_utils.schema import Post, Question

Messages = list[dict[str, str]]

SFT_SOURCES = {"question", "dialogue"}
RATIONALE_ORIGINS = {"teacher", "seed_explanation", "teacher_dialogue", "shipped_reply"}
SFT_QUESTION_TYPES = {"single", "multi", "dialogue"}
GRPO_QUESTION_TYPES = {"single", "multi"}
ANSWER_PREFIX = "答案："
DIALOGUE_SUBJECT = "dialogue"


class RecordError(ValueError):
    """A training record does not have the shape the next stage relies on."""


@dataclass(frozen=True)
class Exclusion:
    """One item left out of a training set, and why (so nothing disappears silently)."""

    id: str
    stage: str
    reason: str
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# Building records


def question_user_text(question: Question) -> str:
    """The question as the model reads it: stem, lettered options and the answer hint."""
    return format_choice_question(question.question, question.options, question.question_type)


def question_messages(question: Question) -> Messages:
    """System + user turns for a question; case questions get the case system prompt."""
    return build_messages(question_user_text(question), case=question.kind == "case")


def final_answer_text(answer: str) -> str:
    """The text after ``</think>``: only the marker and letters.

    Option texts are left out on purpose: they can hold Latin letters ("ABC 理论", "DSM-5")
    that an answer extractor would mistake for choices.
    """
    return f"{ANSWER_PREFIX}{answer}"


def sft_question_record(question: Question, rationale: str, origin: str) -> dict[str, Any]:
    """An SFT record that teaches the rationale and the verified answer for one question."""
    if origin not in {"teacher", "seed_explanation"}:
        raise RecordError(f"question {question.id}: rationale origin {origin!r} is not a question origin")
    if not rationale.strip():
        raise RecordError(f"question {question.id}: field 'rationale' is empty")
    messages = question_messages(question)
    messages.append(
        {"role": "assistant", "content": format_reasoned_reply(rationale, final_answer_text(question.answer))}
    )
    return {
        "id": question.id,
        "source": "question",
        "rationale_origin": origin,
        "question_type": question.question_type,
        "subject": question.subject,
        "messages": messages,
    }


def sft_dialogue_record(post: Post, reasoning: str, reply: str, origin: str) -> dict[str, Any]:
    """An SFT record for an empathetic single-turn dialogue.

    The think block holds the teacher's analysis of the help-seeker's state and of the reply
    strategy: the official inference prompt asks for reasoning on every turn, so a dialogue
    target without it would teach a format the GRPO reward then penalises. A shipped reply has
    no written analysis; its record is built with an empty think block, which
    ``filter_well_formed`` removes (and reports) and ``validate_sft_record`` refuses.
    """
    if origin not in {"teacher_dialogue", "shipped_reply"}:
        raise RecordError(f"post {post.id}: rationale origin {origin!r} is not a dialogue origin")
    if not reply.strip():
        raise RecordError(f"post {post.id}: field 'reply' is empty")
    messages = build_messages(post.post)
    messages.append({"role": "assistant", "content": format_reasoned_reply(reasoning, reply)})
    return {
        "id": post.id,
        "source": "dialogue",
        "rationale_origin": origin,
        "question_type": "dialogue",
        "subject": post.topic or DIALOGUE_SUBJECT,
        "messages": messages,
    }


def grpo_record(question: Question) -> dict[str, Any]:
    """A GRPO record: the conversational prompt and the gold letters the reward compares with."""
    return {
        "id": question.id,
        "prompt": question_messages(question),
        "answer": question.answer,
        "question_type": question.question_type,
        "subject": question.subject,
    }


# ---------------------------------------------------------------------------------------------
# Validation (used on write and by the stages that read the files)


def _fail(where: str, field: str, problem: str) -> RecordError:
    return RecordError(f"{where}: field '{field}' {problem}")


def _check_messages(where: str, field: str, messages: Any, roles: Sequence[str]) -> None:
    if not isinstance(messages, list) or len(messages) != len(roles):
        raise _fail(where, field, f"must be a list of {len(roles)} messages with roles {list(roles)}")
    for index, (message, role) in enumerate(zip(messages, roles)):
        if not isinstance(message, dict) or message.get("role") != role:
            raise _fail(where, f"{field}[{index}].role", f"must be {role!r}")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise _fail(where, f"{field}[{index}].content", "must be a non-empty string")


def _check_text(where: str, record: Mapping[str, Any], field: str) -> None:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, field, "must be a non-empty string")


def validate_sft_record(record: Mapping[str, Any], where: str = "SFT record") -> None:
    """Raise RecordError naming the record and field when an SFT record is malformed."""
    where = f"{where} (id {record.get('id')!r})"
    _check_text(where, record, "id")
    _check_text(where, record, "subject")
    if record.get("source") not in SFT_SOURCES:
        raise _fail(where, "source", f"must be one of {sorted(SFT_SOURCES)}")
    if record.get("rationale_origin") not in RATIONALE_ORIGINS:
        raise _fail(where, "rationale_origin", f"must be one of {sorted(RATIONALE_ORIGINS)}")
    if record.get("question_type") not in SFT_QUESTION_TYPES:
        raise _fail(where, "question_type", f"must be one of {sorted(SFT_QUESTION_TYPES)}")
    if (record["source"] == "dialogue") != (record["question_type"] == "dialogue"):
        raise _fail(where, "question_type", "must be 'dialogue' exactly when source is 'dialogue'")
    _check_messages(where, "messages", record.get("messages"), ("system", "user", "assistant"))
    content = record["messages"][2]["content"]
    if not re.match(r"<think>\n.*\n</think>\n\n\S", content, flags=re.DOTALL):
        raise _fail(where, "messages[2].content", "must be '<think>\\n...\\n</think>\\n\\n' then the answer")
    if not is_well_formed(content):
        raise _fail(where, "messages[2].content", "is not well formed (answers.is_well_formed): " + _format_problem(content))


def _format_problem(content: str) -> str:
    """Why ``is_well_formed`` refuses a target, in words."""
    if content.count("<think>") != 1 or content.count("</think>") != 1:
        return "needs exactly one <think> ... </think> block"
    reasoning, answer = content.split("</think>", 1)
    if not reasoning.replace("<think>", "").strip():
        return "empty reasoning block"
    if not answer.strip():
        return "empty answer"
    return "text before <think>"


def filter_well_formed(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Exclusion]]:
    """Keep SFT records whose assistant turn ``is_well_formed`` accepts; report the rest.

    The same function is the GRPO format reward, so nothing enters SFT that GRPO would score 0
    for its shape.
    """
    kept, removed = [], []
    for record in records:
        content = record["messages"][-1]["content"]
        if is_well_formed(content):
            kept.append(record)
        else:
            removed.append(Exclusion(record["id"], "sft_format", "not well formed", _format_problem(content)))
    return kept, removed


def validate_grpo_record(record: Mapping[str, Any], where: str = "GRPO record") -> None:
    """Raise RecordError naming the record and field when a GRPO record is malformed."""
    where = f"{where} (id {record.get('id')!r})"
    _check_text(where, record, "id")
    _check_text(where, record, "subject")
    _check_messages(where, "prompt", record.get("prompt"), ("system", "user"))
    answer = record.get("answer")
    if not isinstance(answer, str) or not re.fullmatch(r"[A-E]+", answer) or "".join(sorted(set(answer))) != answer:
        raise _fail(where, "answer", f"must be sorted unique letters A-E, got {answer!r}")
    question_type = record.get("question_type")
    if question_type not in GRPO_QUESTION_TYPES:
        raise _fail(where, "question_type", f"must be one of {sorted(GRPO_QUESTION_TYPES)}")
    if (question_type == "single") != (len(answer) == 1):
        raise _fail(where, "answer", f"has {len(answer)} letter(s), which contradicts question_type {question_type!r}")


VALIDATORS = {"sft": validate_sft_record, "grpo": validate_grpo_record}


# ---------------------------------------------------------------------------------------------
# Chat template round trip


def render_chat(tokenizer: Any, messages: Messages) -> str:
    """The exact training text: the conversation through the tokenizer's chat template."""
    return tokenizer.apply_chat_template(messages, tokenize=False)


_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n?", re.DOTALL)


def parse_chat(text: str) -> Messages:
    """Read a rendered Qwen2.5 (ChatML) conversation back into messages.

    Used to prove that rendering loses nothing: render, parse, compare.
    """
    messages = [{"role": role, "content": content} for role, content in _TURN.findall(text)]
    leftover = _TURN.sub("", text).strip()
    if leftover:
        raise RecordError(f"rendered chat has text outside any turn: {leftover[:80]!r}")
    return messages


# ---------------------------------------------------------------------------------------------
# Token budgets


def token_lengths(tokenizer: Any, conversations: Sequence[Messages], *, add_generation_prompt: bool) -> list[int]:
    """Token counts of conversations rendered through the chat template, tokenized in one batch."""
    if not conversations:
        return []
    texts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        for messages in conversations
    ]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def filter_by_tokens(
    records: Sequence[dict[str, Any]], tokenizer: Any, max_tokens: int, *, kind: str
) -> tuple[list[dict[str, Any]], list[Exclusion], list[int]]:
    """Keep records that fit the budget; report the rest.

    For GRPO the budget applies to the prompt (with the generation prompt appended), because
    TRL no longer truncates prompts. For SFT it applies to the whole conversation, because
    truncation would cut off the answer the example exists to teach. Returns the kept records,
    the exclusions and the measured length of every input record (for plots).
    """
    if kind not in VALIDATORS:
        raise ValueError(f"kind must be 'sft' or 'grpo', got {kind!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    field = "messages" if kind == "sft" else "prompt"
    lengths = token_lengths(tokenizer, [record[field] for record in records], add_generation_prompt=kind == "grpo")
    kept, removed = [], []
    for record, length in zip(records, lengths):
        if length <= max_tokens:
            kept.append(record)
        else:
            removed.append(
                Exclusion(record["id"], f"{kind}_token_budget", "over token budget", f"{length} > {max_tokens} tokens")
            )
    return kept, removed, lengths


# ---------------------------------------------------------------------------------------------
# Files and cards


def card_path(data_path: Path) -> Path:
    """``sft.jsonl`` -> ``sft.card.json`` beside it."""
    return data_path.with_name(data_path.name.removesuffix(".jsonl") + ".card.json")


def _counts(records: Iterable[Mapping[str, Any]], field: str) -> dict[str, int]:
    return dict(sorted(Counter(str(record.get(field, "")) for record in records).items()))


def exclusion_counts(exclusions: Iterable[Exclusion]) -> dict[str, int]:
    """Rejections counted by "stage: reason", in a stable order."""
    return dict(sorted(Counter(f"{item.stage}: {item.reason}" for item in exclusions).items()))


def build_card(
    records: Sequence[Mapping[str, Any]],
    *,
    kind: str,
    file_name: str,
    sha256: str,
    settings: Mapping[str, Any],
    exclusions: Iterable[Exclusion],
) -> dict[str, Any]:
    """The card: what is in the file, what was left out, how it was made, and its hash."""
    card: dict[str, Any] = {"file": file_name, "kind": kind, "records": len(records)}
    if kind == "sft":
        card["by_source"] = _counts(records, "source")
        card["by_rationale_origin"] = _counts(records, "rationale_origin")
    card["by_question_type"] = _counts(records, "question_type")
    card["by_subject"] = _counts(records, "subject")
    card["exclusions"] = exclusion_counts(exclusions)
    card["settings"] = dict(settings)
    card["sha256"] = sha256
    return card


def write_dataset(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    kind: str,
    settings: Mapping[str, Any],
    exclusions: Iterable[Exclusion] = (),
) -> dict[str, Any]:
    """Validate, write JSONL (one record per line, UTF-8) and the card beside it; return the card.

    Output is byte-for-byte deterministic for the same records and settings (no timestamps),
    so a re-run can be checked by comparing hashes.
    """
    if kind not in VALIDATORS:
        raise ValueError(f"kind must be 'sft' or 'grpo', got {kind!r}")
    seen: set[str] = set()
    for index, record in enumerate(records):
        VALIDATORS[kind](record, where=f"{path.name} record {index + 1}")
        if record["id"] in seen:
            raise RecordError(f"{path.name} record {index + 1}: field 'id' duplicates {record['id']!r}")
        seen.add(record["id"])
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    card = build_card(
        records,
        kind=kind,
        file_name=path.name,
        sha256=hashlib.sha256(payload).hexdigest(),
        settings=settings,
        exclusions=exclusions,
    )
    card_path(path).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return card


def read_dataset(path: Path, kind: str) -> list[dict[str, Any]]:
    """Read and validate a training file; errors name the file, line and field.

    ``datafiles.read_records`` does the reading (UTF-8 with or without BOM, a clear error for an
    empty file, a JSON array saved as ``.jsonl`` or a non-UTF-8 file); bad lines, blank and
    duplicate ids are all listed in one RecordError rather than the first one alone.
    """
    if kind not in VALIDATORS:
        raise ValueError(f"kind must be 'sft' or 'grpo', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/02_rationales_and_selection.ipynb first")
    try:
        read = datafiles.read_records(path)
    except datafiles.DataError as error:
        raise RecordError(str(error)) from None
    if read.rejections:
        raise RecordError(str(datafiles.DataError(read.rejections)))
    records = []
    for line_number, record in read.records:
        VALIDATORS[kind](record, where=f"{read.source}:{line_number}")
        records.append(record)
    return records


def verify_card(path: Path) -> dict[str, Any]:
    """Check that a file's card matches the file (hash and every count); return the card."""
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    records = read_dataset(path, card["kind"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != card["sha256"]:
        raise RecordError(f"{card_path(path)}: field 'sha256' does not match {path.name}")
    expected = build_card(
        records, kind=card["kind"], file_name=path.name, sha256=digest, settings=card["settings"], exclusions=()
    )
    for field, value in expected.items():
        if field != "exclusions" and card.get(field) != value:
            raise RecordError(f"{card_path(path)}: field {field!r} is {card.get(field)!r}, the file gives {value!r}")
    return card


def exclusion_rows(exclusions: Iterable[Exclusion]) -> list[dict[str, str]]:
    """Rejections as plain rows for a table."""
    return [asdict(item) for item in exclusions]
