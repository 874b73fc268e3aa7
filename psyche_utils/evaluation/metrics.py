"""The papers' metrics, computed the way their evaluators do.

PCEB reports *strict* accuracy (the chosen option set equals the gold set) and, for multiple
choice, *elastic* accuracy (partial credit for a correct but incomplete pick, nothing for any
wrong pick). CPsyExam macro-averages accuracy over subjects. Case essays are compared with the
reference after jieba word segmentation, using ``rouge-score`` and NLTK's BLEU for the maths.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import pandas as pd

from psyche_utils.answers import normalize_letters
from psyche_utils.evaluation.loaders import EvalItem

PCEB_CHOICE_PARTS = ("case", "moral", "theory")
PCEB_ACCURACY_COLUMNS = [
    f"{part.capitalize()} {suffix}" for part in PCEB_CHOICE_PARTS for suffix in ("S", "M", "Me")
]
PCEB_ESSAY_COLUMNS = ["R-1", "R-L", "B-4"]
PCEB_COLUMNS = PCEB_ACCURACY_COLUMNS + ["Avg", "Avg'"] + PCEB_ESSAY_COLUMNS


def score_choice(pred: str, gold: str) -> tuple[float, float]:
    """(strict, elastic) credit of one answer.

    strict: 1 if the option sets are equal. elastic: 1 if equal; |pred|/|gold| if pred is a
    non-empty proper subset of gold; 0 as soon as any wrong option is picked (or none at all).
    """
    gold_set = set(normalize_letters(gold))
    if not gold_set:
        raise ValueError(f"gold answer {gold!r} has no option letters: empty gold answers must be excluded when loading")
    pred_set = set(normalize_letters(pred))
    if pred_set == gold_set:
        return 1.0, 1.0
    if pred_set and pred_set < gold_set:
        return 0.0, len(pred_set) / len(gold_set)
    return 0.0, 0.0


def score_predictions(items: Iterable[EvalItem], predictions: Mapping[str, str]) -> pd.DataFrame:
    """One row per choice item: its labels, gold, prediction, strict and elastic credit."""
    rows = []
    for item in items:
        if item.question_type == "essay":
            continue
        if item.id not in predictions:
            raise KeyError(f"no prediction for item {item.id}")
        pred = predictions[item.id]
        strict, elastic = score_choice(pred, item.answer)
        rows.append({
            "id": item.id, "part": item.part, "question_type": item.question_type, "subject": item.subject,
            "gold": item.answer, "pred": normalize_letters(pred), "strict": strict, "elastic": elastic,
        })
    return pd.DataFrame(rows, columns=["id", "part", "question_type", "subject", "gold", "pred", "strict", "elastic"])


def pceb_accuracies(scored: pd.DataFrame) -> dict[str, float]:
    """The nine PCEB accuracy columns (percent), pooled over the items of each part and type.

    Single-choice strict and elastic are the same thing, so single reports one number. A part
    with no items of a type gives NaN rather than a made-up zero.
    """
    result: dict[str, float] = {}
    for part in PCEB_CHOICE_PARTS:
        name = part.capitalize()
        single = scored[(scored.part == part) & (scored.question_type == "single")]
        multi = scored[(scored.part == part) & (scored.question_type == "multi")]
        result[f"{name} S"] = float(100 * single.strict.mean()) if len(single) else math.nan
        result[f"{name} M"] = float(100 * multi.strict.mean()) if len(multi) else math.nan
        result[f"{name} Me"] = float(100 * multi.elastic.mean()) if len(multi) else math.nan
    return result


def pceb_averages(accuracies: Mapping[str, float]) -> tuple[float, float]:
    """(Avg, Avg'): Avg = mean of the six strict scores; Avg' = mean of the three single-choice
    scores and the three elastic multiple-choice scores."""
    strict = [accuracies[f"{p.capitalize()} {s}"] for p in PCEB_CHOICE_PARTS for s in ("S", "M")]
    lenient = [accuracies[f"{p.capitalize()} {s}"] for p in PCEB_CHOICE_PARTS for s in ("S", "Me")]
    return sum(strict) / len(strict), sum(lenient) / len(lenient)


def pceb_row(scored: pd.DataFrame, essay: Mapping[str, float] | None = None) -> dict[str, float]:
    """A full row in the paper's column layout (essay columns NaN when essays were not run)."""
    row = pceb_accuracies(scored)
    row["Avg"], row["Avg'"] = pceb_averages(row)
    for column in PCEB_ESSAY_COLUMNS:
        row[column] = float(essay[column]) if essay and column in essay else math.nan
    return {column: row[column] for column in PCEB_COLUMNS}


def cpsyexam_scores(scored: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """MCQA, MRQA and Avg (percent) plus the per-subject table they are macro-averaged from.

    Accuracy is computed per subject and question type, then averaged over subjects with equal
    weight, so a small subject counts as much as a big one. MRQA is exact match (no partial credit).
    """
    per_subject = (
        scored.groupby(["subject", "question_type"], sort=True)
        .agg(items=("strict", "size"), accuracy=("strict", "mean"))
        .reset_index()
    )
    per_subject["accuracy"] *= 100
    mcqa_rows = per_subject[per_subject.question_type == "single"]
    mrqa_rows = per_subject[per_subject.question_type == "multi"]
    mcqa = float(mcqa_rows.accuracy.mean()) if len(mcqa_rows) else math.nan
    mrqa = float(mrqa_rows.accuracy.mean()) if len(mrqa_rows) else math.nan
    return {"MCQA": mcqa, "MRQA": mrqa, "Avg": (mcqa + mrqa) / 2}, per_subject


# --------------------------------------------------------------------------- chance levels


def chance_credit(item: EvalItem) -> tuple[float, float]:
    """Expected (strict, elastic) credit of a uniformly random valid guess.

    Single choice: one of the k non-empty options. Multiple choice: one of the 2^k - 1
    non-empty option subsets, each equally likely.
    """
    letters = [letter for letter, text in sorted(item.options.items()) if text]
    if item.question_type == "single":
        p = 1 / len(letters)
        return p, p
    subsets = [set(c) for r in range(1, len(letters) + 1) for c in combinations(letters, r)]
    credits = [score_choice("".join(sorted(s)), item.answer) for s in subsets]
    return sum(c[0] for c in credits) / len(subsets), sum(c[1] for c in credits) / len(subsets)


def chance_scores(items: Iterable[EvalItem]) -> pd.DataFrame:
    """Per-item chance credit, in the same shape as ``score_predictions`` (strict, elastic)."""
    rows = []
    for item in items:
        if item.question_type == "essay":
            continue
        strict, elastic = chance_credit(item)
        rows.append({"id": item.id, "part": item.part, "question_type": item.question_type,
                     "subject": item.subject, "gold": item.answer, "pred": "", "strict": strict, "elastic": elastic})
    return pd.DataFrame(rows, columns=["id", "part", "question_type", "subject", "gold", "pred", "strict", "elastic"])


# --------------------------------------------------------------------------- case essays


class JiebaTokenizer:
    """Chinese word segmentation for ``rouge-score`` (it only needs a ``tokenize`` method).

    Whitespace and punctuation-only tokens are dropped so a full stop never counts as a match.
    """

    def __init__(self) -> None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba

    def tokenize(self, text: str) -> list[str]:
        return [token for token in self._jieba.lcut(text) if not _is_punctuation(token)]


def _is_punctuation(token: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch)[0] in {"P", "S"} for ch in token)


_TOKENIZER: JiebaTokenizer | None = None


def jieba_tokenizer() -> JiebaTokenizer:
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = JiebaTokenizer()
    return _TOKENIZER


def essay_item_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure and BLEU-1..4 (smoothing method 1) of one answer, in percent."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score.rouge_scorer import RougeScorer

    tokenizer = jieba_tokenizer()
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tokenizer)
    rouge = scorer.score(reference, prediction)
    scores = {"R-1": 100 * rouge["rouge1"].fmeasure, "R-2": 100 * rouge["rouge2"].fmeasure,
              "R-L": 100 * rouge["rougeL"].fmeasure}
    hypothesis, ref_tokens = tokenizer.tokenize(prediction), tokenizer.tokenize(reference)
    smoothing = SmoothingFunction().method1
    for n in range(1, 5):
        if not hypothesis or not ref_tokens:
            scores[f"B-{n}"] = 0.0
            continue
        weights = tuple([1.0 / n] * n)
        scores[f"B-{n}"] = 100 * sentence_bleu([ref_tokens], hypothesis, weights=weights, smoothing_function=smoothing)
    return scores


def essay_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Item-averaged ROUGE/BLEU over paired predictions and references (percent)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no essay answers to score")
    per_item = [essay_item_scores(p, r) for p, r in zip(predictions, references)]
    return {key: sum(s[key] for s in per_item) / len(per_item) for key in per_item[0]}
