import pytest
import torch

from psyche_utils.profiles import PROFILES, ProfileError, get_profile, select_precision


def test_default_is_tiny_without_gpu(monkeypatch):
    monkeypatch.delenv("PSYCHE_PROFILE", raising=False)
    assert get_profile(gpu_count=0).name == "tiny"


def test_default_is_qlora_with_one_gpu(monkeypatch):
    monkeypatch.delenv("PSYCHE_PROFILE", raising=False)
    assert get_profile(gpu_count=1).name == "qlora"


def test_environment_variable_chooses(monkeypatch):
    monkeypatch.setenv("PSYCHE_PROFILE", "qlora")
    assert get_profile(gpu_count=1).name == "qlora"


def test_explicit_name_beats_environment(monkeypatch):
    monkeypatch.setenv("PSYCHE_PROFILE", "qlora")
    assert get_profile("tiny", gpu_count=0).name == "tiny"


def test_qlora_refused_without_gpu():
    with pytest.raises(ProfileError, match="needs at least 1 CUDA GPU.*no CUDA GPU was found.*PSYCHE_PROFILE=tiny"):
        get_profile("qlora", gpu_count=0)


def test_full_refused_with_too_few_gpus():
    with pytest.raises(ProfileError, match="needs at least 8 CUDA GPU.*only 2 CUDA GPU"):
        get_profile("full", gpu_count=2)


def test_full_accepted_with_eight_gpus():
    assert get_profile("full", gpu_count=8).num_processes == 8


def test_unknown_profile_lists_choices():
    with pytest.raises(ProfileError, match=r"Unknown profile 'huge'.*\['full', 'qlora', 'tiny'\]"):
        get_profile("huge", gpu_count=0)


def test_profiles_describe_what_they_need():
    assert PROFILES["qlora"].quantization == "nf4" and PROFILES["qlora"].lora
    assert PROFILES["full"].quantization is None and not PROFILES["full"].lora
    assert PROFILES["qlora"].model_id == PROFILES["full"].model_id == "Qwen/Qwen2.5-7B-Instruct"
    for profile in PROFILES.values():
        assert profile.purpose and profile.gpu_memory and profile.rough_time


@pytest.mark.parametrize(
    ("cuda", "bf16", "expected"),
    [
        (False, None, ("cpu", torch.float32, False, False, True)),
        (True, True, ("cuda", torch.bfloat16, True, False, False)),
        (True, False, ("cuda", torch.float16, False, True, False)),
    ],
)
def test_select_precision(cuda, bf16, expected):
    p = select_precision(cuda_available=cuda, bf16_supported=bf16)
    assert (p.device, p.dtype, p.bf16, p.fp16, p.use_cpu) == expected


def test_emulation_switch(monkeypatch):
    from psyche_utils.profiles import emulating_gpu_on_cpu

    monkeypatch.delenv("PSYCHE_EMULATE_GPU_ON_CPU", raising=False)
    assert not emulating_gpu_on_cpu()
    for value, expected in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv("PSYCHE_EMULATE_GPU_ON_CPU", value)
        assert emulating_gpu_on_cpu() is expected
    monkeypatch.setenv("PSYCHE_EMULATE_GPU_ON_CPU", "1")
    assert get_profile("full", gpu_count=0).name == "full"


def test_peft_import_after_profiles_prints_no_bitsandbytes_kernel_hint():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import psyche_utils.profiles, peft"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit" not in result.stderr and "kernels-community" not in result.stderr
