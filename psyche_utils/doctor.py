"""Preflight check: will this machine run a profile's training, before any GPU hours are spent?

``python -m psyche_utils.doctor --profile qlora`` (or ``full``) checks, one line each, marked
OK / WARN / FAIL with the fix:

* the GPUs: how many, compute capability and so bf16 or fp16;
* free GPU memory against this project's own estimate (``psyche_utils.memory``);
* vLLM: installed, and inside the range the installed TRL accepts;
* the pinned versions (``requirements-gpu.txt``, which includes ``requirements.txt``);
* the base model: already in the local Hugging Face cache, or the Hub reachable (a short
  request, nothing downloaded);
* free disk for checkpoints under ``outputs/``;
* the batch plan for ``--nodes`` machines, and the exact launch commands.

The exit status is 1 when any line is FAIL. Every probe of the machine is a field of
:class:`Probes`, so tests replace them and the checks are plain functions of their answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, util
from pathlib import Path

from psyche_utils.environment import GPU_REQUIREMENTS, read_pins, trl_vllm_range, version_in_range
from psyche_utils.memory import GIB, QWEN2_5_7B, estimate_for_profile
from psyche_utils.paths import outputs_dir
from psyche_utils.profiles import EMULATE_ENV_VAR, PROFILES, Profile, emulating_gpu_on_cpu

OK, WARN, FAIL = "OK", "WARN", "FAIL"
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"[{self.status:<4}] {self.name}: {self.detail}" + (f"\n         fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class GpuInfo:
    """What one CUDA device reports."""

    name: str
    capability: tuple[int, int]
    total_bytes: int
    free_bytes: int

    @property
    def bf16(self) -> bool:
        """bf16 needs Ampere (compute capability 8.0) or newer; T4 (7.5) and V100 (7.0) need fp16."""
        return self.capability >= (8, 0)


def probe_gpus() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(GpuInfo(torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index), total, free))
    return gpus


def probe_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def probe_model_cached(model_id: str) -> bool:
    """Whether config.json and every weight shard of ``model_id`` are in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model_id, "config.json")
    if not isinstance(config, str):
        return False
    index = try_to_load_from_cache(model_id, "model.safetensors.index.json")
    if isinstance(index, str):
        shards = set(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"].values())
        return all(isinstance(try_to_load_from_cache(model_id, shard), str) for shard in shards)
    return isinstance(try_to_load_from_cache(model_id, "model.safetensors"), str)


def probe_hub(model_id: str) -> str | None:
    """None when the Hub answers for ``model_id`` within a few seconds, else why not (nothing is downloaded)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in {"", "0"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{model_id}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S):
            return None
    except (urllib.error.URLError, OSError) as error:
        return f"{endpoint} did not answer in {HUB_TIMEOUT_S:.0f} s ({error})"


def probe_disk_free(path: Path) -> int:
    existing = path
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def probe_launch_command(stage: str, profile_name: str) -> str:
    from psyche_utils.train.common import launch_command_for

    return launch_command_for(stage, profile_name)


@dataclass
class Probes:
    """Everything the doctor asks the machine; tests swap in their own answers."""

    gpus: Callable[[], list[GpuInfo]] = probe_gpus
    version: Callable[[str], str | None] = probe_version
    module_found: Callable[[str], bool] = field(default=lambda name: util.find_spec(name) is not None)
    model_cached: Callable[[str], bool] = probe_model_cached
    hub: Callable[[str], str | None] = probe_hub
    disk_free: Callable[[Path], int] = probe_disk_free
    launch_command: Callable[[str, str], str] = probe_launch_command
    vllm_range: Callable[[], str | None] = trl_vllm_range


def checkpoint_disk_bytes(profile: Profile, save_total_limit: int = 2) -> int:
    """Disk a profile's two training stages write, by the recipes' own saving rules.

    qlora: per stage a LoRA adapter with its optimizer state (well under 1 GB) and a merged
    bf16 copy (2 bytes per parameter). full: per stage ``save_total_limit`` checkpoints of
    bf16 weights, fp32 master weights and two Adam moments (2 + 4 + 8 = 14 bytes per parameter)
    plus the final bf16 model. tiny: a few MB. Both stages are counted, plus the base model if it
    still has to be downloaded into the cache (checked separately).
    """
    params = QWEN2_5_7B.parameter_count()
    if profile.name == "tiny":
        return 100 * 1024**2
    if profile.lora:
        per_stage = params * 2 + 1 * GIB
    else:
        per_stage = save_total_limit * params * 14 + params * 2
    return 2 * per_stage


def _gpu_checks(profile: Profile, gpus: list[GpuInfo], nodes: int, torch_build: str | None) -> list[Check]:
    if profile.min_gpus == 0:
        return [Check("GPUs", OK, f"{len(gpus)} found; the {profile.name} profile runs on the CPU")]
    checks = []
    if not gpus:
        hint = f" ({EMULATE_ENV_VAR}=1 is set: the code path runs on the CPU with the tiny model, not the 7B)" if emulating_gpu_on_cpu() else ""
        torch_version = torch_build or "not installed"
        build = f"; torch {torch_version} is the CPU-only build" if "+cpu" in torch_version else f"; torch {torch_version}"
        checks.append(Check(
            "GPUs", FAIL, f"no CUDA GPU is visible{build}; the {profile.name} profile needs {profile.min_gpus} per node{hint}",
            "run on a machine with NVIDIA GPUs and a CUDA build of torch (pip install torch==2.13.0 from PyPI on Linux), "
            "or use PSYCHE_PROFILE=tiny here",
        ))
        return checks
    names = ", ".join(sorted({g.name for g in gpus}))
    capabilities = ", ".join(sorted({f"{g.capability[0]}.{g.capability[1]}" for g in gpus}))
    if len(gpus) < profile.min_gpus:
        checks.append(Check(
            "GPUs", FAIL, f"{len(gpus)} x {names}; the {profile.name} profile needs {profile.min_gpus} per node",
            f"use a node with {profile.min_gpus} GPUs, or PSYCHE_PROFILE=qlora on one GPU",
        ))
    else:
        checks.append(Check("GPUs", OK, f"{len(gpus)} x {names} (compute capability {capabilities}) on each of {nodes} node(s)"))
    if all(g.bf16 for g in gpus):
        checks.append(Check("precision", OK, "bf16 supported (compute capability >= 8.0)"))
    else:
        checks.append(Check(
            "precision", WARN, f"compute capability {capabilities} has no bf16: training falls back to fp16",
            "fp16 is chosen automatically (profiles.select_precision); expect overflow-prone losses, an A100/L40S/H100 is safer",
        ))
    return checks


def _memory_check(profile: Profile, gpus: list[GpuInfo]) -> Check:
    estimate = estimate_for_profile(profile)
    if profile.min_gpus == 0:
        return Check("memory", OK, f"{estimate.total / GIB:.2f} GiB of RAM for training (no GPU needed)")
    if not gpus:
        return Check("memory", WARN, f"needs about {estimate.total / GIB:.1f} GiB free per GPU (SFT step); no GPU to compare with")
    used = gpus[: profile.num_processes]
    tightest = min(used, key=lambda g: g.free_bytes)
    line = f"estimate {estimate.total / GIB:.1f} GiB per GPU (SFT step, memory.estimate_for_profile); least free: {tightest.free_bytes / GIB:.1f} GiB on {tightest.name}"
    if estimate.total <= tightest.free_bytes:
        return Check("memory", OK, line)
    return Check(
        "memory", FAIL, line,
        "free the GPU (nvidia-smi shows who holds it), lower per_device_train_batch_size and raise "
        "gradient_accumulation_steps, or use a larger card",
    )


def _vllm_check(profile: Profile, probes: Probes) -> Check:
    declared = probes.vllm_range()
    installed = probes.version("vllm")
    wanted = read_pins(GPU_REQUIREMENTS).get("vllm", "?")
    if installed is None or not probes.module_found("vllm"):
        status = WARN if profile.name != "full" else FAIL
        return Check(
            "vLLM", status if profile.min_gpus else OK,
            "not installed" + ("" if profile.min_gpus else " (not used by the tiny profile)"),
            f"make env-gpu (installs vllm=={wanted}); without it set use_vllm: false in the GRPO recipe" if profile.min_gpus else "",
        )
    if declared and not version_in_range(installed, declared):
        return Check("vLLM", FAIL, f"vllm {installed} is outside TRL's range {declared}", f"pip install vllm=={wanted} (make env-gpu)")
    return Check("vLLM", OK, f"vllm {installed} installed, inside TRL's range {declared or '(TRL declares none)'}")


def _pin_check(probes: Probes) -> Check:
    pins = {name: version for name, version in read_pins(GPU_REQUIREMENTS).items() if name != "vllm"}
    wrong = []
    for name, pinned in pins.items():
        found = probes.version(name)
        if found is None or found.split("+")[0] != pinned:
            wrong.append(f"{name}=={pinned} (found {found or 'not installed'})")
    if wrong:
        return Check("pinned versions", FAIL, f"{len(wrong)} of {len(pins)} differ: " + "; ".join(wrong), "make env (or make env-gpu)")
    return Check("pinned versions", OK, f"all {len(pins)} pins of requirements.txt installed")


def _model_check(profile: Profile, probes: Probes) -> Check:
    if profile.name == "tiny" or emulating_gpu_on_cpu():
        return Check("base model", OK, "the tiny model is built locally (psyche_utils.tiny); nothing to download")
    if probes.model_cached(profile.model_id):
        return Check("base model", OK, f"{profile.model_id} is in the local Hugging Face cache")
    problem = probes.hub(profile.model_id)
    if problem is None:
        return Check("base model", WARN, f"{profile.model_id} is not cached; the Hub answers, so the first run downloads about 15 GB",
                     f"download it once before the run: huggingface-cli download {profile.model_id}")
    fix = f"copy the model into the HF cache (huggingface-cli download {profile.model_id} on a machine with Hub access)"
    if "HF_HUB_OFFLINE" in problem:
        fix += ", or unset HF_HUB_OFFLINE"
    return Check("base model", FAIL, f"{profile.model_id} is not cached and the Hub cannot be reached: {problem}", fix)


def _disk_check(profile: Profile, probes: Probes) -> Check:
    target = outputs_dir()
    need = checkpoint_disk_bytes(profile)
    free = probes.disk_free(target)
    line = f"{free / GIB:.0f} GiB free at {target}; the {profile.name} recipes write about {need / GIB:.0f} GiB (both stages)"
    if free >= need:
        return Check("disk", OK, line)
    return Check("disk", FAIL, line, "point PSYCHE_OUTPUTS at a larger disk, or lower save_total_limit in the recipes")


def _launch_checks(profile: Profile, probes: Probes, nodes: int) -> list[Check]:
    checks = []
    for stage in ("sft", "grpo"):
        try:
            command = probes.launch_command(stage, profile.name)
        except Exception as error:  # the recipe layer refuses: report it instead of crashing the report
            checks.append(Check(f"launch {stage}", FAIL, f"no launch command: {error}", "check configs/ and psyche_utils/train"))
            continue
        checks.append(Check(f"launch {stage}", OK, command))
    if profile.name == "full" and nodes > 1:
        from psyche_utils.scaling import ScalingError, grpo_batch_plan, sft_batch_plan

        for plan_for in (sft_batch_plan, grpo_batch_plan):
            try:
                plan = plan_for(nodes)
            except ScalingError as error:
                checks.append(Check("batch plan", FAIL, str(error), "choose a node count that divides the batch (1, 2, 4, ...)"))
                continue
            checks.append(Check(f"batch plan {plan.stage}", OK, f"{plan.describe()}; append: {plan.overrides()}"))
        checks.append(Check("several nodes", OK, f"sbatch --nodes={nodes} scripts/slurm/train_multinode.sbatch sft (then grpo)"))
    return checks


def run_checks(profile_name: str, probes: Probes | None = None, nodes: int = 1) -> list[Check]:
    """Every check for ``profile_name``, in report order."""
    probes = probes or Probes()
    profile = PROFILES[profile_name]
    checks = []
    if emulating_gpu_on_cpu():
        checks.append(Check("emulation", WARN, f"{EMULATE_ENV_VAR}=1: GPU profiles load the tiny model on the CPU",
                            f"unset {EMULATE_ENV_VAR} for a real run"))
    gpus = probes.gpus()
    checks += _gpu_checks(profile, gpus, nodes, probes.version("torch"))
    checks.append(_memory_check(profile, gpus))
    checks.append(_vllm_check(profile, probes))
    checks.append(_pin_check(probes))
    checks.append(_model_check(profile, probes))
    checks.append(_disk_check(profile, probes))
    checks += _launch_checks(profile, probes, nodes)
    return checks


def report(checks: list[Check]) -> str:
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    verdict = "ready to launch" if not failed else f"NOT ready: {failed} check(s) fail"
    return "\n".join(c.line() for c in checks) + f"\n{verdict} ({warned} warning(s))"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.doctor", description="Preflight check for a profile's training run.")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="qlora")
    parser.add_argument("--nodes", type=int, default=1, help="machines the run will use (full profile)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checks = run_checks(args.profile, nodes=args.nodes)
    print(f"Preflight for the {args.profile} profile ({args.nodes} node(s)):")
    print(report(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
