import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from psyche_utils.models import four_bit_config, load_model_and_tokenizer, model_loading_kwargs
from psyche_utils.profiles import PROFILES


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
