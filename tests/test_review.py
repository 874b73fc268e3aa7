"""The review sheet round trip: export, edit as a person would, import and apply."""

from __future__ import annotations

import csv

import pytest

from psyche_utils.quality import QualityDecision
from psyche_utils.review import COLUMNS, export_review, import_review
from psyche_utils.schema import DataError, Question

QUESTIONS = [
    Question("q1", "短时记忆的容量约为（ ）。", {"A": "3±1", "B": "5±2", "C": "7±2", "D": "10±3"}, "C", "single", "普通心理学", "米勒。"),
    Question("q2", "态度的成分包括（ ）。", {"A": "认知", "B": "情感", "C": "行为倾向", "D": "遗传"}, "ABC", "multi", "社会心理学", "三成分。", "knowledge", "generated:p1"),
    Question("q3", "阿希实验研究的是（ ）。", {"A": "服从", "B": "从众", "C": "助长", "D": "懈怠"}, "B", "single", "社会心理学", "从众。"),
]


def read_rows(path):
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, rows):
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_untouched_round_trip_gives_the_same_questions(tmp_path):
    path = export_review(QUESTIONS, tmp_path / "review.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: spreadsheet programs detect UTF-8
    result = import_review(path, QUESTIONS)
    assert result.questions == QUESTIONS
    assert result.summary() == {"accepted": 3, "edited": 0, "rejected": 0, "problems": 0}


def test_export_carries_quality_notes(tmp_path):
    decisions = {"q1": QualityDecision("q1", "keep", "score 4 >= 3", score=4)}
    rows = read_rows(export_review(QUESTIONS, tmp_path / "review.csv", decisions))
    assert (rows[0]["quality_score"], rows[0]["quality_note"], rows[0]["option_E"]) == ("4", "score 4 >= 3", "")
    assert rows[1]["quality_score"] == ""


def test_reject_edit_and_accept_are_applied(tmp_path):
    path = export_review(QUESTIONS, tmp_path / "review.csv")
    rows = read_rows(path)
    rows[0].update(decision="edit", question="短时记忆的容量一般约为（ ）。", answer="c")
    rows[1].update(decision="拒绝", reviewer_note="遗传不是干扰项，太明显")
    write_rows(path, rows)
    result = import_review(path, QUESTIONS)
    assert [q.id for q in result.questions] == ["q1", "q3"]
    assert result.questions[0].question == "短时记忆的容量一般约为（ ）。" and result.questions[0].answer == "C"
    assert result.edited == ["q1"] and result.accepted == ["q3"]
    assert result.rejected == [("q2", "遗传不是干扰项，太明显")]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"decision": ""}, "decision", "empty"),
        ({"decision": "maybe"}, "decision", "'maybe' is not accept"),
        ({"question": "改过的题干（ ）。"}, "question", "decision is 'accept'"),
        ({"decision": "edit", "answer": "E"}, "answer", "not among the options"),
        ({"decision": "edit", "option_B": "", "option_C": "", "option_D": ""}, "options", "at least two"),
        ({"id": "q9"}, "id", "not one of the exported"),
    ],
)
def test_problems_name_file_line_and_column(tmp_path, change, field, fragment):
    path = export_review(QUESTIONS, tmp_path / "review.csv")
    rows = read_rows(path)
    rows[1].update(change)
    write_rows(path, rows)
    with pytest.raises(DataError) as caught:
        import_review(path, QUESTIONS)
    problem = caught.value.rejections[0]
    assert (problem.line, problem.field) == (3, field) and fragment in problem.reason
    assert problem.source.endswith("review.csv")


def test_missing_rows_are_reported_and_lenient_mode_goes_on(tmp_path):
    path = export_review(QUESTIONS, tmp_path / "review.csv")
    rows = read_rows(path)
    write_rows(path, rows[:2] + [dict(rows[0])])
    result = import_review(path, QUESTIONS, strict=False)
    reasons = sorted((p.record_id, p.reason) for p in result.problems)
    assert reasons == [("q1", "appears twice in the sheet"), ("q3", "exported but missing from the reviewed sheet")]
    assert [q.id for q in result.questions] == ["q1", "q2"]


def test_a_sheet_without_the_decision_column_is_refused(tmp_path):
    path = tmp_path / "review.csv"
    path.write_text("id,question\nq1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="field 'decision': column missing"):
        import_review(path, QUESTIONS)
