"""The one data-file reader: every way a person's file goes wrong gets a message naming where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psyche_utils.datafiles import (
    DataError,
    looks_local,
    read_json,
    read_records,
    read_text,
    resolve_location,
    strict,
    unknown_fields,
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path / "a.jsonl", '\ufeff{"id": "q1", "x": 1}\n')
    assert strict(read_records(path)) == [(1, {"id": "q1", "x": 1})]


def test_gbk_file_is_named_with_byte_offset_line_and_hint(tmp_path):
    path = write(tmp_path / "gbk.jsonl", '{"id": "q1"}\n{"id": "q2", "text": "焦虑"}\n', encoding="gbk")
    with pytest.raises(DataError) as caught:
        read_text(path)
    message = str(caught.value)
    assert "gbk.jsonl, line 2" in message
    assert "byte 35" in message  # 焦 starts after 13 bytes of line 1 and 22 ASCII bytes of line 2
    assert "GBK" in message and "UTF-8" in message


def test_empty_file_is_an_error_unless_allowed(tmp_path):
    path = write(tmp_path / "empty.jsonl", "\n  \n")
    with pytest.raises(DataError, match="empty.jsonl.*the file is empty"):
        read_records(path)
    assert read_text(path, allow_empty=True) == "\n  \n"


def test_json_array_saved_as_jsonl_says_so(tmp_path):
    path = write(tmp_path / "array.jsonl", json.dumps([{"id": "a"}, {"id": "b"}], indent=1))
    with pytest.raises(DataError, match="one JSON array, not JSON Lines"):
        read_records(path)


def test_json_array_file_is_numbered_by_record(tmp_path):
    path = write(tmp_path / "array.json", json.dumps({"data": [{"id": "a"}, {"id": "b"}]}))
    read = read_records(path)
    assert read.unit == "record" and [number for number, _ in read.records] == [1, 2]


def test_bad_lines_non_objects_blank_and_duplicate_ids_are_all_rejected(tmp_path):
    text = '{"id": "a"}\n{broken\n[1, 2]\n{"id": "  "}\n{"id": "a"}\n{"x": 1}\n{"id": 7}\n'
    read = read_records(write(tmp_path / "mixed.jsonl", text))
    assert [number for number, _ in read.records] == [1, 7]
    reasons = {rejection.line: (rejection.field, rejection.reason) for rejection in read.rejections}
    assert reasons[2][0] == "<json>"
    assert reasons[3] == ("<record>", "expected a JSON object, got list")
    assert reasons[4] == ("id", "blank (only whitespace)")
    assert reasons[5] == ("id", "duplicate id 'a' (first seen at line 1)")
    assert reasons[6] == ("id", "missing")
    with pytest.raises(DataError, match="5 problem"):
        strict(read)


def test_ids_can_be_ignored(tmp_path):
    read = read_records(write(tmp_path / "rows.jsonl", '{"x": 1}\n{"x": 1}\n'), id_field=None)
    assert len(read.records) == 2 and not read.rejections


def test_torn_last_line_is_set_aside_only_when_allowed(tmp_path):
    path = write(tmp_path / "cache.jsonl", '{"id": "a"}\n{"id": "b"}\n{"id": "c", "rep')
    read = read_records(path, allow_torn_last_line=True)
    assert [record["id"] for _, record in read.records] == ["a", "b"]
    assert read.torn_last_line == 3 and not read.rejections
    assert read_records(path).rejections[0].line == 3


def test_a_broken_line_in_the_middle_is_not_a_torn_tail(tmp_path):
    path = write(tmp_path / "cache.jsonl", '{"id": "a"}\n{"id": "b", "rep\n{"id": "c"}\n')
    read = read_records(path, allow_torn_last_line=True)
    assert read.torn_last_line is None and read.rejections[0].line == 2


def test_read_json_names_line_and_column(tmp_path):
    with pytest.raises(DataError, match=r"bad.json, line 2.*column"):
        read_json(write(tmp_path / "bad.json", '{"a": 1,\n "b": }'))


def test_unknown_fields_in_file_order():
    assert unknown_fields({"id": 1, "zeta": 2, "question": 3, "alpha": 4}, ["id", "question"]) == ["zeta", "alpha"]


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("data/seed_question.jsonl", True),
        ("./questions", True),
        ("~/data", True),
        ("a/b/c", True),
        ("C:\\data\\x", True),
        ("CAS-SIAT-XinHai/CPsyExam", False),
        ("YIRONGCHEN/PsyDTCorpus", False),
    ],
)
def test_looks_local(text, local):
    assert looks_local(text) is local


def test_first_part_that_is_a_local_folder_is_local(tmp_path, monkeypatch):
    (tmp_path / "mydata").mkdir()
    monkeypatch.chdir(tmp_path)
    assert looks_local("mydata/questions") is True


def test_mistyped_local_path_is_never_a_hub_id(tmp_path):
    (tmp_path / "seed_questions.jsonl").write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"seed_question.jsonl: no such file.*did you mean .*seed_questions.jsonl"):
        resolve_location(tmp_path / "seed_question.jsonl")
    with pytest.raises(FileNotFoundError):
        resolve_location(str(tmp_path / "seed_question.jsonl"))
    assert resolve_location("CAS-SIAT-XinHai/CPsyExam") == "CAS-SIAT-XinHai/CPsyExam"
    assert resolve_location(tmp_path / "seed_questions.jsonl") == tmp_path / "seed_questions.jsonl"
