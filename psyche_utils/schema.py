"""Typed records that flow between the data stages.

Every stage reads and writes these shapes, so a broken record is caught once, at the door,
with the file, line and field named, instead of surfacing as a cryptic error mid-training.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psyche_utils import datafiles
from psyche_utils.datafiles import DataError, Rejection, display_path

__all__ = [
    "DataError",
    "Post",
    "Question",
    "Rejection",
    "UnknownFieldsWarning",
    "display_path",
    "load_posts",
    "load_questions",
    "normalize_answer",
    "parse_post",
    "parse_question",
    "read_records",
    "write_jsonl",
]


class UnknownFieldsWarning(UserWarning):
    """A data file has fields the loader does not know; they are kept in ``.extra``, not dropped."""


def _flat_dict(record: Any) -> dict[str, Any]:
    """The record's fields, with the unknown ones (``extra``) back at the top level, after the known ones."""
    data = asdict(record)
    return {**{k: v for k, v in data.items() if k != "extra"}, **data["extra"]}


@dataclass(frozen=True)
class Question:
    """A multiple-choice psychology question with its gold answer and written explanation."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    question_type: str
    subject: str
    explanation: str
    kind: str = "knowledge"
    source: str = "seed"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _flat_dict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Question:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record and name != "extra"}
        return cls(**known, extra={k: v for k, v in record.items() if k not in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Post:
    """A help-seeker's single-turn post and a reply to it."""

    id: str
    post: str
    reply: str
    topic: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _flat_dict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Post:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record and name != "extra"}
        return cls(**known, extra={k: v for k, v in record.items() if k not in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- loading and validation

QUESTION_TYPES = ("single", "multi")
KINDS = ("knowledge", "case")
OPTION_LETTERS = "ABCDE"

# Spellings found in real question banks, mapped onto this project's vocabulary.
_QUESTION_TYPE_ALIASES = {
    "single": "single", "单选": "single", "单选题": "single", "单项选择题": "single",
    "multi": "multi", "multiple": "multi", "多选": "multi", "多选题": "multi", "多项选择题": "multi",
}
_KIND_ALIASES = {"knowledge": "knowledge", "case": "case", "analyse": "case", "analysis": "case", "案例": "case"}
_FIELD_ALIASES = {"analysis": "explanation", "subject_name": "subject"}
_ANSWER_SEPARATORS = re.compile(r"[\s、,，;；/|和及]+")


def normalize_answer(value: Any) -> str:
    """Gold answers arrive as "ACD", "A、C、D", ["A", "C"], "Ｃ" or " B\\xa0": reduce to sorted letters.

    Raises ValueError with a readable reason when something other than option letters remains.
    """
    if isinstance(value, (list, tuple)):
        value = "".join(str(part) for part in value)
    if not isinstance(value, str):
        raise ValueError(f"expected option letters, got {type(value).__name__}")
    text = _ANSWER_SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).upper()
    if not text:
        raise ValueError("answer is empty")
    strange = sorted({char for char in text if char not in OPTION_LETTERS})
    if strange:
        raise ValueError(f"answer {value!r} contains {''.join(strange)!r}, which are not option letters A-E")
    return "".join(sorted(set(text)))


def _text_field(record: dict[str, Any], name: str, problems: list[tuple[str, str]], *, required: bool) -> str:
    value = record.get(name)
    if value is None:
        if required:
            problems.append((name, "missing"))
        return ""
    if not isinstance(value, str):
        problems.append((name, f"expected text, got {type(value).__name__}"))
        return ""
    if required and not value.strip():
        problems.append((name, "empty"))
    return value.strip()


def _record_id(record: Any) -> str | None:
    if isinstance(record, dict) and record.get("id") not in (None, ""):
        return str(record["id"])
    return None


def parse_question(record: Any, *, default_source: str = "seed") -> tuple[Question | None, list[tuple[str, str]]]:
    """Validate one raw question record; return the Question (or None) and every (field, reason) problem.

    Option letters and answers are normalised (full-width letters, separators, stray spaces);
    empty options are dropped, as CPsyExam ships an empty "E". A missing question_type is
    inferred from the number of answer letters; a present one must agree with it.
    """
    if not isinstance(record, dict):
        return None, [("<record>", f"expected a JSON object, got {type(record).__name__}")]
    record = {_FIELD_ALIASES.get(key, key): value for key, value in record.items()}
    problems: list[tuple[str, str]] = []
    record_id = _record_id(record)
    if record_id is None:
        problems.append(("id", "missing"))
    question = _text_field(record, "question", problems, required=True)
    subject = _text_field(record, "subject", problems, required=True)
    explanation = _text_field(record, "explanation", problems, required=False)
    source = _text_field(record, "source", problems, required=False) or default_source

    options: dict[str, str] = {}
    raw_options = record.get("options")
    if not isinstance(raw_options, dict):
        reason = "missing" if raw_options is None else f"expected an object of letter -> text, got {type(raw_options).__name__}"
        problems.append(("options", reason))
    else:
        for key, value in raw_options.items():
            letter = unicodedata.normalize("NFKC", str(key)).strip().upper()
            if letter not in OPTION_LETTERS or len(letter) != 1:
                problems.append(("options", f"unknown option letter {key!r} (expected A-E)"))
            elif not isinstance(value, str):
                problems.append(("options", f"option {letter} is {type(value).__name__}, expected text"))
            elif value.strip():
                options[letter] = value.strip()
        if len(options) < 2 and not any(field == "options" for field, _ in problems):
            problems.append(("options", f"needs at least two non-empty options, found {len(options)}"))
    options = dict(sorted(options.items()))

    answer = ""
    if "answer" not in record or record["answer"] is None:
        problems.append(("answer", "missing"))
    else:
        try:
            answer = normalize_answer(record["answer"])
        except ValueError as error:
            problems.append(("answer", str(error)))
    if answer and options:
        absent = [letter for letter in answer if letter not in options]
        if absent:
            problems.append(("answer", f"letter(s) {''.join(absent)} not among the options ({', '.join(options)})"))

    raw_type = record.get("question_type")
    if raw_type is None or (isinstance(raw_type, str) and not raw_type.strip()):
        question_type = "multi" if len(answer) > 1 else "single"
    else:
        question_type = _QUESTION_TYPE_ALIASES.get(str(raw_type).strip().lower(), "")
        if not question_type:
            problems.append(("question_type", f"{raw_type!r} is not one of {', '.join(QUESTION_TYPES)}"))
        elif answer and question_type == "single" and len(answer) != 1:
            problems.append(("question_type", f"'single' but the answer {answer!r} has {len(answer)} letters"))
        elif answer and question_type == "multi" and len(answer) < 2:
            problems.append(("question_type", f"'multi' but the answer {answer!r} has a single letter"))

    raw_kind = record.get("kind") or "knowledge"
    kind = _KIND_ALIASES.get(str(raw_kind).strip().lower(), "")
    if not kind:
        problems.append(("kind", f"{raw_kind!r} is not one of {', '.join(KINDS)}"))

    if problems:
        return None, problems
    assert record_id is not None
    return (
        Question(
            id=record_id, question=question, options=options, answer=answer, question_type=question_type,
            subject=subject, explanation=explanation, kind=kind, source=source,
            extra=_extra_fields(record, Question),
        ),
        [],
    )


def parse_post(record: Any) -> tuple[Post | None, list[tuple[str, str]]]:
    """Validate one raw post record; return the Post (or None) and every (field, reason) problem."""
    if not isinstance(record, dict):
        return None, [("<record>", f"expected a JSON object, got {type(record).__name__}")]
    problems: list[tuple[str, str]] = []
    record_id = _record_id(record)
    if record_id is None:
        problems.append(("id", "missing"))
    post = _text_field(record, "post", problems, required=True)
    reply = _text_field(record, "reply", problems, required=True)
    topic = _text_field(record, "topic", problems, required=False)
    if problems:
        return None, problems
    assert record_id is not None
    return Post(id=record_id, post=post, reply=reply, topic=topic, extra=_extra_fields(record, Post)), []


def _extra_fields(record: dict[str, Any], cls: type) -> dict[str, Any]:
    """The fields of a raw record that ``cls`` has no slot for, in file order."""
    return {name: record[name] for name in datafiles.unknown_fields(record, cls.__dataclass_fields__)}


def read_records(path: str | Path) -> tuple[list[tuple[int, Any]], list[Rejection], str]:
    """Raw records of a JSONL file (numbered by line) or a JSON array file (numbered by record).

    A thin wrapper over ``datafiles.read_records``, the one reader for data files: lines that are
    not valid JSON, blank ids and duplicate ids become rejections instead of stopping the read; an
    empty file, a non-UTF-8 file and a JSON array saved as ``.jsonl`` raise DataError.
    """
    read = datafiles.read_records(path)
    return read.records, read.rejections, read.unit


def _dataset_records(name: str, split: str) -> list[tuple[int, Any]]:
    """Rows of a `datasets` dataset (a local folder or a Hub id; offline runs need it cached)."""
    from datasets import load_dataset

    dataset = load_dataset(name, split=split)
    return [(index, dict(row)) for index, row in enumerate(dataset, 1)]


def _load(
    path: str | Path,
    parse: Any,
    *,
    split: str,
) -> tuple[list[Any], list[Rejection]]:
    location = datafiles.resolve_location(path)  # a mistyped local path is an error, never a Hub id
    if isinstance(location, Path) and location.is_file():
        numbered, rejections, unit = read_records(location)
        source = display_path(location)
    else:
        numbered, rejections, unit = _dataset_records(str(location), split), [], "row"
        source = f"{path} [{split}]"
    good: list[Any] = []
    first_seen: dict[str, int] = {}
    for number, raw in numbered:
        record, problems = parse(raw)
        record_id = _record_id(raw)
        if record is not None and record.id in first_seen:
            problems = [("id", f"duplicate id {record.id!r} (first seen at {unit} {first_seen[record.id]})")]
            record = None
        rejections.extend(Rejection(source, number, record_id, field, reason, unit) for field, reason in problems)
        if record is not None:
            first_seen[record.id] = number
            good.append(record)
    rejections.sort(key=lambda rejection: rejection.line)
    _report_unknown_fields(good, source)
    return good, rejections


def _report_unknown_fields(records: Iterable[Question | Post], source: str) -> None:
    """Warn once per file about fields the loader does not know (they stay in ``.extra``)."""
    seen: dict[str, list[str]] = defaultdict(list)
    for record in records:
        for name in record.extra:
            seen[name].append(record.id)
    if seen:
        listed = "; ".join(f"'{name}' in {len(ids)} record(s), e.g. id {ids[0]}" for name, ids in seen.items())
        warnings.warn(UnknownFieldsWarning(f"{source}: unknown field(s) kept in .extra and written back out: {listed}"), stacklevel=3)


def load_questions(
    path: str | Path, strict: bool = True, *, split: str = "train", default_source: str = "seed"
) -> list[Question] | tuple[list[Question], list[Rejection]]:
    """Questions from a JSONL/JSON file, a local `datasets` folder or a `datasets` id.

    strict=True: every record must be valid, else one DataError lists them all.
    strict=False: returns (good records, rejections), so a pipeline can go on and report.
    """
    good, rejections = _load(path, lambda raw: parse_question(raw, default_source=default_source), split=split)
    if strict:
        if rejections:
            raise DataError(rejections)
        return good
    return good, rejections


def load_posts(path: str | Path, strict: bool = True, *, split: str = "train") -> list[Post] | tuple[list[Post], list[Rejection]]:
    """Help-seeker posts from a JSONL/JSON file or a `datasets` id; same strict/lenient contract as load_questions."""
    good, rejections = _load(path, parse_post, split=split)
    if strict:
        if rejections:
            raise DataError(rejections)
        return good
    return good, rejections


def write_jsonl(records: Iterable[Question | Post], path: str | Path) -> Path:
    """One record per line, UTF-8, keys in field order: identical input gives an identical file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    return path
