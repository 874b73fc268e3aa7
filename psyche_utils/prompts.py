"""The prompts the model is trained and evaluated with.

Psyche-R1 answers in one format everywhere: reasoning inside ``<think> ... </think>``, then the
final answer after the closing tag. Training data, rewards, evaluation and chat all build their
user turns here, so the model never sees two different wordings of the same instruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SYSTEM_PROMPT_CASE = (
    "你是一名经验丰富的心理咨询专家。请仔细阅读来访者的案例信息，结合心理学理论，"
    "一步一步地分析问题，再给出你的答案。"
)
SYSTEM_PROMPT_GENERAL = (
    "你是一名兼具扎实理论功底与丰富实践经验的心理学专家，"
    "能够准确回答心理学知识问题，也能温暖、专业地回应求助者。"
)
THINK_INSTRUCTION = (
    "请先在<think>和</think>之间写出你一步一步的思考过程，"
    "然后在</think>之后给出最终回答。"
)

SINGLE_CHOICE_HINT = "（单选题：只有一个正确选项，请在最后写出“答案：”和该选项字母。）"
MULTI_CHOICE_HINT = "（多选题：有两个或以上正确选项，请在最后写出“答案：”和全部正确选项的字母。）"

Message = dict[str, str]


def format_choice_question(question: str, options: Mapping[str, str], question_type: str) -> str:
    """A multiple-choice question as the model reads it: stem, lettered options, answer hint.

    Empty options (CPsyExam's unused "E") are left out so the model is never offered a blank.
    """
    if question_type not in {"single", "multi"}:
        raise ValueError(f"question_type must be 'single' or 'multi', got {question_type!r}")
    lines = [question.strip()]
    lines += [f"{letter}. {text.strip()}" for letter, text in sorted(options.items()) if text and text.strip()]
    lines.append(SINGLE_CHOICE_HINT if question_type == "single" else MULTI_CHOICE_HINT)
    return "\n".join(lines)


def build_messages(
    user_text: str, *, case: bool = False, history: Sequence[Message] | None = None
) -> list[Message]:
    """System prompt, earlier turns, then the new user turn with the think instruction in front."""
    system = SYSTEM_PROMPT_CASE if case else SYSTEM_PROMPT_GENERAL
    messages: list[Message] = [{"role": "system", "content": system}]
    messages += [dict(turn) for turn in history or []]
    messages.append({"role": "user", "content": f"{THINK_INSTRUCTION}\n{user_text.strip()}"})
    return messages


def format_reasoned_reply(reasoning: str, answer: str) -> str:
    """The assistant turn the model learns to write: think block, blank line, answer."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer.strip()}"
