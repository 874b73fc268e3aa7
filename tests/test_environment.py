import re
from pathlib import Path

import pytest

from psyche_utils.environment import PackageStatus, check_installed, read_pins, version_in_range
from psyche_utils.paths import REPO_ROOT

REQUIRED = {"torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "jupyterlab", "matplotlib", "nbmake", "pytest"}


def test_every_requirement_is_an_exact_pin():
    pins = read_pins()
    assert REQUIRED <= set(pins)
    assert pins["torch"] == "2.13.0"


def test_read_pins_names_the_bad_line(tmp_path):
    bad = tmp_path / "requirements.txt"
    bad.write_text("# comment\ntorch==2.13.0\ntrl>=1.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"requirements.txt:3: 'trl>=1.0' is not an exact pin"):
        read_pins(bad)


def test_conda_environment_installs_the_same_pins():
    """environment.yml must defer to requirements.txt and pin nothing of its own."""
    text = (REPO_ROOT / "environment.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M)
    pip_lines = [line.strip()[2:].strip() for line in text.split("- pip:", 1)[1].splitlines() if line.strip().startswith("- ")]
    assert pip_lines == ["-r requirements.txt", "-e ."]
    conda_deps = [line.strip()[2:] for line in text.split("dependencies:", 1)[1].split("- pip:", 1)[0].splitlines() if line.strip().startswith("- ")]
    assert conda_deps == ["python=3.11", "pip"]


def test_makefile_and_package_read_the_same_file():
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --disable-pip-version-check -r requirements.txt" in makefile
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dependencies = { file = ["requirements.txt"] }' in pyproject


def test_installed_versions_match_pins():
    failures = [status.line() for status in check_installed() if not status.ok]
    assert not failures, failures


def test_package_status_lines():
    assert PackageStatus("torch", "2.13.0", "2.13.0+cpu").line() == "[OK] torch==2.13.0 (found 2.13.0+cpu)"
    assert PackageStatus("trl", "1.16.0", None).line() == "[FAIL] trl==1.16.0 (found not installed)"
    assert not PackageStatus("trl", "1.16.0", "1.15.0").ok


def test_read_pins_follows_includes(tmp_path):
    (tmp_path / "base.txt").write_text("torch==2.13.0\n", encoding="utf-8")
    (tmp_path / "gpu.txt").write_text("# extras\n-r base.txt\nvllm==0.30.0\n", encoding="utf-8")
    assert read_pins(tmp_path / "gpu.txt") == {"torch": "2.13.0", "vllm": "0.30.0"}


def test_version_in_range():
    assert version_in_range("0.30.0", ">=0.22.0,<=0.31.0")
    assert not version_in_range("0.32.0", ">=0.22.0,<=0.31.0")
    assert version_in_range("2.13.0+cu128", "==2.13.0")
