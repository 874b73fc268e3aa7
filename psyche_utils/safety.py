"""A crisis screen that runs before the model on every user turn, and a check on the model's reply.

People in crisis write to counselling chatbots. A 7B model that babbles, or reasons at length
before it answers, is the wrong first responder for "我刚吞了一整瓶安眠药". So every user turn
first goes through ``screen``: a documented list of Chinese and English risk expressions
(configs/safety/risk_expressions.yaml) in five categories. A flagged turn never reaches the model;
it gets a referral-first reply whose hotline numbers live in configs/safety/hotlines.yaml.
The model's own reply goes through ``screen_reply`` before it is shown.

A keyword screen is a floor, not a clinician: it is fast, transparent and testable, and it misses
what its authors did not foresee. ``evaluate_screen`` measures both kinds of error on the team's
evaluation set, and ``LLMRiskClassifier`` adds an optional second opinion through any ``ChatBackend``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from psyche_utils.answers import split_reasoning
from psyche_utils.llm import ChatBackend, GenerationSettings
from psyche_utils.paths import CONFIGS_DIR, EVAL_DATA_DIR

SAFETY_CONFIG_DIR = CONFIGS_DIR / "safety"
RISK_EXPRESSIONS_PATH = SAFETY_CONFIG_DIR / "risk_expressions.yaml"
HOTLINES_PATH = SAFETY_CONFIG_DIR / "hotlines.yaml"
REFERRAL_PATH = SAFETY_CONFIG_DIR / "referral.yaml"
SAFETY_SET_DIR = EVAL_DATA_DIR / "safety"

UNCLASSIFIED = "unclassified"
_CJK = re.compile(r"[\u3400-\u9fff]")
_ASCII_WORD = re.compile(r"^[a-z0-9][a-z0-9 \-]*$")


class SafetyConfigError(ValueError):
    """A safety configuration or evaluation file is malformed; the message names file and field."""


# --------------------------------------------------------------------------- configuration


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafetyConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        raise SafetyConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SafetyConfigError(f"{path}: expected a mapping at the top level")
    return data


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise SafetyConfigError(f"{where}: pattern must be a non-empty string")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise SafetyConfigError(f"{where}: invalid regular expression {pattern!r}: {error}") from None


def load_risk_config(path: str | Path = RISK_EXPRESSIONS_PATH) -> dict[str, Any]:
    """The risk expression file as a plain dict (edit a copy to experiment), checked field by field."""
    path = Path(path)
    config = _read_yaml(path)
    for key in ("negation", "figurative", "academic_context", "categories", "reply_checks"):
        if key not in config:
            raise SafetyConfigError(f"{path}: missing top-level field {key!r}")
    # Compiling here means a bad pattern is reported with its location, not at the first screen call.
    RiskScreen(config, source=str(path))
    return config


@dataclass(frozen=True)
class _Expression:
    category: str
    kind: str  # "expression" | "topic"
    regex: re.Pattern[str]
    note: str


@dataclass(frozen=True)
class Match:
    """One piece of evidence: which rule matched which span of the normalised text."""

    category: str
    kind: str
    pattern: str
    span: str
    note: str = ""


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


def normalize(text: str) -> str:
    """Fold the surface variation a keyword list should not have to spell out.

    NFKC turns full-width letters and digits into ASCII, lower case makes English matching
    case-blind, curly apostrophes become straight ones, and runs of white space become one space.
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    folded = folded.replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", folded).strip()


def detect_language(text: str) -> str:
    """"zh" when the text contains any CJK character, otherwise "en"."""
    return "zh" if _CJK.search(text) else "en"


class RiskScreen:
    """The keyword screen built from a risk expression config (see risk_expressions.yaml).

    Steps: normalise; blank out figurative idioms; search expressions and topic terms, dropping a
    match that a negation cue right before it cancels and counting bare topic terms only outside an
    academic framing; report the first category, in the file's priority order, that has evidence.
    """

    def __init__(self, config: Mapping[str, Any], source: str = "<config>"):
        self.source = source
        self.categories: tuple[str, ...] = tuple(config["categories"])
        self.figurative = [
            _compile(item.get("pattern"), f"{source}: figurative[{i}]") for i, item in enumerate(config["figurative"] or [])
        ]
        negation = config["negation"]
        self.negation_window = {lang: int(size) for lang, size in negation["window_chars"].items()}
        self.negation_cues = {lang: tuple(cues) for lang, cues in negation["cues"].items()}
        self.academic_markers = tuple(normalize(m) for m in config["academic_context"]["markers"] or [])
        self.rules: list[_Expression] = []
        for category, spec in config["categories"].items():
            where = f"{source}: categories.{category}"
            if not isinstance(spec, Mapping) or "expressions" not in spec:
                raise SafetyConfigError(f"{where}: needs an 'expressions' list")
            for i, item in enumerate(spec["expressions"] or []):
                regex = _compile(item.get("pattern"), f"{where}.expressions[{i}].pattern")
                self.rules.append(_Expression(category, "expression", regex, item.get("note", "")))
            for i, term in enumerate(spec.get("topic_terms") or []):
                if not isinstance(term, str) or not term:
                    raise SafetyConfigError(f"{where}.topic_terms[{i}]: must be a non-empty string")
                term = normalize(term)
                regex = re.compile(rf"\b{re.escape(term)}\b" if _ASCII_WORD.match(term) else re.escape(term))
                self.rules.append(_Expression(category, "topic", regex, "bare topic term"))
        self.reply_rules: list[_Expression] = []
        for category, spec in (config.get("reply_checks") or {}).items():
            for i, item in enumerate(spec.get("expressions") or []):
                regex = _compile(item.get("pattern"), f"{source}: reply_checks.{category}.expressions[{i}].pattern")
                self.reply_rules.append(_Expression(category, "expression", regex, item.get("note", "")))

    @classmethod
    def from_file(cls, path: str | Path = RISK_EXPRESSIONS_PATH) -> RiskScreen:
        return cls(load_risk_config(path), source=str(path))

    def _mask_figurative(self, text: str) -> str:
        for regex in self.figurative:
            text = regex.sub(lambda m: " " * len(m.group(0)), text)
        return text

    def _negated(self, text: str, start: int) -> bool:
        for lang, cues in self.negation_cues.items():
            window = text[max(0, start - self.negation_window.get(lang, 0)) : start]
            if any(cue in window for cue in cues):
                return True
        return False

    def _academic(self, text: str) -> bool:
        return any(marker in text for marker in self.academic_markers)

    def evidence(self, text: str) -> list[Match]:
        """Every counting match in ``text``, expressions first then topic terms, in file order."""
        clean = self._mask_figurative(normalize(text))
        matches = []
        academic = self._academic(clean)
        for rule in self.rules:
            for found in rule.regex.finditer(clean):
                if self._negated(clean, found.start()) or (rule.kind == "topic" and academic):
                    continue
                matches.append(Match(rule.category, rule.kind, rule.regex.pattern, found.group(0), rule.note))
                break
        order = {category: i for i, category in enumerate(self.categories)}
        return sorted(matches, key=lambda m: (order[m.category], m.kind != "expression"))

    def screen(self, text: str) -> ScreenResult:
        """Flag ``text`` when any category has evidence; the category is the top-priority one."""
        matches = tuple(self.evidence(text))
        if not matches:
            return ScreenResult(False, None)
        return ScreenResult(True, matches[0].category, matches)

    def screen_reply(self, text: str) -> ScreenResult:
        """Check a model reply for encouragement of harm or for method and dose details."""
        clean = normalize(text)
        matches = tuple(
            Match(rule.category, rule.kind, rule.regex.pattern, found.group(0), rule.note)
            for rule in self.reply_rules
            for found in [rule.regex.search(clean)]
            if found
        )
        if not matches:
            return ScreenResult(False, None, source="reply_checks")
        return ScreenResult(True, matches[0].category, matches, source="reply_checks")


@lru_cache(maxsize=1)
def default_screen() -> RiskScreen:
    """The screen built from the shipped configs/safety/risk_expressions.yaml (built once)."""
    return RiskScreen.from_file(RISK_EXPRESSIONS_PATH)


def screen(text: str) -> ScreenResult:
    """Screen one user turn with the shipped risk expression list."""
    return default_screen().screen(text)


def screen_reply(text: str) -> ScreenResult:
    """Screen one model reply with the shipped reply checks."""
    return default_screen().screen_reply(text)


# --------------------------------------------------------------------------- optional LLM classifier

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


def screen_many(
    texts: Sequence[str],
    *,
    keyword_screen: Callable[[str], ScreenResult] = screen,
    classifier: LLMRiskClassifier | None = None,
) -> list[ScreenResult]:
    """Keyword screen for every text; the classifier (one batch) only sees what the keywords passed."""
    results = [keyword_screen(text) for text in texts]
    if classifier is None:
        return results
    passed = [i for i, result in enumerate(results) if not result.flagged]
    for i, verdict in zip(passed, classifier.classify([texts[i] for i in passed])):
        if verdict.flagged:
            results[i] = verdict
    return results


# --------------------------------------------------------------------------- referral reply


@dataclass(frozen=True)
class Hotline:
    id: str
    name_zh: str
    name_en: str
    number: str
    region: str
    kind: str  # "emergency" | "crisis_line"
    hours: str
    hours_zh: str
    status: str  # "verified" | "unconfirmed"
    checked: str
    sources: tuple[dict[str, str], ...]


_HOTLINE_FIELDS = ("id", "name_zh", "name_en", "number", "region", "kind", "hours", "hours_zh", "status", "checked", "sources")


def load_hotlines(path: str | Path = HOTLINES_PATH) -> list[Hotline]:
    """Hotline entries, each checked for every field, a known kind and status, and a source."""
    path = Path(path)
    data = _read_yaml(path)
    entries = data.get("hotlines")
    if not isinstance(entries, list) or not entries:
        raise SafetyConfigError(f"{path}: 'hotlines' must be a non-empty list")
    hotlines = []
    for i, entry in enumerate(entries):
        where = f"{path}: hotlines[{i}]"
        for name in _HOTLINE_FIELDS:
            if not entry.get(name):
                raise SafetyConfigError(f"{where}: missing field {name!r}")
        if entry["kind"] not in {"emergency", "crisis_line"}:
            raise SafetyConfigError(f"{where}.kind: must be 'emergency' or 'crisis_line', got {entry['kind']!r}")
        if entry["status"] not in {"verified", "unconfirmed"}:
            raise SafetyConfigError(f"{where}.status: must be 'verified' or 'unconfirmed', got {entry['status']!r}")
        for j, source in enumerate(entry["sources"]):
            if not source.get("note") or not source.get("url"):
                raise SafetyConfigError(f"{where}.sources[{j}]: needs 'note' and 'url'")
        hotlines.append(Hotline(**{name: entry[name] for name in _HOTLINE_FIELDS[:-1]}, sources=tuple(entry["sources"])))
    return hotlines


@dataclass
class Referral:
    """Builds the referral-first reply from referral.yaml and hotlines.yaml."""

    templates: dict[str, Any]
    hotlines: list[Hotline]
    include_unconfirmed: bool = False

    @classmethod
    def from_files(
        cls, referral_path: str | Path = REFERRAL_PATH, hotlines_path: str | Path = HOTLINES_PATH, **kwargs: Any
    ) -> Referral:
        templates = _read_yaml(Path(referral_path))
        for lang in ("zh", "en"):
            for key in ("opening", "urgent", "hotlines_intro", "hotline_line", "stay", "limits", "unsafe_reply"):
                if key not in templates.get(lang, {}):
                    raise SafetyConfigError(f"{referral_path}: {lang}.{key} is missing")
        return cls(templates, load_hotlines(hotlines_path), **kwargs)

    def _usable(self, lang: str) -> list[Hotline]:
        regions = self.templates["regions"][lang]
        usable = [h for h in self.hotlines if h.region in regions and (self.include_unconfirmed or h.status == "verified")]
        return sorted(usable, key=lambda h: regions.index(h.region))

    def _parts(self, lang: str) -> tuple[str, list[str]]:
        usable = self._usable(lang)
        name, hours = ("name_zh", "hours_zh") if lang == "zh" else ("name_en", "hours")
        separator = "、" if lang == "zh" else ", "
        emergency = separator.join(
            f"{h.number}" + (f" ({h.region})" if lang == "en" else "") for h in usable if h.kind == "emergency"
        )
        template = self.templates[lang]["hotline_line"]
        lines = [template.format(name=getattr(h, name), number=h.number, hours=getattr(h, hours)) for h in usable if h.kind == "crisis_line"]
        return emergency, lines

    def reply(self, result: ScreenResult, text: str) -> str:
        """Acknowledge, emergency numbers, crisis lines, stay with the person - in the text's language."""
        lang = detect_language(text)
        spec = self.templates[lang]
        emergency, lines = self._parts(lang)
        opening = spec["opening"].get(result.category or UNCLASSIFIED, spec["opening"][UNCLASSIFIED])
        parts = [opening, spec["urgent"].format(emergency=emergency), spec["hotlines_intro"], *lines, spec["stay"], spec["limits"]]
        return "\n".join(parts)

    def unsafe_reply(self, text: str) -> str:
        """What replaces a model reply that failed ``screen_reply``."""
        lang = detect_language(text)
        emergency, _ = self._parts(lang)
        first = next((h.number for h in self._usable(lang) if h.kind == "crisis_line"), "")
        return self.templates[lang]["unsafe_reply"].format(emergency=emergency, first_hotline=first)


@lru_cache(maxsize=1)
def default_referral() -> Referral:
    return Referral.from_files()


def referral_reply(result: ScreenResult, text: str) -> str:
    """The referral-first reply for a flagged turn, from the shipped configuration."""
    return default_referral().reply(result, text)


# --------------------------------------------------------------------------- evaluation

# "main" is the set the list was measured and revised on; "holdout" was written after the revision.
SAFETY_SPLITS = {
    "main": ("risk_messages.jsonl", "hard_negatives.jsonl"),
    "holdout": ("holdout_risk_messages.jsonl", "holdout_hard_negatives.jsonl"),
}

@dataclass(frozen=True)
class SafetyExample:
    id: str
    text: str
    lang: str
    label: str  # "risk" | "safe"
    category: str | None = None
    phrasing: str | None = None
    kind: str | None = None


def _read_jsonl(path: Path, required: Sequence[str], allowed: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    if not path.exists():
        raise SafetyConfigError(f"{path}: file not found")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SafetyConfigError(f"{path}:{line_number}: not valid JSON: {error}") from None
        for name in required:
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise SafetyConfigError(f"{path}:{line_number}: field {name!r} is missing or empty")
        for name, values in allowed.items():
            if record[name] not in set(values):
                raise SafetyConfigError(f"{path}:{line_number}: field {name!r} has {record[name]!r}, expected one of {sorted(values)}")
        records.append(record)
    return records


def load_safety_set(
    split: str = "main", directory: str | Path = SAFETY_SET_DIR, categories: Sequence[str] | None = None
) -> list[SafetyExample]:
    """Risk messages then hard negatives of one split, validated (file, line and field named on error)."""
    if split not in SAFETY_SPLITS:
        raise ValueError(f"split must be one of {sorted(SAFETY_SPLITS)}, got {split!r}")
    risk_file, negatives_file = SAFETY_SPLITS[split]
    directory = Path(directory)
    categories = tuple(categories or default_screen().categories)
    risk = _read_jsonl(
        directory / risk_file,
        ("id", "text", "lang", "category", "phrasing"),
        {"lang": ("zh", "en"), "category": categories, "phrasing": ("direct", "indirect")},
    )
    safe = _read_jsonl(
        directory / negatives_file,
        ("id", "text", "lang", "kind"),
        {"lang": ("zh", "en"), "kind": ("sad", "anxious", "angry", "academic", "idiom", "negated", "everyday")},
    )
    examples = [SafetyExample(r["id"], r["text"], r["lang"], "risk", r["category"], r["phrasing"]) for r in risk]
    examples += [SafetyExample(r["id"], r["text"], r["lang"], "safe", kind=r["kind"]) for r in safe]
    seen = Counter(example.id for example in examples)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    if duplicates:
        raise SafetyConfigError(f"{directory}: duplicate ids {duplicates}")
    return examples


@dataclass
class SafetyReport:
    """Per-example verdicts and the rates the notebook and tests report."""

    examples: list[SafetyExample]
    results: list[ScreenResult]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": e.id,
                "text": e.text,
                "lang": e.lang,
                "label": e.label,
                "category": e.category,
                "phrasing": e.phrasing,
                "kind": e.kind,
                "flagged": r.flagged,
                "predicted": r.category,
                "evidence": "; ".join(m.span for m in r.matches),
            }
            for e, r in zip(self.examples, self.results)
        ]

    def _risk(self, phrasing: str | None = None, category: str | None = None) -> list[tuple[SafetyExample, ScreenResult]]:
        return [
            (e, r)
            for e, r in zip(self.examples, self.results)
            if e.label == "risk" and phrasing in (None, e.phrasing) and category in (None, e.category)
        ]

    def recall(self, phrasing: str | None = None, category: str | None = None) -> float:
        """Share of risk messages flagged (any category counts: the referral is what matters)."""
        pairs = self._risk(phrasing, category)
        if not pairs:
            raise ValueError(f"no risk messages with phrasing={phrasing!r}, category={category!r}")
        return sum(r.flagged for _, r in pairs) / len(pairs)

    def recall_by_category(self, phrasing: str | None = None) -> dict[str, float]:
        categories = dict.fromkeys(e.category for e, _ in self._risk(phrasing))
        return {category: self.recall(phrasing, category) for category in categories}

    def false_positive_rate(self, kind: str | None = None) -> float:
        """Share of hard negatives flagged."""
        pairs = [(e, r) for e, r in zip(self.examples, self.results) if e.label == "safe" and kind in (None, e.kind)]
        if not pairs:
            raise ValueError(f"no hard negatives with kind={kind!r}")
        return sum(r.flagged for _, r in pairs) / len(pairs)

    def confusion(self) -> dict[str, Counter[str]]:
        """true category (or "safe") -> counts of predicted category (or "not flagged")."""
        table: dict[str, Counter[str]] = {}
        for e, r in zip(self.examples, self.results):
            truth = e.category if e.label == "risk" else "safe"
            table.setdefault(truth, Counter())[r.category if r.flagged else "not flagged"] += 1
        return table

    def misses(self) -> list[SafetyExample]:
        return [e for e, r in zip(self.examples, self.results) if e.label == "risk" and not r.flagged]

    def false_positives(self) -> list[tuple[SafetyExample, ScreenResult]]:
        return [(e, r) for e, r in zip(self.examples, self.results) if e.label == "safe" and r.flagged]


def evaluate_screen(
    examples: Sequence[SafetyExample],
    screen_fn: Callable[[str], ScreenResult] = screen,
) -> SafetyReport:
    """Run a screen over the evaluation set and keep every verdict for inspection."""
    return SafetyReport(list(examples), [screen_fn(example.text) for example in examples])
