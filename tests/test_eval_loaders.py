"""Benchmark loaders on the fixtures (native formats) and on broken files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from psyche_utils.evaluation import EvalDataError, load_cpsyexam, load_cpsyexam_hub, load_pceb, load_psydt
from psyche_utils.paths import EVAL_DATA_DIR

PCEB = EVAL_DATA_DIR / "pceb"
CPSY = EVAL_DATA_DIR / "cpsyexam"


def test_pceb_counts_per_part_and_type():
    pceb = load_pceb(PCEB)
    counts = Counter((item.part, item.question_type) for item in pceb)
    assert counts == {
        ("case", "single"): 6, ("case", "multi"): 5,
        ("moral", "single"): 8, ("moral", "multi"): 6,
        ("theory", "single"): 8, ("theory", "multi"): 6,
        ("essay", "essay"): 4,
    }
    assert len({item.id for item in pceb}) == len(pceb)
    assert {item.level for item in pceb} == {"second", "third", "simulation"}


def test_pceb_case_sub_questions_are_expanded_and_typed_by_prefix():
    cases = [item for item in load_pceb(PCEB) if item.part == "case"]
    first = [item for item in cases if item.source == "cases/mix/second/20 案例混合选择.json"]
    assert [item.native_id for item in first] == ["1.1", "1.2", "1.3", "1.4"]
    assert [item.question_type for item in first] == ["single", "multi", "single", "multi"]
    assert all(item.context.startswith("求助者，女性，28岁") and "主动前来咨询" in item.context for item in first)
    for item in cases:
        assert item.question.startswith("单选" if item.question_type == "single" else "多选")


def test_pceb_essays_keep_reference_text():
    essays = [item for item in load_pceb(PCEB) if item.part == "essay"]
    assert len(essays) == 4
    assert all(item.options == {} and "分）" in item.answer and item.context for item in essays)


def test_pceb_quirks_are_reported_not_dropped_silently():
    pceb = load_pceb(PCEB)
    assert len(pceb.excluded) == 1
    issue = pceb.excluded[0]
    assert issue.source == "theory/multiple/simulation/模拟-理论多选.json"
    assert issue.record.startswith("#2") and issue.field == "answer" and issue.problem == "empty gold answer"
    cleaned = {issue.problem for issue in pceb.cleaned}
    assert "'\\xa0B\\xa0' -> 'B'" in cleaned and "'ABC\\u2003' -> 'ABC'" in cleaned
    assert all(item.answer == item.answer.strip() and item.answer for item in pceb)
    assert "excluded theory/multiple/simulation" in pceb.report()


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _question(i: int, answer: str, **extra) -> dict:
    return {"id": i, "question": f"问题{i}（）。", "options": {"A": "甲", "B": "乙", "C": "丙", "D": "丁"},
            "answer": answer, "analysis": "", **extra}


def test_pceb_broken_json_names_file_and_line(tmp_path):
    _write(tmp_path / "theory/single/second/14 理论单选.json", '[\n  {"id": 1,\n  "question": }\n]')
    with pytest.raises(EvalDataError, match=r"theory/single/second/14 理论单选\.json: record \(line 3\)"):
        load_pceb(tmp_path)


def test_pceb_missing_field_names_record_and_field(tmp_path):
    record = _question(1, "A")
    del record["options"]
    _write(tmp_path / "moral/single/second/a.json", [_question(0, "B"), record])
    with pytest.raises(EvalDataError) as error:
        load_pceb(tmp_path)
    assert error.value.source == "moral/single/second/a.json"
    assert error.value.record == "#2" and error.value.field_name == "options"


def test_pceb_bad_items_are_excluded_with_reasons(tmp_path):
    _write(tmp_path / "theory/single/third/a.json", [
        _question(1, "AB"),                                       # single with two letters
        _question(2, "F"),                                        # not an option letter
        _question(3, "Ｃ"),                                       # full-width, cleaned
    ])
    _write(tmp_path / "cases/mix/third/b.json", [{
        "id": 7, "general_info": "求助者，男。", "case_introduction": "案例。",
        "questions_and_answers": [
            {"question": "1．没有前缀的题目（）。", "options": {"A": "甲", "B": "乙"}, "answer": "A"},
            {"question": "多选：2．有前缀（）。", "options": {"A": "甲", "B": "乙", "C": "", "D": ""}, "answer": "AC"},
        ],
    }])
    _write(tmp_path / "notes/readme.json", [])
    pceb = load_pceb(tmp_path)
    assert [item.answer for item in pceb] == ["C"]
    problems = sorted(issue.problem for issue in pceb.excluded)
    assert problems == [
        "'AC' names option(s) C that have no text",
        "'F' is not made of option letters",
        "no 单选/多选 prefix, so the question type is unknown",
        "single-choice question with answer 'AB'",
    ]
    assert pceb.ignored_files == ["notes/readme.json"]
    assert [issue.problem for issue in pceb.cleaned] == ["'Ｃ' -> 'C'"]


def test_pceb_accepts_the_repository_root_and_reports_missing_folder(tmp_path):
    _write(tmp_path / "benchmark/moral/multiple/second/x.json", [_question(1, "BD")])
    assert [item.answer for item in load_pceb(tmp_path)] == ["BD"]
    with pytest.raises(FileNotFoundError, match="PsycoLLM"):
        load_pceb(tmp_path / "nowhere")


def test_cpsyexam_dev_test_and_option_e():
    dev = load_cpsyexam(CPSY, "dev")
    assert len(dev) == 18
    assert Counter(item.question_type for item in dev) == {"single": 10, "multi": 8}
    assert all(set(item.options) == set("ABCDE") for item in dev)
    assert sum(item.options["E"] == "" for item in dev) == 17
    assert {item.task for item in dev} >= {"KG-PCE-心理咨询师三级-单项选择题", "CA-心理诊断-多项选择题"}
    assert [issue.problem for issue in dev.cleaned] == ["' B' -> 'B'"]
    test = load_cpsyexam(CPSY, "test")
    assert len(test) == 4 and all(item.answer == "" for item in test)
    train = load_cpsyexam(CPSY, "train")
    assert len(train) == 12 and all(item.answer for item in train)
    with pytest.raises(ValueError, match="split"):
        load_cpsyexam(CPSY, "validation")


def test_cpsyexam_through_datasets_matches_the_files():
    files = sorted(str(path) for path in (CPSY / "dev").glob("*.json"))
    via_datasets = load_cpsyexam_hub("dev", dataset_id="json", data_files={"dev": files})
    direct = load_cpsyexam(CPSY, "dev")
    assert sorted((i.question, i.answer) for i in via_datasets) == sorted((i.question, i.answer) for i in direct)


def test_cpsyexam_bad_question_type_is_an_error(tmp_path):
    record = {"id": 1, "subject_name": "普通心理学", "question_type": "judge", "kind": "knowledge",
              "question": "q", "options": {"A": "a", "B": "b"}, "answer": "A", "explanation": ""}
    _write(tmp_path / "dev/KG-x.json", [record])
    with pytest.raises(EvalDataError, match="question_type"):
        load_cpsyexam(tmp_path, "dev")


def test_psydt_samples_end_with_the_reference_reply():
    psydt = load_psydt(EVAL_DATA_DIR / "soulchat")
    assert len(psydt) == 12
    assert Counter(sample.tag for sample in psydt) == {"学业": 3, "婚恋": 2, "家庭": 3, "职场": 2, "情绪": 2}
    for sample in psydt:
        assert sample.system and sample.user and sample.reference
        assert [m["role"] for m in sample.history] == ["user", "assistant"] * (len(sample.history) // 2)
    assert "心理援助热线" in psydt[-1].reference


def test_psydt_rejects_a_sample_without_a_final_counsellor_turn(tmp_path):
    _write(tmp_path / "t.json", [{"id": 9, "normalizedTag": "x", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}])
    with pytest.raises(EvalDataError, match=r"record #1 \(id 9\): field 'messages'"):
        load_psydt(tmp_path / "t.json")
