"""Named scoring conventions: the benchmarks' own evaluators, and this project's stricter one.

Published tables come from each benchmark's released evaluator, quirks included, so a number is
only comparable with them when it is computed the same way. A stricter reading is still the
better tool for judging a reasoning model. Both live here, side by side, under their names.
The PCEB evaluator (MACLAB-HFUT/Evaluation) exists in more than one version, so each ``official``
convention says which one it follows.

``official``
    The latest PCEB evaluator, the version next to which published numbers (the 2025 Psyche-R1
    table among them) are read. Extraction, from its ``QuestionHandler.py`` (the one whose prompts
    are (system, user) pairs), over the *whole* reply, reasoning included: single choice takes the
    first match of ``[ABCD](?!.*[ABCD])`` with ``re.S`` (the last A-D letter anywhere); multiple
    choice and every case sub-question take the first match of the longer pattern built by
    ``official_patterns`` (the last run of up to four letters joined by quotes, spaces, ``、,，和``
    or ``选项``), then ``"".join(re.findall("[ABCD]+", match))``; no match is "E". The ``main.py``
    that goes with that version was not available to read here; its arithmetic is taken from the
    written description in the reference notes: a reply scored "E" is *missing* and left out of
    the denominator, strict = complete / answered, elastic = credit / answered, single choice =
    (complete + partial) / answered. Credit, ``correct_rate_compute``: the exact string ->
    complete, 1; ``set(pred) <= set(gold)`` -> partial, ``len(set(pred)) / len(set(gold))``; else
    wrong, 0.
``official-after-think``
    The same, reading only the text after ``</think>`` (an unclosed think block: no answer), as
    the reference notes advise for a reasoning model.
``official-2024``
    The older released evaluator, ``main.py`` and ``QuestionHandler.py`` at commit
    1534ad3f13ff1b5a0afdaea83f21b22fc729341e, read from its code, whole reply. Extraction, with
    ``re.findall`` and no flags (``$`` matches only at the very end of the reply or before a final
    newline; ``\\b`` is Unicode-aware, so a letter right after a CJK character, itself a word
    character, has no ``\\b`` before it): single choice takes the first match of ``[ABCD]$``, else
    the first match of ``\\b[ABCD]``; multiple choice and case sub-questions take the first match of
    ``[ABCD]+$``, else the captured group of the first match of ``[^ABCD]*([ABCD]+)[^ABCD]*`` (the
    *first* letter run); no match is "E". The same ``correct_rate_compute``. Denominators are
    *every* item: ``general_question`` (theory, moral) divides by the number of questions, an "E"
    scored wrong; single choice = complete / all (a partial pick earns nothing); multiple strict =
    complete / all, elastic = credit / all; ``case_question`` (``mix``) counts an "E" as missing
    instead of wrong but still divides by every sub-question.
``strict``
    Reasoning excluded, an explicit 答案 marker first (``psyche_utils.answers.extract_answer``),
    option sets compared (order and case do not matter), every item in the denominator:
    unanswered counts as wrong. Golds are the loader's normalised letters; an item whose gold has
    no usable letters is skipped and reported. CPsyExam is macro-averaged per task file here too.

Common to the official conventions: gold answers are compared as ``.strip()``-ped strings; an item
with an empty gold is always wrong (and, having an answer, counted). The released code pools all
case sub-questions; the Psyche-R1 table reports Case S and Case M, so these conventions split them
by the 单选/多选 prefix (same pattern, same credit, Case S and Case M = complete over the
convention's denominator). CPsyExam has one released scorer (``evaluate_submission.py``), used by
all three official conventions: accuracy per task file, exact string match of prediction and the
released answer, over the questions that have a prediction (a submitted prediction that is ""
counts, as wrong; a question left out of the submission does not); MCQA = mean over files whose
name contains 单项选择题, MRQA = mean over the others (0 when there are none, as ``np.mean`` of an
empty list is replaced by 0 there). CPsyExam leaves extraction to the submitter; these conventions
read it with the latest PCEB multiple-choice pattern over the letters A-E for every question (so
the released single-choice item whose gold is ``AC`` can be met).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from psyche_utils.answers import extract_answer, split_reasoning
from psyche_utils.evaluation.loaders import EvalItem, Issue
from psyche_utils.evaluation.metrics import PCEB_CHOICE_PARTS, pceb_averages

PCEB_PARTS = PCEB_CHOICE_PARTS
CPSYEXAM_COLUMNS = ["MCQA", "MRQA", "Avg"]
OFFICIAL_MISSING = "E"
SINGLE_TASK_MARK = "单项选择题"


def official_patterns(letters: str = "ABCD") -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(single-choice, multiple-choice) patterns of the latest PCEB evaluator, for a set of option letters.

    With ``letters="ABCD"`` these are the released expressions character for character.
    """
    one = f"[{letters}]"
    join = f"['\\\"]?\\s*[、,，和]?\\s*[选项]*['\\\"]?"
    last = f"{one}(?!.*{one})"
    single = re.compile(last, re.S)
    multi = re.compile(f"{one}?{join}{one}?{join}{one}?{join}{last}", re.S)
    return single, multi


_PCEB_SINGLE, _PCEB_MULTI = official_patterns("ABCD")
_CPSY_SINGLE, _CPSY_MULTI = official_patterns("ABCDE")


def official_extract(reply: str, pattern: str, letters: str = "ABCD") -> str:
    """The answer the latest released evaluator reads from ``reply``; "" when it finds none (its "E").

    ``pattern`` is "single" or "multi" (case sub-questions use "multi").
    """
    single, multi = (_PCEB_SINGLE, _PCEB_MULTI) if letters == "ABCD" else (_CPSY_SINGLE, _CPSY_MULTI)
    found = (single if pattern == "single" else multi).findall(reply)
    if not found:
        return ""
    return "".join(re.findall(f"[{letters}]+", found[0]))


_OLDER_SINGLE_END = re.compile(r"[ABCD]$")
_OLDER_SINGLE_FIRST = re.compile(r"\b[ABCD]")
_OLDER_MULTI_END = re.compile(r"[ABCD]+$")
_OLDER_MULTI_FIRST = re.compile(r"[^ABCD]*([ABCD]+)[^ABCD]*")


def official_2024_extract(reply: str, pattern: str) -> str:
    """The answer the older released evaluator (commit 1534ad3) reads from ``reply``; "" for its "E".

    ``pattern`` is "single" or "multi" (case sub-questions use "multi"). A letter at the end of the
    reply wins; otherwise the *first* letter (single, at a word boundary) or letter run (multi).
    """
    end, first = ((_OLDER_SINGLE_END, _OLDER_SINGLE_FIRST) if pattern == "single"
                  else (_OLDER_MULTI_END, _OLDER_MULTI_FIRST))
    found = end.findall(reply) or first.findall(reply)
    return found[0] if found else ""


def official_credit(pred: str, gold: str) -> tuple[str, float]:
    """("complete" | "partial" | "wrong", credit) exactly as ``correct_rate_compute`` in main.py (both versions)."""
    if pred == gold:
        return "complete", 1.0
    if set(pred) <= set(gold):
        return "partial", len(set(pred)) / len(set(gold))
    return "wrong", 0.0


@dataclass(frozen=True)
class Convention:
    """A way to turn replies into scores: how answers are read, compared and counted."""

    name: str
    description: str
    reads: str                    # "whole reply" | "after </think>"
    official: bool                # the benchmark's released scoring (exact strings, its own
                                  # rules) or this project's (normalised option sets)
    extraction: str = "latest"    # PCEB reader: "latest" | "2024" (commit 1534ad3) | "marker" (strict)
    answered_only: bool = False   # PCEB: an unanswered ("E") item is left out of the denominator
    single_partial: bool = False  # PCEB theory/moral single choice: a partial pick counts as a hit

    def prediction(self, reply: str, item: EvalItem) -> str:
        """The answer this convention reads from ``reply`` for ``item`` ("" = unanswered)."""
        if self.extraction == "marker":
            return extract_answer(reply)
        text = reply if self.reads == "whole reply" else split_reasoning(reply)[1]
        if item.benchmark != "pceb":
            return official_extract(text, "multi", "ABCDE")
        pattern = "multi" if item.part == "case" or item.question_type != "single" else "single"
        if self.extraction == "2024":
            return official_2024_extract(text, pattern)
        return official_extract(text, pattern, "ABCD")

    def gold(self, item: EvalItem) -> str:
        """The gold this convention compares with: PCEB's stripped string, CPsyExam's released
        string, or the loader's normalised letters (strict)."""
        if not self.official:
            return item.answer
        return item.official_answer.strip() if item.benchmark == "pceb" else item.official_answer


CONVENTIONS: dict[str, Convention] = {
    "official": Convention("official", "each benchmark's own (latest) evaluator, quirks included, over the whole reply; "
                           "PCEB divides by the answered items", "whole reply", official=True,
                           answered_only=True, single_partial=True),
    "official-after-think": Convention("official-after-think", "the official evaluator, reading only after </think>",
                                       "after </think>", official=True, answered_only=True, single_partial=True),
    "official-2024": Convention("official-2024", "the older released evaluator, commit 1534ad3: its own regexes, "
                                "every item in the denominator", "whole reply", official=True, extraction="2024"),
    "strict": Convention("strict", "reasoning excluded, 答案 marker first, option sets compared, unanswered = wrong",
                         "after </think>", official=False, extraction="marker"),
}


def get_convention(name: str | Convention) -> Convention:
    if isinstance(name, Convention):
        return name
    if name not in CONVENTIONS:
        raise KeyError(f"unknown scoring convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


ROW_COLUMNS = ["id", "part", "question_type", "task", "subject", "gold", "pred", "answered", "outcome",
               "credit", "strict", "elastic", "counted", "hit"]


@dataclass
class Scored:
    """Per-item results under one convention, plus the items it could not score and why."""

    convention: Convention
    rows: pd.DataFrame
    skipped: list[Issue] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def answered(self) -> int:
        return int(self.rows.answered.sum()) if len(self.rows) else 0


def score_replies(items: Iterable[EvalItem], replies: Mapping[str, str], convention: str | Convention) -> Scored:
    """Score every choice item's reply under ``convention``; a missing reply is a ``KeyError``.

    Each row records the prediction, whether it was answered, the outcome (complete, partial,
    wrong, missing), the credit, ``strict`` (1 when complete), ``elastic`` (the credit: the Me
    columns), ``counted`` (whether the item is in the convention's denominators) and ``hit`` (the
    item's share of its S or M column: ``strict``, or under ``official`` a single-choice theory or
    moral item that is complete or partial). An unanswered PCEB reply is the released "E", credit 0:
    under ``official`` it is "missing" and not counted; under ``official-2024`` it is "missing" in a
    case and "wrong" elsewhere, as that ``main.py`` labels it, and counted either way.
    """
    conv = get_convention(convention)
    rows, skipped = [], []
    for item in items:
        if item.question_type == "essay":
            continue
        if item.id not in replies:
            raise KeyError(f"no reply for item {item.id}")
        if not conv.official and item.gold_problem:
            skipped.append(Issue(item.source, item.native_id, "answer", f"{item.gold_problem}: not scored under {conv.name}"))
            continue
        pred = conv.prediction(replies[item.id], item)
        gold = conv.gold(item)
        answered = bool(pred)
        if conv.official and item.benchmark != "pceb":
            outcome = "missing" if not answered else ("complete" if pred == gold else "wrong")
            credit = float(outcome == "complete")
        elif conv.official:
            outcome, credit = official_credit(pred if answered else OFFICIAL_MISSING, gold)
            if not answered and (conv.answered_only or item.part == "case"):
                outcome = "missing"
        else:
            pred_set, gold_set = set(pred), set(gold)
            if pred_set == gold_set:
                outcome, credit = "complete", 1.0
            elif pred_set and pred_set < gold_set:
                outcome, credit = "partial", len(pred_set) / len(gold_set)
            else:
                outcome, credit = ("wrong" if answered else "missing"), 0.0
        complete = float(outcome == "complete")
        single_partial = (conv.single_partial and item.benchmark == "pceb" and item.part != "case"
                          and item.question_type == "single")
        rows.append({
            "id": item.id, "part": item.part, "question_type": item.question_type, "task": item.task,
            "subject": item.subject, "gold": gold, "pred": pred, "answered": answered, "outcome": outcome,
            "credit": credit, "strict": complete, "elastic": credit,
            "counted": answered or not (conv.answered_only and item.benchmark == "pceb"),
            "hit": float(outcome in ("complete", "partial")) if single_partial else complete,
        })
    return Scored(conv, pd.DataFrame(rows, columns=ROW_COLUMNS), skipped)


@dataclass(frozen=True)
class Cell:
    """One table value with what it rests on: ``hits`` of ``n`` counted items (``answered`` of ``total``)."""

    value: float
    hits: float
    n: int
    answered: int
    total: int


def _cell(rows: pd.DataFrame, numerator: str) -> Cell:
    """``numerator`` summed over the ``counted`` rows, divided by their number; answered and total kept alongside."""
    total = len(rows)
    answered = int(rows.answered.sum()) if total else 0
    counted = rows[rows.counted.astype(bool)] if total else rows
    n = len(counted)
    hits = float(counted[numerator].sum()) if n else 0.0
    return Cell(100 * hits / n if n else math.nan, hits, n, answered, total)


def pceb_cells(scored: Scored) -> dict[str, Cell]:
    """The nine PCEB accuracy columns as cells, each with its counts (NaN where no item counts)."""
    rows = scored.rows
    cells: dict[str, Cell] = {}
    for part in PCEB_PARTS:
        name = part.capitalize()
        single = rows[(rows.part == part) & (rows.question_type == "single")]
        multi = rows[(rows.part == part) & (rows.question_type == "multi")]
        cells[f"{name} S"] = _cell(single, "hit")
        cells[f"{name} M"] = _cell(multi, "hit")
        cells[f"{name} Me"] = _cell(multi, "elastic")
    return cells


def pceb_official_pool(scored: Scored) -> dict[str, float]:
    """The case numbers the released script itself prints: strict and elastic over the whole ``mix`` pool
    (over its answered sub-questions under ``official``, over all of them under ``official-2024``)."""
    pool = _cell(scored.rows[scored.rows.part == "case"], "strict")
    elastic = _cell(scored.rows[scored.rows.part == "case"], "elastic")
    return {"Case pool strict": pool.value, "Case pool elastic": elastic.value}


def cpsyexam_tasks(scored: Scored) -> pd.DataFrame:
    """Per task file: items, answered, counted, correct and accuracy (percent) under the convention.

    Every item with a reply is counted under every convention: CPsyExam's scorer drops only
    questions absent from the submission, and an unreadable reply is still a (wrong) prediction.
    """
    out = []
    for task, rows in scored.rows.groupby("task", sort=True):
        cell = _cell(rows, "strict")
        out.append({"task": task, "type": "MCQA" if SINGLE_TASK_MARK in task else "MRQA", "items": cell.total,
                    "answered": cell.answered, "counted": cell.n, "correct": int(cell.hits), "accuracy": cell.value})
    return pd.DataFrame(out, columns=["task", "type", "items", "answered", "counted", "correct", "accuracy"])


def cpsyexam_summary(scored: Scored) -> dict[str, float]:
    """MCQA, MRQA, Avg (percent), macro-averaged over task files.

    official: a task with no answered question is left out, and an empty group gives 0, as in
    ``evaluate_submission.py``; strict: an empty group gives NaN.
    """
    tasks = cpsyexam_tasks(scored)
    official = scored.convention.official
    result = {}
    for column in ("MCQA", "MRQA"):
        values = tasks[(tasks.type == column) & (tasks.counted > 0)].accuracy
        result[column] = float(values.mean()) if len(values) else (0.0 if official else math.nan)
    result["Avg"] = (result["MCQA"] + result["MRQA"]) / 2
    return result


def summary_json(benchmark: str, scored: Scored, essay: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The paper's columns for one run, plus ``n``, ``answered``, ``convention`` and per-column counts."""
    out: dict[str, Any]
    if benchmark == "pceb":
        cells = pceb_cells(scored)
        out = {name: cell.value for name, cell in cells.items()}
        out["Avg"], out["Avg'"] = pceb_averages(out)
        for column in ("R-1", "R-L", "B-4"):
            out[column] = float(essay[column]) if essay and column in essay else math.nan
        out["counts"] = {name: {"counted": c.n, "answered": c.answered, "total": c.total} for name, c in cells.items()}
    elif benchmark == "cpsyexam":
        out = dict(cpsyexam_summary(scored))
        tasks = cpsyexam_tasks(scored)
        out["counts"] = {row.task: {"counted": int(row.counted), "answered": int(row.answered), "total": int(row.items),
                                    "accuracy": float(row.accuracy)} for row in tasks.itertuples()}
    else:
        raise ValueError(f"benchmark must be 'pceb' or 'cpsyexam', got {benchmark!r}")
    out.update({"n": scored.n, "answered": scored.answered, "convention": scored.convention.name,
                "skipped": [f"{i.source} {i.record}: {i.problem}" for i in scored.skipped]})
    return out

