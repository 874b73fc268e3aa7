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
        ("theory", "single"): 8, ("theory", "multi"): 7,
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
    assert pceb.excluded == [] and pceb.missing_parts == []
    empty = [issue for issue in pceb.flagged if issue.field == "answer"]
    assert len(empty) == 1 and empty[0].source == "theory/multiple/simulation/模拟-理论多选.json"
    assert empty[0].record.startswith("#2") and empty[0].problem.startswith("empty gold answer")
    kept = next(item for item in pceb if item.source == empty[0].source and item.native_id == "2")
    assert kept.answer == "" and kept.official_answer == "" and kept.gold_problem == "empty gold answer"
    cleaned = {issue.problem for issue in pceb.cleaned}
    assert "'\\xa0B\\xa0' -> 'B'" in cleaned and "'ABC\\u2003' -> 'ABC'" in cleaned
    assert all(item.official_answer == item.official_answer.strip() for item in pceb)
    assert "kept     theory/multiple/simulation" in pceb.report()


def _json_records(folder: Path) -> int:
    return sum(len(json.loads(path.read_text(encoding="utf-8"))) for path in folder.glob("*.json"))


def test_every_record_is_loaded_as_the_official_evaluators_score_them():
    # The loaders keep every record, so on the real release the counts are the files' own:
    # train 9,855, dev 1,097, test 3,902. Here: every fixture record, quirks included.
    for split in ("train", "dev", "test"):
        assert len(load_cpsyexam(CPSY, split)) == _json_records(CPSY / split)
    choice_records = sum(_json_records(folder) for folder in PCEB.glob("*/*/*") if folder.parts[-3] != "cases")
    sub_questions = sum(len(case["questions_and_answers"]) for folder in PCEB.glob("cases/*/*")
                        for path in folder.glob("*.json") for case in json.loads(path.read_text(encoding="utf-8")))
    assert len(load_pceb(PCEB)) == choice_records + sub_questions == 44


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


def test_pceb_odd_golds_are_kept_and_flagged_only_untyped_items_excluded(tmp_path):
    _write(tmp_path / "theory/single/third/a.json", [
        _question(1, "AB"),                                       # single with two letters: kept, flagged
        _question(2, "F"),                                        # not an option letter: kept, no usable gold
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
    assert [(item.answer, item.gold_problem) for item in pceb] == [
        ("AC", ""), ("AB", ""), ("", "'F' is not made of option letters"), ("C", "")]
    assert [issue.problem for issue in pceb.excluded] == ["no 单选/多选 prefix, so the question type is unknown"]
    flagged = sorted(issue.problem for issue in pceb.flagged)
    assert flagged == [
        "'AC' names option(s) C that have no text",
        "'F' is not made of option letters (kept: the official evaluator scores it)",
        "single-choice question with answer 'AB' (kept and scored as released)",
    ]
    assert pceb.ignored_files == ["notes/readme.json"]
    assert [issue.problem for issue in pceb.cleaned] == ["'Ｃ' -> 'C'"]
    assert pceb.missing_parts == ["moral/single", "moral/multiple", "theory/multiple", "cases/essay"]
    assert "missing from this tree: moral/single" in pceb.report()


def test_pceb_duplicate_ids_unknown_fields_and_bom_are_reported(tmp_path):
    path = tmp_path / "moral/single/second/a.json"
    path.parent.mkdir(parents=True)
    records = [_question(1, "A"), _question(1, "B", source="网页"), _question(2, "C")]
    path.write_text("\ufeff" + json.dumps(records, ensure_ascii=False), encoding="utf-8")   # saved by Excel
    pceb = load_pceb(tmp_path)
    assert len(pceb) == 3 and len({item.id for item in pceb}) == 3       # keyed by record number
    problems = [issue.problem for issue in pceb.flagged]
    assert any("duplicate id '1' (first at #1)" in p for p in problems)
    assert any("fields not in the published format" in p and "source (1 records)" in p for p in problems)
    assert pceb[1].extra == {"source": "网页"}


def test_pceb_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "moral/single/second/gbk.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(json.dumps([_question(1, "A")], ensure_ascii=False).encode("gbk"))
    with pytest.raises(EvalDataError, match=r"gbk\.json: .*field '<encoding>': not UTF-8 at byte"):
        load_pceb(tmp_path)


def test_pceb_accepts_the_repository_root_and_reports_missing_folder(tmp_path):
    _write(tmp_path / "benchmark/moral/multiple/second/x.json", [_question(1, "BD")])
    assert [item.answer for item in load_pceb(tmp_path)] == ["BD"]
    with pytest.raises(FileNotFoundError, match="PsycoLLM"):
        load_pceb(tmp_path / "nowhere")


def test_cpsyexam_dev_test_and_option_e():
    dev = load_cpsyexam(CPSY, "dev")
    assert len(dev) == 20
    assert Counter(item.question_type for item in dev) == {"single": 12, "multi": 8}
    assert all(set(item.options) == set("ABCDE") for item in dev)
    assert sum(item.options["E"] == "" for item in dev) == 19
    assert {item.task for item in dev} >= {"KG-PCE-心理咨询师三级-单项选择题", "CA-心理诊断-多项选择题"}
    assert [issue.problem for issue in dev.cleaned] == ["' B' -> 'B'"]
    odd = next(item for item in dev if item.official_answer == "AC")
    assert odd.question_type == "single" and odd.answer == "AC" and odd.task == "CA-心理咨询-单项选择题"
    assert [issue.problem for issue in dev.flagged] == ["single-choice question with answer 'AC' (kept and scored as released)"]
    assert next(item for item in dev if item.native_id == "15").official_answer == " B"
    # two task files share the subject 心理咨询师三级: the official scorer keeps them apart
    assert len({item.task for item in dev if item.subject == "心理咨询师三级" and item.question_type == "single"}) == 2
    test = load_cpsyexam(CPSY, "test")
    assert len(test) == 4 and all(item.answer == "" for item in test)
    train = load_cpsyexam(CPSY, "train")
    assert len(train) == 12 and all(item.answer for item in train)
    assert sorted(issue.problem for issue in train.cleaned) == ["'A,B,C' -> 'ABC'", "'A,B,C' -> 'ABC'"]
    assert {item.official_answer for item in train} >= {"A,B,C"}
    with pytest.raises(ValueError, match="split"):
        load_cpsyexam(CPSY, "validation")


def test_cpsyexam_missing_splits_are_reported(tmp_path):
    record = {"id": 1, "subject_name": "普通心理学", "question_type": "single", "kind": "knowledge",
              "question": "q", "options": {"A": "a", "B": "b"}, "answer": "A", "explanation": ""}
    _write(tmp_path / "dev/KG-x-单项选择题.json", [record])
    dev = load_cpsyexam(tmp_path, "dev")
    assert dev.missing_parts == ["train/", "test/"] and "missing from this tree: train/" in dev.report()
    with pytest.raises(FileNotFoundError, match="splits present: dev"):
        load_cpsyexam(tmp_path, "train")


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
