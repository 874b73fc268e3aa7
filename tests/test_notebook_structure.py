"""Every numbered notebook follows the same teaching shape and is committed clean."""

import json
import re

import pytest

from psyche_utils.notebook import states_result, unguarded_claims
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
    checks = sources.count("assert ") + len(re.findall(r"\bcheck\(", sources))
    assert checks >= 2, "solutions must assert (or check()) their observations"


@pytest.mark.parametrize("path", NUMBERED + SOLUTIONS, ids=lambda p: p.name)
def test_markdown_states_no_unguarded_result(path):
    """Markdown after the first code cell must not state a run's result as free text.

    A result is a sentence with a percentage, a count out of a total ("3 of 5", "7/16") or a
    direction ("rises", "fell", "most replies", "below chance", "better"). Guard it in one of two ways:

    (a) build it from the computed values in a code cell::

            say(f"The format reward rose from {first:.2f} to {last:.2f} over {steps} steps.")

    (b) keep it in markdown with a marker, and check it in the very next code cell::

            <!-- check: format-reward-rises -->
            The format reward rises over the run.

            check("format-reward-rises", last > first, f"format reward {first:.2f} -> {last:.2f}")

    Questions, expectations before a run ("watch whether the reward rises", "you should see"),
    conditionals and statements about other runs ("In the paper ...", "With a real teacher ...")
    are not results, nor are the tasks under "## Exercises".
    """
    problems = unguarded_claims(path)
    assert not problems, f"{path.name} states results without a guard:\n" + "\n".join(
        f"  cell {cell}: {sentence}" for cell, sentence in problems)


@pytest.mark.parametrize("sentence", [
    "The format reward rises over the run.",
    "Accuracy is 25% on the tiny model.",
    "3 of 5 replies close the think block.",
    "7/16 answers parse.",
    "Most replies are empty.",
    "Our rows sit below the chance row.",
    "The loss fell from 9.1 to 4.2.",
    "The tuned run is better than the base.",
    "**Summary.** The KL grows slowly and the format reward climbed.",
])
def test_result_sentences_are_detected(sentence):
    assert states_result(sentence)


@pytest.mark.parametrize("sentence", [
    "Does the format reward rise?",
    "Watch whether the format reward rises.",
    "You should see the loss fall below its start.",
    "If the threshold is higher, fewer pairs survive.",
    "In the paper most questions land in SFT.",
    "The table below lists every rejected record.",
    "It falls back to the shipped explanation.",
    "Posts left with no text are dropped and reported.",
    "The most trusted member of each cluster is kept.",
    "Qwen2.5 wraps every turn in CODE.",
])
def test_expectations_and_descriptions_are_not_results(sentence):
    assert not states_result(sentence)


def _notebook(tmp_path, cells):
    path = tmp_path / "07_demo.ipynb"
    path.write_text(json.dumps({"cells": [
        {"cell_type": kind, "source": source, "metadata": {}} for kind, source in cells]}), encoding="utf-8")
    return path


def test_guarded_and_unguarded_cells(tmp_path):
    path = _notebook(tmp_path, [
        ("markdown", "# Intro\n\nMost of this text comes before any run, so it is context."),
        ("code", "PROFILE = None"),
        ("markdown", "<!-- check: reward-rises -->\nThe format reward rises."),
        ("code", "check(\"reward-rises\", last > first, 'format reward')"),
        ("markdown", "<!-- check: loss-falls -->\nThe loss falls."),
        ("code", "print(loss)"),
        ("markdown", "The accuracy stays near chance,\nand 3 of 5 replies are empty.\n\n## Exercises\n\n"
                     "1. Compare how far the loss falls with a higher rate."),
    ])
    assert unguarded_claims(path) == [
        (4, "<!-- check: loss-falls --> but the next code cell does not call check('loss-falls', ...)"),
        (6, "The accuracy stays near chance, and 3 of 5 replies are empty."),
    ]


TEACHING = NOTEBOOKS_DIR.parent / "TEACHING.md"


def _plain(text: str) -> str:
    """Markdown text without emphasis and code marks, whitespace collapsed: what a reader sees."""
    return " ".join(re.sub(r"[*`]", "", text.replace("\\|", "|")).split())


def _row(line: str) -> list[str]:
    """The cells of a markdown table row ("\\|" is a pipe inside a cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _teaching_sections() -> dict[str, str]:
    text = TEACHING.read_text(encoding="utf-8")
    return {match.group(1): body for match, body in zip(
        re.finditer(r"^## (\d\d) · .*$", text, re.M),
        re.split(r"^## \d\d · .*$", text, flags=re.M)[1:])}


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_teaching_map_lists_every_objective(path):
    markdown = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    block = markdown.split("## What you will learn", 1)[1].split("\n##", 1)[0]
    objectives = [_plain(item) for item in re.split(r"^- ", block, flags=re.M)[1:]]
    section = _teaching_sections().get(path.stem[:2])
    assert section is not None, f"TEACHING.md has no '## {path.stem[:2]} · ...' section"
    rows = [_plain(_row(line)[0]) for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    missing = [objective for objective in objectives if objective not in rows]
    assert not missing, f"TEACHING.md does not map these objectives of {path.name}: {missing}"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_teaching_map_points_at_real_solution_cells(path):
    section = _teaching_sections()[path.stem[:2]]
    named = re.findall(r"`(notebooks/solutions/[\w.-]+\.ipynb)`", section)
    assert named == [f"notebooks/solutions/{path.stem}_solutions.ipynb"], named
    solution = NOTEBOOKS_DIR.parent / named[0]
    assert solution.exists(), f"TEACHING.md names {named[0]}, which does not exist"
    headings = {_plain(h) for c in _cells(solution) if c["cell_type"] == "markdown"
                for h in re.findall(r"^##+ (.*)$", "".join(c["source"]), re.M)}
    for line in section.splitlines():
        if not line.startswith("| ") or "---" in line or line.startswith("| Learning objective"):
            continue
        checked = _row(line)[-1]
        for reference in filter(None, (part.strip() for part in checked.split(";"))):
            if reference == "–":
                continue
            # A trailing "(name, ...)" lists the check() names in that section, unless it is part of the heading.
            candidates = {_plain(reference), _plain(re.sub(r"\s*\([^)]*\)$", "", reference))}
            assert candidates & headings, f"{solution.name} has no section '{reference}'"
            code = "\n".join("".join(c["source"]) for c in _cells(solution) if c["cell_type"] == "code")
            for name in re.findall(r"`([\w.-]+)`", reference):
                assert f'check("{name}"' in code, f"{solution.name} has no check({name!r}, ...)"
