"""What every notebook does first, and the check that proves the notebooks really ran.

``start`` resolves the profile, seeds every random number generator and writes a small
sentinel file. After CI executes the notebooks, ``check-sentinels`` confirms that each one
wrote its sentinel during this run and on the expected profile: a notebook that was skipped,
or silently ran on another profile, fails the build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psyche_utils.paths import NOTEBOOKS_DIR, outputs_path
from psyche_utils.profiles import Profile, get_profile


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a re-run gives the same splits and samples."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def sentinel_path(notebook_name: str) -> Path:
    return outputs_path("runs", f"{notebook_name}.json")


def start(notebook_name: str, profile_name: str | None = None, seed: int = 42) -> Profile:
    """Resolve the profile, seed everything, print a header and record that this notebook ran."""
    profile = get_profile(profile_name)
    seed_everything(seed)
    record = {
        "notebook": notebook_name,
        "profile": profile.name,
        "seed": seed,
        "started_at": time.time(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    sentinel_path(notebook_name).write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"{notebook_name} | profile: {profile.name} ({profile.model_id}) | device: {profile.device} | seed: {seed}")
    return profile


def save_figure(fig: Any, name: str) -> Path:
    """Save a matplotlib figure as PNG under outputs/figures/ and return the path."""
    path = outputs_path("figures", f"{name}.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def show(frame: Any) -> None:
    """Display a table in a notebook, or print it elsewhere (returns nothing, so it shows once)."""
    try:
        from IPython.display import display
    except ImportError:
        print(frame)
        return
    display(frame)


def check_sentinels(notebooks: list[Path], profile: str, since: float) -> list[str]:
    """Problems with the sentinels of ``notebooks``; an empty list means all ran as expected."""
    if not notebooks:
        return ["no notebooks were found to check: nothing ran"]
    problems = []
    for notebook in notebooks:
        path = sentinel_path(notebook.stem)
        if not path.exists():
            problems.append(f"{notebook.name}: no sentinel at {path} (did it call start({notebook.stem!r}, ...)?)")
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["started_at"] < since:
            problems.append(f"{notebook.name}: sentinel is older than this run (the notebook did not run)")
        if record["profile"] != profile:
            problems.append(f"{notebook.name}: ran on profile {record['profile']!r}, expected {profile!r}")
    return problems


def _notebooks_to_check() -> list[Path]:
    numbered = sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))
    solutions = sorted((NOTEBOOKS_DIR / "solutions").glob("*.ipynb"))
    return numbered + solutions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.notebook")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-sentinels", help="fail unless every notebook ran in this run on PROFILE")
    check.add_argument("--profile", required=True)
    check.add_argument("--since", type=float, required=True, help="Unix time the run started")
    args = parser.parse_args(argv)
    notebooks = _notebooks_to_check()
    problems = check_sentinels(notebooks, args.profile, args.since)
    for problem in problems:
        print(f"[FAIL] {problem}")
    if not problems:
        print(f"[OK] all {len(notebooks)} notebooks ran on profile {args.profile!r}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
