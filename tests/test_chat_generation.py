"""The chat generator decodes with the settings it is given, never the checkpoint's generation_config."""

from __future__ import annotations

from psyche_utils.chat import LocalModelGenerator
from psyche_utils.llm import GenerationSettings
from psyche_utils.prompts import build_messages


def test_greedy_chat_ignores_a_qwen_style_generation_config(qwen_style_model):
    model, tokenizer, decode_by_hand = qwen_style_model
    messages = build_messages("最近总是失眠，怎么办？")
    reply = LocalModelGenerator(model, tokenizer, "tiny")(messages, GenerationSettings(max_new_tokens=24))
    assert reply == decode_by_hand(messages, 24, clean=True)
    assert reply != decode_by_hand(messages, 24, clean=False), "the inherited repetition penalty should change it"
