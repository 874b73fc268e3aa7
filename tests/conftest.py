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


@pytest.fixture
def qwen_style_model(tiny_model_path: Path):
    """The tiny model carrying Qwen2.5-7B-Instruct's sampling defaults, the ones that must never leak.

    Returns the model, its tokenizer, and a function that decodes one prompt by hand, either with
    every field explicit (``clean=True``) or leaving the checkpoint's config to fill the gaps.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    shipped = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=shipped.bos_token_id, eos_token_id=shipped.eos_token_id, pad_token_id=shipped.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
    )

    def decode_by_hand(messages, max_new_tokens: int, clean: bool) -> str:
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        explicit = {"repetition_penalty": 1.0} if clean else {}
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, **explicit)
        return tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)

    return model, tokenizer, decode_by_hand
