"""Every curation reader goes through psyche_utils.datafiles: the probes people's files actually hit."""

from __future__ import annotations

import json
import warnings

import pytest

from psyche_utils.datafiles import DataError
from psyche_utils.dedup import load_eval_items
from psyche_utils.formatting import RecordError, grpo_record, read_dataset
from psyche_utils.review import export_review, import_review
from psyche_utils.schema import Question, UnknownFieldsWarning, load_posts, load_questions, write_jsonl

QUESTION = {
    "id": "q1",
    "question": "抑郁发作的症状至少持续（ ）。",
    "options": {"A": "三天", "B": "一周", "C": "两周", "D": "半年"},
    "answer": "C",
    "subject": "变态心理学",
    "explanation": "至少两周。",
}


def _jsonl(path, records, *, encoding="utf-8"):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding=encoding)
    return path


def test_bom_is_accepted(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [QUESTION], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [q.id for q in load_questions(path)] == ["q1"]


def test_gbk_is_named_with_byte_offset_and_hint(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [QUESTION], encoding="gbk")
    offset = path.read_bytes().index("抑".encode("gbk"))
    with pytest.raises(DataError, match=rf"q.jsonl, line 1, field '<encoding>': not UTF-8 at byte {offset}.*GBK.*UTF-8"):
        load_questions(path)


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "q.jsonl").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="q.jsonl.*the file is empty"):
        load_questions(tmp_path / "q.jsonl")


def test_json_array_saved_as_jsonl_is_named(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps([QUESTION], ensure_ascii=False, indent=1), encoding="utf-8")
    with pytest.raises(DataError, match="one JSON array, not JSON Lines"):
        load_questions(tmp_path / "q.jsonl")


def test_whitespace_and_duplicate_ids_are_named(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [QUESTION, {**QUESTION, "id": "  "}, QUESTION])
    good, rejections = load_questions(path, strict=False)
    assert [q.id for q in good] == ["q1"]
    assert [(r.line, r.field) for r in rejections] == [(2, "id"), (3, "id")]
    assert "blank" in rejections[0].reason and "duplicate id 'q1' (first seen at line 1)" in rejections[1].reason


def test_duplicate_ids_in_a_training_file(tmp_path):
    record = grpo_record(Question.from_dict({**QUESTION, "question_type": "single"}))
    path = _jsonl(tmp_path / "grpo.jsonl", [record, record])
    with pytest.raises(RecordError, match=r"grpo.jsonl, line 2 \[id q1\], field 'id': duplicate id 'q1'"):
        read_dataset(path, "grpo")


def test_unknown_fields_are_kept_and_reported(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [{**QUESTION, "difficulty": "hard"}])
    with pytest.warns(UnknownFieldsWarning, match=r"'difficulty' in 1 record\(s\), e.g. id q1"):
        (question,) = load_questions(path)
    assert question.extra == {"difficulty": "hard"}
    out = write_jsonl([question], tmp_path / "out.jsonl")
    assert json.loads(out.read_text(encoding="utf-8"))["difficulty"] == "hard"  # written back out, not dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_questions(_jsonl(tmp_path / "clean.jsonl", [QUESTION]))  # no warning without unknown fields


def test_mistyped_local_path_is_not_a_hub_id(tmp_path, monkeypatch):
    _jsonl(tmp_path / "seed_questions.jsonl", [QUESTION])
    with pytest.raises(FileNotFoundError, match="did you mean .*seed_questions.jsonl"):
        load_questions(tmp_path / "seed_question.jsonl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_posts("data/posts.jsonl")  # looks local: never sent to the Hub


def test_review_sheet_saved_as_gbk_is_named(tmp_path):
    question = Question.from_dict({**QUESTION, "question_type": "single"})
    path = export_review([question], tmp_path / "review.csv")
    text = path.read_text(encoding="utf-8-sig")
    path.write_bytes(text.encode("gbk"))
    with pytest.raises(DataError, match=r"review.csv, line 2, field '<encoding>': not UTF-8 at byte \d+.*re-save it as UTF-8"):
        import_review(path, [question])
    path.write_text(text, encoding="utf-8-sig")  # Excel's "CSV UTF-8" keeps the BOM: accepted
    assert import_review(path, [question]).questions == [question]


def test_unreadable_eval_file_is_listed_not_skipped(tmp_path):
    (tmp_path / "pceb").mkdir()
    (tmp_path / "pceb" / "a.jsonl").write_bytes("{\"question\": \"抑郁\"}\n".encode("gbk"))
    corpus = load_eval_items(tmp_path)
    assert len(corpus.problems) == 1 and "a.jsonl: unreadable" in corpus.problems[0] and "UTF-8" in corpus.problems[0]
