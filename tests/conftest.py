"""Shared test settings: offline, tiny profile, one tiny model built once per session.

Unit tests draw with Agg (no display, no kernel) whatever backend the caller's environment names:
the Makefile sets the notebook kernels' inline backend for everything it runs, tests included.
Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) the tests of a module that
starts ``accelerate launch`` go to one worker, so two multi-process launches never run at once
and fight over the launcher's port.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PSYCHE_PROFILE", "tiny")
os.environ["MPLBACKEND"] = "Agg"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def _launches_processes(path: Path, seen: dict[Path, bool]) -> bool:
    if path not in seen:
        seen[path] = "accelerate.commands.launch" in path.read_text(encoding="utf-8")
    return seen[path]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seen: dict[Path, bool] = {}
    for item in items:
        if _launches_processes(item.path, seen):
            item.add_marker(pytest.mark.xdist_group("launch"))


@pytest.fixture(scope="session")
def browser() -> str:
    """Headless Chromium for the page checks; skipped where it is missing, unless CI requires it."""
    from psyche_utils.book import chromium

    path = chromium()
    if path is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("PSYCHE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from psyche_utils.tiny import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer(tiny_model_path: Path):
    from psyche_utils.tiny import load_tiny

    return load_tiny()
