"""Hardware profiles: one code path, three sizes of machine.

A profile says which model to load, how (precision, 4-bit or not, LoRA or full fine-tune) and
how big the batches and sequences may be. Notebooks and the training entry point read the same
profile, so a learner switches from a laptop to eight GPUs by changing one environment variable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import torch

BASE_MODEL_ID = "Qwen/Qwen2.5-7B-Instruct"
PROFILE_ENV_VAR = "PSYCHE_PROFILE"
EMULATE_ENV_VAR = "PSYCHE_EMULATE_GPU_ON_CPU"

# bitsandbytes is imported by peft (and so by TRL) on every path, and on CPUs with AVX512-BF16 it
# logs that an optional faster CPU kernel package ("kernels") is missing. Its fallback computes
# the same numbers, so on this tutorial's CPU path the hint is noise; quieted by name, before import.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


class ProfileError(RuntimeError):
    """A profile was asked for that this machine cannot run."""


@dataclass(frozen=True)
class Profile:
    """Everything a stage needs to know about the machine it runs on."""

    name: str
    model_id: str
    device: str
    dtype: str
    quantization: str | None
    lora: bool
    per_device_batch: int
    max_length: int
    max_new_tokens: int
    num_processes: int
    min_gpus: int
    purpose: str
    gpu_memory: str
    rough_time: str

    def as_row(self) -> dict[str, object]:
        """A flat dict for a comparison table."""
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        model_id="local tiny Qwen2 (built by psyche_utils.tiny)",
        device="cpu",
        dtype="float32",
        quantization=None,
        lora=False,
        per_device_batch=8,
        max_length=384,
        max_new_tokens=64,
        num_processes=1,
        min_gpus=0,
        purpose="Runs every stage on a laptop CPU, offline, to learn the mechanics; the model babbles.",
        gpu_memory="none (about 2 GB of RAM)",
        rough_time="minutes for all notebooks",
    ),
    "qlora": Profile(
        name="qlora",
        model_id=BASE_MODEL_ID,
        device="cuda",
        dtype="bfloat16",
        quantization="nf4",
        lora=True,
        per_device_batch=2,
        max_length=2048,
        max_new_tokens=2048,
        num_processes=1,
        min_gpus=1,
        purpose="4-bit NF4 base + LoRA adapters on one GPU: the real 7B model at a fraction of the memory.",
        gpu_memory="about 24 GB (SFT) to 40 GB (GRPO) on one GPU",
        rough_time="hours per stage on a sample; about a day on the full data",
    ),
    "full": Profile(
        name="full",
        model_id=BASE_MODEL_ID,
        device="cuda",
        dtype="bfloat16",
        quantization=None,
        lora=False,
        per_device_batch=2,
        max_length=4096,
        max_new_tokens=2048,
        num_processes=8,
        min_gpus=8,
        purpose="The model card's recipe: full fine-tune with DeepSpeed ZeRO-3 on 8 GPUs.",
        gpu_memory="8 x 80 GB",
        rough_time="about a day for SFT plus a day for GRPO on the paper's data size",
    ),
}


def emulating_gpu_on_cpu() -> bool:
    """Whether ``PSYCHE_EMULATE_GPU_ON_CPU=1`` asks for a GPU profile's code path on the CPU.

    With the switch on, the ``qlora`` and ``full`` profiles run on a machine without a GPU:
    ``get_profile`` stops refusing them, ``psyche_utils.models`` loads the locally built tiny
    model instead of the 7B id, and everything else stays the profile's own - 4-bit NF4 with
    double quantization and LoRA for ``qlora`` (bitsandbytes 0.50 runs NF4 on the CPU), the
    recipes, the trainer arguments. Only device placement differs (CPU, fp32 compute). It exists
    so tests can exercise the GPU profiles' loading, training and merging code without a GPU;
    the numbers it produces say nothing about the 7B model.
    """
    return os.environ.get(EMULATE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def cuda_gpu_count() -> int:
    """How many CUDA GPUs this process can see."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def get_profile(name: str | None = None, *, gpu_count: int | None = None) -> Profile:
    """Resolve a profile by name, then ``PSYCHE_PROFILE``, then the hardware.

    Without a GPU the default is ``tiny``; with one it is ``qlora``. ``full`` is never chosen
    silently because it launches eight processes. A profile the machine cannot run is refused
    here, with the fix in the message, rather than failing deep inside a training step.
    """
    gpus = cuda_gpu_count() if gpu_count is None else gpu_count
    chosen = (name or os.environ.get(PROFILE_ENV_VAR) or "").strip().lower()
    if not chosen:
        chosen = "qlora" if gpus > 0 else "tiny"
    if chosen not in PROFILES:
        raise ProfileError(
            f"Unknown profile {chosen!r}. Choose one of {sorted(PROFILES)} "
            f"(set {PROFILE_ENV_VAR} or pass the name)."
        )
    profile = PROFILES[chosen]
    if gpus < profile.min_gpus and not emulating_gpu_on_cpu():
        found = "no CUDA GPU was found" if gpus == 0 else f"only {gpus} CUDA GPU(s) were found"
        raise ProfileError(
            f"Profile {chosen!r} needs at least {profile.min_gpus} CUDA GPU(s), but {found}. "
            f"On this machine use {PROFILE_ENV_VAR}=tiny"
            + (" or qlora" if gpus >= 1 else "")
            + f" (or set {EMULATE_ENV_VAR}=1 to run its code path on the CPU with the tiny model)."
        )
    return profile


@dataclass(frozen=True)
class Precision:
    """The device and number format a run should use."""

    device: str
    dtype: torch.dtype
    bf16: bool
    fp16: bool
    use_cpu: bool


def select_precision(
    cuda_available: bool | None = None, bf16_supported: bool | None = None
) -> Precision:
    """bf16 where the GPU supports it, fp16 on older GPUs, fp32 on the CPU.

    TRL's configs default to bf16 and fail on a CPU, so the CPU case also says ``use_cpu``.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not cuda:
        return Precision("cpu", torch.float32, bf16=False, fp16=False, use_cpu=True)
    bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    if bf16:
        return Precision("cuda", torch.bfloat16, bf16=True, fp16=False, use_cpu=False)
    return Precision("cuda", torch.float16, bf16=False, fp16=True, use_cpu=False)
