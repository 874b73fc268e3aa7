"""The second screening layer: a guard model behind the same ``ChatBackend`` interface as every model.

A keyword list only knows what its authors foresaw. A guard model reads the whole message. Two
classifiers share one interface (``classify(texts)`` for user turns, ``classify_replies(pairs)`` for
model replies), so any guard can be plugged into ``screen_many`` and ``ChatSession``:

- ``Qwen3GuardClassifier`` for Qwen3Guard-Gen (Qwen/Qwen3Guard-Gen-0.6B, -4B, -8B). Its chat template
  builds the moderation prompt itself: a prompt is moderated as ``[user]``, a reply as
  ``[user, assistant]``. It answers ``Safety: Safe|Unsafe|Controversial`` and ``Categories: ...``
  (and ``Refusal: Yes|No`` for a reply). Load it with transformers (``load_qwen3guard``) or serve it
  with vLLM and reach it through ``OpenAICompatibleBackend`` (``PSYCHE_GUARD_URL``/``PSYCHE_GUARD_MODEL``).
- ``LLMRiskClassifier``: any instruction-following chat model asked for one label.

Output is parsed strictly: a reply that is not in the documented format is counted in ``unparsed``
and, with ``fail_closed``, treated as risk. An exception inside a layer is caught by ``screen_many``:
with ``fail_closed`` the turn gets the referral, the error is logged and the chat goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from psyche_utils.answers import split_reasoning
from psyche_utils.llm import ChatBackend, GenerationSettings
from psyche_utils.safety.common import UNCLASSIFIED, SafetyConfigError, ScreenResult, read_yaml
from psyche_utils.safety.screen import SAFETY_CONFIG_DIR, screen

GUARD_CONFIG_PATH = SAFETY_CONFIG_DIR / "guard.yaml"
logger = logging.getLogger("psyche_utils.safety")


class RiskClassifier(Protocol):
    """What a second screening layer provides; ``fail_closed`` decides what an error or a bad reply means."""

    fail_closed: bool
    unparsed: int

    def classify(self, texts: Sequence[str]) -> list[ScreenResult]: ...


# --------------------------------------------------------------------------- Qwen3Guard-Gen

QWEN3GUARD_SAFETY = ("Safe", "Unsafe", "Controversial")
QWEN3GUARD_CATEGORIES = (
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
    "None",
)
_SAFETY_LINE = re.compile(r"^Safety:\s*(Safe|Unsafe|Controversial)\s*$")
_CATEGORIES_LINE = re.compile(r"^Categories:\s*(.+?)\s*$")
_REFUSAL_LINE = re.compile(r"^Refusal:\s*(Yes|No)\s*$")


class GuardParseError(ValueError):
    """The guard's reply is not in its documented format; the message quotes what came back."""


@dataclass(frozen=True)
class GuardOutput:
    """One parsed Qwen3Guard-Gen verdict."""

    safety: str
    categories: tuple[str, ...]
    refusal: bool | None = None


def parse_qwen3guard(reply: str) -> GuardOutput:
    """Parse ``Safety: ...`` / ``Categories: ...`` [/ ``Refusal: ...``] exactly as documented.

    Exactly one Safety line and one Categories line; every category must be a documented one
    ("None" only on its own); anything else raises GuardParseError rather than being guessed.
    """
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    safety = [m.group(1) for line in lines if (m := _SAFETY_LINE.match(line))]
    categories = [m.group(1) for line in lines if (m := _CATEGORIES_LINE.match(line))]
    refusal = [m.group(1) for line in lines if (m := _REFUSAL_LINE.match(line))]
    known = len(safety) + len(categories) + len(refusal)
    if len(safety) != 1 or len(categories) != 1 or len(refusal) > 1 or known != len(lines):
        raise GuardParseError(f"not a Qwen3Guard-Gen verdict: {reply[:200]!r}")
    names = tuple(name.strip() for name in categories[0].split(","))
    unknown = [name for name in names if name not in QWEN3GUARD_CATEGORIES]
    if unknown or ("None" in names and len(names) > 1):
        raise GuardParseError(f"unknown or mixed categories {names} in {reply[:200]!r}")
    if safety[0] == "Safe" and names != ("None",):
        raise GuardParseError(f"'Safe' with categories {names} in {reply[:200]!r}")
    return GuardOutput(safety[0], () if names == ("None",) else names, (refusal[0] == "Yes") if refusal else None)


def qwen3guard_prompt(text: str) -> list[dict[str, str]]:
    """Prompt moderation: the user turn alone; the model's chat template adds the policy text."""
    return [{"role": "user", "content": text}]


def qwen3guard_response_prompt(user: str, reply: str) -> list[dict[str, str]]:
    """Response moderation: the user turn and the reply to judge, as the chat template expects."""
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def load_guard_config(path: str | Path = GUARD_CONFIG_PATH) -> dict[str, Any]:
    """Which guard categories count as crisis risk, which severities flag, and the model ids."""
    path = Path(path)
    config = read_yaml(path)
    for key in ("models", "flag_severities", "category_map"):
        if key not in config:
            raise SafetyConfigError(f"{path}: missing field {key!r}")
    for name in config["category_map"]:
        if name not in QWEN3GUARD_CATEGORIES:
            raise SafetyConfigError(f"{path}: category_map.{name}: not a Qwen3Guard-Gen category {QWEN3GUARD_CATEGORIES}")
    for severity in config["flag_severities"]:
        if severity not in QWEN3GUARD_SAFETY:
            raise SafetyConfigError(f"{path}: flag_severities: {severity!r} is not one of {QWEN3GUARD_SAFETY}")
    return config


class Qwen3GuardClassifier:
    """Qwen3Guard-Gen as a screening layer: flags a verdict whose severity and category are crisis risk.

    Only the guard categories in ``category_map`` (by default suicide and self-harm, and violence)
    route to the referral; a politically sensitive or copyright verdict is not a crisis.
    """

    def __init__(
        self,
        backend: ChatBackend,
        settings: GenerationSettings = GenerationSettings(max_new_tokens=32),
        *,
        config: Mapping[str, Any] | None = None,
        fail_closed: bool = True,
    ):
        self.backend = backend
        self.settings = settings
        self.config = dict(config or load_guard_config())
        self.fail_closed = fail_closed
        self.unparsed = 0
        self.name = f"qwen3guard ({backend.name})"

    def verdict(self, reply: str) -> ScreenResult:
        """One guard reply as a ScreenResult; unparsable output is counted and, fail-closed, flagged."""
        try:
            output = parse_qwen3guard(reply)
        except GuardParseError as error:
            self.unparsed += 1
            return ScreenResult(self.fail_closed, UNCLASSIFIED if self.fail_closed else None, source="guard", detail=f"unparsed: {error}")
        detail = f"Safety: {output.safety}; Categories: {', '.join(output.categories) or 'None'}"
        if output.safety in self.config["flag_severities"]:
            for name in output.categories:
                if name in self.config["category_map"]:
                    return ScreenResult(True, self.config["category_map"][name], source="guard", detail=detail)
        return ScreenResult(False, None, source="guard", detail=detail)

    def classify(self, texts: Sequence[str]) -> list[ScreenResult]:
        """Moderate user turns (prompt moderation), one batch."""
        replies = self.backend.generate([qwen3guard_prompt(text) for text in texts], self.settings)
        return [self.verdict(reply) for reply in replies]

    def classify_replies(self, pairs: Sequence[tuple[str, str]]) -> list[ScreenResult]:
        """Moderate (user turn, model reply) pairs (response moderation), one batch."""
        replies = self.backend.generate([qwen3guard_response_prompt(u, r) for u, r in pairs], self.settings)
        return [self.verdict(reply) for reply in replies]


def load_qwen3guard(model_id: str, device: str = "cuda") -> ChatBackend:
    """Qwen3Guard-Gen loaded with transformers as a greedy ``TransformersBackend`` (GPU profiles)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from psyche_utils.llm import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    model = AutoModelForCausalLM.from_pretrained(model_id, dtype="auto").to(device).eval()
    return TransformersBackend(model, tokenizer, name=model_id.split("/")[-1], batch_size=8, progress=False)


# --------------------------------------------------------------------------- any chat model, one label

CLASSIFIER_LABELS = ("suicidal_intent", "self_harm", "harm_to_others", "abuse", "acute_emergency", "none")
CLASSIFIER_PROMPT = (
    "你是心理危机筛查员。判断下面这条求助者消息是否含有以下风险之一，只输出一个标签，不要解释。\n"
    "suicidal_intent：自杀意念、计划或准备；self_harm：自伤；harm_to_others：想伤害他人；"
    "abuse：正在遭受暴力、虐待或性侵；acute_emergency：已经服药/中毒/大量出血，或命令性幻听、被害妄想；"
    "none：以上都不是（包括一般的难过、焦虑、愤怒和学术问题）。\n"
    "消息：{text}\n标签："
)


def parse_classifier_label(reply: str) -> str | None:
    """The first known label in the reply (after any think block); None when there is none."""
    _, answer = split_reasoning(reply)
    found = re.search("|".join(CLASSIFIER_LABELS), answer.lower())
    return found.group(0) if found else None


class LLMRiskClassifier:
    """A second opinion from any chat model, through the same backend interface as everything else.

    Replies that name no label are counted, never guessed: with ``fail_closed`` they flag the turn
    (category "unclassified"), otherwise they leave the keyword verdict alone.
    """

    def __init__(
        self,
        backend: ChatBackend,
        settings: GenerationSettings = GenerationSettings(max_new_tokens=16),
        *,
        fail_closed: bool = False,
    ):
        self.backend = backend
        self.settings = settings
        self.fail_closed = fail_closed
        self.unparsed = 0
        self.name = f"llm ({backend.name})"

    def classify(self, texts: Sequence[str]) -> list[ScreenResult]:
        prompts = [[{"role": "user", "content": CLASSIFIER_PROMPT.format(text=text)}] for text in texts]
        results = []
        for reply in self.backend.generate(prompts, self.settings):
            label = parse_classifier_label(reply)
            if label is None:
                self.unparsed += 1
                results.append(
                    ScreenResult(self.fail_closed, UNCLASSIFIED if self.fail_closed else None, source="classifier", detail="unparsed")
                )
            elif label == "none":
                results.append(ScreenResult(False, None, source="classifier"))
            else:
                results.append(ScreenResult(True, label, source="classifier"))
        return results


# --------------------------------------------------------------------------- layers together


def layer_error(layer: str, error: BaseException, *, fail_closed: bool) -> ScreenResult:
    """The verdict a failed layer gives: risk when failing closed (the referral is shown), logged either way."""
    logger.error("safety layer %s failed: %s: %s", layer, type(error).__name__, error)
    detail = f"error in {layer}: {type(error).__name__}: {error}"
    return ScreenResult(fail_closed, UNCLASSIFIED if fail_closed else None, source=layer, detail=detail)


def screen_many(
    texts: Sequence[str],
    *,
    keyword_screen: Callable[[str], ScreenResult] = screen,
    classifier: RiskClassifier | None = None,
    fail_closed: bool | None = None,
) -> list[ScreenResult]:
    """Keyword screen for every text; the classifier (one batch) only sees what the keywords passed.

    An exception in either layer never escapes: with ``fail_closed`` (default: the classifier's own
    setting, True without a classifier) the affected texts are flagged "unclassified" and logged.
    """
    closed = fail_closed if fail_closed is not None else (classifier.fail_closed if classifier else True)
    results = []
    for text in texts:
        try:
            results.append(keyword_screen(text))
        except Exception as error:  # a broken layer must not end the chat without a referral
            results.append(layer_error("keywords", error, fail_closed=closed))
    if classifier is None:
        return results
    passed = [i for i, result in enumerate(results) if not result.flagged]
    if not passed:
        return results
    try:
        verdicts = classifier.classify([texts[i] for i in passed])
        if len(verdicts) != len(passed):
            raise RuntimeError(f"classifier returned {len(verdicts)} verdicts for {len(passed)} texts")
    except Exception as error:
        verdicts = [layer_error("classifier", error, fail_closed=closed)] * len(passed)
    for i, verdict in zip(passed, verdicts):
        if verdict.flagged or verdict.detail.startswith("error in"):  # an error is recorded even failing open
            results[i] = verdict
    return results
