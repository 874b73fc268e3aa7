"""Rewards on realistic multi-line completions, with expectations worked out by hand."""

from __future__ import annotations

import pytest

from psyche_utils import rewards
from psyche_utils.answers import extract_answer as answers_extract_answer
from psyche_utils.rewards import (
    accuracy_reward,
    completion_text,
    elastic_accuracy_reward,
    elastic_score,
    extract_answer,
    format_reward,
    reward_functions,
)

GOOD_SINGLE = (
    "<think>\n"
    "来访者长期情绪低落，兴趣减退，持续两周以上。\n"
    "A项焦虑症以担忧为主，不符合；C项强迫症有强迫观念，不符合。\n"
    "因此最可能是抑郁发作。\n"
    "</think>\n\n"
    "答案：B"
)
GOOD_MULTI = (
    "<think>\n"
    "心悸、出汗、手抖都是自主神经功能亢进的表现。\n"
    "幻听属于精神病性症状，不是焦虑的躯体症状。\n"
    "</think>\n\n"
    "答案：A、B、D"
)
LETTERS_ONLY_IN_REASONING = (
    "<think>\n"
    "我认为答案是B，因为A和C都不对。\n"
    "</think>\n\n"
    "以上就是我的分析。"
)
TWO_THINK_BLOCKS = (
    "<think>\n先排除A。\n</think>\n"
    "<think>\n再排除C。\n</think>\n\n"
    "答案：B"
)
UNCLOSED = "<think>\n来访者的症状符合抑郁发作，\n所以答案：B"
EMPTY_ANSWER = "<think>\n症状符合抑郁发作。\n</think>\n\n   "
EMPTY_REASONING = "<think>\n   \n</think>\n\n答案：B"
LOWERCASE = "<think>\n分析各项。\n</think>\n\n答案：b"
FULL_WIDTH_MULTI = "<think>\n分析各项。\n</think>\n\n答案：ＡＢＤ"
REPEATED = "<think>\n分析各项。\n</think>\n\n答案：A A B D D"
ANSWER_THEN_DISCUSSION = "<think>\n分析各项。\n</think>\n\n答案：B。选项A和C都不符合题意。"
TEXT_BEFORE_THINK = "好的。<think>\n分析。\n</think>\n\n答案：B"
NO_TAGS = "答案：B"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_SINGLE, "B"),
        (GOOD_MULTI, "ABD"),
        (LETTERS_ONLY_IN_REASONING, ""),
        (TWO_THINK_BLOCKS, "B"),
        (UNCLOSED, ""),
        (EMPTY_ANSWER, ""),
        (LOWERCASE, "B"),
        (FULL_WIDTH_MULTI, "ABD"),
        (REPEATED, "ABD"),
        (ANSWER_THEN_DISCUSSION, "B"),
        (NO_TAGS, "B"),
    ],
)
def test_extract_answer_looks_only_after_think(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_is_the_one_from_answers():
    assert rewards.extract_answer is answers_extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_SINGLE, 1.0),
        (GOOD_MULTI, 1.0),
        (LOWERCASE, 1.0),
        ("\n  " + GOOD_SINGLE + "\n", 1.0),  # surrounding whitespace is not a format error
        (LETTERS_ONLY_IN_REASONING, 1.0),  # well formed, just wrong: accuracy's job
        (TWO_THINK_BLOCKS, 0.0),
        (UNCLOSED, 0.0),
        (EMPTY_ANSWER, 0.0),
        (EMPTY_REASONING, 0.0),
        (TEXT_BEFORE_THINK, 0.0),
        (NO_TAGS, 0.0),
        ("<think>\n分析</think>答案：B</think>", 0.0),  # a stray closing tag after the answer
    ],
)
def test_format_reward(text, expected):
    assert format_reward([text]) == [expected]


def test_accuracy_reward_strict_set_match():
    completions = [GOOD_SINGLE, GOOD_MULTI, GOOD_MULTI, LETTERS_ONLY_IN_REASONING, UNCLOSED, FULL_WIDTH_MULTI]
    gold = ["B", "ABD", "ABCD", "B", "B", "ABD"]
    # B==B; ABD==ABD; ABD!=ABCD (missing C is wrong under the strict rule); nothing after
    # </think>; never closed; full-width ＡＢＤ folds to ABD.
    assert accuracy_reward(completions, answer=gold) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_elastic_reward_gives_partial_credit_only_for_a_clean_subset():
    wrong_extra = "<think>\n分析。\n</think>\n\n答案：ABE"
    completions = [GOOD_MULTI, GOOD_MULTI, wrong_extra, GOOD_SINGLE, LETTERS_ONLY_IN_REASONING]
    gold = ["ABD", "ABCD", "ABCD", "BD", "B"]
    # exact 1; ABD of ABCD = 3/4; E is wrong -> 0; B of BD = 1/2; nothing answered -> 0.
    assert elastic_accuracy_reward(completions, answer=gold) == [1.0, 0.75, 0.0, 0.5, 0.0]


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [("ACD", "ACD", 1.0), ("A", "ACD", 1 / 3), ("AB", "ACD", 0.0), ("", "ACD", 0.0), ("DCA", "ADC", 1.0)],
)
def test_elastic_score(predicted, gold, expected):
    assert elastic_score(predicted, gold) == pytest.approx(expected)


def test_trl_calling_convention_conversational_and_extra_columns():
    conversational = [[{"role": "assistant", "content": GOOD_SINGLE}], [{"role": "assistant", "content": UNCLOSED}]]
    prompts = [[{"role": "user", "content": "题目"}]] * 2
    kwargs = {
        "prompts": prompts,
        "answer": ["B", "B"],
        "id": ["q1", "q1"],
        "question_type": ["single", "single"],
        "subject": ["变态心理学"] * 2,
        "trainer_state": None,
        "completion_ids": [[1, 2], [3]],
    }
    assert format_reward(conversational, **kwargs) == [1.0, 0.0]
    assert accuracy_reward(conversational, **kwargs) == [1.0, 0.0]
    assert completion_text(conversational[0]) == GOOD_SINGLE


def test_completion_text_rejects_other_shapes():
    with pytest.raises(TypeError, match="string or a list of message dicts"):
        completion_text(42)


def test_bad_gold_answer_names_the_record_and_field():
    with pytest.raises(ValueError, match=r"record id 'q7'.*field 'answer'"):
        accuracy_reward([GOOD_SINGLE], answer=["B?X"], id=["q7"])
    with pytest.raises(ValueError, match=r"completion 0 .*field 'answer'"):
        accuracy_reward([GOOD_SINGLE], answer=[""])
    with pytest.raises(KeyError, match="'answer' column"):
        accuracy_reward([GOOD_SINGLE])
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        accuracy_reward([GOOD_SINGLE, GOOD_SINGLE], answer=["B"])


def test_reward_functions_by_name():
    assert reward_functions(["format", "accuracy"]) == [format_reward, accuracy_reward]
    with pytest.raises(ValueError, match="Unknown reward"):
        reward_functions(["length"])


def test_format_reward_uses_the_one_definition():
    from psyche_utils import answers

    assert rewards.is_well_formed is answers.is_well_formed
    replies = [GOOD_SINGLE, EMPTY_REASONING, TWO_THINK_BLOCKS, TEXT_BEFORE_THINK]
    assert format_reward(replies) == [float(answers.is_well_formed(r)) for r in replies] == [1.0, 0.0, 0.0, 0.0]
