"""The scripted teacher answers every task in the format the real parser reads, at a controlled error rate."""

from __future__ import annotations

import pytest

from psyche_utils.dialogues import check_reply, judge_rewrite, load_harmful_terms, rewrite_messages
from psyche_utils.evaluation.judge import DIMENSIONS, JudgeParseError, dimension_prompt, judge_prompt, parse_verdict
from psyche_utils.evaluation.loaders import DialogueSample
from psyche_utils.llm import GenerationSettings
from psyche_utils.quality import parse_score, rubric_prompt
from psyche_utils.question_generation import Passage, generation_prompt, parse_generation
from psyche_utils.rationales import BASE_PROMPT, PROMPT_LIBRARY, TeacherProposer, judge_reply, teacher_messages
from psyche_utils.schema import Post, Question
from psyche_utils.scripted_teacher import SCRIPTED_LABEL, ScriptedTeacher, detect_task

PASSAGE = Passage(
    "p1",
    "变态心理学",
    "abnormal",
    "抑郁发作",
    "抑郁发作的核心表现是持续的心境低落、兴趣减退和精力下降。常用诊断标准要求症状至少持续两周。"
    "广泛性焦虑障碍的人会对多种日常事务反复担心。惊恐发作来得突然，在几分钟内达到高峰。",
)
QUESTION = Question(
    id="q1",
    question="常用诊断标准要求抑郁发作的症状至少持续（ ）。",
    options={"A": "三天", "B": "一周", "C": "两周", "D": "半年"},
    answer="C",
    question_type="single",
    subject="变态心理学",
    explanation="诊断标准要求症状至少持续两周。",
)
MULTI = Question(
    id="q2",
    question="下列属于抑郁发作核心表现的有（ ）。",
    options={"A": "持续的心境低落", "B": "兴趣减退", "C": "幻听", "D": "濒死感"},
    answer="AB",
    question_type="multi",
    subject="变态心理学",
    explanation="核心表现是心境低落、兴趣减退和精力下降。",
)
POST = Post(id="post-1", post="马上就要考试了，我每天复习到凌晨，越学越慌，晚上心跳特别快。", reply="早点睡。", topic="学业压力")
SAMPLE = DialogueSample("s1", "", "", [], "我最近总是睡不着，很焦虑。", "", "test")
SETTINGS = GenerationSettings(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=1)
TERMS = load_harmful_terms()


def teacher(error_rate: float = 0.0, seed: int = 0) -> ScriptedTeacher:
    return ScriptedTeacher(error_rate=error_rate, seed=seed, reference_texts=[PASSAGE.text])


def test_name_says_it_is_rules():
    assert SCRIPTED_LABEL in teacher().name
    assert SCRIPTED_LABEL == "scripted teacher — rules, not a language model"


@pytest.mark.parametrize(
    ("messages", "task"),
    [
        (generation_prompt(PASSAGE, 2), "question_generation"),
        (rubric_prompt(QUESTION), "quality_judge"),
        (teacher_messages(QUESTION, BASE_PROMPT), "rationale"),
        (TeacherProposer(teacher()).rewrite_messages(QUESTION, BASE_PROMPT), "prompt_rewrite"),
        (rewrite_messages(POST), "dialogue_rewrite"),
        (judge_prompt(SAMPLE, "听起来你很焦虑。"), "empathy_judge"),
        (dimension_prompt(SAMPLE, "听起来你很焦虑。", "safety"), "empathy_judge_dimension"),
    ],
)
def test_detects_every_task(messages, task):
    assert detect_task(messages) == task


def test_unknown_prompt_is_an_error():
    with pytest.raises(ValueError, match="no known task"):
        teacher().generate([[{"role": "user", "content": "你好"}]], SETTINGS)


def test_error_free_replies_pass_every_real_parser():
    t = teacher()
    generation, rubric, rationale, multi, rewrite, dialogue, verdict, digit = t.generate(
        [
            generation_prompt(PASSAGE, 2),
            rubric_prompt(QUESTION),
            teacher_messages(QUESTION, BASE_PROMPT),
            teacher_messages(MULTI, PROMPT_LIBRARY[-1]),
            TeacherProposer(t).rewrite_messages(QUESTION, BASE_PROMPT),
            rewrite_messages(POST),
            judge_prompt(SAMPLE, "听起来你最近很焦虑，这种感受可以理解。可以试着睡前做几分钟深呼吸吗？"),
            dimension_prompt(SAMPLE, "听起来你很焦虑。", "safety"),
        ],
        SETTINGS,
    )
    questions, failures, items = parse_generation(generation, PASSAGE)
    assert (len(questions), failures, items) == (2, [], 2)
    assert {q.question_type for q in questions} == {"single", "multi"}  # the mixed prompt asks for both
    score, _ = parse_score(rubric)
    assert score == 4  # the explanation repeats the gold option's text: high overlap
    assert judge_reply(QUESTION, rationale).correct  # "两周" is found verbatim in the passage
    assert judge_reply(MULTI, multi).correct
    assert TeacherProposer(t).check_rewrite(rewrite) == (rewrite, "")
    assert judge_rewrite(POST, dialogue, TERMS).accepted
    assert set(parse_verdict(verdict)) == set(DIMENSIONS)
    assert digit == "3"


def test_generated_questions_are_solved_by_the_option_rule():
    t = teacher()
    questions, _, _ = parse_generation(t.generate([generation_prompt(PASSAGE, 2)], SETTINGS)[0], PASSAGE)
    replies = t.generate([teacher_messages(q, BASE_PROMPT) for q in questions], SETTINGS)
    assert all(judge_reply(q, r).correct for q, r in zip(questions, replies))


def test_dialogue_reply_has_a_reasoning_block_named_as_templated():
    raw = teacher().generate([rewrite_messages(POST)], SETTINGS)[0]
    result = judge_rewrite(POST, raw, TERMS)
    assert "规则模板" in result.reasoning and "焦虑" in result.reasoning
    assert check_reply(POST.post, result.reply, TERMS) == []


def test_deterministic_given_prompt_and_seed():
    prompts = [teacher_messages(QUESTION, p) for p in PROMPT_LIBRARY[:4]] + [rewrite_messages(POST)]
    first = teacher(0.5, seed=3).generate(prompts, SETTINGS)
    assert first == teacher(0.5, seed=3).generate(prompts, SETTINGS)
    others = [teacher(0.5, seed=s).generate(prompts, SETTINGS) for s in range(4, 10)]
    assert any(other != first for other in others)  # the seed decides which replies carry mistakes


def _failure_rate(error_rate: float, n: int = 400) -> tuple[float, float]:
    """(share of rationale replies judged unusable, share the teacher says it corrupted)."""
    t = teacher(error_rate, seed=7)
    prompts = [teacher_messages(QUESTION, BASE_PROMPT)] * n
    replies = [t.reply(p, GenerationSettings(seed=i)) for i, p in enumerate(prompts)]
    failed = sum(not judge_reply(QUESTION, r).correct for r in replies)
    return failed / n, t.counts["rationale:errors"] / n


@pytest.mark.parametrize("error_rate", [0.0, 0.3, 1.0])
def test_error_rate_is_respected_and_every_error_is_caught(error_rate):
    failed, corrupted = _failure_rate(error_rate)
    assert failed == corrupted  # an error-free reply is always right here, a corrupted one always caught
    assert abs(failed - error_rate) <= 0.07  # 400 draws: 3.5 standard deviations at p = 0.3


@pytest.mark.parametrize(
    ("make", "parse_fails"),
    [
        (lambda t: t.generate([generation_prompt(PASSAGE, 2)], SETTINGS)[0], lambda r: parse_generation(r, PASSAGE)[1] != []),
        (lambda t: t.generate([rubric_prompt(QUESTION)], SETTINGS)[0], lambda r: parse_score(r)[0] is None),
        (lambda t: t.generate([rewrite_messages(POST)], SETTINGS)[0], lambda r: not judge_rewrite(POST, r, TERMS).accepted),
        (
            lambda t: t.generate([TeacherProposer(t).rewrite_messages(QUESTION, BASE_PROMPT)], SETTINGS)[0],
            lambda r: TeacherProposer(teacher()).check_rewrite(r)[1] != "",
        ),
    ],
)
def test_every_deliberate_mistake_is_caught_by_the_real_check(make, parse_fails):
    for seed in range(12):
        assert parse_fails(make(teacher(1.0, seed=seed)))


def test_judge_mistakes_fail_the_strict_verdict_parser():
    for seed in range(12):
        reply = teacher(1.0, seed=seed).generate([judge_prompt(SAMPLE, "听起来你很焦虑。")], SETTINGS)[0]
        with pytest.raises(JudgeParseError):
            parse_verdict(reply)


def test_error_rate_must_be_a_probability():
    with pytest.raises(ValueError, match="error_rate"):
        ScriptedTeacher(error_rate=1.5)


def test_a_stem_asking_for_the_exception_reverses_the_rule():
    negative = Question(
        id="q3",
        question="下列不属于抑郁发作核心表现的是（ ）。",
        options={"A": "持续的心境低落", "B": "兴趣减退", "C": "幻听", "D": "精力下降"},
        answer="C",
        question_type="single",
        subject="变态心理学",
        explanation="",
    )
    reply = teacher().generate([teacher_messages(negative, BASE_PROMPT)], SETTINGS)[0]
    assert judge_reply(negative, reply).correct
