"""README.md is the entry point: every path it names must exist and every notebook must be in it."""

import re

from psyche_utils.paths import NOTEBOOKS_DIR, REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
_PATH_LIKE = re.compile(r"^(?:notebooks|psyche_utils|data|configs|tests|benchmarks|\.ci)/[\w./\-]*$|^[\w\-]+\.(?:yml|yaml|toml|txt|md)$")


def _named_paths() -> set[str]:
    code_spans = re.findall(r"`([^`\s]+)`", README)
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    flags = re.findall(r"--config(?:_file)? ([^\s`|]+)", README)
    return {p for p in code_spans + links + flags if _PATH_LIKE.match(p) and "<" not in p}


def test_every_named_path_exists():
    missing = sorted(p for p in _named_paths() if not (REPO_ROOT / p).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_readme_names_some_paths():
    assert len(_named_paths()) >= 15


def test_every_notebook_is_in_the_stage_table():
    missing = [nb.name for nb in sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb")) if f"notebooks/{nb.name}" not in README]
    assert not missing, f"notebooks missing from README.md: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)
