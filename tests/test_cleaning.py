"""Each cleaning rule on its own, the rule pipeline and the change report."""

from __future__ import annotations

import pytest

from psyche_utils.cleaning import (
    clean_posts,
    clean_questions,
    clean_text,
    normalize_punctuation,
    remove_ads_and_links,
    remove_emoji,
    remove_redundancy,
    split_sentences,
)
from psyche_utils.schema import Post, Question


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("好难受😭😭", "好难受"),
        ("谢谢你🙏", "谢谢你"),
        ("我好累[哭][哭]", "我好累"),
        ("想逃T_T", "想逃"),
        ("只能玩手机 QAQ", "只能玩手机 "),
        ("做不到 orz", "做不到 "),
        ("开心^_^", "开心"),
        ("好吧 :)", "好吧 "),
        ("不适合读研😢 想退学", "不适合读研， 想退学"),
        ("(╥﹏╥)好难", "好难"),
        ("Taxonomy XDR 不变", "Taxonomy XDR 不变"),
        ("没有表情的句子。", "没有表情的句子。"),
    ],
)
def test_remove_emoji(raw, expected):
    assert remove_emoji(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("详情见 https://example.com/a?b=1 。谢谢", "详情见  。谢谢"),
        ("访问www.xinli-vip.com了解", "访问了解"),
        ("访问xinli-vip.com了解", "访问了解"),
        ("我很难过。加我微信 psy8888 免费领取课程！你还好吗？", "我很难过。你还好吗？"),
        ("扫码关注公众号，回复“解压”获取课程。", ""),
        ("请关注自己的情绪。", "请关注自己的情绪。"),
        ("限时优惠,仅剩最后10个名额", ""),
    ],
)
def test_remove_ads_and_links(raw, expected):
    assert remove_ads_and_links(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("我很累,不想动.", "我很累，不想动。"),
        ("这是为什么?", "这是为什么？"),
        ("坚持下去???", "坚持下去？"),
        ("太好了！！！", "太好了！"),
        ("典型特点是( )?", "典型特点是（ ）？"),
        ("原因(内部的)", "原因（内部的）"),
        ("平均数为3.5分,标准差1.2", "平均数为3.5分，标准差1.2"),
        ("很多余...", "很多余……"),
        ("他说\"你好\"。", "他说“你好”。"),
        ("MMPI (L, F, K)", "MMPI (L, F, K)"),
        ("Hello, world.", "Hello, world."),
    ],
)
def test_normalize_punctuation(raw, expected):
    assert normalize_punctuation(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("考研失败了。考研失败了。怎么办", "考研失败了。怎么办"),
        ("感觉自己像一台机器。像一台机器。", "感觉自己像一台机器。"),
        ("我好累好累好累。", "我好累。"),
        ("哈哈哈哈哈", "哈哈"),
        ("  第一行\n\n 第二行  ", "第一行第二行"),
        ("神经递质有（　）。", "神经递质有（ ）。"),
        ("我 和 你", "我和你"),
        ("I am fine", "I am fine"),
        ("谢谢。谢谢你。", "谢谢。谢谢你。"),
    ],
)
def test_remove_redundancy(raw, expected):
    assert remove_redundancy(raw) == expected


def test_split_sentences_keeps_marks():
    assert split_sentences("一。二？三!四") == ["一。", "二？", "三!", "四"]


def test_clean_text_reports_rules_in_order():
    text, changed = clean_text("好累好累好累,真的😭")
    assert text == "好累，真的"
    assert changed == ["emoji", "punctuation", "redundancy"]
    assert clean_text("已经很干净。") == ("已经很干净。", [])
    assert clean_text("好累😭", rules=["punctuation"]) == ("好累😭", [])
    with pytest.raises(ValueError, match="unknown cleaning rule 'typo'"):
        clean_text("x", rules=["typo"])


def test_clean_posts_reports_changes_and_drops():
    posts = [
        Post("p1", "我睡不着,好烦😭", "先试试放松训练吧。", "睡眠"),
        Post("p2", "加我微信 abc123 免费领取课程！", "扫码关注公众号", "广告"),
        Post("p3", "我最近总是很焦虑。", "😊", "焦虑"),
        Post("p4", "我最近总是很焦虑。", "可以说说发生了什么吗？", "焦虑"),
    ]
    kept, report = clean_posts(posts)
    assert [p.id for p in kept] == ["p1", "p4"]
    assert kept[0].post == "我睡不着，好烦"
    assert report.total == 4 and report.changed_records == 3
    assert [(d.record_id, d.reason.split(" has")[0]) for d in report.dropped] == [("p2", "post"), ("p3", "reply")]
    counts = report.rule_counts()
    assert counts["emoji"] == 2 and counts["ads_links"] == 2 and counts["punctuation"] == 1
    assert report.rows()[0] == {"id": "p1", "field": "post", "rules": "emoji, punctuation", "before": "我睡不着,好烦😭", "after": "我睡不着，好烦"}


def test_clean_questions_touches_text_but_not_answers():
    question = Question("q1", "他人在场时,效率提高,这称为( ).", {"A": "社会助长", "B": "社会懈怠"}, "A", "single", "社会心理学", "见教材.")
    [cleaned], report = clean_questions([question])
    assert cleaned.question == "他人在场时，效率提高，这称为（ ）。"
    assert cleaned.explanation == "见教材。"
    assert (cleaned.answer, cleaned.options, cleaned.id) == ("A", question.options, "q1")
    assert {c.field for c in report.changes} == {"question", "explanation"}
