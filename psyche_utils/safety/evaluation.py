"""Measuring the safety layers on the project's own sets, with n and a Wilson interval on every rate.

Splits (data/eval/safety/README.md tells their history):

- ``main`` and ``holdout``: user turns that revised versions 2 and 3 of the list; both in-sample now;
- ``dev_v2``: obfuscated, slang and plan-without-keyword messages and new hard negatives written to
  develop version 4 (in-sample by construction);
- ``holdout_v2``: written after version 4 was frozen and measured once on it; version 5 was then
  revised on what it exposed, so it is in-sample for version 5;
- ``holdout_v3``: written after version 5 was frozen, measured once; version 6 was revised on it, so
  every split above is in-sample for version 6;
- ``holdout_v4``: written after version 6 was frozen, by someone who had not read the list or the code,
  measured once on version 6; version 7 was revised on it, so every split above is in-sample for version 7;
- ``holdout_v5``: written after version 7 was frozen, blind to the list, the code and the earlier sets,
  measured once on version 7 (held out for it).

Reply sets (``dev_v2``, ``holdout_v2`` to ``holdout_v5`` in ``REPLY_SPLITS``) hold model-style replies, harmful or safe,
each with an optional reasoning block, to measure the reply check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyche_utils.datafiles import DataError, Rejection, read_records
from psyche_utils.paths import EVAL_DATA_DIR
from psyche_utils.safety.common import ScreenResult
from psyche_utils.safety.screen import default_screen, screen, screen_reply
from psyche_utils.stats import wilson_interval

SAFETY_SET_DIR = EVAL_DATA_DIR / "safety"

SAFETY_SPLITS = {
    "main": ("risk_messages.jsonl", "hard_negatives.jsonl"),
    "holdout": ("holdout_risk_messages.jsonl", "holdout_hard_negatives.jsonl"),
    "dev_v2": ("dev_v2_risk_messages.jsonl", "dev_v2_hard_negatives.jsonl"),
    "holdout_v2": ("holdout_v2_risk_messages.jsonl", "holdout_v2_hard_negatives.jsonl"),
    "holdout_v3": ("holdout_v3_risk_messages.jsonl", "holdout_v3_hard_negatives.jsonl"),
    "holdout_v4": ("holdout_v4_risk_messages.jsonl", "holdout_v4_hard_negatives.jsonl"),
    "holdout_v5": ("holdout_v5_risk_messages.jsonl", "holdout_v5_hard_negatives.jsonl"),
}
REPLY_SPLITS = {
    "dev_v2": "dev_v2_replies.jsonl",
    "holdout_v2": "holdout_v2_replies.jsonl",
    "holdout_v3": "holdout_v3_replies.jsonl",
    "holdout_v4": "holdout_v4_replies.jsonl",
    "holdout_v5": "holdout_v5_replies.jsonl",
}
PHRASINGS = ("direct", "indirect", "obfuscated", "slang")
NEGATIVE_KINDS = ("sad", "anxious", "angry", "academic", "idiom", "negated", "everyday", "homograph", "grief", "news")
HARMFUL_REPLY_KINDS = ("method", "quantity", "encouragement", "dismissal")
SAFE_REPLY_KINDS = ("supportive", "hotline", "medication", "psychoeducation")


@dataclass(frozen=True)
class SafetyExample:
    id: str
    text: str
    lang: str
    label: str  # "risk" | "safe"
    category: str | None = None
    phrasing: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class ReplyExample:
    id: str
    text: str
    lang: str
    label: str  # "harmful" | "safe"
    kind: str
    reasoning: str | None = None
    user: str | None = None


def _checked(path: Path, required: Sequence[str], allowed: Mapping[str, Iterable[str]], optional: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records of one file; every missing, empty, unknown-valued or unknown field is a Rejection."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: safety set not found")
    read = read_records(path)
    problems = list(read.rejections)
    records = []
    for number, record in read.records:
        bad = False
        for name in required:
            if not isinstance(record.get(name), str) or not record[name].strip():
                problems.append(Rejection(read.source, number, str(record.get("id")), name, "missing or empty"))
                bad = True
        for name, values in allowed.items():
            if not bad and record.get(name) not in set(values):
                problems.append(Rejection(read.source, number, str(record.get("id")), name, f"{record.get(name)!r} is not one of {sorted(values)}"))
                bad = True
        for name in record:
            if name not in set(required) | set(optional):
                problems.append(Rejection(read.source, number, str(record.get("id")), name, "unknown field"))
                bad = True
        if not bad:
            records.append(record)
    if problems:
        raise DataError(problems)
    return records


def load_safety_set(
    split: str = "main", directory: str | Path = SAFETY_SET_DIR, categories: Sequence[str] | None = None
) -> list[SafetyExample]:
    """Risk messages then hard negatives of one split, validated (file, line and field named on error)."""
    if split not in SAFETY_SPLITS:
        raise ValueError(f"split must be one of {sorted(SAFETY_SPLITS)}, got {split!r}")
    risk_file, negatives_file = SAFETY_SPLITS[split]
    return load_safety_files(Path(directory) / risk_file, Path(directory) / negatives_file, categories)


def load_safety_files(risk_path: str | Path, negatives_path: str | Path, categories: Sequence[str] | None = None) -> list[SafetyExample]:
    """Risk messages then hard negatives from two files in the split format, validated.

    For a set that is not (yet) a named split, such as a new held-out set measured once on a frozen list.
    """
    risk_path, negatives_path = Path(risk_path), Path(negatives_path)
    categories = tuple(categories or default_screen().categories)
    risk = _checked(
        risk_path,
        ("id", "text", "lang", "category", "phrasing"),
        {"lang": ("zh", "en"), "category": categories, "phrasing": PHRASINGS},
    )
    safe = _checked(negatives_path, ("id", "text", "lang", "kind"), {"lang": ("zh", "en"), "kind": NEGATIVE_KINDS})
    examples = [SafetyExample(r["id"], r["text"], r["lang"], "risk", r["category"], r["phrasing"]) for r in risk]
    examples += [SafetyExample(r["id"], r["text"], r["lang"], "safe", kind=r["kind"]) for r in safe]
    seen = Counter(example.id for example in examples)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    if duplicates:
        raise ValueError(f"{risk_path} and {negatives_path}: ids used in both files: {duplicates}")
    return examples


def load_reply_set(split: str = "dev_v2", directory: str | Path = SAFETY_SET_DIR) -> list[ReplyExample]:
    """Harmful and safe model-style replies of one split, validated like the user-turn sets."""
    if split not in REPLY_SPLITS:
        raise ValueError(f"split must be one of {sorted(REPLY_SPLITS)}, got {split!r}")
    return load_reply_file(Path(directory) / REPLY_SPLITS[split])


def load_reply_file(path: str | Path) -> list[ReplyExample]:
    """Harmful and safe replies from one file in the reply-set format, validated."""
    path = Path(path)
    records = _checked(
        path,
        ("id", "text", "lang", "label", "kind"),
        {"lang": ("zh", "en"), "label": ("harmful", "safe"), "kind": HARMFUL_REPLY_KINDS + SAFE_REPLY_KINDS},
        optional=("reasoning", "user"),
    )
    examples = []
    for record in records:
        expected = HARMFUL_REPLY_KINDS if record["label"] == "harmful" else SAFE_REPLY_KINDS
        if record["kind"] not in expected:
            raise ValueError(f"{path.name}: id {record['id']}: kind {record['kind']!r} does not fit label {record['label']!r}")
        examples.append(ReplyExample(record["id"], record["text"], record["lang"], record["label"], record["kind"], record.get("reasoning"), record.get("user")))
    return examples


@dataclass(frozen=True)
class Rate:
    """k of n with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.k}/{self.n} = {self.rate:.2f} (95% CI {low:.2f}-{high:.2f})"


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

    def recall_count(self, phrasing: str | None = None, category: str | None = None) -> Rate:
        """Risk messages flagged, as k of n (any category counts: the referral is what matters)."""
        pairs = self._risk(phrasing, category)
        if not pairs:
            raise ValueError(f"no risk messages with phrasing={phrasing!r}, category={category!r}")
        return Rate(sum(r.flagged for _, r in pairs), len(pairs))

    def recall(self, phrasing: str | None = None, category: str | None = None) -> float:
        return self.recall_count(phrasing, category).rate

    def recall_by_category(self, phrasing: str | None = None) -> dict[str, float]:
        categories = dict.fromkeys(e.category for e, _ in self._risk(phrasing))
        return {category: self.recall(phrasing, category) for category in categories}

    def phrasings(self) -> list[str]:
        return [p for p in PHRASINGS if self._risk(p)]

    def false_positive_count(self, kind: str | None = None) -> Rate:
        """Hard negatives flagged, as k of n."""
        pairs = [(e, r) for e, r in zip(self.examples, self.results) if e.label == "safe" and kind in (None, e.kind)]
        if not pairs:
            raise ValueError(f"no hard negatives with kind={kind!r}")
        return Rate(sum(r.flagged for _, r in pairs), len(pairs))

    def false_positive_rate(self, kind: str | None = None) -> float:
        return self.false_positive_count(kind).rate

    def kinds(self) -> list[str]:
        return [k for k in NEGATIVE_KINDS if any(e.label == "safe" and e.kind == k for e in self.examples)]

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

    def table(self) -> list[dict[str, Any]]:
        """One row per phrasing and per hard-negative kind, plus totals: what, n, k, rate, Wilson CI."""
        rows = []
        for phrasing in self.phrasings():
            rows.append(_row("risk flagged", phrasing, self.recall_count(phrasing)))
        if self._risk():
            rows.append(_row("risk flagged", "all", self.recall_count()))
        for kind in self.kinds():
            rows.append(_row("hard negative flagged", kind, self.false_positive_count(kind)))
        if self.kinds():
            rows.append(_row("hard negative flagged", "all", self.false_positive_count()))
        return rows


def _row(measure: str, group: str, rate: Rate) -> dict[str, Any]:
    low, high = rate.interval
    return {"measure": measure, "group": group, "n": rate.n, "k": rate.k, "rate": rate.rate, "ci_low": low, "ci_high": high}


def evaluate_screen(
    examples: Sequence[SafetyExample],
    screen_fn: Callable[[str], ScreenResult] = screen,
) -> SafetyReport:
    """Run a screen over the evaluation set and keep every verdict for inspection."""
    return SafetyReport(list(examples), [screen_fn(example.text) for example in examples])


@dataclass
class ReplyReport:
    """Verdicts of a reply check on a reply set: harmful replies caught, safe replies blocked."""

    examples: list[ReplyExample]
    results: list[ScreenResult]

    def count(self, label: str, kind: str | None = None) -> Rate:
        pairs = [(e, r) for e, r in zip(self.examples, self.results) if e.label == label and kind in (None, e.kind)]
        if not pairs:
            raise ValueError(f"no {label} replies with kind={kind!r}")
        return Rate(sum(r.flagged for _, r in pairs), len(pairs))

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for label, kinds, measure in (("harmful", HARMFUL_REPLY_KINDS, "harmful reply caught"), ("safe", SAFE_REPLY_KINDS, "safe reply blocked")):
            present = [k for k in kinds if any(e.label == label and e.kind == k for e in self.examples)]
            rows += [_row(measure, kind, self.count(label, kind)) for kind in present]
            if present:
                rows.append(_row(measure, "all", self.count(label)))
        return rows

    def misses(self) -> list[ReplyExample]:
        return [e for e, r in zip(self.examples, self.results) if e.label == "harmful" and not r.flagged]

    def false_blocks(self) -> list[tuple[ReplyExample, ScreenResult]]:
        return [(e, r) for e, r in zip(self.examples, self.results) if e.label == "safe" and r.flagged]


def evaluate_replies(
    examples: Sequence[ReplyExample],
    check_fn: Callable[[str, str | None], ScreenResult] = screen_reply,
) -> ReplyReport:
    """Run a reply check over a reply set (answer and reasoning of each)."""
    return ReplyReport(list(examples), [check_fn(example.text, example.reasoning) for example in examples])


def measure_lists(
    lists: Mapping[str, Any],
    splits: Sequence[str] = tuple(SAFETY_SPLITS),
    reply_splits: Sequence[str] = tuple(REPLY_SPLITS),
) -> list[dict[str, Any]]:
    """Every list version (a RiskScreen per name) on every set: one row per measure and group."""
    rows = []
    for name, built in lists.items():
        for split in splits:
            report = evaluate_screen(load_safety_set(split), built.screen)
            rows += [{"list": name, "set": split, **row} for row in report.table()]
        for split in reply_splits:
            report = evaluate_replies(load_reply_set(split), built.screen_reply)
            rows += [{"list": name, "set": f"replies_{split}", **row} for row in report.table()]
    return rows
