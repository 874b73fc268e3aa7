"""The papers' metrics, computed the way their evaluators do.

PCEB reports *strict* accuracy (the chosen option set equals the gold set) and, for multiple
choice, *elastic* accuracy (partial credit for a correct but incomplete pick, nothing for any
wrong pick). The named scoring conventions (``official``, ``strict``) and the per-task CPsyExam
averages live in ``conventions``; this module holds the set-based credit used by the strict
convention and the chance levels.

Case essays: ``official_essay_scores`` reproduces the PCEB evaluator (``SimilarMetric.py``):
spaces removed, ``jieba.cut``, tokens joined by spaces, the ``rouge`` package (1.0.1) and NLTK's
``sentence_bleu`` with smoothing method 1. The ``rouge`` package counts each distinct n-gram once
and computes ROUGE-L as a union LCS over sentences split at "."; ``rouge-score`` counts repeated
n-grams and takes one plain LCS, so on the same tokens its R-1 and R-L differ (R-2 agrees when no
bigram repeats). ``essay_item_scores`` keeps the ``rouge-score`` variant, with punctuation tokens
dropped, to show the gap; published columns come from the official one.
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
    """One row per choice item: its labels, gold, prediction, strict and elastic credit.

    Predictions are option letters (already extracted). Items whose gold has no usable letters
    (``gold_problem``) are left out here, as under the strict convention.
    """
    rows = []
    for item in items:
        if item.question_type == "essay" or item.gold_problem:
            continue
        if item.id not in predictions:
            raise KeyError(f"no prediction for item {item.id}")
        pred = predictions[item.id]
        strict, elastic = score_choice(pred, item.answer)
        rows.append({
            "id": item.id, "part": item.part, "question_type": item.question_type, "subject": item.subject,
            "task": item.task, "gold": item.answer, "pred": normalize_letters(pred), "strict": strict, "elastic": elastic,
        })
    return pd.DataFrame(rows, columns=_ROW_COLUMNS)


_ROW_COLUMNS = ["id", "part", "question_type", "subject", "task", "gold", "pred", "strict", "elastic"]


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


def cpsyexam_scores(scored: pd.DataFrame, by: str = "task") -> tuple[dict[str, float], pd.DataFrame]:
    """MCQA, MRQA and Avg (percent) plus the per-group table they are macro-averaged from.

    Accuracy is computed per task file (``by="task"``, as CPsyExam's own scorer does), then
    averaged with equal weight, so a small task counts as much as a big one. ``by="subject"``
    merges task files that share a ``subject_name`` (an earlier reading, kept to show the gap).
    MRQA is exact match (no partial credit). Rows with NaN credit (no usable gold) are left out.
    """
    if by not in {"task", "subject"}:
        raise ValueError(f"by must be 'task' or 'subject', got {by!r}")
    usable = scored[scored.strict.notna()]
    per_group = (
        usable.groupby([by, "question_type"], sort=True)
        .agg(items=("strict", "size"), accuracy=("strict", "mean"))
        .reset_index()
    )
    per_group["accuracy"] *= 100
    mcqa_rows = per_group[per_group.question_type == "single"]
    mrqa_rows = per_group[per_group.question_type == "multi"]
    mcqa = float(mcqa_rows.accuracy.mean()) if len(mcqa_rows) else math.nan
    mrqa = float(mrqa_rows.accuracy.mean()) if len(mrqa_rows) else math.nan
    return {"MCQA": mcqa, "MRQA": mrqa, "Avg": (mcqa + mrqa) / 2}, per_group


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
        if item.question_type == "essay" or item.gold_problem:
            continue
        strict, elastic = chance_credit(item)
        rows.append({"id": item.id, "part": item.part, "question_type": item.question_type, "subject": item.subject,
                     "task": item.task, "gold": item.answer, "pred": "", "strict": strict, "elastic": elastic})
    return pd.DataFrame(rows, columns=_ROW_COLUMNS)


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


def official_segment(text: str) -> str:
    """Text as the PCEB evaluator feeds it to ROUGE/BLEU: spaces removed, jieba words joined by spaces."""
    jieba_tokenizer()
    import jieba

    return " ".join(jieba.cut(text.replace(" ", "")))


_BLEU_WEIGHTS = [(1.0, 0.0, 0.0, 0.0), (1 / 2, 1 / 2), (1 / 3, 1 / 3, 1 / 3), (1 / 4, 1 / 4, 1 / 4, 1 / 4)]


def official_essay_item_scores(prediction: str, reference: str) -> dict[str, float]:
    """R-1, R-2, R-L (``rouge`` package F) and B-1..B-4 of one pair, in percent, as the evaluator computes them.

    The released script stops with an error on an empty prediction (the ``rouge`` package
    refuses empty hypotheses); here such a pair scores 0 everywhere and ``official_essay_scores``
    counts it.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge import Rouge

    hyp, ref = official_segment(prediction), official_segment(reference)
    if not ref.strip():
        raise ValueError("empty reference answer: essays with no reference must be excluded when loading")
    if not hyp.strip():
        return {key: 0.0 for key in ("R-1", "R-2", "R-L", "B-1", "B-2", "B-3", "B-4")}
    rouge = Rouge().get_scores([hyp], [ref], avg=True)
    scores = {"R-1": 100 * rouge["rouge-1"]["f"], "R-2": 100 * rouge["rouge-2"]["f"], "R-L": 100 * rouge["rouge-l"]["f"]}
    bleu = sentence_bleu(references=[ref.split(" ")], hypothesis=hyp.split(" "),
                         smoothing_function=SmoothingFunction().method1, weights=_BLEU_WEIGHTS)
    scores.update({f"B-{n}": 100 * value for n, value in enumerate(bleu, start=1)})
    return scores


def official_essay_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Item-averaged official ROUGE/BLEU (percent), plus ``n`` and ``empty`` (pairs with an empty prediction)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no essay answers to score")
    per_item = [official_essay_item_scores(p, r) for p, r in zip(predictions, references)]
    result: dict[str, Any] = {key: sum(s[key] for s in per_item) / len(per_item) for key in per_item[0]}
    result["n"] = len(per_item)
    result["empty"] = sum(not official_segment(p).strip() for p in predictions)
    return result


def essay_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Item-averaged ``rouge-score`` ROUGE and NLTK BLEU (percent): the non-official variant."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no essay answers to score")
    per_item = [essay_item_scores(p, r) for p, r in zip(predictions, references)]
    return {key: sum(s[key] for s in per_item) / len(per_item) for key in per_item[0]}
