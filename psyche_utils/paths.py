"""Where the tutorial reads its inputs and writes its outputs.

Every generated artifact goes under one ignored folder, ``outputs/``, so that a learner can
start over with ``make clean`` and git never sees a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
EVAL_DATA_DIR = DATA_DIR / "eval"
CONFIGS_DIR = REPO_ROOT / "configs"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def outputs_dir() -> Path:
    """The output root; ``PSYCHE_OUTPUTS`` moves it (tests point it at a temporary folder)."""
    return Path(os.environ.get("PSYCHE_OUTPUTS", REPO_ROOT / "outputs"))


OUTPUTS_DIR = outputs_dir()


def outputs_path(*parts: str) -> Path:
    """A path under the output root, with its parent folders created."""
    path = outputs_dir().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def model_dir(profile_name: str, stage: str) -> Path:
    """Where a training stage ("sft" or "grpo") saves the model for a profile."""
    if stage not in {"sft", "grpo"}:
        raise ValueError(f"stage must be 'sft' or 'grpo', got {stage!r}")
    return outputs_dir() / "models" / profile_name / stage
