from dataclasses import asdict, replace

import pytest

from psyche_utils.llm import (
    PRESETS,
    CachedBackend,
    GenerationSettings,
    TransformersBackend,
    generate_kwargs,
    generation_preset,
)


class CountingBackend:
    name = "counting"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, settings):
        self.calls.append(len(prompts))
        return [f"{p[-1]['content']}|{settings.temperature}" for p in prompts]


def _prompt(text):
    return [{"role": "user", "content": text}]


def test_cache_asks_each_prompt_once(tmp_path):
    inner = CountingBackend()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    settings = GenerationSettings()
    first = cached.generate([_prompt("a"), _prompt("b"), _prompt("a")], settings)
    assert first == ["a|0.0", "b|0.0", "a|0.0"]
    assert inner.calls == [2]
    again = CachedBackend(inner, tmp_path / "cache.sqlite").generate([_prompt("b"), _prompt("c")], settings)
    assert again == ["b|0.0", "c|0.0"]
    assert inner.calls == [2, 1]


def test_cache_key_includes_settings(tmp_path):
    inner = CountingBackend()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    cached.generate([_prompt("a")], GenerationSettings())
    assert cached.generate([_prompt("a")], GenerationSettings(temperature=0.7)) == ["a|0.7"]
    assert inner.calls == [1, 1]


def test_transformers_backend_batches_keep_order(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    backend = TransformersBackend(model, tokenizer, "tiny", batch_size=2, progress=False)
    prompts = [_prompt("你好"), _prompt("我最近睡不好，总是很早醒来，怎么办"), _prompt("焦虑")]
    settings = GenerationSettings(max_new_tokens=6)
    batched = backend.generate(prompts, settings)
    single = [TransformersBackend(model, tokenizer, "tiny", batch_size=1, progress=False).generate([p], settings)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(text, str) for text in batched)


def test_sampling_is_seeded(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    backend = TransformersBackend(model, tokenizer, "tiny", progress=False)
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=7)
    prompts = [_prompt("你好")] * 3
    assert backend.generate(prompts, settings) == backend.generate(prompts, settings)


class StreamingBackend:
    """Reports each reply through on_reply, then fails on the prompt named "boom"."""

    name = "streaming"

    def __init__(self, unclean=()):
        self.asked = []
        self.unclean = set(unclean)

    def generate(self, prompts, settings, on_reply=None):
        replies = []
        for index, messages in enumerate(prompts):
            text = messages[-1]["content"]
            self.asked.append(text)
            if text == "boom":
                raise RuntimeError("server went away")
            on_reply(index, f"re:{text}", text not in self.unclean)
            replies.append(f"re:{text}")
        return replies


def test_generation_settings_fields_and_positional_compatibility():
    settings = GenerationSettings(64, 0.7, 0.9, 7)
    assert (settings.max_new_tokens, settings.temperature, settings.top_p, settings.seed) == (64, 0.7, 0.9, 7)
    assert (settings.top_k, settings.repetition_penalty) == (0, 1.0)
    assert set(asdict(settings)) == {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"}
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0.0)


def test_presets_and_labels():
    assert PRESETS["greedy"].greedy and PRESETS["greedy"].label == "greedy-256"
    official = generation_preset("psyche_official")
    assert (official.max_new_tokens, official.temperature, official.top_p, official.top_k, official.repetition_penalty) == (
        2048, 0.7, 0.9, 0, 1.0,
    )
    assert official.label == "t0.7-p0.9-2048"
    assert generation_preset("greedy", max_new_tokens=64).label == "greedy-64"
    assert GenerationSettings(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, max_new_tokens=2048).label == (
        "t0.7-p0.8-k20-r1.05-2048"
    )
    with pytest.raises(KeyError, match="psyche_official"):
        generation_preset("offical")
    with pytest.raises(TypeError, match="topk"):
        generation_preset("greedy", topk=5)


def test_generate_kwargs_leave_nothing_to_the_checkpoint():
    greedy = generate_kwargs(PRESETS["greedy"])
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1.0 and greedy["num_beams"] == 1
    sampled = generate_kwargs(GenerationSettings(temperature=0.7, top_p=0.9))
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (True, 0.7, 0.9, 0)
    assert sampled["repetition_penalty"] == 1.0 and sampled["min_p"] == 0.0


def test_cache_key_includes_every_sampling_field(tmp_path):
    inner = CountingBackend()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    base = GenerationSettings()
    variants = [base, replace(base, top_k=20), replace(base, repetition_penalty=1.05), replace(base, seed=1)]
    assert len({cached.key(_prompt("a"), s) for s in variants}) == len(variants)


def test_cache_stores_each_reply_as_it_arrives(tmp_path):
    inner = StreamingBackend()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    with pytest.raises(RuntimeError, match="went away"):
        cached.generate([_prompt("a"), _prompt("b"), _prompt("boom")], GenerationSettings())
    inner.asked.clear()
    assert cached.generate([_prompt("a"), _prompt("b")], GenerationSettings()) == ["re:a", "re:b"]
    assert inner.asked == [], "replies that arrived before the failure were lost"


def test_unclean_replies_are_returned_but_not_cached(tmp_path):
    inner = StreamingBackend(unclean={"long"})
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    assert cached.generate([_prompt("long"), _prompt("ok")], GenerationSettings()) == ["re:long", "re:ok"]
    assert cached.not_cached == 1
    inner.asked.clear()
    cached.generate([_prompt("long"), _prompt("ok")], GenerationSettings())
    assert inner.asked == ["long"]


def test_greedy_ignores_the_checkpoint_generation_config(qwen_style_model):
    """A Qwen2.5-style generation_config must not turn a greedy run into a penalised or sampled one."""
    model, tokenizer, decode_by_hand = qwen_style_model
    tokenizer.padding_side = "left"
    prompts = [_prompt("你好"), _prompt("我最近睡不好，总是很早醒来，怎么办")]
    ours = TransformersBackend(model, tokenizer, "tiny", batch_size=1, progress=False).generate(
        prompts, GenerationSettings(max_new_tokens=24)
    )
    explicit = [decode_by_hand(messages, 24, clean=True) for messages in prompts]
    inherited = [decode_by_hand(messages, 24, clean=False) for messages in prompts]
    assert ours == explicit
    assert inherited != explicit, "the inherited repetition_penalty 1.05 should change this greedy output"
