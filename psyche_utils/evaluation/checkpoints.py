"""Which models to evaluate: the base model, and the SFT and GRPO checkpoints that exist.

Each checkpoint gets a name that includes a fingerprint of its files, so replies cached for an
earlier training run are never reused for a retrained model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from psyche_utils.models import base_model_source
from psyche_utils.paths import model_dir
from psyche_utils.profiles import Profile

STAGE_NOTEBOOKS = {"sft": "03_sft", "grpo": "04_grpo"}


@dataclass(frozen=True)
class Checkpoint:
    """A model to evaluate: its stage, where it loads from (None = the profile's base) and a cache name."""

    stage: str
    path: Path | None
    name: str


def fingerprint(path: Path) -> str:
    """Short hash of the weight and config files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin", ".json"}):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:8]


def is_loadable(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def find_checkpoints(profile: Profile) -> tuple[list[Checkpoint], list[str]]:
    """The base model plus every trained stage found on disk, and a note for each one missing."""
    base = Path(base_model_source(profile))
    base_name = f"{profile.name}-base-{fingerprint(base)}" if base.is_dir() else f"{profile.name}-base"
    found = [Checkpoint("base", None, base_name)]
    missing = []
    for stage, notebook in STAGE_NOTEBOOKS.items():
        path = model_dir(profile.name, stage)
        if is_loadable(path):
            found.append(Checkpoint(stage, path, f"{profile.name}-{stage}-{fingerprint(path)}"))
        else:
            missing.append(f"{stage}: no model at {path} (run notebooks/{notebook}.ipynb first to evaluate it)")
    return found, missing
