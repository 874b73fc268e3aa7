"""Load a model and tokenizer the way the active profile says.

tiny: the locally built stand-in in fp32 on the CPU. qlora: Qwen2.5-7B-Instruct quantized to
4-bit NF4 with double quantization, compute in bf16. full: the same model in bf16. A path to a
trained checkpoint replaces the base model; a LoRA adapter folder is loaded on top of its base.
With ``PSYCHE_EMULATE_GPU_ON_CPU=1`` (see ``profiles.emulating_gpu_on_cpu``) the qlora and full
profiles load the tiny model on the CPU, 4-bit and LoRA included.

bitsandbytes and peft are imported only on the paths that use them, so the tiny path never
loads them from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from psyche_utils.profiles import Profile, emulating_gpu_on_cpu, select_precision
from psyche_utils.tiny import build_tiny_model


def four_bit_config(compute_dtype: torch.dtype = torch.bfloat16) -> Any:
    """QLoRA's quantization: NF4 weights, double-quantized constants, bf16 matmuls."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def base_model_source(profile: Profile) -> str:
    """The base model a profile starts from: a Hub id, or the tiny model's local folder.

    Under ``PSYCHE_EMULATE_GPU_ON_CPU=1`` every profile starts from the tiny model.
    """
    if profile.name == "tiny" or emulating_gpu_on_cpu():
        return str(build_tiny_model())
    return profile.model_id


def model_loading_kwargs(profile: Profile) -> dict[str, Any]:
    """``from_pretrained`` arguments for a profile (dtype, quantization, device placement)."""
    precision = select_precision()
    kwargs: dict[str, Any] = {"dtype": precision.dtype}
    if profile.quantization == "nf4":
        kwargs["quantization_config"] = four_bit_config(precision.dtype)
        # 4-bit weights are placed at load time: on this process's GPU, or the CPU when emulating.
        kwargs["device_map"] = {"": "cpu" if emulating_gpu_on_cpu() else int(os.environ.get("LOCAL_RANK", 0))}
    return kwargs


def load_model_and_tokenizer(
    profile: Profile, path: str | Path | None = None, *, for_training: bool = False
) -> tuple[Any, Any]:
    """A model and tokenizer ready for generation (left padding) or training (right padding).

    ``path`` may be a full checkpoint or a LoRA adapter folder (``adapter_config.json``); an
    adapter is attached to the base model it was trained from.
    """
    source = Path(path) if path is not None else None
    adapter_config = source / "adapter_config.json" if source is not None else None
    if adapter_config is not None and adapter_config.exists():
        base = json.loads(adapter_config.read_text(encoding="utf-8"))["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(base, **model_loading_kwargs(profile))
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source, is_trainable=for_training)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            str(source) if source is not None else base_model_source(profile), **model_loading_kwargs(profile)
        )
    tokenizer_source = source if source is not None and (source / "tokenizer_config.json").exists() else base_model_source(profile)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    tokenizer.padding_side = "right" if for_training else "left"
    if profile.device == "cuda" and profile.quantization is None and not for_training and torch.cuda.is_available():
        model = model.to("cuda")
    if not for_training:
        model.eval()
    return model, tokenizer
