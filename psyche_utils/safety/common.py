"""What every safety layer shares: the verdict types, config reading and masking."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from psyche_utils.safety.normalize import TextView, is_cjk

UNCLASSIFIED = "unclassified"


class SafetyConfigError(ValueError):
    """A safety configuration or evaluation file is malformed; the message names file and field."""


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or a SafetyConfigError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafetyConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        raise SafetyConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SafetyConfigError(f"{path}: expected a mapping at the top level")
    return data


def compile_pattern(pattern: Any, where: str) -> re.Pattern[str]:
    """Compile one list pattern; a bad one is reported with its location in the file."""
    if not isinstance(pattern, str) or not pattern:
        raise SafetyConfigError(f"{where}: pattern must be a non-empty string")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise SafetyConfigError(f"{where}: invalid regular expression {pattern!r}: {error}") from None


@dataclass(frozen=True)
class Match:
    """One piece of evidence: which rule matched, and the span of the ORIGINAL text it covers."""

    category: str
    kind: str
    pattern: str
    span: str
    note: str = ""
    start: int = 0
    end: int = 0
    view: str = "basic"
    part: str = "text"


@dataclass(frozen=True)
class ScreenResult:
    """The verdict on one text. ``category`` is the highest-priority category that matched."""

    flagged: bool
    category: str | None
    matches: tuple[Match, ...] = ()
    source: str = "keywords"
    detail: str = ""

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category with evidence, in priority order, without repeats."""
        return tuple(dict.fromkeys(match.category for match in self.matches))


def detect_language(text: str) -> str:
    """"zh" when the text contains any CJK character, otherwise "en"."""
    return "zh" if any(is_cjk(char) for char in text) else "en"


def mask(view: TextView, patterns: Sequence[re.Pattern[str]], fill: str = " ") -> TextView:
    """Blank out what ``patterns`` match (idioms, homographs), keeping length and index map."""
    text = view.text
    for regex in patterns:
        text = regex.sub(lambda m: fill * len(m.group(0)), text)
    return TextView(view.name, text, view.index)


