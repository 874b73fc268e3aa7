"""Each expression family of list version 5 (still in version 6), each exception, and evidence that points into the original.

The sentences here are examples written for the tests (in-sample by construction); the held-out
figures are in notebook 06 and benchmarks/safety_screen.py.
"""

from __future__ import annotations

import pytest

from psyche_utils.safety import SAFETY_CONFIG_DIR, RiskScreen, evaluate_screen, load_safety_set, screen


@pytest.mark.parametrize(
    "text",
    [
        "我 想 自 杀",  # spaced out
        "我想\u200b自\u200b杀",  # zero-width characters
        "我想自.杀",  # punctuation inside the word
        "每天都想自殺",  # traditional characters
        "wo xiang zi sha",  # typed pinyin
        "bu xiang huo le",
        "I want to k i l l myself",  # English spelled out
        "I w4nt t0 d1e",  # digits for letters
        "thinking about su1cide",
    ],
)
def test_obfuscated_writing_is_caught(text):
    assert screen(text).flagged, text


@pytest.mark.parametrize(
    "text",
    [
        "好想紫砂啊",  # homophone of 自杀, Chinese social media
        "我是不是该去紫砂了",  # a question form is not a negation
        "今晚就想重开了",  # "restart" slang
        "真的活腻了",
        "想自我了断",
        "想早点下线",
        "想鼠了",
        "gonna kms",  # English shorthand
        "want to unalive myself",
        "thinking about sewerslide",
        "ctb tonight",
        "relapsed on sh",
        "又想划手了",
    ],
)
def test_euphemisms_homophones_and_slang_are_caught(text):
    assert screen(text).flagged, text


@pytest.mark.parametrize(
    "text",
    [
        "药已经攒了两个月了",  # object first
        "安眠药我一颗一颗攒了快半年",  # words in between
        "绳子已经挂好了",
        "炭买好了，门缝也用胶带封上了",
        "我现在坐在窗台外面",
        "I've been stockpiling my meds",
        "I'm on the ledge of the roof",
        "this is my last message",
    ],
)
def test_plans_and_means_without_a_keyword_are_caught(text):
    assert screen(text).flagged, text


@pytest.mark.parametrize(
    "text",
    [
        "这把紫砂壶是宜兴产的吗？",  # homograph: the teapot clay
        "紫砂锅炖汤好喝吗",
        "I ran 10 kms this morning",  # distance, not "kill myself"
        "The Suicide Squad was a fun movie",
        "涂尔干的《自杀论》主要讲了什么？",  # sociology
        "我国青少年自杀率有什么变化？",  # statistics
        "为什么农村地区农药自杀的比例比较高？",  # "药自杀" must not read as "要自杀" in pinyin
        "我的朋友去年自杀了，我很想她",  # grief: a third party
        "新闻说有个明星跳楼了",  # news
        "今天尴尬得想原地去世",  # hyperbole
        "游戏输了想重开一局",  # restarting a game
        "我从来没有想过伤害自己",  # a denial further from the verb
        "我没想去紫砂",  # a negation also holds for a pinyin match
    ],
)
def test_homographs_framings_and_denials_are_not_flagged(text):
    assert not screen(text).flagged, (text, [m.span for m in screen(text).matches])


def test_third_party_cancels_only_topic_terms():
    assert screen("我朋友不知道我想自杀").flagged  # an expression still counts


def test_evidence_points_into_the_original_text():
    text = "最近 我 想 自.殺 了"
    result = screen(text)
    assert result.flagged
    folded = [m for m in result.matches if m.view == "folded"]
    assert folded and all(text[m.start : m.end] == m.span for m in result.matches)
    assert folded[0].span.startswith("想") and folded[0].span.endswith("殺")


def test_earlier_versions_keep_their_measured_behaviour():
    """Version 3 has no normalisation section: it sees only the basic view, exactly as it was measured."""
    v3 = RiskScreen.from_file(SAFETY_CONFIG_DIR / "history" / "risk_expressions_v3.yaml")
    assert not v3.fold and not v3.screen("我 想 自 杀").flagged
    assert v3.screen("我想自杀").flagged


def test_development_set_is_caught_in_sample():
    """dev_v2 is what version 4 was written against: in-sample, so it must be near perfect."""
    report = evaluate_screen(load_safety_set("dev_v2"))
    assert report.recall_count().k >= report.recall_count().n - 1
    assert report.false_positive_count().k <= 1
