import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.chat_template_utils import qwen2_5_chat_template

from psyche_utils import tiny

SAMPLE = "患者近两周情绪低落、兴趣减退，伴有早醒。Which diagnosis fits best? 答案：A、C\n<think>\n推理\n</think>"


def test_reload_gives_identical_ids(tiny_model_path):
    trained = tiny.train_tokenizer(tiny.corpus_texts())
    reloaded = AutoTokenizer.from_pretrained(tiny_model_path)
    assert reloaded(SAMPLE)["input_ids"] == trained(SAMPLE)["input_ids"]
    assert reloaded.decode(reloaded(SAMPLE)["input_ids"]) == SAMPLE


def test_special_tokens_and_template(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    for token in tiny.SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, token
    assert tokenizer.chat_template == qwen2_5_chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "系统"}, {"role": "user", "content": "你好"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\n系统<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"


def test_generation_runs(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert model.generation_config.eos_token_id == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]


def test_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path / "a"))
    first = tiny.build_tiny_model(seed=3)
    assert tiny.build_tiny_model(seed=3) == first
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path / "b"))
    second = tiny.build_tiny_model(seed=3)
    assert first.name == second.name
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    a = AutoModelForCausalLM.from_pretrained(first)
    b = AutoModelForCausalLM.from_pretrained(second)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_seeds_change_weights_not_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path))
    one, two = tiny.build_tiny_model(seed=1), tiny.build_tiny_model(seed=2)
    assert (one / "tokenizer.json").read_text() == (two / "tokenizer.json").read_text()
    wa = AutoModelForCausalLM.from_pretrained(one).model.embed_tokens.weight
    wb = AutoModelForCausalLM.from_pretrained(two).model.embed_tokens.weight
    assert not torch.equal(wa, wb)


def test_recipe_change_changes_cache_key():
    texts = ["一些文本"]
    assert tiny.recipe_key(texts, 0) != tiny.recipe_key(texts + ["更多"], 0)
    assert tiny.recipe_key(texts, 0) != tiny.recipe_key(texts, 1)


def test_recipe_is_recorded(tiny_model_path):
    recipe = json.loads((tiny_model_path / "recipe.json").read_text())
    assert recipe["hidden_size"] == tiny.TINY_RECIPE["hidden_size"]


def test_eval_fixtures_do_not_shape_the_vocabulary():
    assert all(tiny.EVAL_DATA_DIR not in path.parents for path in tiny.corpus_files())
