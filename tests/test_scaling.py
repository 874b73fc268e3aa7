"""Batch arithmetic for N x 8 GPUs and the data-generation time estimate, checked by hand."""

import pytest

from psyche_utils.scaling import ScalingError, generation_time, grpo_batch_plan, main, sft_batch_plan


@pytest.mark.parametrize(("nodes", "per_device", "accumulation"), [(1, 2, 16), (2, 2, 8), (4, 2, 4), (16, 2, 1)])
def test_sft_keeps_256_sequences_per_update(nodes, per_device, accumulation):
    plan = sft_batch_plan(nodes)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps) == (per_device, accumulation)
    assert plan.per_device_train_batch_size * plan.world_size * plan.gradient_accumulation_steps == 256


def test_sft_on_one_gpu_accumulates_the_rest():
    assert sft_batch_plan(1, 1).gradient_accumulation_steps == 128


@pytest.mark.parametrize(("nodes", "per_device"), [(1, 20), (2, 10), (4, 5)])
def test_grpo_keeps_160_completions_per_update_and_640_per_rollout(nodes, per_device):
    plan = grpo_batch_plan(nodes)
    assert plan.per_device_train_batch_size == per_device and plan.gradient_accumulation_steps == 1
    assert plan.global_batch == 32 * 5 and plan.generation_batch_size == 128 * 5
    assert plan.generation_batch_size % (plan.per_device_train_batch_size * plan.world_size) == 0


def test_counts_that_cannot_keep_the_batch_are_refused():
    with pytest.raises(ScalingError, match="24 GPUs"):
        sft_batch_plan(3)
    with pytest.raises(ScalingError, match="cannot be split evenly over 64 GPUs"):
        grpo_batch_plan(8)


def test_overrides_are_trainer_flags():
    assert sft_batch_plan(2).overrides() == "--per_device_train_batch_size 2 --gradient_accumulation_steps 8"
    assert grpo_batch_plan(2).overrides().endswith("--generation_batch_size 640")


def test_generation_time_is_tokens_over_rate():
    estimate = generation_time(75_000, 1_500, 2_500.0)
    assert estimate.tokens == 112_500_000
    assert estimate.hours == pytest.approx(112_500_000 / 2_500 / 3600)  # 12.5 h
    doubled = generation_time(75_000, 1_500, 2_500.0, replies_per_question=2, servers=2)
    assert doubled.hours == pytest.approx(estimate.hours)
    with pytest.raises(ScalingError):
        generation_time(0, 1_500, 2_500.0)


def test_cli(capsys):
    assert main(["--nodes", "2", "--overrides-for", "sft"]) == 0
    assert capsys.readouterr().out.strip() == "--per_device_train_batch_size 2 --gradient_accumulation_steps 8"
    assert main(["--nodes", "3"]) == 2
