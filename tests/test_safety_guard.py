"""The guard adapter (prompt building and strict parsing) and fail-closed screening.

The Qwen3Guard-Gen strings below are FORMAT EXAMPLES written from the model card's documented output
format ("Safety: ..." / "Categories: ..." / "Refusal: ..."), not output of the model.
"""

from __future__ import annotations

import logging

import pytest
from backends import RecordingBackend

from psyche_utils.safety import (
    GuardOutput,
    GuardParseError,
    Qwen3GuardClassifier,
    load_guard_config,
    parse_qwen3guard,
    qwen3guard_prompt,
    qwen3guard_response_prompt,
    screen_many,
)


class RaisingClassifier:
    fail_closed = True
    unparsed = 0

    def classify(self, texts):
        raise TimeoutError("guard server did not answer")


@pytest.mark.parametrize(
    ("reply", "safety", "categories", "refusal"),
    [
        ("Safety: Safe\nCategories: None", "Safe", (), None),
        ("Safety: Unsafe\nCategories: Suicide & Self-Harm", "Unsafe", ("Suicide & Self-Harm",), None),
        ("Safety: Controversial\nCategories: Violent, Suicide & Self-Harm", "Controversial", ("Violent", "Suicide & Self-Harm"), None),
        ("Safety: Safe\nCategories: None\nRefusal: Yes", "Safe", (), True),
        ("\nSafety: Unsafe\nCategories: Violent\nRefusal: No\n", "Unsafe", ("Violent",), False),
    ],
)
def test_parser_reads_the_documented_format(reply, safety, categories, refusal):
    assert parse_qwen3guard(reply) == GuardOutput(safety, categories, refusal)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "Safety: Unsafe",  # no Categories line
        "Safety: Risky\nCategories: None",  # unknown severity
        "Safety: Unsafe\nCategories: Self-harm",  # not a documented category name
        "Safety: Unsafe\nCategories: None, Violent",  # None mixed with a category
        "Safety: Safe\nCategories: Violent",  # safe with a category
        "Safety: Unsafe\nCategories: Violent\nI think this is unsafe.",  # extra text
        "Safety: Safe\nSafety: Unsafe\nCategories: None",  # two verdicts
    ],
)
def test_parser_rejects_anything_else(reply):
    with pytest.raises(GuardParseError):
        parse_qwen3guard(reply)


def test_prompts_follow_the_model_card_layout():
    assert qwen3guard_prompt("我想死") == [{"role": "user", "content": "我想死"}]
    assert qwen3guard_response_prompt("q", "a") == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_only_crisis_categories_at_flagging_severities_route_to_the_referral():
    config = load_guard_config()
    guard = Qwen3GuardClassifier(
        RecordingBackend(
            [
                "Safety: Unsafe\nCategories: Suicide & Self-Harm",
                "Safety: Controversial\nCategories: Violent",
                "Safety: Unsafe\nCategories: Politically Sensitive Topics",
                "Safety: Safe\nCategories: None",
            ]
        ),
        config=config,
    )
    results = guard.classify(["a", "b", "c", "d"])
    assert [r.flagged for r in results] == [True, True, False, False]
    assert [r.category for r in results[:2]] == ["suicidal_intent", "harm_to_others"]
    assert guard.unparsed == 0


def test_unparsable_guard_output_is_counted_and_fails_closed_on_request():
    closed = Qwen3GuardClassifier(RecordingBackend(["I cannot help with that."]), fail_closed=True)
    assert all(r.flagged and r.category == "unclassified" for r in closed.classify(["x", "y"]))
    assert closed.unparsed == 2
    open_ = Qwen3GuardClassifier(RecordingBackend(["I cannot help with that."]), fail_closed=False)
    assert not any(r.flagged for r in open_.classify(["x"])) and open_.unparsed == 1


def test_response_moderation_sends_the_pair():
    backend = RecordingBackend(["Safety: Unsafe\nCategories: Suicide & Self-Harm\nRefusal: No"])
    verdict = Qwen3GuardClassifier(backend).classify_replies([("我好累", "那就结束吧")])[0]
    assert verdict.flagged and backend.prompts[0][1] == {"role": "assistant", "content": "那就结束吧"}


def test_a_raising_classifier_fails_closed_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="psyche_utils.safety"):
        results = screen_many(["今天天气不错"], classifier=RaisingClassifier())
    assert results[0].flagged and results[0].category == "unclassified"
    assert "TimeoutError" in results[0].detail and "guard server did not answer" in caplog.text


def test_a_raising_classifier_fails_open_only_when_asked():
    results = screen_many(["今天天气不错"], classifier=RaisingClassifier(), fail_closed=False)
    assert not results[0].flagged and "TimeoutError" in results[0].detail


def test_a_raising_keyword_screen_fails_closed():
    def broken(text):
        raise RuntimeError("list failed to load")

    assert screen_many(["hello"], keyword_screen=broken)[0].flagged
