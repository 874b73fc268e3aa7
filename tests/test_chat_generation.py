"""The chat generator decodes with the settings it is given, never the checkpoint's generation_config."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from psyche_utils.chat import LocalModelGenerator
from psyche_utils.llm import GenerationSettings
from psyche_utils.prompts import build_messages


def test_greedy_chat_ignores_a_qwen_style_generation_config(tiny_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    shipped = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=shipped.bos_token_id, eos_token_id=shipped.eos_token_id, pad_token_id=shipped.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
    )
    messages = build_messages("最近总是失眠，怎么办？")
    reply = LocalModelGenerator(model, tokenizer, "tiny")(messages, GenerationSettings(max_new_tokens=24))
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    start = encoded["input_ids"].shape[1]
    with torch.inference_mode():
        clean = model.generate(**encoded, max_new_tokens=24, do_sample=False, repetition_penalty=1.0, pad_token_id=0)
        leaky = model.generate(**encoded, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert reply == tokenizer.decode(clean[0, start:], skip_special_tokens=True)
    assert reply != tokenizer.decode(leaky[0, start:], skip_special_tokens=True), "the inherited penalty should change it"
