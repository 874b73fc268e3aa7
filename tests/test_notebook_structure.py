"""Every numbered notebook follows the same teaching shape and is committed clean."""

import json
import re

import pytest

from psyche_utils.paths import NOTEBOOKS_DIR

NUMBERED = sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))
SOLUTIONS = sorted((NOTEBOOKS_DIR / "solutions").glob("*.ipynb"))
REQUIRED_HEADINGS = ["## What you will learn", "## Prerequisites", "## Recap", "## Exercises"]


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_there_are_notebooks():
    assert NUMBERED, "no numbered notebooks found"


@pytest.mark.parametrize("path", NUMBERED + SOLUTIONS, ids=lambda p: p.name)
def test_parameters_cell_first_and_no_outputs(path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged 'parameters'"
    assert "PSYCHE_PROFILE" in "".join(first["source"])
    assert "start(" in "".join(code[1]["source"]), "second code cell must call psyche_utils.notebook.start"
    assert not any(c.get("outputs") for c in code), "commit notebooks without outputs"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_teaching_sections(path):
    markdown = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    for heading in REQUIRED_HEADINGS:
        assert heading in markdown, f"{path.name} lacks '{heading}'"
    objectives = markdown.split("## What you will learn", 1)[1].split("##", 1)[0]
    assert 3 <= len(re.findall(r"^- ", objectives, re.M)) <= 5, "3-5 objectives"
    exercises = markdown.split("## Exercises", 1)[1]
    assert len(re.findall(r"^\d+\. ", exercises, re.M)) >= 2, "at least two numbered exercises"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_each_notebook_has_checked_solutions(path):
    solution = NOTEBOOKS_DIR / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solution.exists(), f"missing {solution.name}"
    sources = "\n".join("".join(c["source"]) for c in _cells(solution) if c["cell_type"] == "code")
    assert sources.count("assert ") >= 2, "solutions must assert their observations"
