import pytest

from psyche_utils.prompts import (
    MULTI_CHOICE_HINT,
    SINGLE_CHOICE_HINT,
    SYSTEM_PROMPT_CASE,
    SYSTEM_PROMPT_GENERAL,
    THINK_INSTRUCTION,
    build_messages,
    format_choice_question,
    format_reasoned_reply,
)


def test_format_choice_question_skips_empty_options():
    text = format_choice_question(" 题干？ ", {"B": "乙", "A": "甲", "E": ""}, "single")
    assert text == f"题干？\nA. 甲\nB. 乙\n{SINGLE_CHOICE_HINT}"


def test_format_choice_question_multi_hint():
    assert format_choice_question("题干", {"A": "甲"}, "multi").endswith(MULTI_CHOICE_HINT)


def test_format_choice_question_rejects_unknown_type():
    with pytest.raises(ValueError, match="question_type"):
        format_choice_question("题干", {"A": "甲"}, "essay")


def test_build_messages_puts_instruction_in_front():
    messages = build_messages("我最近很焦虑", history=[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}])
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT_GENERAL}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == f"{THINK_INSTRUCTION}\n我最近很焦虑"


def test_build_messages_case_prompt():
    assert build_messages("案例", case=True)[0]["content"] == SYSTEM_PROMPT_CASE


def test_format_reasoned_reply():
    assert format_reasoned_reply(" 推理 ", " 答案：A ") == "<think>\n推理\n</think>\n\n答案：A"
