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
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def read_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{package: version}`` from a requirements file where every line is an exact pin."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
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
