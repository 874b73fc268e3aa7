"""Parsing teacher replies into validated questions: good JSON, broken JSON, bad items."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from psyche_utils.llm import GenerationSettings, Messages
from psyche_utils.paths import DATA_DIR
from psyche_utils.question_generation import (
    Passage,
    extract_json_text,
    generate_questions,
    generation_prompt,
    load_passages,
    parse_generation,
    question_id,
)
from psyche_utils.schema import DataError

PASSAGE = Passage("passage-x", "普通心理学", "general", "记忆", "短时记忆的容量约为7±2个组块。")
ITEM = {
    "question": "短时记忆的容量约为（ ）。",
    "options": {"A": "3±1个组块", "B": "5±2个组块", "C": "7±2个组块", "D": "10±3个组块"},
    "answer": "C",
    "question_type": "single",
    "kind": "knowledge",
    "explanation": "段落指出容量约为7±2个组块。",
}


class CannedTeacher:
    """Returns fixed replies and records what it was asked (a stand-in for a served model)."""

    name = "scripted"

    def __init__(self, replies: list[str]):
        self.replies = replies
        self.prompts: list[Messages] = []

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        self.prompts += list(prompts)
        return self.replies[: len(prompts)]


def test_prompt_names_the_passage_and_the_json_shape():
    messages = generation_prompt(PASSAGE, n_questions=3, question_mix="multi")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert PASSAGE.text in user and "3道" in user and "全部为多选题" in user and '"answer"' in user
    with pytest.raises(ValueError, match="question_mix"):
        generation_prompt(PASSAGE, question_mix="essay")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('[{"a": 1}]', '[{"a": 1}]'),
        ('好的，题目如下：\n```json\n[{"a": 1}]\n```\n希望有帮助', '[{"a": 1}]'),
        ('<think>先想想 [草稿]</think>\n[{"a": 2}]', '[{"a": 2}]'),
        ('结果：{"questions": []} 完毕', '{"questions": []}'),
        ("没有任何结构化内容", None),
    ],
)
def test_extract_json_text(reply, expected):
    assert extract_json_text(reply) == expected


def test_parse_good_reply_fills_id_subject_and_source():
    reply = "```json\n" + json.dumps([ITEM, {**ITEM, "question": "短时记忆的单位是（ ）。", "answer": "AB", "question_type": "multi"}], ensure_ascii=False) + "\n```"
    questions, failures, items = parse_generation(reply, PASSAGE)
    assert items == 2 and failures == [] and len(questions) == 2
    first = questions[0]
    assert first.id == question_id("passage-x", ITEM["question"]) and first.id.startswith("gen-passage-x-")
    assert (first.subject, first.source, first.answer, first.kind) == ("普通心理学", "generated:passage-x", "C", "knowledge")
    assert questions[1].question_type == "multi"


def test_question_id_is_stable_and_distinct():
    assert question_id("p", "题干") == question_id("p", " 题干 ")
    assert question_id("p", "题干") != question_id("q", "题干")


@pytest.mark.parametrize(
    ("reply", "category", "fragment"),
    [
        ("抱歉，我无法完成。", "no_json", "no JSON"),
        ('[{"question": "短时记忆', "invalid_json", "not valid JSON"),
        ("[1, 2", "invalid_json", "not valid JSON"),
        ('"just a string"', "no_json", "no JSON"),
    ],
)
def test_broken_replies_are_reported_not_raised(reply, category, fragment):
    questions, failures, _ = parse_generation(reply, PASSAGE)
    assert questions == []
    assert [(f.category, f.item) for f in failures] == [(category, None)]
    assert fragment in failures[0].reason and failures[0].passage_id == "passage-x"


def test_a_single_object_is_checked_as_one_item():
    questions, failures, _ = parse_generation("答案 {\"score\": 3}", PASSAGE)
    assert questions == [] and failures[0].category == "invalid_item"


def test_bad_items_are_counted_one_by_one():
    items = [ITEM, {**ITEM, "question": "另一题（ ）。", "answer": "E"}, {**ITEM, "question": "第三题（ ）。", "options": {"A": "只有一个"}}, "不是对象"]
    questions, failures, count = parse_generation(json.dumps(items, ensure_ascii=False), PASSAGE)
    assert count == 4 and len(questions) == 1
    assert [(f.item, f.category) for f in failures] == [(2, "invalid_item"), (3, "invalid_item"), (4, "invalid_item")]
    assert "answer: letter(s) E not among the options" in failures[0].reason
    assert "options: needs at least two" in failures[1].reason


def test_generate_questions_batches_and_summarises():
    teacher = CannedTeacher([json.dumps([ITEM], ensure_ascii=False), "乱码乱码", json.dumps([ITEM], ensure_ascii=False)])
    passages = [PASSAGE, Passage("passage-y", "社会心理学", "social", "从众", "从众。"), PASSAGE]
    result = generate_questions(teacher, passages, questions_per_passage=1)
    assert len(teacher.prompts) == 3
    assert [q.id for q in result.questions] == [question_id("passage-x", ITEM["question"])]
    summary = result.summary()
    assert summary["replies"] == 3 and summary["items_in_json"] == 2 and summary["valid_questions"] == 1
    assert summary["failed_no_json"] == 1 and summary["failed_invalid_item"] == 1  # the repeat of passage-x


def test_load_passages_shipped_and_broken(tmp_path):
    passages = load_passages(DATA_DIR / "passages.jsonl")
    assert len(passages) >= 12 and len({p.subfield for p in passages}) >= 6
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "p1", "subject": "x", "subfield": "y", "title": "t", "text": ""}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1 \\[id p1\\], field 'text'"):
        load_passages(path)


def test_source_prefix_marks_who_wrote_the_questions():
    teacher = CannedTeacher([json.dumps([ITEM], ensure_ascii=False)])
    result = generate_questions(teacher, [PASSAGE], questions_per_passage=1, source="scripted")
    assert [q.source for q in result.questions] == ["scripted:passage-x"]
