"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from psyche_utils.evaluation import load_cpsyexam, load_pceb, pceb_averages, pceb_row, score_choice, score_predictions
from psyche_utils.evaluation.loaders import EvalItem
from psyche_utils.evaluation.metrics import (
    PCEB_ACCURACY_COLUMNS,
    chance_credit,
    cpsyexam_scores,
    essay_item_scores,
    essay_scores,
    jieba_tokenizer,
)
from psyche_utils.evaluation.tables import PUBLISHED_PCEB
from psyche_utils.paths import EVAL_DATA_DIR


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("ACD", "ACD", (1.0, 1.0)),      # exact
        ("B", "B", (1.0, 1.0)),          # single, right
        ("C", "B", (0.0, 0.0)),          # single, wrong
        ("A", "AC", (0.0, 0.5)),         # proper subset: |pred| / |gold|
        ("AB", "ABCD", (0.0, 0.5)),
        ("ABC", "ABCD", (0.0, 0.75)),
        ("ABC", "AB", (0.0, 0.0)),       # superset: picks a wrong option
        ("AD", "AB", (0.0, 0.0)),        # one right, one wrong
        ("", "AB", (0.0, 0.0)),          # no answer
        ("dca", "ACD", (1.0, 1.0)),      # order and case do not matter
    ],
)
def test_score_choice(pred, gold, expected):
    assert score_choice(pred, gold) == expected


def test_score_choice_rejects_empty_gold():
    with pytest.raises(ValueError, match="empty gold"):
        score_choice("A", "  ")


@pytest.mark.parametrize("model", list(PUBLISHED_PCEB.index))
def test_avg_and_avg_prime_reproduce_published_rows(model):
    row = PUBLISHED_PCEB.loc[model]
    avg, avg_prime = pceb_averages({column: row[column] for column in PCEB_ACCURACY_COLUMNS})
    assert avg == pytest.approx(row["Avg"], abs=0.006)
    assert avg_prime == pytest.approx(row["Avg'"], abs=0.006)


def test_psyche_r1_row_by_hand():
    # Avg  = (63.31 + 56.26 + 92.76 + 79.62 + 87.70 + 66.54) / 6 = 446.19 / 6
    # Avg' = (63.31 + 66.21 + 92.76 + 82.54 + 87.70 + 73.34) / 6 = 465.86 / 6
    nine = dict(zip(PCEB_ACCURACY_COLUMNS, [63.31, 56.26, 66.21, 92.76, 79.62, 82.54, 87.70, 66.54, 73.34]))
    avg, avg_prime = pceb_averages(nine)
    assert avg == pytest.approx(446.19 / 6) and avg == pytest.approx(74.37, abs=0.006)
    assert avg_prime == pytest.approx(465.86 / 6) and avg_prime == pytest.approx(77.64, abs=0.006)


def test_cpsyexam_macro_average_over_tasks_or_subjects():
    scored = pd.DataFrame([
        # task T1 (subject X) single: 2 of 3 right; T2 (subject Y) single: 1 of 1; T3 (subject X) single: 0 of 1;
        # T4 (subject X) multi: 1 of 2
        {"task": "T1", "subject": "X", "question_type": "single", "strict": 1.0},
        {"task": "T1", "subject": "X", "question_type": "single", "strict": 1.0},
        {"task": "T1", "subject": "X", "question_type": "single", "strict": 0.0},
        {"task": "T2", "subject": "Y", "question_type": "single", "strict": 1.0},
        {"task": "T3", "subject": "X", "question_type": "single", "strict": 0.0},
        {"task": "T4", "subject": "X", "question_type": "multi", "strict": 1.0},
        {"task": "T4", "subject": "X", "question_type": "multi", "strict": 0.0},
        {"task": "T4", "subject": "X", "question_type": "multi", "strict": float("nan")},  # no usable gold: left out
    ])
    summary, per_task = cpsyexam_scores(scored)
    assert summary["MCQA"] == pytest.approx((200 / 3 + 100 + 0) / 3)   # per task file
    assert summary["MRQA"] == pytest.approx(50.0)
    assert len(per_task) == 4
    by_subject, per_subject = cpsyexam_scores(scored, by="subject")
    assert by_subject["MCQA"] == pytest.approx((50 + 100) / 2)         # X pools T1 and T3: 2 of 4
    assert len(per_subject) == 3
    with pytest.raises(ValueError, match="task"):
        cpsyexam_scores(scored, by="file")


def test_jieba_rouge_bleu_on_a_known_pair():
    prediction, reference = "咨询师需要共情。", "咨询师需要尊重求助者。"
    assert jieba_tokenizer().tokenize(prediction) == ["咨询师", "需要", "共情"]
    assert jieba_tokenizer().tokenize(reference) == ["咨询师", "需要", "尊重", "求助者"]
    scores = essay_item_scores(prediction, reference)
    # unigrams: 2 shared, P = 2/3, R = 2/4 -> F = 4/7; bigrams: 1 shared, P = 1/2, R = 1/3 -> F = 2/5
    assert scores["R-1"] == pytest.approx(100 * 4 / 7)
    assert scores["R-2"] == pytest.approx(100 * 2 / 5)
    assert scores["R-L"] == pytest.approx(100 * 4 / 7)  # LCS = 咨询师 需要
    brevity = math.exp(1 - 4 / 3)
    # method1 smoothing replaces a zero n-gram count by 0.1
    assert scores["B-1"] == pytest.approx(100 * brevity * (2 / 3))
    assert scores["B-2"] == pytest.approx(100 * brevity * (2 / 3 * 1 / 2) ** (1 / 2))
    assert scores["B-3"] == pytest.approx(100 * brevity * (2 / 3 * 1 / 2 * 0.1) ** (1 / 3))
    assert scores["B-4"] == pytest.approx(100 * brevity * (2 / 3 * 1 / 2 * 0.1 * 0.1) ** (1 / 4))


def test_essay_scores_average_and_bounds():
    sentence = "咨询师需要尊重求助者。"  # four words, so BLEU-4 has a 4-gram to match
    same = essay_scores([sentence], [sentence])
    assert all(value == pytest.approx(100.0) for value in same.values())
    empty = essay_scores([""], [sentence])
    assert all(value == 0.0 for value in empty.values())
    mixed = essay_scores([sentence, ""], [sentence, sentence])
    assert mixed["R-1"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        essay_scores(["a"], [])


def _item(answer: str, qtype: str, options: str = "ABCD") -> EvalItem:
    return EvalItem(id="x", benchmark="t", part="theory", question_type=qtype, question="q",
                    options={letter: f"option {letter}" if letter in options else "" for letter in "ABCDE"}, answer=answer,
                    source="t", native_id="1")


def test_chance_levels_by_hand():
    assert chance_credit(_item("B", "single")) == (0.25, 0.25)
    assert chance_credit(_item("B", "single", "ABCDE")) == (0.2, 0.2)
    strict, elastic = chance_credit(_item("AB", "multi"))
    assert strict == pytest.approx(1 / 15)      # one of 15 non-empty subsets
    assert elastic == pytest.approx(2 / 15)     # {A}: 1/2, {B}: 1/2, {A,B}: 1


def test_perfect_predictions_score_100_everywhere():
    items = load_pceb(EVAL_DATA_DIR / "pceb").items
    scored = score_predictions(items, {item.id: item.answer for item in items})
    row = pceb_row(scored)
    assert all(row[column] == 100.0 for column in [*PCEB_ACCURACY_COLUMNS, "Avg", "Avg'"])
    dev = load_cpsyexam(EVAL_DATA_DIR / "cpsyexam", "dev").items
    summary, _ = cpsyexam_scores(score_predictions(dev, {item.id: item.answer for item in dev}))
    assert summary == {"MCQA": 100.0, "MRQA": 100.0, "Avg": 100.0}


def test_always_answering_a_scores_a_direct_count():
    items = [item for item in load_pceb(EVAL_DATA_DIR / "pceb").items if item.question_type != "essay" and not item.gold_problem]
    row = pceb_row(score_predictions(items, {item.id: "A" for item in items}))
    for part in ("case", "moral", "theory"):
        single = [i for i in items if i.part == part and i.question_type == "single"]
        multi = [i for i in items if i.part == part and i.question_type == "multi"]
        name = part.capitalize()
        assert row[f"{name} S"] == pytest.approx(100 * sum(i.answer == "A" for i in single) / len(single))
        assert row[f"{name} M"] == pytest.approx(100 * sum(i.answer == "A" for i in multi) / len(multi))
        partial = sum(1 / len(i.answer) for i in multi if "A" in i.answer)
        assert row[f"{name} Me"] == pytest.approx(100 * partial / len(multi))
    # Counted by hand in the fixtures: case single golds are B, A (second), A, C (simulation), B, B (third).
    assert row["Case S"] == pytest.approx(100 * 2 / 6)


def test_score_predictions_requires_every_item():
    items = load_pceb(EVAL_DATA_DIR / "pceb").items
    with pytest.raises(KeyError, match="no prediction"):
        score_predictions(items, {})
