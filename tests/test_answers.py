import pytest

from psyche_utils.answers import extract_answer, is_well_formed, normalize_letters, split_reasoning


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


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<think>\n症状持续两周以上。\n</think>\n\n答案：B", True),
        ("  <think>分析</think>答案：B \n", True),  # surrounding whitespace is not a format error
        ("<think>\n来访者很焦虑，先共情。\n</think>\n听起来你最近压力很大。", True),
        ("<think>\n\n</think>\n\n听起来你最近压力很大。", False),  # empty think block
        ("<think>   </think>答案：B", False),  # whitespace-only reasoning
        ("<think>先排除A</think><think>再排除C</think>答案：B", False),  # two blocks
        ("<think>先排除A</think>答案：B</think>", False),  # stray closing tag
        ("<think>来访者的症状符合抑郁发作，所以答案：B", False),  # unclosed
        ("好的。<think>分析</think>答案：B", False),  # text before <think>
        ("<think>分析</think>   \n", False),  # empty answer
        ("答案：B", False),  # no think block at all
        ("", False),
    ],
)
def test_is_well_formed(reply, expected):
    assert is_well_formed(reply) is expected
