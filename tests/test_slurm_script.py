"""scripts/slurm/train_multinode.sbatch, run with stand-ins for srun, scontrol and accelerate.

The stand-ins record what each node's task would launch, so the test checks the real script's
arithmetic and quoting: one task per node, each with its own machine rank, the first node as the
rendezvous address, and the batch flags the project computes for that node count.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from psyche_utils.paths import REPO_ROOT
from psyche_utils.scaling import grpo_batch_plan, sft_batch_plan

SCRIPT = REPO_ROOT / "scripts" / "slurm" / "train_multinode.sbatch"


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(("stage", "plan_for"), [("sft", sft_batch_plan), ("grpo", grpo_batch_plan)])
def test_each_node_launches_its_rank(tmp_path, stage, plan_for):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "launches.txt"
    # srun: run the task once per node, as Slurm would, with that node's SLURM_NODEID.
    _tool(bin_dir, "srun", 'for id in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$id "${@: -3}"; done\n')
    _tool(bin_dir, "scontrol", 'printf "gpu-node-07\\ngpu-node-08\\n"\n')
    _tool(bin_dir, "accelerate", f'echo "$*" >> {log}\n')
    # An environment whose activation changes nothing, so the stand-ins above stay first on PATH.
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "activate").write_text("", encoding="utf-8")
    env = {
        **os.environ,
        "PSYCHE_VENV": str(tmp_path / "venv"),
        "PATH": f"{bin_dir}:{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
        "SLURM_SUBMIT_DIR": str(REPO_ROOT),
    }
    result = subprocess.run(["bash", str(SCRIPT), stage, "--seed", "7"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    launches = log.read_text(encoding="utf-8").splitlines()
    assert len(launches) == 2
    flags = plan_for(2).overrides()
    for rank, line in enumerate(launches):
        assert f"--machine_rank {rank} " in line
        assert "--num_machines 2 --num_processes 16" in line
        assert "--main_process_ip gpu-node-07 --main_process_port 29500" in line
        assert "--config_file configs/accelerate/zero3_8gpu.yaml" in line
        assert line.endswith(f"-m psyche_utils.train {stage} --config configs/{stage}/full_8gpu.yaml {flags} --seed 7")


def test_a_wrong_stage_is_refused(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "dpo"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SLURM_NNODES": "2"})
    assert result.returncode == 2 and "stage must be sft or grpo" in result.stderr
