"""Check that the installed packages are exactly the pinned ones.

Fast-moving libraries (TRL above all) rename and remove arguments between releases, so the
tutorial pins every version in ``requirements.txt`` and checks them before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from psyche_utils.paths import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements.txt"
#: The pinned stack plus vLLM, for GPU machines (``make env-gpu``).
GPU_REQUIREMENTS = REPO_ROOT / "requirements-gpu.txt"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")
_INCLUDE = re.compile(r"^-r\s+(\S+)$")


def read_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{package: version}`` from a requirements file where every line is an exact pin.

    ``-r other.txt`` lines (as in requirements-gpu.txt) include another file, relative to this one.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = _INCLUDE.match(line)
        if include:
            pins.update(read_pins(path.parent / include.group(1)))
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: {line!r} is not an exact pin (NAME==VERSION)")
        pins[match.group(1).lower()] = match.group(2)
    return pins


@dataclass(frozen=True)
class PackageStatus:
    name: str
    pinned: str
    installed: str | None

    @property
    def ok(self) -> bool:
        # torch's CPU wheel reports "2.13.0+cpu": the local tag is a build flavour, not a version.
        return self.installed is not None and self.installed.split("+")[0] == self.pinned

    def line(self) -> str:
        found = self.installed or "not installed"
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name}=={self.pinned} (found {found})"


def check_installed(pins: dict[str, str] | None = None) -> list[PackageStatus]:
    """Compare each pin with what is installed in this interpreter."""
    statuses = []
    for name, version in (pins or read_pins()).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        statuses.append(PackageStatus(name, version, installed))
    return statuses


def trl_vllm_range() -> str | None:
    """The vLLM versions the installed TRL declares it works with (its ``vllm`` extra), e.g. ``<=0.31.0,>=0.22.0``."""
    try:
        requirements = metadata.requires("trl") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name, _, rest = requirement.partition(";")
        if re.match(r"^vllm\b", name.strip()) and "extra" in rest and "vllm" in rest:
            return name.strip()[len("vllm") :].strip() or None
    return None


def version_in_range(version: str, specifier: str) -> bool:
    """Whether ``version`` satisfies a PEP 440 specifier such as ``>=0.22.0,<=0.31.0``."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version.split("+")[0]) in SpecifierSet(specifier)
