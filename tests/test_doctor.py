"""The preflight check, with every probe of the machine replaced by a scripted answer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from psyche_utils import doctor
from psyche_utils.doctor import FAIL, OK, WARN, GpuInfo, Probes, checkpoint_disk_bytes, run_checks
from psyche_utils.environment import GPU_REQUIREMENTS, read_pins
from psyche_utils.memory import GIB, estimate_for_profile
from psyche_utils.profiles import PROFILES

PINS = read_pins(GPU_REQUIREMENTS)
H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB, 79 * GIB)
T4 = GpuInfo("Tesla T4", (7, 5), 15 * GIB, 14 * GIB)


def probes(gpus=(), versions=None, cached=True, hub=None, disk=10_000 * GIB, launch=None) -> Probes:
    found = dict(PINS) if versions is None else versions
    return Probes(
        gpus=lambda: list(gpus),
        version=lambda name: found.get(name),
        module_found=lambda name: name in found,
        model_cached=lambda model_id: cached,
        hub=lambda model_id: hub,
        disk_free=lambda path: disk,
        launch_command=launch or (lambda stage, profile: f"launch {stage} {profile}"),
        vllm_range=lambda: ">=0.22.0,<=0.31.0",
    )


def by_name(checks):
    return {check.name: check for check in checks}


def test_a_ready_single_gpu_machine_is_all_ok(monkeypatch):
    monkeypatch.delenv("PSYCHE_EMULATE_GPU_ON_CPU", raising=False)
    checks = run_checks("qlora", probes(gpus=[H100]))
    assert [c.status for c in checks] == [OK] * len(checks), [c.line() for c in checks if c.status != OK]
    assert by_name(checks)["launch sft"].detail == "launch sft qlora"


def test_a_cpu_machine_says_what_fails_and_why(monkeypatch):
    monkeypatch.delenv("PSYCHE_EMULATE_GPU_ON_CPU", raising=False)
    versions = {**PINS, "torch": "2.13.0+cpu"}
    versions.pop("vllm")
    checks = by_name(run_checks("qlora", probes(versions=versions, cached=False, hub="HF_HUB_OFFLINE is set")))
    assert checks["GPUs"].status == FAIL and "CPU-only build" in checks["GPUs"].detail
    assert checks["vLLM"].status == WARN and "make env-gpu" in checks["vLLM"].fix
    assert checks["base model"].status == FAIL and "unset HF_HUB_OFFLINE" in checks["base model"].fix
    assert checks["pinned versions"].status == OK


def test_pre_ampere_gpus_warn_about_fp16():
    checks = by_name(run_checks("qlora", probes(gpus=[T4])))
    assert checks["precision"].status == WARN and "fp16" in checks["precision"].detail


def test_memory_is_compared_with_the_projects_estimate():
    need = estimate_for_profile(PROFILES["qlora"]).total
    roomy = replace(H100, free_bytes=int(need) + GIB)
    tight = replace(H100, free_bytes=int(need) - GIB)
    assert by_name(run_checks("qlora", probes(gpus=[roomy])))["memory"].status == OK
    tight_check = by_name(run_checks("qlora", probes(gpus=[tight])))["memory"]
    assert tight_check.status == FAIL and f"{need / GIB:.1f} GiB" in tight_check.detail


def test_full_needs_eight_gpus_and_vllm_in_range():
    versions = {**PINS, "vllm": "0.32.0"}
    checks = by_name(run_checks("full", probes(gpus=[H100] * 4, versions=versions)))
    assert checks["GPUs"].status == FAIL and "needs 8" in checks["GPUs"].detail
    assert checks["vLLM"].status == FAIL and "outside TRL's range" in checks["vLLM"].detail
    assert f"vllm=={PINS['vllm']}" in checks["vLLM"].fix


def test_wrong_pins_are_listed():
    versions = {**PINS, "transformers": "5.17.0"}
    check = by_name(run_checks("qlora", probes(gpus=[H100], versions=versions)))["pinned versions"]
    assert check.status == FAIL and "transformers==5.24.0 (found 5.17.0)" in check.detail


def test_uncached_model_with_a_reachable_hub_is_a_warning():
    check = by_name(run_checks("qlora", probes(gpus=[H100], cached=False, hub=None)))["base model"]
    assert check.status == WARN and "huggingface-cli download" in check.fix


def test_disk_space_against_the_checkpoint_estimate():
    need = checkpoint_disk_bytes(PROFILES["full"])
    # 2 checkpoints x 14 bytes + a 2-byte final copy per parameter, for each of the two stages.
    assert need == 2 * (2 * 14 + 2) * doctor.QWEN2_5_7B.parameter_count()
    check = by_name(run_checks("full", probes(gpus=[H100] * 8, disk=need - 1)))["disk"]
    assert check.status == FAIL and "PSYCHE_OUTPUTS" in check.fix


def test_several_nodes_print_the_batch_plan():
    checks = by_name(run_checks("full", probes(gpus=[H100] * 8), nodes=2))
    assert "--gradient_accumulation_steps 8" in checks["batch plan sft"].detail
    assert "--per_device_train_batch_size 10" in checks["batch plan grpo"].detail
    assert "scripts/slurm/train_multinode.sbatch" in checks["several nodes"].detail


def test_a_refused_launch_command_is_a_fail_line_not_a_crash():
    def refuse(stage, profile):
        raise KeyError("no recipe")

    check = by_name(run_checks("qlora", probes(gpus=[H100], launch=refuse)))["launch sft"]
    assert check.status == FAIL and "no recipe" in check.detail


def test_main_exit_status(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "Probes", lambda: probes(gpus=[H100]))
    assert doctor.main(["--profile", "qlora"]) == 0
    assert "ready to launch" in capsys.readouterr().out
    monkeypatch.setattr(doctor, "Probes", lambda: probes(gpus=[]))
    assert doctor.main(["--profile", "qlora"]) == 1
    assert "NOT ready" in capsys.readouterr().out


@pytest.mark.slow
def test_runs_on_this_machine():
    """The real probes must run anywhere (no GPU, no Hub) and give a verdict."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "psyche_utils.doctor", "--profile", "qlora"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode in (0, 1), result.stderr
    assert "[" in result.stdout and ("ready to launch" in result.stdout or "NOT ready" in result.stdout)
