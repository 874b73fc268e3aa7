"""requirements-gpu.txt must install as one set: the pinned stack plus a vLLM that TRL accepts.

The slow test asks pip to resolve the whole GPU set against the package index without installing
anything (``pip install --dry-run --ignore-installed``). A conflict fails the test with pip's own
explanation; only an index that cannot be reached at all skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from psyche_utils.environment import GPU_REQUIREMENTS, REQUIREMENTS, read_pins, trl_vllm_range, version_in_range
from psyche_utils.paths import REPO_ROOT


def test_gpu_requirements_add_only_vllm_to_the_pins():
    lines = [line.strip() for line in GPU_REQUIREMENTS.read_text(encoding="utf-8").splitlines()]
    assert "-r requirements.txt" in lines
    gpu, cpu = read_pins(GPU_REQUIREMENTS), read_pins(REQUIREMENTS)
    assert {name: version for name, version in gpu.items() if name not in cpu} == {"vllm": gpu["vllm"]}


def test_pinned_vllm_is_inside_trls_range():
    declared = trl_vllm_range()
    assert declared is not None, "the installed trl declares no vllm extra"
    assert version_in_range(read_pins(GPU_REQUIREMENTS)["vllm"], declared)
    assert not version_in_range("0.32.0", declared)


def test_makefile_has_the_gpu_target():
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "env-gpu:" in makefile and "requirements-gpu.txt" in makefile


def _index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        found = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else "https://pypi.org/simple"
    return url.rstrip("/") + "/"


def _index_reachable(url: str) -> str | None:
    """None when the index answers, else why not."""
    if url.startswith("file:"):
        return None
    try:
        with urllib.request.urlopen(url + "vllm/", timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as error:
        return f"{url} cannot be reached ({error})"
    return None


@pytest.mark.slow
def test_gpu_set_resolves_against_the_index(tmp_path):
    url = _index_url()
    unreachable = _index_reachable(url)
    if unreachable:
        pytest.skip(f"cannot check the GPU install here: {unreachable}")
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--report", str(report), "-r", str(GPU_REQUIREMENTS),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=REPO_ROOT)
    errors = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("WARNING: Location"))
    if result.returncode != 0 and "ResolutionImpossible" not in errors and any(
        hint in errors for hint in ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
    ):
        pytest.skip(f"the index stopped answering during the resolve: {errors[-500:]}")
    assert result.returncode == 0, f"pip cannot install requirements-gpu.txt as one set:\n{errors[-4000:]}"
    resolved = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    changed = {
        name: (pinned, resolved.get(name))
        for name, pinned in read_pins(GPU_REQUIREMENTS).items()
        if (resolved.get(name) or "").split("+")[0] != pinned
    }
    assert not changed, f"the GPU set would change these pins (pinned, resolved): {changed}"
