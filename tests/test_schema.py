"""Loaders and validation: every bad record is named with file, line and field; nothing is dropped silently."""

from __future__ import annotations

import json

import pytest

from psyche_utils.paths import DATA_DIR
from psyche_utils.schema import (
    DataError,
    Post,
    Question,
    load_posts,
    load_questions,
    normalize_answer,
    parse_question,
    write_jsonl,
)

GOOD = {
    "id": "q1",
    "question": "短时记忆的容量约为（ ）。",
    "options": {"A": "3±1", "B": "5±2", "C": "7±2", "D": "10±3"},
    "answer": "C",
    "question_type": "single",
    "subject": "普通心理学",
    "explanation": "米勒提出7±2。",
}


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ACD", "ACD"), ("DCA", "ACD"), ("A、C、D", "ACD"), (["C", "A"], "AC"), ("Ｃ", "C"), (" b\u00a0", "B"), ("A,B", "AB"), ("AA", "A")],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "A1", "答案A", 3])
def test_normalize_answer_rejects(raw):
    with pytest.raises(ValueError):
        normalize_answer(raw)


def test_parse_good_question_normalises():
    question, problems = parse_question({**GOOD, "answer": "c", "question_type": "单选", "options": {**GOOD["options"], "E": ""}})
    assert problems == []
    assert question == Question(
        id="q1", question=GOOD["question"], options=GOOD["options"], answer="C", question_type="single",
        subject="普通心理学", explanation="米勒提出7±2。", kind="knowledge", source="seed",
    )


def test_parse_infers_missing_type_and_maps_aliases():
    record = {k: v for k, v in GOOD.items() if k not in {"question_type", "subject", "explanation"}}
    record.update(answer="AB", subject_name="普通心理学", analysis="解析", kind="analyse")
    question, problems = parse_question(record)
    assert problems == []
    assert (question.question_type, question.subject, question.explanation, question.kind) == ("multi", "普通心理学", "解析", "case")


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"question": "  "}, "question", "empty"),
        ({"answer": "E"}, "answer", "not among the options"),
        ({"options": {"A": "x", "B": "y", "F": "z"}}, "options", "unknown option letter 'F'"),
        ({"options": ["x", "y"]}, "options", "expected an object"),
        ({"answer": "AB"}, "question_type", "'single' but the answer 'AB'"),
        ({"question_type": "multi"}, "question_type", "'multi' but the answer 'C'"),
        ({"question_type": "判断"}, "question_type", "is not one of"),
        ({"subject": ""}, "subject", "empty"),
        ({"kind": "essay"}, "kind", "is not one of"),
        ({"explanation": 3}, "explanation", "expected text"),
    ],
)
def test_parse_reports_the_field(change, field, fragment):
    question, problems = parse_question({**GOOD, **change})
    assert question is None
    assert any(name == field and fragment in reason for name, reason in problems), problems


def test_missing_fields_are_all_reported():
    _, problems = parse_question({"question": "题干"})
    assert {name for name, _ in problems} >= {"id", "subject", "options", "answer"}


def test_strict_load_lists_every_bad_record_with_file_line_and_field(tmp_path):
    path = write_lines(
        tmp_path / "bank.jsonl",
        [GOOD, {**GOOD, "id": "q2", "answer": "E"}, "", '{"id": "q3", "question": ', {**GOOD, "question": "另一题（ ）。"}],
    )
    with pytest.raises(DataError) as caught:
        load_questions(path)
    message = str(caught.value)
    assert "3 problem(s) in the records" in message
    assert "bank.jsonl, line 2 [id q2], field 'answer'" in message
    assert "bank.jsonl, line 4, field '<json>': not valid JSON" in message
    assert "line 5 [id q1], field 'id': duplicate id 'q1' (first seen at line 1)" in message


def test_lenient_load_returns_good_records_and_rejections(tmp_path):
    path = write_lines(tmp_path / "bank.jsonl", [GOOD, {**GOOD, "id": "q2", "question": ""}])
    questions, rejections = load_questions(path, strict=False)
    assert [q.id for q in questions] == ["q1"]
    assert [(r.line, r.record_id, r.field) for r in rejections] == [(2, "q2", "question")]


def test_load_json_array_numbers_records(tmp_path):
    path = tmp_path / "bank.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "id": "q2", "options": {"A": "x"}, "answer": "A"}], ensure_ascii=False), encoding="utf-8")
    questions, rejections = load_questions(path, strict=False)
    assert len(questions) == 1
    assert str(rejections[0]).startswith(f"{path}, record 2 [id q2], field 'options'")


def test_load_from_a_datasets_folder(tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    write_lines(folder / "train.jsonl", [GOOD, {**GOOD, "id": "q2", "answer": "B"}])
    questions = load_questions(folder)
    assert [(q.id, q.answer) for q in questions] == [("q1", "C"), ("q2", "B")]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_questions(tmp_path / "absent.jsonl")


def test_posts_loader(tmp_path):
    path = write_lines(
        tmp_path / "posts.jsonl",
        [{"id": "p1", "post": "睡不着", "reply": "试试放松", "topic": "睡眠"}, {"id": "p2", "post": "心慌", "reply": ""}, {"id": "p3", "reply": "嗯"}],
    )
    posts, rejections = load_posts(path, strict=False)
    assert posts == [Post("p1", "睡不着", "试试放松", "睡眠")]
    assert [(r.line, r.field, r.reason) for r in rejections] == [(2, "reply", "empty"), (3, "post", "missing")]
    with pytest.raises(DataError, match="line 2 \\[id p2\\], field 'reply'"):
        load_posts(path)


def test_write_jsonl_round_trip(tmp_path):
    question, _ = parse_question(GOOD)
    path = write_jsonl([question], tmp_path / "out" / "questions.jsonl")
    assert load_questions(path) == [question]
    assert Question.from_dict(json.loads(path.read_text(encoding="utf-8"))) == question


def test_shipped_seed_bank_reports_exactly_its_broken_records():
    questions, rejections = load_questions(DATA_DIR / "seed_questions.jsonl", strict=False)
    assert len(questions) == 166
    assert len(rejections) == 10
    fields = sorted(r.field for r in rejections)
    assert fields == sorted(["question", "answer", "options", "id", "question_type", "answer", "<json>", "question_type", "options", "subject"])
    assert all(r.source == "data/seed_questions.jsonl" for r in rejections)


def test_shipped_posts_report_their_broken_records():
    posts, rejections = load_posts(DATA_DIR / "posts.jsonl", strict=False)
    assert len(posts) == 64
    assert [(r.record_id, r.field) for r in rejections] == [("post-065", "reply"), ("post-066", "post")]
