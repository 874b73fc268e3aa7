from psyche_utils.llm import CachedBackend, GenerationSettings, TransformersBackend


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
