"""Each normalisation step on its own, and the map from every view back to the original text."""

from __future__ import annotations

import pytest

from psyche_utils.safety.normalize import basic_view, folded_view, pinyin_view, to_simplified, views


def test_basic_view_folds_width_case_quotes_and_spaces():
    view = basic_view("ＩＷＡＮＴ  to   Die’s")
    assert view.text == "iwant to die's"
    assert view.index[5:7] == (5, 7)  # the first of two spaces is kept; "t" comes from offset 7
    assert basic_view("  a  ").text == "a"  # leading and trailing white space dropped


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("我 想 自 杀", "我想自杀"),  # spaces between CJK characters
        ("我\u200b想\u200d自\ufeff杀", "我想自杀"),  # zero-width space, joiner, BOM
        ("我想自.杀", "我想自杀"),  # punctuation inside a word
        ("自*杀", "自杀"),
        ("我，想，死", "我想死"),  # clause marks that split single characters
        ("活着没意思，想死", "活着没意思,想死"),  # a real clause break survives (NFKC turns ， into ,)
        ("自殺", "自杀"),  # traditional -> simplified
        ("結束這一切", "结束这一切"),
        ("k i l l myself", "kill myself"),  # spelled out letter by letter
        ("plan a or b", "plan a or b"),  # fewer than three single letters: left alone
        ("w4nt t0 d1e", "want to die"),  # digits used as letters
        ("100 kms", "100 kms"),  # a number stays a number
    ],
)
def test_folded_view(text, folded):
    assert folded_view(text).text == folded


def test_folded_index_points_into_the_original():
    original = "我\u200b想 自.杀"
    view = folded_view(original)
    assert view.text == "我想自杀"
    assert [original[i] for i in view.index] == ["我", "想", "自", "杀"]
    start, end = view.original_span(2, 4)
    assert original[start:end] == "自.杀"


def test_traditional_conversion_keeps_one_character_for_one():
    assert to_simplified("頭髮") == "头发"
    assert len(to_simplified("乾淨的頭髮")) == 5


def test_pinyin_view_reads_characters_and_typed_pinyin_alike():
    assert pinyin_view(folded_view("我想紫砂")).text == "woxiangzisha"
    assert pinyin_view(folded_view("wo xiang zi sha")).text == "woxiangzisha"
    mixed = folded_view("想紫砂 100kms")
    view = pinyin_view(mixed)
    assert view.text == "xiangzisha|||kms"  # digits are word breaks
    start, end = view.original_span(5, 10)
    assert "想紫砂 100kms"[start:end] == "紫砂"


def test_views_are_only_built_when_they_differ_or_are_asked_for():
    assert [v.name for v in views("hello")] == ["basic"]
    assert [v.name for v in views("自 杀")] == ["basic", "folded"]
    assert [v.name for v in views("自 杀", pinyin=True)] == ["basic", "folded", "pinyin"]
    assert [v.name for v in views("自 杀", fold=False)] == ["basic"]
