"""Human review: a spreadsheet round trip for the questions that passed the automatic filters.

The paper ends question control with human review. ``export_review`` writes a CSV that opens in
Excel, LibreOffice or a shared sheet: one row per question, a ``decision`` column (accept,
reject or edit) and the fields a reviewer may correct. ``import_review`` reads it back, applies
each decision, re-validates edited rows like any other record and refuses ambiguous files
(an unknown decision, a changed row still marked accept, a question missing from the file).
The sheet is read with ``datafiles.read_text``: Excel's UTF-8 byte-order mark is accepted, and a
sheet re-saved as GBK is refused with the byte offset and how to save it as UTF-8 again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from psyche_utils import datafiles
from psyche_utils.quality import QualityDecision
from psyche_utils.schema import OPTION_LETTERS, DataError, Question, Rejection, display_path, parse_question

EDITABLE = ["question", *[f"option_{letter}" for letter in OPTION_LETTERS], "answer", "question_type", "subject", "kind", "explanation"]
COLUMNS = ["decision", "id", *EDITABLE, "source", "quality_score", "quality_note", "reviewer_note"]
DECISIONS = {"accept": "accept", "通过": "accept", "reject": "reject", "拒绝": "reject", "edit": "edit", "修改": "edit"}


def _row(question: Question) -> dict[str, str]:
    row = {
        "question": question.question,
        "answer": question.answer,
        "question_type": question.question_type,
        "subject": question.subject,
        "kind": question.kind,
        "explanation": question.explanation,
    }
    row.update({f"option_{letter}": question.options.get(letter, "") for letter in OPTION_LETTERS})
    return row


def export_review(
    questions: Sequence[Question],
    path: str | Path,
    decisions: Mapping[str, QualityDecision] | None = None,
    default_decision: str = "accept",
) -> Path:
    """Write the review sheet (UTF-8 with BOM so spreadsheet programs detect the encoding)."""
    if default_decision not in {"accept", "reject", "edit", ""}:
        raise ValueError(f"default_decision must be accept, reject, edit or empty, got {default_decision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    decisions = decisions or {}
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for question in questions:
            verdict = decisions.get(question.id)
            writer.writerow(
                {
                    "decision": default_decision,
                    "id": question.id,
                    **_row(question),
                    "source": question.source,
                    "quality_score": "" if verdict is None or verdict.score is None else verdict.score,
                    "quality_note": "" if verdict is None else verdict.why,
                    "reviewer_note": "",
                }
            )
    return path


@dataclass
class ReviewResult:
    """The questions after review and what the reviewer did to them."""

    questions: list[Question] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (id, reviewer note)
    problems: list[Rejection] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"accepted": len(self.accepted), "edited": len(self.edited), "rejected": len(self.rejected), "problems": len(self.problems)}


def _question_from_row(row: Mapping[str, str], original: Question) -> tuple[Question | None, list[tuple[str, str]]]:
    record = {
        "id": original.id,
        "question": row.get("question", ""),
        "options": {letter: row.get(f"option_{letter}", "") or "" for letter in OPTION_LETTERS},
        "answer": row.get("answer", ""),
        "question_type": row.get("question_type", ""),
        "subject": row.get("subject", ""),
        "kind": row.get("kind", ""),
        "explanation": row.get("explanation", ""),
        "source": original.source,
    }
    return parse_question(record)


def import_review(path: str | Path, originals: Sequence[Question], strict: bool = True) -> ReviewResult:
    """Apply a reviewed sheet to ``originals`` (the questions that were exported), in their order.

    Problems name the file, the spreadsheet line (the header is line 1) and the column. With
    strict=True any problem raises DataError; otherwise the problem rows are left out and listed.
    """
    path = Path(path)
    source = display_path(path)
    by_id = {question.id: question for question in originals}
    reviewed: dict[str, Question] = {}
    result = ReviewResult()
    # The one reader: a BOM (Excel) is fine, a GBK save is named with its byte offset and a fix.
    text = datafiles.read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing_columns = [name for name in ("decision", "id", *EDITABLE) if name not in (reader.fieldnames or [])]
    if missing_columns:
        raise DataError([Rejection(source, 1, None, name, "column missing from the header") for name in missing_columns])
    for line, row in enumerate(reader, 2):
        record_id = (row.get("id") or "").strip()
        original = by_id.get(record_id)
        if original is None:
            result.problems.append(Rejection(source, line, record_id or None, "id", "not one of the exported questions"))
            continue
        if record_id in reviewed or any(record_id == rid for rid, _ in result.rejected):
            result.problems.append(Rejection(source, line, record_id, "id", "appears twice in the sheet"))
            continue
        raw_decision = (row.get("decision") or "").strip()
        decision = DECISIONS.get(raw_decision.lower())
        if decision is None:
            reason = "empty: write accept, reject or edit" if not raw_decision else f"{raw_decision!r} is not accept, reject or edit"
            result.problems.append(Rejection(source, line, record_id, "decision", reason))
            continue
        changed = [name for name, value in _row(original).items() if (row.get(name) or "").strip() != value]
        if decision == "reject":
            result.rejected.append((record_id, (row.get("reviewer_note") or "").strip()))
        elif decision == "accept":
            if changed:
                result.problems.append(
                    Rejection(source, line, record_id, changed[0], f"changed ({', '.join(changed)}) but the decision is 'accept': write 'edit' to apply the change or undo it")
                )
                continue
            reviewed[record_id] = original
            result.accepted.append(record_id)
        else:
            question, problems = _question_from_row(row, original)
            if question is None:
                result.problems += [Rejection(source, line, record_id, name, reason) for name, reason in problems]
                continue
            reviewed[record_id] = question
            result.edited.append(record_id)
    decided = set(reviewed) | {rid for rid, _ in result.rejected} | {p.record_id for p in result.problems}
    for question in originals:
        if question.id not in decided:
            result.problems.append(Rejection(source, 0, question.id, "id", "exported but missing from the reviewed sheet"))
    if strict and result.problems:
        raise DataError(result.problems)
    result.questions = [reviewed[q.id] for q in originals if q.id in reviewed]
    return result
