"""Structural checks, score parsing and the filter's decisions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from psyche_utils.llm import GenerationSettings, Messages
from psyche_utils.quality import parse_score, quality_filter, rubric_prompt, structural_problems
from psyche_utils.schema import Question

OPTIONS = {"A": "安全需要", "B": "生理需要", "C": "归属与爱的需要", "D": "自我实现的需要"}


def q(qid="q1", stem="马斯洛需要层次中最基础的需要是（ ）。", options=None, answer="B", explanation="生理需要在最底层。") -> Question:
    return Question(qid, stem, options or OPTIONS, answer, "single" if len(answer) == 1 else "multi", "普通心理学", explanation)


class ScriptedJudge:
    name = "judge"

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.asked: list[str] = []

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        replies = []
        for messages in prompts:
            key = next(k for k in self.replies if k in messages[-1]["content"])
            self.asked.append(key)
            replies.append(self.replies[key])
        return replies


def test_structural_problems():
    assert structural_problems(q()) == []
    assert structural_problems(q(options={"A": "自我", "B": "本我", "C": "自 我", "D": "超我"}, answer="A")) == ["options A, C say the same thing"]
    assert structural_problems(q(options={"A": "x", "B": "y", "C": "z"}, answer="A")) == ["has 3 options, expected 4"]
    assert structural_problems(q(options={"A": "1", "B": "2", "C": "-2", "D": "２"}, answer="B")) == ["options B, D say the same thing"]
    assert structural_problems(q(stem="遗忘？")) == ["stem shorter than 4 characters"]
    assert structural_problems(q(stem="效度是指（ ）。")) == []
    assert structural_problems(q(explanation=" ")) == ["no explanation"]
    assert structural_problems(q(answer="ABCD")) == []  # real exam items can have every option correct


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 4, "reason": "清楚"}', 4),
        ('好的。\n```json\n{"score": "2", "reason": "答案有争议"}\n```', 2),
        ("<think>想想 评分：1</think>评分：5，题目很好", 5),
        ("总分为 3", 3),
        ("这道题我给4分。", 4),
        ('{"score": 7}', None),
        ("分数：4.5", None),
        ("看不出分数", None),
        ("<think>评分：4", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply)[0] == score


def test_parse_score_keeps_the_reason():
    assert parse_score('{"score": 4, "reason": "干扰项合理"}') == (4, "干扰项合理")


def test_rubric_prompt_shows_gold_answer_and_explanation():
    user = rubric_prompt(q())[-1]["content"]
    assert "【标准答案】B" in user and "生理需要在最底层" in user and "B. 生理需要" in user


def test_filter_decisions():
    good, low, junk = q("good", "马斯洛需要层次中最基础的需要是（ ）。"), q("low", "马斯洛理论中最高层次的需要是（ ）。", answer="D"), q("junk", "马斯洛认为人的需要由低到高依次是（ ）。")
    broken = q("broken", "遗忘？")
    judge = ScriptedJudge({"最基础": '{"score": 5}', "最高层次": '{"score": 2, "reason": "太简单"}', "由低到高": "嗯嗯啊啊"})
    result = quality_filter([good, low, junk, broken], judge, threshold=3)
    assert sorted(judge.asked) == ["最基础", "最高层次", "由低到高"]  # the broken one never reaches the judge
    assert [x.id for x in result.kept] == ["good", "junk"]
    assert [x.id for x in result.rejected] == ["low", "broken"]
    decisions = result.by_id()
    assert decisions["good"].score == 5 and decisions["good"].why == "score 5 >= 3"
    assert decisions["low"].judge_reason == "太简单"
    assert decisions["junk"].needs_review and "no readable score" in decisions["junk"].why
    assert decisions["broken"].structural == ("stem shorter than 4 characters",)
    assert result.summary() == {
        "kept": 2, "rejected_structure": 1, "rejected_low_score": 1, "rejected_unscored": 0, "scored": 2, "unscored_kept_for_review": 1,
    }


def test_threshold_and_unscored_policy_change_the_outcome():
    questions = [q("a", "马斯洛需要层次中最基础的需要是（ ）。"), q("b", "马斯洛认为人的需要由低到高依次是（ ）。")]
    judge = ScriptedJudge({"最基础": '{"score": 3}', "由低到高": "?"})
    assert [x.id for x in quality_filter(questions, judge, threshold=4, on_unscored="reject").kept] == []
    assert [x.id for x in quality_filter(questions, judge, threshold=3, on_unscored="keep").kept] == ["a", "b"]
    with pytest.raises(ValueError, match="on_unscored"):
        quality_filter(questions, judge, on_unscored="maybe")


def test_without_a_judge_only_structure_decides():
    result = quality_filter([q(), q("bad", "短？")], None)
    assert [x.id for x in result.kept] == ["q1"]
    assert result.by_id()["q1"].why == "no judge configured; kept for human review"
