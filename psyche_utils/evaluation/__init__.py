"""Evaluation on PCEB, CPsyExam and the SoulChat2.0 (PsyDT) test set, with the papers' metrics.

Start with ``load_pceb(root)`` and ``score_choice(pred, gold)``; the submodules hold the rest:
``loaders`` (native formats), ``metrics``, ``prompts``, ``runner`` (batched, cached
generation), ``judge`` (empathy rubric), ``tables`` (paper layout and plots), ``submission``.
"""

from psyche_utils.evaluation.loaders import (
    BenchmarkSet,
    DialogueSample,
    EvalDataError,
    EvalItem,
    Issue,
    load_cpsyexam,
    load_cpsyexam_hub,
    load_pceb,
    load_psydt,
)
from psyche_utils.evaluation.metrics import (
    chance_scores,
    cpsyexam_scores,
    essay_scores,
    pceb_averages,
    pceb_row,
    score_choice,
    score_predictions,
)

__all__ = [
    "BenchmarkSet",
    "DialogueSample",
    "EvalDataError",
    "EvalItem",
    "Issue",
    "chance_scores",
    "cpsyexam_scores",
    "essay_scores",
    "load_cpsyexam",
    "load_cpsyexam_hub",
    "load_pceb",
    "load_psydt",
    "pceb_averages",
    "pceb_row",
    "score_choice",
    "score_predictions",
]
