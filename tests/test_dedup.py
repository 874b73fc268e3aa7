"""Exact and near-duplicate removal on known pairs and true negatives; contamination flags."""

from __future__ import annotations

import json

import pytest

from psyche_utils.dedup import (
    EvalItem,
    char_ngrams,
    contamination_report,
    deduplicate,
    jaccard,
    load_eval_items,
    normalize_for_matching,
    question_text,
)
from psyche_utils.schema import Post, Question

OPTIONS = {"A": "先慢后快", "B": "先快后慢", "C": "匀速进行", "D": "没有规律"}


def q(qid: str, stem: str, options: dict[str, str] | None = None, answer: str = "B") -> Question:
    return Question(qid, stem, options or OPTIONS, answer, "single" if len(answer) == 1 else "multi", "普通心理学", "解析")


def test_normalize_and_ngrams_by_hand():
    assert normalize_for_matching("（ ）A、Ｂ，c。") == "abc"
    assert char_ngrams("心理学家", 2) == {"心理", "理学", "学家"}
    assert char_ngrams("心理", 5) == {"心理"}
    assert char_ngrams("。。", 3) == set()
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) == 1.0


def test_question_text_uses_stem_and_options_in_letter_order():
    question = q("x", "题干", {"B": "乙", "A": "甲"})
    assert question_text(question) == "题干 甲 乙"


def test_exact_duplicates_after_normalisation_keep_the_first():
    records = [q("a", "艾宾浩斯遗忘曲线表明遗忘的进程是（ ）。"), q("b", "艾宾浩斯遗忘曲线表明, 遗忘的进程是( )."), q("c", "完全不同的一道题目，问的是别的内容（ ）。")]
    result = deduplicate(records)
    assert [r.id for r in result.kept] == ["a", "c"]
    assert [(r.id, r.kept_id, r.match, r.similarity) for r in result.removed] == [("b", "a", "exact", 1.0)]


def test_near_duplicate_is_clustered_with_the_kept_record():
    original = q("a", "按照皮亚杰的理论，儿童开始获得守恒概念是在哪一个阶段（ ）。")
    reworded = q("b", "按照皮亚杰的理论，儿童开始获得守恒概念是在哪个阶段（ ）。")
    other = q("c", "客体永久性主要在哪个阶段形成（ ）。")
    expected = jaccard(char_ngrams(question_text(original)), char_ngrams(question_text(reworded)))
    assert expected > 0.7
    result = deduplicate([original, reworded, other])
    assert [r.id for r in result.kept] == ["a", "c"]
    [cluster] = result.clusters
    assert (cluster.kept_id, cluster.removed_ids) == ("a", ("b",))
    assert cluster.similarities[0] == pytest.approx(expected, abs=1e-4)
    assert result.summary()["removed_near"] == 1


def test_true_negatives_sharing_options_survive():
    stages = {"A": "感知运动阶段", "B": "前运算阶段", "C": "具体运算阶段", "D": "形式运算阶段"}
    records = [
        q("a", "按照皮亚杰的理论，儿童开始获得守恒概念是在（ ）。", stages, "C"),
        q("b", "客体永久性主要在哪个阶段形成（ ）。", stages, "A"),
        q("c", "能够进行抽象思维和假设-演绎推理的认知发展阶段是（ ）。", stages, "D"),
    ]
    result = deduplicate(records)
    assert len(result.kept) == 3 and result.removed == []


def test_threshold_controls_what_counts_as_near():
    a = q("a", "在常见的强化程式中，形成的行为最不容易消退的是（ ）。")
    b = q("b", "下列强化程式中，所形成的行为最不容易消退的是（ ）。")
    similarity = jaccard(char_ngrams(question_text(a)), char_ngrams(question_text(b)))
    assert 0.6 < similarity < 0.75
    assert len(deduplicate([a, b], threshold=0.6).kept) == 1
    assert len(deduplicate([a, b], threshold=0.8).kept) == 2
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([a, b], threshold=0)


def test_dedup_is_deterministic_and_works_on_posts():
    posts = [Post(f"p{i}", f"我最近总是睡不着，第{i}次来问大家该怎么办才好呢", "试试放松") for i in range(3)] + [Post("x", "和室友相处得很不愉快，想换宿舍", "聊聊")]
    first = deduplicate(posts, text=lambda p: p.post, threshold=0.5)
    second = deduplicate(posts, text=lambda p: p.post, threshold=0.5)
    assert [p.id for p in first.kept] == [p.id for p in second.kept] == ["p0", "x"]
    assert {r.kept_id for r in first.removed} == {"p0"}


def test_contamination_flags_exact_and_near_and_spares_clean_items():
    train = [
        q("t1", "艾宾浩斯遗忘曲线表明，遗忘的进程是（ ）。"),
        q("t2", "根据艾宾浩斯遗忘曲线表明，遗忘的进程是（ ）。"),
        q("t3", "阿希的线段判断实验主要研究的是（ ）。"),
    ]
    eval_sets = {"pceb": [EvalItem("pceb", "theory:2", "艾宾浩斯遗忘曲线表明,遗忘的进程是()。")], "other": ["一道毫不相干的题目（ ）。"]}
    report = contamination_report(train, eval_sets)
    assert report.flagged_ids == {"t1", "t2"}
    matches = {(h.train_id, h.match) for h in report.hits}
    assert matches == {("t1", "exact"), ("t2", "near")}
    near = next(h for h in report.hits if h.train_id == "t2")
    assert near.similarity == pytest.approx(jaccard(char_ngrams(train[1].question), char_ngrams(eval_sets["pceb"][0].text)), abs=1e-4)
    assert report.counts() == {"pceb": {"eval_items": 1, "exact": 1, "near": 1}, "other": {"eval_items": 1, "exact": 0, "near": 0}}
    clean, flagged = report.remove(train)
    assert [x.id for x in clean] == ["t3"] and [x.id for x in flagged] == ["t1", "t2"]


def test_load_eval_items_reads_native_shapes(tmp_path):
    (tmp_path / "pceb" / "theory").mkdir(parents=True)
    (tmp_path / "pceb" / "theory" / "single.json").write_text(json.dumps([{"id": 1, "question": "理论题（ ）。", "options": {}, "answer": "A"}], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "pceb" / "cases.json").write_text(
        json.dumps([{"id": 7, "case_introduction": "求助者，女，30岁。", "questions_and_answers": [{"question": "单选：1．症状持续时间是（）。"}]}], ensure_ascii=False),
        encoding="utf-8",
    )
    (tmp_path / "cpsyexam" / "dev").mkdir(parents=True)
    (tmp_path / "cpsyexam" / "dev" / "a.json").write_text(json.dumps([{"id": 3, "question": "考试题（ ）。"}, {"id": 4, "note": "?"}], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "soulchat").mkdir()
    (tmp_path / "soulchat" / "test.jsonl").write_text(
        json.dumps({"id": "s1", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "我很焦虑"}, {"role": "assistant", "content": "嗯"}]}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    corpus = load_eval_items(tmp_path)
    assert corpus.sizes() == {"cpsyexam/dev": 1, "pceb": 3, "soulchat": 1}
    texts = {item.id: item.text for item in corpus.sets["pceb"]}
    assert texts == {
        "pceb/cases.json:7#case": "求助者，女，30岁。",
        "pceb/cases.json:7#q1": "求助者，女，30岁。 单选：1．症状持续时间是（）。",
        "pceb/theory/single.json:1": "理论题（ ）。",
    }
    assert corpus.sets["soulchat"][0].text == "我很焦虑"
    assert any("broken.json: unreadable" in p for p in corpus.problems)
    assert any("cpsyexam/dev/a.json: 1 record(s)" in p for p in corpus.problems)


def test_load_eval_items_reports_a_missing_folder(tmp_path):
    corpus = load_eval_items(tmp_path / "nowhere")
    assert corpus.sets == {} and "no evaluation folder" in corpus.problems[0]
