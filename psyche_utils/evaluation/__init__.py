"""Evaluation on PCEB, CPsyExam and the SoulChat2.0 (PsyDT) test set, with the papers' metrics.

Start with ``load_pceb(root)`` and ``score_replies(items, replies, "official")``; the submodules
hold the rest: ``loaders`` (native formats), ``conventions`` (the benchmarks' own evaluators as
``official``/``official-after-think`` for the latest PCEB evaluator, ``official-2024`` for the older
released one, and ``strict``), ``metrics`` (set credit, chance, essay
ROUGE/BLEU), ``prompts``, ``runner`` (batched, cached generation), ``judge`` (empathy rubric),
``tables`` (paper layout and plots), ``submission``, and ``cli`` (``python -m
psyche_utils.evaluation items|score|submission``).
"""

from psyche_utils.evaluation.conventions import (
    CONVENTIONS,
    Convention,
    cpsyexam_summary,
    get_convention,
    pceb_cells,
    score_replies,
    summary_json,
)
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
    official_essay_scores,
    pceb_averages,
    pceb_row,
    score_choice,
    score_predictions,
)

__all__ = [
    "CONVENTIONS",
    "BenchmarkSet",
    "Convention",
    "DialogueSample",
    "EvalDataError",
    "EvalItem",
    "Issue",
    "chance_scores",
    "cpsyexam_scores",
    "cpsyexam_summary",
    "essay_scores",
    "get_convention",
    "load_cpsyexam",
    "load_cpsyexam_hub",
    "load_pceb",
    "load_psydt",
    "official_essay_scores",
    "pceb_averages",
    "pceb_cells",
    "pceb_row",
    "score_choice",
    "score_predictions",
    "score_replies",
    "summary_json",
]
