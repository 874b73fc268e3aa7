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
import re
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


def say(markdown: str) -> None:
    """Show a sentence built from computed values as Markdown, so prose about a result cannot drift from it."""
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(markdown)
        return
    display(Markdown(markdown))


def check(name: str, condition: bool, detail: str = "") -> None:
    """Guard a markdown claim: raise, naming the claim, when the run no longer makes it true.

    A markdown cell that states a result carries ``<!-- check: name -->`` and the next code cell
    calls ``check("name", ...)``; a re-run whose numbers move then fails loudly instead of
    leaving a sentence that the output beneath it contradicts.
    """
    if not condition:
        raise AssertionError(f"claim '{name}' does not hold" + (f": {detail}" if detail else ""))


CHECK_MARKER = re.compile(r"<!--\s*check:\s*([\w.-]+)\s*-->")
# What a sentence stating a run's result looks like: a percentage, a count out of a total, a direction.
RESULT_PATTERNS = [
    re.compile(r"\d+(?:\.\d+)?\s*%"),
    re.compile(r"\b\d+\s+(?:out\s+)?of\s+(?:the\s+|all\s+)?\d+\b", re.I),
    re.compile(r"(?<![\w/.-])\d+\s*/\s*\d+(?![\w/.-])"),
    re.compile(r"\b(?:majority|minority|rises|rose|risen|grows|grew|climbs|climbed|improves|improved|"
               r"worsens|worsened|increases|increased|decreases|decreased|higher|lower|better|worse|"
               r"near chance|at chance|beats|outperforms|none of)\b", re.I),
    # "falls", "drops": not the phrasal "falls back" nor a rule's passive "are dropped".
    re.compile(r"\b(?:falls|fell|fallen)\b(?!\s+back)|(?<!is )(?<!are )(?<!be )\b(?:drops|dropped)\b", re.I),
    # "most" as a quantity ("most replies", "most of them"), not a superlative ("the most trusted").
    re.compile(r"(?<!the )\bmost\s+(?:of\b|(?:\w+\s+){0,2}?\w+s\b)", re.I),
    # "below"/"above" as a comparison ("below chance", "above 0.5"), not a place ("the table below").
    re.compile(r"(?<!table )(?<!plot )(?<!figure )(?<!cell )(?<!check )(?<!code )(?<!output )(?<!shown )"
               r"(?<!printed )(?<!listed )(?<!everything )(?<!rate )(?<!as )(?<!commands )"
               r"\b(?:below|above)\b(?!\s*[,.;:)]|\s*$|\s+(?:is|are|was|were|shows?|compares?|runs?|"
               r"the\s+(?:cell|table|plot|figure|output|code)))",
               re.I),
]
# Sentences that say what to look for before a run, or state a rule rather than a measured result.
EXPECTATION = re.compile(
    r"\b(?:expect|expected|expects|watch whether|watch how|look for|see whether|check whether|predict|"
    r"guess|should|would|could|might|may|can|cannot|must|if|whether|when|unless)\b",
    re.I,
)
# Sentences about other runs (the paper's, a real teacher's): references, not this run's result.
REFERENCE = re.compile(r"^\W*(?:with a real|on a real|on the real|in the paper|the paper|the published|"
                       r"published)\b", re.I)
_BLOCK_START = re.compile(r"^(?:[-*>+]\s|\d+\.\s|#|\|)")


def _prose_sentences(markdown: str) -> list[str]:
    """Split markdown into sentences, dropping code, links' targets, HTML comments, headings and tables."""
    text = re.sub(r"```.*?```", "\n\n", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "CODE", text)
    text = re.sub(r"\$[^$]+\$", "MATH", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    blocks: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _BLOCK_START.match(line):
            blocks.append([])
        if line and not line.startswith(("#", "|")):
            if not blocks:
                blocks.append([])
            blocks[-1].append(re.sub(r"^(?:[-*>+]|\d+\.)\s+", "", line))
        elif line:
            blocks.append([])
    sentences = []
    for block in blocks:
        joined = " ".join(block)
        sentences.extend(part.strip() for part in re.split(r"(?<=[.!?。！？])\s+", joined) if part.strip())
    return sentences


def states_result(sentence: str) -> bool:
    """Does a sentence state a run's result (and not ask a question or say what to expect)?"""
    if sentence.rstrip("*_ )\"'").endswith(("?", "？")):
        return False
    if EXPECTATION.search(sentence) or REFERENCE.search(sentence):
        return False
    return any(pattern.search(sentence) for pattern in RESULT_PATTERNS)


def unguarded_claims(path: Path) -> list[tuple[int, str]]:
    """(cell index, sentence) for each result stated in free markdown after the first code cell.

    A markdown cell is guarded when it carries ``<!-- check: name -->`` and the next code cell
    calls ``check("name", ...)`` (one marker per claim; the cell's other sentences are then the
    check's to cover); a marker whose check is missing is reported as such.
    """
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code_indices = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    if not code_indices:
        return []
    problems: list[tuple[int, str]] = []
    for index in range(code_indices[0] + 1, len(cells)):
        cell = cells[index]
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        markers = CHECK_MARKER.findall(source)
        if markers:
            following = next((i for i in code_indices if i > index), None)
            code = "".join(cells[following]["source"]) if following is not None else ""
            for name in markers:
                if not re.search(rf"""\bcheck\(\s*f?["']{re.escape(name)}["']""", code):
                    problems.append((index, f"<!-- check: {name} --> but the next code cell does not call "
                                            f"check({name!r}, ...)"))
            continue
        # Exercises ask the learner to try something; their wording is a task, not a result.
        prose = re.split(r"^##\s+Exercises\b.*$", source, maxsplit=1, flags=re.M)[0]
        problems.extend((index, s) for s in _prose_sentences(prose) if states_result(s))
    return problems


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
