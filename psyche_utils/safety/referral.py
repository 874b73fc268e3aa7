"""The referral-first reply: what a flagged turn (or a withheld model reply) gets instead of the model.

Order follows crisis-line practice: acknowledge, emergency services first, then a staffed crisis
line, then stay with the person. Numbers live in configs/safety/hotlines.yaml with their sources and
check dates; the wording lives in configs/safety/referral.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from psyche_utils.safety.common import UNCLASSIFIED, SafetyConfigError, ScreenResult, detect_language, read_yaml
from psyche_utils.safety.screen import SAFETY_CONFIG_DIR

HOTLINES_PATH = SAFETY_CONFIG_DIR / "hotlines.yaml"
REFERRAL_PATH = SAFETY_CONFIG_DIR / "referral.yaml"


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
    data = read_yaml(path)
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
        templates = read_yaml(Path(referral_path))
        for lang in ("zh", "en"):
            for key in ("opening", "urgent", "hotlines_intro", "hotline_line", "stay", "limits", "unsafe_reply", "empty_turn", "oversized_turn"):
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
        """What replaces a model reply that failed the reply check: the referral first, then why."""
        lang = detect_language(text)
        return self.reply(ScreenResult(True, UNCLASSIFIED), text) + "\n" + self.templates[lang]["unsafe_reply"]

    def empty_turn(self, text: str = "") -> str:
        """The prompt an empty or blank turn gets (it is never sent to the model)."""
        return self.templates[detect_language(text) if any(char.isalpha() for char in text) else "zh"]["empty_turn"]

    def oversized_turn(self, text: str, tokens: int, budget: int) -> str:
        """Why a turn longer than the token budget was not sent to the model."""
        return self.templates[detect_language(text)]["oversized_turn"].format(tokens=tokens, budget=budget)


@lru_cache(maxsize=1)
def default_referral() -> Referral:
    return Referral.from_files()


def referral_reply(result: ScreenResult, text: str) -> str:
    """The referral-first reply for a flagged turn, from the shipped configuration."""
    return default_referral().reply(result, text)
