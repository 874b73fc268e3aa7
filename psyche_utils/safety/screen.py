"""The keyword crisis screen on user turns, built from configs/safety/risk_expressions.yaml.

People in crisis write to counselling chatbots. A 7B model that babbles, or reasons at length
before it answers, is the wrong first responder for "我刚吞了一整瓶安眠药". So every user turn
first goes through ``screen``: a documented list of Chinese and English risk expressions in five
categories. A flagged turn never reaches the model; it gets a referral-first reply.

The text is matched in several views (``normalize.views``): as written (NFKC, lower case), folded
(separators between CJK characters removed, traditional -> simplified) and, when the list asks for
it, as pinyin. A rule counts when it matches in any view; its evidence always points into the
original text. A keyword screen is a floor, not a clinician: it is fast, transparent and testable,
and it misses what its authors did not foresee.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from psyche_utils.paths import CONFIGS_DIR
from psyche_utils.safety.common import Match, SafetyConfigError, ScreenResult, compile_pattern, mask, read_yaml
from psyche_utils.safety.normalize import TextView, folded_view, normalize, pinyin_view, views
from psyche_utils.safety.reply_check import ReplyCheck, sentence_windows

SAFETY_CONFIG_DIR = CONFIGS_DIR / "safety"
RISK_EXPRESSIONS_PATH = SAFETY_CONFIG_DIR / "risk_expressions.yaml"

_ASCII_WORD = re.compile(r"^[a-z0-9][a-z0-9 \-]*$")
_CLAUSE_END = re.compile(r"[，,。.!！?？；;\n]")
HELP_FOR_OTHER = "help for someone else"
# The writer speaking of themself: a study or news framing does not cancel a combination then.
_FIRST_PERSON = re.compile(r"我|\bi\b|\bi'|\bmy\b|\bme\b|\bmyself\b")


def load_risk_config(path: str | Path = RISK_EXPRESSIONS_PATH) -> dict[str, Any]:
    """The risk expression file as a plain dict (edit a copy to experiment), checked field by field."""
    path = Path(path)
    config = read_yaml(path)
    for key in ("negation", "figurative", "academic_context", "categories", "reply_checks"):
        if key not in config:
            raise SafetyConfigError(f"{path}: missing top-level field {key!r}")
    # Compiling here means a bad pattern is reported with its location, not at the first screen call.
    RiskScreen(config, source=str(path))
    return config


@dataclass(frozen=True)
class _Rule:
    category: str
    kind: str  # "expression" | "topic"
    regex: re.Pattern[str]
    note: str
    pinyin: bool = False


@dataclass(frozen=True)
class _Combination:
    """Warning signs that count only together (``all_of``): every pattern within one or two sentences."""

    category: str
    patterns: tuple[re.Pattern[str], ...]
    unless: tuple[re.Pattern[str], ...]
    note: str


class RiskScreen:
    """The keyword screen built from a risk expression config (see risk_expressions.yaml).

    Steps, in every view: blank out figurative idioms and homographs; search expressions, ``all_of``
    combinations (every pattern in one or two neighbouring sentences, no ``unless``) and topic
    terms, dropping a match that a negation cue right before it cancels; count bare topic terms only
    outside an academic or news framing and without a third-party subject right before them; report
    the first category, in the file's priority order, that has evidence. A config without a
    ``normalization`` section (versions 1-3) matches the basic view only, exactly as it was measured.
    """

    def __init__(self, config: Mapping[str, Any], source: str = "<config>"):
        self.source = source
        self.categories: tuple[str, ...] = tuple(config["categories"])
        normalization = config.get("normalization") or {}
        self.fold = bool(normalization.get("fold", False))
        self.use_pinyin = bool(normalization.get("pinyin", False))
        self.masks = [
            compile_pattern(item.get("pattern"), f"{source}: {section}[{i}]")
            for section in ("figurative", "homographs")
            for i, item in enumerate(config.get(section) or [])
        ]
        negation = config["negation"]
        self.negation_window = {lang: int(size) for lang, size in negation["window_chars"].items()}
        self.negation_cues = {lang: tuple(cues) for lang, cues in negation["cues"].items()}
        self.question_forms = tuple(negation.get("question_forms") or [])
        self.academic_markers = tuple(normalize(m) for m in config["academic_context"]["markers"] or [])
        third_party = config.get("third_party") or {}
        self.third_party_window = int(third_party.get("window_chars", 0))
        self.third_party_subjects = tuple(normalize(s) for s in third_party.get("subjects") or [])
        helping = config.get("help_for_other") or {}
        self.help_requests = tuple(
            compile_pattern(p, f"{source}: help_for_other.requests[{i}]") for i, p in enumerate(helping.get("requests") or [])
        )
        self.help_subjects = self.third_party_subjects + tuple(normalize(s) for s in helping.get("subjects") or [])
        self.self_reference = tuple(
            compile_pattern(p, f"{source}: help_for_other.self_reference[{i}]") for i, p in enumerate(helping.get("self_reference") or [])
        )
        self.rules: list[_Rule] = []
        self.combinations: list[_Combination] = []
        for category, spec in config["categories"].items():
            where = f"{source}: categories.{category}"
            if not isinstance(spec, Mapping) or "expressions" not in spec:
                raise SafetyConfigError(f"{where}: needs an 'expressions' list")
            for i, item in enumerate(spec["expressions"] or []):
                regex = compile_pattern(item.get("pattern"), f"{where}.expressions[{i}].pattern")
                self.rules.append(_Rule(category, "expression", regex, item.get("note", "")))
            for i, item in enumerate(spec.get("pinyin") or []):
                regex = compile_pattern(item.get("pattern"), f"{where}.pinyin[{i}].pattern")
                self.rules.append(_Rule(category, item.get("kind", "expression"), regex, item.get("note", ""), pinyin=True))
            for i, term in enumerate(spec.get("topic_terms") or []):
                if not isinstance(term, str) or not term:
                    raise SafetyConfigError(f"{where}.topic_terms[{i}]: must be a non-empty string")
                term = normalize(term)
                regex = re.compile(rf"\b{re.escape(term)}\b" if _ASCII_WORD.match(term) else re.escape(term))
                self.rules.append(_Rule(category, "topic", regex, "bare topic term"))
            for i, item in enumerate(spec.get("all_of") or []):
                here = f"{where}.all_of[{i}]"
                raw = item.get("patterns") if isinstance(item, Mapping) else None
                if not isinstance(raw, list) or len(raw) < 2:
                    raise SafetyConfigError(f"{here}.patterns: must list at least two patterns")
                patterns = tuple(compile_pattern(pattern, f"{here}.patterns[{k}]") for k, pattern in enumerate(raw))
                unless = tuple(compile_pattern(pattern, f"{here}.unless[{k}]") for k, pattern in enumerate(item.get("unless") or []))
                self.combinations.append(_Combination(category, patterns, unless, item.get("note", "")))
        self.reply_check = ReplyCheck(config, source, fold=self.fold)

    @classmethod
    def from_file(cls, path: str | Path = RISK_EXPRESSIONS_PATH) -> RiskScreen:
        return cls(load_risk_config(path), source=str(path))

    def views(self, text: str) -> list[TextView]:
        """The masked views of ``text`` this screen matches on (pinyin is built from the masked folded text)."""
        found = views(text, fold=self.fold, pinyin=False)
        masked = [mask(view, self.masks) for view in found]
        if self.use_pinyin and self.fold:
            folded = mask(folded_view(text), self.masks, fill="#")
            if re.search(r"[a-z\u3400-\u9fff]", folded.text):
                masked.append(pinyin_view(folded))
        return masked

    def _negated(self, text: str, start: int) -> bool:
        for lang, cues in self.negation_cues.items():
            size = self.negation_window.get(lang, 0)
            if not size:
                continue
            # Read two characters further back so a question form straddling the window is seen whole.
            window = text[max(0, start - size - 2) : start]
            for form in self.question_forms:
                window = window.replace(form, " " * len(form))
            if any(cue in window[-size:] for cue in cues):
                return True
        return False

    def _third_party(self, text: str, start: int) -> bool:
        if not self.third_party_window:
            return False
        window = text[max(0, start - self.third_party_window) : start]
        return any(subject in window for subject in self.third_party_subjects)

    def evidence(self, text: str, part: str = "text", skip: Callable[[int, int], bool] | None = None) -> list[Match]:
        """Every counting match in ``text`` (one per rule, the first view that has it), by priority.

        ``skip(start, end)`` (original offsets) passes over a match so that a later one of the same rule can
        count: in a help-for-a-friend message the friend's words are skipped and the writer's are kept.
        """
        text_views = self.views(text)
        academic = any(marker in view.text for view in text_views if view.name != "pinyin" for marker in self.academic_markers)
        matches = []
        for rule in self.rules:
            for view in text_views:
                if rule.pinyin != (view.name == "pinyin"):
                    continue
                found = self._first_counting(rule, view, academic, text_views[-2] if view.name == "pinyin" else view, skip)
                if found is not None:
                    start, end = view.original_span(found.start(), found.end())
                    matches.append(Match(rule.category, rule.kind, rule.regex.pattern, text[start:end], rule.note, start, end, view.name, part))
                    break
        framed = academic and not _FIRST_PERSON.search(text_views[0].text)
        for combination in self.combinations:
            for view in text_views:
                if view.name == "pinyin":
                    continue
                span = None if framed else self._combination_span(combination, view)
                if span is not None and skip is not None and skip(*view.original_span(*span)):
                    span = None
                if span is not None:
                    start, end = view.original_span(*span)
                    pattern = " & ".join(p.pattern for p in combination.patterns)
                    matches.append(Match(combination.category, "combination", pattern, text[start:end], combination.note, start, end, view.name, part))
                    break
        order = {category: i for i, category in enumerate(self.categories)}
        return sorted(matches, key=lambda m: (order[m.category], m.kind != "expression"))

    def _combination_span(self, combination: _Combination, view: TextView) -> tuple[int, int] | None:
        """The span covering every pattern of ``combination`` in one window, none of them negated.

        One warning sign alone is common in harmless messages ("买了绳子", "站在楼顶看日落"); two
        from one family in the same sentence or the next are what a crisis line listens for. An
        ``unless`` pattern in the window (a trip, a sunset, someone else's will) cancels it, and
        so does an academic or news framing in a message that does not speak in the first person
        ("新闻里说有人从桥上跳下来"; checked by the caller).
        """
        text = view.text
        for low, high in sentence_windows(text):
            window = text[low:high]
            if any(regex.search(window) for regex in combination.unless):
                continue
            found = []
            for regex in combination.patterns:
                hit = next((m for m in regex.finditer(text, low, high) if not self._negated(text, m.start())), None)
                if hit is None:
                    break
                found.append(hit)
            else:
                return min(m.start() for m in found), max(m.end() for m in found)
        return None

    def _first_counting(
        self, rule: _Rule, view: TextView, academic: bool, words: TextView, skip: Callable[[int, int], bool] | None = None
    ) -> re.Match[str] | None:
        """The first match that no negation cue, academic framing or third-party subject cancels.

        ``words`` is the view negation is read in: the view itself, or for a pinyin match the folded
        text it came from (a negation cue is a word, not a sound).
        """
        for found in rule.regex.finditer(view.text):
            at = found.start()
            if view is not words:
                original = view.index[at]
                at = next((i for i, offset in enumerate(words.index) if offset >= original), len(words.text))
            if self._negated(words.text, at):
                continue
            if rule.kind == "topic" and (academic or self._third_party(words.text, at)):
                continue
            if skip is not None and skip(*view.original_span(found.start(), found.end())):
                continue
            return found
        return None

    def _about_someone_else(self, text: str, start: int, end: int) -> bool:
        """The match sits in a clause whose subject is another person ("我朋友说她想死", "有自杀念头的朋友").

        The nearest subject before the match counts unless the writer speaks as "I" between it and the
        match ("我朋友不知道我想自杀" is about the writer); with no subject before it, a subject after it
        in the same clause counts when the clause does not start with the writer ("怎么劝一个有自杀念头的朋友").
        """
        lowered = normalize(text)
        if len(lowered) != len(text):
            lowered = text.lower()
        low = max((m.end() for m in _CLAUSE_END.finditer(lowered, 0, start)), default=0)
        found = _CLAUSE_END.search(lowered, end)
        high = found.start() if found else len(lowered)
        before, after = lowered[low:start], lowered[end:high]
        last = max((before.rfind(s) + len(s) for s in self.help_subjects if s in before), default=-1)
        if last >= 0:
            return not any(regex.search(before[last:]) for regex in self.self_reference)
        return any(s in after for s in self.help_subjects) and not any(regex.search(before) for regex in self.self_reference)

    def screen(self, text: str) -> ScreenResult:
        """Flag ``text`` when any category has evidence; the category is the top-priority one.

        A request for help with someone else ("我朋友说她想死，我该怎么帮她？") keeps only the evidence
        about the writer: when every match is about the other person the turn is not flagged and carries
        ``detail`` HELP_FOR_OTHER, so the chat can add a note on helping a friend instead of the crisis referral.
        """
        matches = tuple(self.evidence(text))
        if not matches:
            return ScreenResult(False, None)
        if self.help_requests and any(regex.search(view.text) for view in self.views(text)[:2] for regex in self.help_requests):
            own = tuple(self.evidence(text, skip=lambda start, end: self._about_someone_else(text, start, end)))
            if not own:
                return ScreenResult(False, None, detail=HELP_FOR_OTHER)
            matches = own
        return ScreenResult(True, matches[0].category, matches)

    def screen_reply(self, text: str, reasoning: str | None = None) -> ScreenResult:
        """Check a model reply, and its reasoning when given, with this file's reply checks."""
        return self.reply_check.check(text, reasoning)


@lru_cache(maxsize=1)
def default_screen() -> RiskScreen:
    """The screen built from the shipped configs/safety/risk_expressions.yaml (built once)."""
    return RiskScreen.from_file(RISK_EXPRESSIONS_PATH)


def screen(text: str) -> ScreenResult:
    """Screen one user turn with the shipped risk expression list."""
    return default_screen().screen(text)


def screen_reply(text: str, reasoning: str | None = None) -> ScreenResult:
    """Check one model reply (and its reasoning, when given) with the shipped reply checks."""
    return default_screen().screen_reply(text, reasoning)
