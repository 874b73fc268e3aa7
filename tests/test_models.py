import json
import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from psyche_utils.models import base_model_source, four_bit_config, load_model_and_tokenizer, model_loading_kwargs
from psyche_utils.profiles import PROFILES, ProfileError, get_profile


def test_tiny_loads_for_generation_and_training():
    model, tokenizer = load_model_and_tokenizer(PROFILES["tiny"])
    assert tokenizer.padding_side == "left" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    _, train_tokenizer = load_model_and_tokenizer(PROFILES["tiny"], for_training=True)
    assert train_tokenizer.padding_side == "right"


def test_lora_adapter_folder_loads_on_its_base(tmp_path, tiny_model_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    model, tokenizer = load_model_and_tokenizer(PROFILES["tiny"], tmp_path / "adapter")
    assert isinstance(model, PeftModel)
    ids = tokenizer("你好", return_tensors="pt")["input_ids"]
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, plain(ids).logits), "the adapter's weights were not applied"


def test_qlora_loading_arguments_are_nf4_double_quant():
    kwargs = model_loading_kwargs(PROFILES["qlora"])
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert kwargs["device_map"] == {"": 0}
    assert four_bit_config().bnb_4bit_compute_dtype == torch.bfloat16
    assert "quantization_config" not in model_loading_kwargs(PROFILES["full"])


def _linear4bit_count(model) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


@pytest.fixture
def emulate_gpu(monkeypatch):
    monkeypatch.setenv("PSYCHE_EMULATE_GPU_ON_CPU", "1")


def test_emulation_lets_gpu_profiles_resolve_without_a_gpu(monkeypatch):
    monkeypatch.delenv("PSYCHE_EMULATE_GPU_ON_CPU", raising=False)
    with pytest.raises(ProfileError, match="PSYCHE_EMULATE_GPU_ON_CPU"):
        get_profile("qlora", gpu_count=0)
    monkeypatch.setenv("PSYCHE_EMULATE_GPU_ON_CPU", "1")
    assert get_profile("qlora", gpu_count=0).quantization == "nf4"
    assert model_loading_kwargs(PROFILES["qlora"])["device_map"] == {"": "cpu"}


def test_qlora_loads_the_tiny_model_in_4bit_on_the_cpu(emulate_gpu, tiny_model_path):
    assert base_model_source(PROFILES["qlora"]) == str(tiny_model_path)
    model, tokenizer = load_model_and_tokenizer(PROFILES["qlora"])
    assert _linear4bit_count(model) == 2 * 7, "every decoder linear layer should be NF4"
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert weight.quant_state.quant_type == "nf4" and weight.device.type == "cpu"
    ids = tokenizer("你好", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_qlora_adapter_merges_and_the_merged_model_reloads_in_4bit(emulate_gpu, tmp_path, tiny_model_path):
    four_bit, tokenizer = load_model_and_tokenizer(PROFILES["qlora"], for_training=True)
    peft_model = get_peft_model(four_bit, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_path)

    # Evaluation and chat load an adapter folder on its 4-bit base.
    loaded, _ = load_model_and_tokenizer(PROFILES["qlora"], tmp_path / "adapter")
    assert isinstance(loaded, PeftModel) and _linear4bit_count(loaded) == 14 and not loaded.training

    # Merge onto the full-precision base (the usual QLoRA route), then reload the merged model in 4-bit.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    reloaded, reloaded_tokenizer = load_model_and_tokenizer(PROFILES["qlora"], tmp_path / "merged")
    assert _linear4bit_count(reloaded) == 14
    ids = reloaded_tokenizer("你好", return_tensors="pt")["input_ids"]
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with torch.no_grad():
        merged_logits, adapter_logits = reloaded(ids).logits, loaded(ids).logits
        assert not torch.allclose(merged_logits, plain(ids).logits, atol=1e-3), "the merge changed nothing"
        # Both are the same merged weights seen through NF4, so they agree up to quantization error.
        assert torch.nn.functional.cosine_similarity(merged_logits.flatten(), adapter_logits.flatten(), dim=0) > 0.9


def test_tiny_path_imports_neither_bitsandbytes_nor_deepspeed():
    code = (
        "import sys\n"
        "from psyche_utils.models import load_model_and_tokenizer\n"
        "from psyche_utils.profiles import PROFILES\n"
        "import psyche_utils.memory, psyche_utils.environment\n"
        "load_model_and_tokenizer(PROFILES['tiny'])\n"
        "print(sorted(m for m in ('bitsandbytes', 'deepspeed', 'peft') if m in sys.modules))\n"
    )
    env = {**os.environ, "PSYCHE_PROFILE": "tiny", "HF_HUB_OFFLINE": "1"}
    env.pop("PSYCHE_EMULATE_GPU_ON_CPU", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "bitsandbytes" not in result.stderr and "gemm_4bit" not in result.stderr
