"""The check on the model's own reply (and its reasoning) before anything is shown or remembered.

A reply can do harm in ways a user turn cannot: it can give a method, a quantity of medication, or
encouragement or permission to die, or it can wave the risk away. The rules live in the
``reply_checks`` section of configs/safety/risk_expressions.yaml, one block per harm:

- ``expressions``: one pattern is enough ("你应该去死");
- ``all_of``: every pattern must match inside one sentence or two neighbouring sentences, in any
  order ("安眠药……一整瓶……吃下去" and "吃下一整瓶安眠药" both match), because harmful
  instructions come in many word orders that one regular expression cannot list;
- ``unless``: patterns that, in the same window, make a match harmless (an emergency call to action:
  "如果你已经吃了一整瓶药，请马上拨打120").

A cue from ``reply_negation`` right before a match cancels it ("千万不要吃一整瓶药"). The reasoning
block is checked with the same rules: a thinking model can write a method inside ``<think>`` while
its answer looks safe, and the notebook shows the reasoning to the reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psyche_utils.safety.common import Match, SafetyConfigError, ScreenResult, compile_pattern
from psyche_utils.safety.normalize import TextView, views

_SENTENCE_END = re.compile(r"[。！？!?\n；;]+|(?<=[a-z0-9\)])\.(?=\s|$)")


@dataclass(frozen=True)
class _ReplyRule:
    category: str
    patterns: tuple[re.Pattern[str], ...]
    unless: tuple[re.Pattern[str], ...]
    note: str


def sentence_windows(text: str) -> list[tuple[int, int]]:
    """Sentence spans and spans of two neighbouring sentences (a rule may straddle one boundary)."""
    bounds, start = [], 0
    for found in _SENTENCE_END.finditer(text):
        bounds.append((start, found.end()))
        start = found.end()
    if start < len(text):
        bounds.append((start, len(text)))
    pairs = [(bounds[i][0], bounds[i + 1][1]) for i in range(len(bounds) - 1)]
    return bounds + pairs


class ReplyCheck:
    """Reply rules from one config; ``check(answer, reasoning)`` flags either part."""

    def __init__(self, config: Mapping[str, Any], source: str = "<config>", *, fold: bool = False):
        self.fold = fold
        negation = config.get("reply_negation") or {}
        self.negation_cues = tuple(negation.get("cues") or [])
        self.negation_window = int(negation.get("window_chars", 0))
        self.rules: list[_ReplyRule] = []
        for category, spec in (config.get("reply_checks") or {}).items():
            where = f"{source}: reply_checks.{category}"
            if not isinstance(spec, Mapping):
                raise SafetyConfigError(f"{where}: must be a mapping with 'expressions' and/or 'all_of'")
            for key in ("expressions", "all_of"):
                for i, item in enumerate(spec.get(key) or []):
                    here = f"{where}.{key}[{i}]"
                    raw = [item.get("pattern")] if key == "expressions" else item.get("patterns")
                    if not isinstance(raw, list) or not raw:
                        raise SafetyConfigError(f"{here}.patterns: must be a non-empty list")
                    patterns = tuple(compile_pattern(p, f"{here}.pattern") for p in raw)
                    unless = tuple(compile_pattern(p, f"{here}.unless") for p in item.get("unless") or [])
                    self.rules.append(_ReplyRule(category, patterns, unless, item.get("note", "")))

    def _negated(self, text: str, start: int) -> bool:
        window = text[max(0, start - self.negation_window) : start]
        return bool(self.negation_window) and any(cue in window for cue in self.negation_cues)

    def _match_rule(self, rule: _ReplyRule, view: TextView) -> tuple[int, int] | None:
        text = view.text
        spans = [(0, len(text))] if len(rule.patterns) == 1 and not rule.unless else sentence_windows(text)
        for low, high in spans:
            window = text[low:high]
            if any(regex.search(window) for regex in rule.unless):
                continue
            found = [self._counting(regex, text, low, high) for regex in rule.patterns]
            if all(found):
                return min(f[0] for f in found), max(f[1] for f in found)
        return None

    def _counting(self, regex: re.Pattern[str], text: str, low: int, high: int) -> tuple[int, int] | None:
        for found in regex.finditer(text, low, high):
            if not self._negated(text, found.start()):
                return found.start(), found.end()
        return None

    def evidence(self, text: str, part: str = "answer") -> list[Match]:
        """One match per rule that fires in ``text`` (first view that has it), in file order."""
        matches = []
        text_views = views(text, fold=self.fold)
        for rule in self.rules:
            for view in text_views:
                span = self._match_rule(rule, view)
                if span:
                    start, end = view.original_span(*span)
                    pattern = " & ".join(p.pattern for p in rule.patterns)
                    matches.append(Match(rule.category, "reply", pattern, text[start:end], rule.note, start, end, view.name, part))
                    break
        return matches

    def check(self, answer: str, reasoning: str | None = None) -> ScreenResult:
        """Flag the reply when the answer or the reasoning breaks a rule; evidence says which part."""
        matches = self.evidence(answer, "answer")
        if reasoning:
            matches += self.evidence(reasoning, "reasoning")
        if not matches:
            return ScreenResult(False, None, source="reply_checks")
        return ScreenResult(True, matches[0].category, tuple(matches), source="reply_checks")
