import pytest

from psyche_utils.answers import extract_answer, normalize_letters, split_reasoning


def test_split_reasoning_multiline():
    text = "<think>\n第一步：识别症状。\n第二步：排除其他诊断。\n</think>\n\n答案：B"
    reasoning, answer = split_reasoning(text)
    assert reasoning == "第一步：识别症状。\n第二步：排除其他诊断。"
    assert answer == "答案：B"


def test_split_reasoning_unclosed_has_no_answer():
    assert split_reasoning("<think>我想选A") == (None, "")


def test_split_reasoning_without_tags_is_all_answer():
    assert split_reasoning(" 答案是C ") == (None, "答案是C")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>A错，B对</think>\n答案：B", "B"),
        ("<think>考虑A、C、D</think>答案：A、C、D", "ACD"),
        ("<think>...</think>答案：DCA", "ACD"),
        ("<think>...</think>答案：ＡＣ", "AC"),
        ("<think>...</think>答案：b", "B"),
        ("<think>...</think>答案：A, C", "AC"),
        ("<think>...</think>答案是B。因为A不符合DSM的标准", "B"),
        ("<think>...</think>选项A错误，所以正确答案为C", "C"),
        ("<think>...</think>答案：C。选项A和B都不符合题意", "C"),
        ("<think>...</think>我认为应该选 B", "B"),
        ("<think>...</think>AAC", "AC"),
        ("<think>答案：A</think>", ""),
        ("<think>答案：A", ""),
        ("<think>...</think>", ""),
        ("<think>...</think>这是ADHD的典型表现", ""),
        ("答案：D", "D"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_only_text_after_last_close_counts():
    assert extract_answer("<think>先看A</think>草稿</think>\n答案：C") == "C"


def test_normalize_letters():
    assert normalize_letters("ｃ、a，B b") == "ABC"
