"""The memory estimator against counts worked out by hand."""

from __future__ import annotations

import pytest

from psyche_utils.memory import GIB, QWEN2_5_7B, ModelShape, estimate, estimate_for_profile
from psyche_utils.profiles import PROFILES

# h=4, I=8, one layer, 2 heads of size 2, one kv head (kv width 2), vocab 10, tied embeddings.
TOY = ModelShape(hidden_size=4, intermediate_size=8, num_layers=1, num_heads=2, num_kv_heads=1,
                 vocab_size=10, tie_word_embeddings=True)


def test_toy_parameter_counts_by_hand():
    # linear: q 4x4 + k 4x2 + v 4x2 + o 4x4 + gate 4x8 + up 4x8 + down 8x4 = 144
    # + q/k/v biases 4+2+2 + two norms 4+4 = 160 per layer; embeddings 10x4 = 40; final norm 4.
    assert TOY.kv_size == 2
    assert TOY.layer_parameters() == 160
    assert TOY.parameter_count() == 160 + 40 + 4
    # LoRA rank 2: 2 x (8 + 6 + 6 + 8 + 12 + 12 + 12) = 128
    assert TOY.lora_parameters(2) == 128
    # saved values per token and layer: 7h + 2kv + 4I = 28 + 4 + 32
    assert TOY.activation_values_per_token_layer() == 64


def test_full_fp32_adamw_by_hand():
    result = estimate(TOY, weight_format="float32", per_device_batch=2, seq_len=3, gradient_checkpointing=False,
                      compute_bytes=4, include_overhead=False)
    assert result.weights == 204 * 4
    assert result.gradients == 204 * 4
    assert result.optimizer == 204 * 8
    assert result.activations == 1 * 6 * 64 * 4
    assert result.total == 816 + 816 + 1632 + 1536


def test_gradient_checkpointing_keeps_layer_inputs_plus_one_layer():
    result = estimate(TOY, weight_format="float32", per_device_batch=2, seq_len=3, gradient_checkpointing=True,
                      compute_bytes=4, include_overhead=False)
    assert result.activations == 6 * 4 * 4 + 6 * 64 * 4


def test_lora_trains_only_the_adapters():
    result = estimate(TOY, weight_format="bfloat16", per_device_batch=1, seq_len=1, gradient_checkpointing=False,
                      lora_rank=2, include_overhead=False)
    assert result.trainable_parameters == 128
    assert result.weights == 204 * 2 + 128 * 2
    assert result.gradients == 128 * 2
    assert result.optimizer == 128 * 8


def test_nf4_quantizes_the_decoder_layers_only():
    result = estimate(TOY, weight_format="nf4", per_device_batch=1, seq_len=1, gradient_checkpointing=False,
                      include_overhead=False)
    assert result.weights == pytest.approx(160 * (0.5 + 0.127 / 8) + 44 * 2)


def test_zero3_shards_states_and_gathers_two_layers():
    result = estimate(TOY, weight_format="bfloat16", per_device_batch=1, seq_len=1, gradient_checkpointing=False,
                      num_processes=8, zero3=True, master_weights=True, include_overhead=False)
    assert result.weights == 204 * 2 / 8 + 2 * 160 * 2
    assert result.gradients == 204 * 2 / 8
    assert result.optimizer == 204 * 12 / 8


def test_overhead_is_context_plus_fragmentation():
    without = estimate(TOY, weight_format="float32", per_device_batch=1, seq_len=1, gradient_checkpointing=False,
                       include_overhead=False)
    with_overhead = estimate(TOY, weight_format="float32", per_device_batch=1, seq_len=1,
                             gradient_checkpointing=False)
    assert with_overhead.overhead == GIB + 0.1 * without.total


def test_qwen2_5_7b_has_its_published_size():
    assert QWEN2_5_7B.parameter_count() == 7_615_616_512


def test_tiny_shape_matches_the_real_tiny_model(tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    shape = ModelShape.from_config(model.config)
    assert shape.parameter_count() == model.num_parameters()


def test_profiles_fit_where_they_are_meant_to():
    full = estimate_for_profile(PROFILES["full"])
    qlora = estimate_for_profile(PROFILES["qlora"], lora_rank=64)
    full_on_one_gpu = estimate_for_profile(PROFILES["full"], num_processes=1)
    assert full.fits(80) and not full_on_one_gpu.fits(80)
    assert qlora.fits(24)
    assert qlora.total < full.total
    assert "fits on" in qlora.verdict() and "does NOT fit" in full_on_one_gpu.verdict(80)
