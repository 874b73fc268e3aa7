"""The scoring conventions against hand-computed cases read off the benchmarks' own evaluator code."""

from __future__ import annotations

import math
import re

import pytest

from psyche_utils.evaluation.conventions import (
    CONVENTIONS,
    cpsyexam_summary,
    cpsyexam_tasks,
    get_convention,
    official_2024_extract,
    official_credit,
    official_extract,
    official_patterns,
    pceb_averages,
    pceb_cells,
    pceb_official_pool,
    score_replies,
    summary_json,
)
from psyche_utils.evaluation.loaders import EvalItem
from psyche_utils.evaluation.metrics import (
    cpsyexam_scores,
    official_essay_item_scores,
    official_essay_scores,
    official_segment,
    score_predictions,
)

# The latest released expressions, copied from QuestionHandler.py (MACLAB-HFUT/Evaluation, the version
# whose prompts are (system, user) pairs); commit 1534ad3's own are transcribed in _released_2024 below.
RELEASED_SINGLE = r"[ABCD](?!.*[ABCD])"
RELEASED_MULTI = (r"[ABCD]?['\"]?\s*[、,，和]?\s*[选项]*['\"]?[ABCD]?['\"]?\s*[、,，和]?\s*[选项]*['\"]?"
                  r"[ABCD]?['\"]?\s*[、,，和]?\s*[选项]*['\"]?[ABCD](?!.*[ABCD])")


def test_patterns_are_the_released_expressions():
    single, multi = official_patterns("ABCD")
    assert single.pattern == RELEASED_SINGLE and multi.pattern == RELEASED_MULTI
    assert single.flags & re.S and multi.flags & re.S


@pytest.mark.parametrize(
    ("reply", "pattern", "expected"),
    [
        ("A 不对，B 也不对。答案：C", "single", "C"),
        ("答案：C。选项A和B都不符合题意。", "single", "B"),          # the last letter anywhere wins
        ("<think>A 是对的</think>我不知道", "single", "A"),          # reasoning is read too
        ("综上所述，选项B和选项C是正确的答案。", "multi", "BC"),      # the example in the released file
        ("答案是'A'，'B'和 'C'", "multi", "ABC"),                     # quotes, 、,，和 and spaces join letters
        ("选ABCD", "multi", "ABCD"),
        ("答案：AC。B项错误", "multi", "B"),                          # "。" breaks the run: only B is read
        ("答案：C\n\n因为A和B都错", "multi", "AB"),                   # re.S: the lookahead sees past newlines
        ("这道题我不太确定。", "single", ""),                          # no letter -> "E", missing
        ("答案：ac", "multi", ""),                                    # lowercase is never read
        ("答案：E", "single", ""),                                    # E is not an option letter for PCEB
    ],
)
def test_official_extraction(reply, pattern, expected):
    assert official_extract(reply, pattern) == expected
    released = re.findall(RELEASED_SINGLE if pattern == "single" else RELEASED_MULTI, reply, re.S)
    assert (("".join(re.findall("[ABCD]+", released[0]))) if released else "") == expected


def _released_2024(reply: str, pattern: str) -> str:
    """QuestionHandler.model_answer_processing of commit 1534ad3, transcribed; "E" as ""."""
    end, first = (r"[ABCD]$", r"\b[ABCD]") if pattern == "single" else (r"[ABCD]+$", r"[^ABCD]*([ABCD]+)[^ABCD]*")
    for rule in (end, first):
        found = re.findall(rule, reply)
        if found:
            return found[0]
    return ""


@pytest.mark.parametrize(
    ("reply", "pattern", "expected"),
    [
        ("答案：B", "single", "B"),                                   # a letter at the very end wins
        ("答案：C\n", "single", "C"),                                 # $ also matches before a final newline
        ("答案是A\n", "single", "A"),
        ("答案是A\n\n", "single", ""),      # not before two newlines; and 是 is a word character: no \b before A
        ("答案是B。", "single", ""),          # the final 。 stops [ABCD]$; 是B has no \b between them -> "E"
        ("答案是B。C不对。", "single", "C"),  # the first letter after a boundary is C (。 is not a word character)
        ("我认为答案是 B，因为 C 不对。", "single", "B"),               # a space before B: the first \b letter
        ("Because A is wrong, the answer is C.", "single", "B"),      # the B of "Because" is read
        ("<think>A 不对</think>答案：B。", "single", "A"),             # the first letter, in the reasoning
        ("A\nB", "single", "B"),                                      # no re.M: $ is the end of the reply only
        ("答案：AC", "multi", "AC"),
        ("答案：ABC\n", "multi", "ABC"),
        ("选项A和选项C", "multi", "C"),                                # only the trailing run, not A and C
        ("答案：AC，B项错误", "multi", "AC"),                          # the first run of letters
        ("答案：C\n\n因为A和B都错", "multi", "C"),                     # the latest pattern reads "AB" here
        ("这道题我不太确定。", "single", ""),
        ("不知道", "multi", ""),
        ("答案：ac", "multi", ""),                                     # lowercase is never read
    ],
)
def test_official_2024_extraction(reply, pattern, expected):
    assert official_2024_extract(reply, pattern) == expected
    assert _released_2024(reply, pattern) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("AC", "AC", ("complete", 1.0)),
        ("A", "AC", ("partial", 0.5)),
        ("CA", "AC", ("partial", 1.0)),     # not the same string, same set: elastic 1, strict 0
        ("AB", "AC", ("wrong", 0.0)),
        ("A", "", ("wrong", 0.0)),          # the empty gold: always wrong
        ("E", "AC", ("wrong", 0.0)),        # no extractable answer ("E") is wrong, not left out
    ],
)
def test_official_credit(pred, gold, expected):
    assert official_credit(pred, gold) == expected


def _item(i: int, answer: str, qtype: str = "multi", part: str = "theory", benchmark: str = "pceb",
          task: str = "", subject: str = "", official: str | None = None) -> EvalItem:
    letters = "".join(sorted(set(answer)))
    return EvalItem(id=f"i{i}", benchmark=benchmark, part=part, question_type=qtype, question="q",
                    options={letter: f"option {letter}" for letter in "ABCD"}, answer=letters, source="t",
                    native_id=str(i), task=task, subject=subject,
                    official_answer=answer if official is None else official,
                    gold_problem="" if letters else "empty gold answer")


PCEB_ITEMS = [_item(1, "AC"), _item(2, "AC"), _item(3, "AC"), _item(4, "AC"),
              _item(5, "B", "single"), _item(6, "B", "single"), _item(7, "B", "single")]
PCEB_REPLIES = {"i1": "答案：AC", "i2": "答案：A", "i3": "答案：D", "i4": "不知道",
                "i5": "答案：B", "i6": "答案：C", "i7": "不知道"}


def test_pceb_denominators_are_the_answered_items_under_official():
    scored = score_replies(PCEB_ITEMS, PCEB_REPLIES, "official")
    # latest evaluator: "不知道" is "E", missing, and left out of every denominator
    assert scored.rows.outcome.tolist() == ["complete", "partial", "wrong", "missing", "complete", "wrong", "missing"]
    official = pceb_cells(scored)
    # multi: 3 answered (i1-i3): strict 1/3; elastic (1 + 1/2 + 0)/3 = 50
    assert official["Theory M"].value == pytest.approx(100 / 3)
    assert official["Theory Me"].value == pytest.approx(50.0)
    assert (official["Theory M"].n, official["Theory M"].answered, official["Theory M"].total) == (3, 3, 4)
    # single: 2 answered (i5, i6): (complete 1 + partial 0)/2 = 50
    assert official["Theory S"].value == pytest.approx(50.0)
    assert (official["Theory S"].n, official["Theory S"].answered, official["Theory S"].total) == (2, 2, 3)
    assert math.isnan(official["Case S"].value) and official["Case S"].total == 0


def test_pceb_denominators_are_every_item_under_official_2024_and_strict():
    scored = score_replies(PCEB_ITEMS, PCEB_REPLIES, "official-2024")
    # commit 1534ad3 reads AC, A, D ([ABCD]+$), B, C ([ABCD]$); general_question: "E" is wrong, counted
    assert scored.rows.pred.tolist() == ["AC", "A", "D", "", "B", "C", ""]
    assert scored.rows.outcome.tolist() == ["complete", "partial", "wrong", "wrong", "complete", "wrong", "wrong"]
    official = pceb_cells(scored)
    # multi: complete 1, partial 1/2, wrong 0, "E" 0 over all 4 -> strict 1/4 = 25, elastic 1.5/4 = 37.5
    assert official["Theory M"].value == pytest.approx(25.0)
    assert official["Theory Me"].value == pytest.approx(37.5)
    assert (official["Theory M"].n, official["Theory M"].answered, official["Theory M"].total) == (4, 3, 4)
    # single: 1 complete of all 3 (i7 unanswered still counts) -> 100/3
    assert official["Theory S"].value == pytest.approx(100 / 3)
    assert (official["Theory S"].n, official["Theory S"].answered) == (3, 2)
    strict = pceb_cells(score_replies(PCEB_ITEMS, PCEB_REPLIES, "strict"))
    assert strict["Theory M"].value == pytest.approx(25.0)              # 1 of 4: unanswered is wrong
    assert strict["Theory Me"].value == pytest.approx(37.5)
    assert strict["Theory S"].value == pytest.approx(100 / 3)
    assert math.isnan(official["Case S"].value) and official["Case S"].total == 0


CASE_ITEMS = [_item(1, "AB", part="case"), _item(2, "AB", part="case"), _item(3, "AB", part="case"),
              _item(4, "C", "single", part="case"), _item(5, "C", "single", part="case")]
CASE_REPLIES = {"i1": "选AB", "i2": "选A", "i3": "不知道", "i4": "选C", "i5": "我不确定"}


def test_case_unanswered_is_left_out_under_official():
    scored = score_replies(CASE_ITEMS, CASE_REPLIES, "official")
    assert scored.rows.outcome.tolist() == ["complete", "partial", "missing", "complete", "missing"]
    cells = pceb_cells(scored)
    # Case M: 1 complete of 2 answered -> 50; Case Me: (1 + 1/2)/2 = 75; Case S: 1 of 1 answered -> 100
    assert cells["Case M"].value == pytest.approx(50.0) and cells["Case M"].n == 2 and cells["Case M"].total == 3
    assert cells["Case Me"].value == pytest.approx(75.0)
    assert cells["Case S"].value == pytest.approx(100.0) and cells["Case S"].n == 1
    # the pool: 2 complete of 3 answered -> 200/3; credit (1 + 1/2 + 1)/3 = 250/3
    assert pceb_official_pool(scored) == {"Case pool strict": pytest.approx(200 / 3),
                                          "Case pool elastic": pytest.approx(250 / 3)}


def test_case_unanswered_is_missing_but_stays_in_the_denominator_under_official_2024():
    items, replies = CASE_ITEMS, CASE_REPLIES
    scored = score_replies(items, replies, "official-2024")
    # main.py case_question (mix): "E" is counted as missing, not wrong, and credit 0
    assert scored.rows.outcome.tolist() == ["complete", "partial", "missing", "complete", "missing"]
    cells = pceb_cells(scored)
    # Case M: 1 complete of 3 -> 100/3; Case Me: (1 + 1/2 + 0)/3 = 50; Case S: 1 of 2 -> 50
    assert cells["Case M"].value == pytest.approx(100 / 3) and cells["Case M"].n == 3
    assert cells["Case Me"].value == pytest.approx(50.0)
    assert cells["Case S"].value == pytest.approx(50.0) and cells["Case S"].n == 2
    # the pool main.py prints: 2 complete of 5 -> 40; credit (1 + 1/2 + 0 + 1 + 0)/5 = 50
    assert pceb_official_pool(scored) == {"Case pool strict": pytest.approx(40.0), "Case pool elastic": pytest.approx(50.0)}


def test_official_reads_the_whole_reply_after_think_does_not():
    items = [_item(1, "B", "single")]
    reply = {"i1": "<think>B 看起来对</think>\n我不确定"}
    assert score_replies(items, reply, "official").rows.pred.tolist() == ["B"]
    assert score_replies(items, reply, "official-2024").rows.pred.tolist() == ["B"]   # ">B": a \b letter
    assert score_replies(items, reply, "official-after-think").rows.pred.tolist() == [""]
    assert score_replies(items, reply, "strict").rows.pred.tolist() == [""]
    unclosed = {"i1": "<think>答案是B"}
    assert score_replies(items, unclosed, "official-after-think").rows.answered.tolist() == [False]
    # strict trusts an explicit answer marker over letters that follow it
    marked = {"i1": "</think>答案：B。选项A和C都不符合"}
    assert score_replies(items, marked, "strict").rows.pred.tolist() == ["B"]
    assert score_replies(items, marked, "official").rows.pred.tolist() == ["C"]
    assert score_replies(items, marked, "official-2024").rows.pred.tolist() == ["B"]   # the first \b letter


def test_single_choice_partial_rules():
    # a single-choice question whose gold is "AC" (a real-release quirk): "A" is partial (credit 1/2)
    items = [_item(1, "AC", "single")]
    scored = score_replies(items, {"i1": "答案：A"}, "official")
    assert scored.rows.outcome.tolist() == ["partial"] and scored.rows.credit.tolist() == [0.5]
    # latest: single = (complete + partial) / answered = (0 + 1)/1 -> 100
    assert pceb_cells(scored)["Theory S"].value == 100.0
    # "答案：AC": the single pattern reads the last letter, "C", also partial -> 100
    assert pceb_cells(score_replies(items, {"i1": "答案：AC"}, "official"))["Theory S"].value == 100.0
    # commit 1534ad3: single = complete / total, so the partial "A" ([ABCD]$) scores 0 of 1
    older = score_replies(items, {"i1": "答案：A"}, "official-2024")
    assert older.rows.outcome.tolist() == ["partial"] and pceb_cells(older)["Theory S"].value == 0.0
    assert pceb_cells(score_replies(items, {"i1": "答案：A"}, "strict"))["Theory S"].value == 0.0
    # a case sub-question is scored with the pool's strict rule under both: a partial pick is 0 in Case S
    case = [_item(2, "AC", "single", part="case")]
    for name in ("official", "official-2024"):
        cells = pceb_cells(score_replies(case, {"i2": "选A"}, name))
        assert cells["Case S"].value == 0.0 and cells["Case S"].n == 1


def test_empty_gold_is_scored_officially_and_skipped_strictly():
    items = [_item(1, "", "multi"), _item(2, "AB")]
    replies = {"i1": "答案：AB", "i2": "答案：AB"}
    official = score_replies(items, replies, "official")
    assert official.rows.outcome.tolist() == ["wrong", "complete"]
    # unanswered is "E", and set("E") is not a subset of the empty gold: wrong under official-2024,
    # missing (left out) under official
    assert score_replies(items[:1], {"i1": "不知道"}, "official-2024").rows.outcome.tolist() == ["wrong"]
    assert score_replies(items[:1], {"i1": "不知道"}, "official").rows.outcome.tolist() == ["missing"]
    strict = score_replies(items, replies, "strict")
    assert strict.rows.id.tolist() == ["i2"] and len(strict.skipped) == 1
    assert "empty gold answer" in strict.skipped[0].problem
    assert summary_json("pceb", strict)["skipped"] == ["t 1: empty gold answer: not scored under strict"]


def test_case_questions_use_the_multi_pattern_and_split_by_prefix():
    items = [_item(1, "B", "single", part="case"), _item(2, "AC", "multi", part="case")]
    replies = {"i1": "我选B和C", "i2": "选项A和选项C"}
    rows = score_replies(items, replies, "official").rows
    assert rows.pred.tolist() == ["BC", "AC"]   # a theory single question would have read "C"
    cells = pceb_cells(score_replies(items, replies, "official"))
    assert cells["Case S"].value == 0.0 and cells["Case M"].value == 100.0
    # commit 1534ad3: both replies end in a letter, so [ABCD]+$ reads only "C": wrong for B, partial for AC
    older = score_replies(items, replies, "official-2024").rows
    assert older.pred.tolist() == ["C", "C"] and older.outcome.tolist() == ["wrong", "partial"]


def test_pceb_averages_by_hand():
    nine = dict(zip([f"{p} {s}" for p in ("Case", "Moral", "Theory") for s in ("S", "M", "Me")],
                    [63.31, 56.26, 66.21, 92.76, 79.62, 82.54, 87.70, 66.54, 73.34]))
    avg, avg_prime = pceb_averages(nine)
    assert avg == pytest.approx(446.19 / 6) and avg_prime == pytest.approx(465.86 / 6)


def _cpsy(i: int, answer: str, task: str, subject: str, qtype: str = "single", official: str | None = None) -> EvalItem:
    return _item(i, answer, qtype, part=subject, benchmark="cpsyexam", task=task, subject=subject, official=official)


def test_cpsyexam_macro_average_is_per_task_file_not_per_subject():
    t1, t2, t3 = "KG-GEE-甲-单项选择题", "CA-甲-单项选择题", "KG-GEE-甲-多项选择题"
    items = [_cpsy(1, "A", t1, "甲"), _cpsy(2, "A", t1, "甲"), _cpsy(3, "B", t2, "甲"),
             _cpsy(4, "AB", t3, "甲", "multi"), _cpsy(5, "AB", t3, "甲", "multi")]
    replies = {"i1": "答案：A", "i2": "答案：A", "i3": "答案：C", "i4": "答案：AB", "i5": "答案：A"}
    for name in CONVENTIONS:
        scored = score_replies(items, replies, name)
        summary = cpsyexam_summary(scored)
        assert summary["MCQA"] == pytest.approx((100 + 0) / 2)     # t1 2/2, t2 0/1: per task
        assert summary["MRQA"] == pytest.approx(50.0)              # exact match only, no partial credit
        assert summary["Avg"] == pytest.approx(50.0)
    # merging the two single-choice files of subject 甲 pools them: 2/3, the earlier reading
    legacy, _ = cpsyexam_scores(score_predictions(items, {"i1": "A", "i2": "A", "i3": "C", "i4": "AB", "i5": "A"}),
                                by="subject")
    assert legacy["MCQA"] == pytest.approx(200 / 3)


def test_cpsyexam_official_compares_released_strings():
    task = "KG-x-单项选择题"
    items = [_cpsy(1, "B", task, "x", official=" B"), _cpsy(2, "AC", task, "x", official="AC"),
             _cpsy(3, "ABC", "KG-x-多项选择题", "x", "multi", official="A,B,C")]
    replies = {"i1": "答案：B", "i2": "答案：A和C", "i3": "答案：ABC"}
    official = score_replies(items, replies, "official")
    # " B" and "A,B,C" never equal an extracted string; "A和C" is read as "AC" (multi pattern for CPsyExam)
    assert official.rows.pred.tolist() == ["B", "AC", "ABC"]
    assert official.rows.outcome.tolist() == ["wrong", "complete", "wrong"]
    strict = score_replies(items, replies, "strict")
    assert strict.rows.outcome.tolist() == ["complete", "complete", "complete"]
    tasks = cpsyexam_tasks(official)
    assert dict(zip(tasks.task, tasks.accuracy)) == {"KG-x-单项选择题": 50.0, "KG-x-多项选择题": 0.0}


def test_cpsyexam_unanswered_is_counted_and_empty_group_is_zero_officially():
    items = [_cpsy(1, "A", "KG-x-单项选择题", "x"), _cpsy(2, "A", "KG-x-单项选择题", "x")]
    replies = {"i1": "答案：A", "i2": "不知道"}
    official = cpsyexam_summary(score_replies(items, replies, "official"))
    assert official == {"MCQA": 50.0, "MRQA": 0.0, "Avg": 25.0}   # np.mean of no tasks -> 0 in the scorer
    strict = cpsyexam_summary(score_replies(items, replies, "strict"))
    assert strict["MCQA"] == 50.0 and math.isnan(strict["MRQA"])


def test_unknown_convention_and_missing_reply():
    with pytest.raises(KeyError, match="official, official-after-think, official-2024, strict"):
        get_convention("lenient")
    with pytest.raises(KeyError, match="no reply for item i1"):
        score_replies([_item(1, "A")], {}, "official")


# --------------------------------------------------------------------------- essays

PRED = "持续的学习是智慧的源泉，而实践则是知识的试金石。"
REF = "不懈的求知能够滋养心灵的土壤，而实际操作能够检验理论的真伪。"


def test_official_segmentation():
    assert official_segment(PRED) == "持续 的 学习 是 智慧 的 源泉 ， 而 实践 则 是 知识 的 试金石 。"
    assert official_segment("咨询 师") == official_segment("咨询师")   # spaces are removed first


def test_official_rouge_and_bleu_by_hand():
    scores = official_essay_item_scores(PRED, REF)
    # The rouge package counts distinct tokens: 13 in the prediction, 14 in the reference, 4 shared
    # (的 ， 而 。) -> F = 2*4/(13+14); distinct bigrams 15 and 16, one shared (， 而) -> F = 2/31.
    # Its ROUGE-L is a union LCS over distinct tokens too: the same 4 hits -> 8/27.
    assert scores["R-1"] == pytest.approx(100 * 8 / 27, abs=1e-5)
    assert scores["R-2"] == pytest.approx(100 * 2 / 31, abs=1e-5)
    assert scores["R-L"] == pytest.approx(100 * 8 / 27, abs=1e-5)
    # BLEU: 16 hypothesis tokens, 17 reference tokens -> brevity penalty exp(1 - 17/16);
    # clipped unigram matches 6 (的 x3, ， 而 。), bigram matches 1 of 15, no trigram (method1: 0.1 of 14).
    brevity = math.exp(1 - 17 / 16)
    assert scores["B-1"] == pytest.approx(100 * brevity * 6 / 16)
    assert scores["B-2"] == pytest.approx(100 * brevity * (6 / 16 * 1 / 15) ** (1 / 2))
    assert scores["B-3"] == pytest.approx(100 * brevity * (6 / 16 * 1 / 15 * 0.1 / 14) ** (1 / 3))
    assert scores["B-4"] == pytest.approx(100 * brevity * (6 / 16 * 1 / 15 * 0.1 / 14 * 0.1 / 13) ** (1 / 4))


def test_official_variant_is_the_rouge_package_and_rouge_score_differs():
    from rouge import Rouge
    from rouge_score.rouge_scorer import RougeScorer

    direct = Rouge().get_scores([official_segment(PRED)], [official_segment(REF)], avg=True)
    scores = official_essay_item_scores(PRED, REF)
    assert scores["R-1"] == pytest.approx(100 * direct["rouge-1"]["f"])
    assert scores["R-L"] == pytest.approx(100 * direct["rouge-l"]["f"])

    class Spaces:
        def tokenize(self, text: str) -> list[str]:
            return text.split()

    other = RougeScorer(["rouge1", "rougeL"], tokenizer=Spaces()).score(official_segment(REF), official_segment(PRED))
    # rouge-score counts repeated tokens (的 three times on each side): 6 matches of 16 and 17 -> 12/33,
    # and its plain LCS (的 的 ， 而 的 。) has length 6 -> also 12/33, not 8/27
    assert other["rouge1"].fmeasure == pytest.approx(12 / 33)
    assert other["rougeL"].fmeasure == pytest.approx(12 / 33)


def test_official_essay_average_and_empty_predictions():
    same = official_essay_scores([REF], [REF])
    assert same["R-1"] == pytest.approx(100.0, abs=1e-5) and same["B-4"] == pytest.approx(100.0)
    mixed = official_essay_scores([REF, ""], [REF, REF])
    assert mixed["R-1"] == pytest.approx(50.0, abs=1e-5) and mixed["empty"] == 1 and mixed["n"] == 2
    with pytest.raises(ValueError, match="empty reference"):
        official_essay_item_scores("x", " ")


def test_cells_table_carries_counts_and_wilson_intervals():
    from psyche_utils.evaluation.tables import cells_table
    from psyche_utils.stats import wilson_interval

    items = [_item(1, "AC"), _item(2, "AC"), _item(3, "B", "single"), _item(4, "B", "single")]
    replies = {"i1": "答案：AC", "i2": "答案：A", "i3": "答案：B", "i4": "不知道"}
    table = cells_table(pceb_cells(score_replies(items, replies, "strict")), "strict")
    low, high = wilson_interval(1, 2)
    assert table.loc["Theory S", ["hits", "n", "answered", "total"]].tolist() == [1, 2, 1, 2]
    assert table.loc["Theory S", "ci_low"] == pytest.approx(100 * low) and table.loc["Theory S", "ci_high"] == pytest.approx(100 * high)
    assert table.loc["Theory Me", "value"] == pytest.approx(75.0) and math.isnan(table.loc["Theory Me", "ci_low"])
    assert table.convention.eq("strict").all() and math.isnan(table.loc["Case S", "value"])
