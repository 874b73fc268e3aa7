import re

import pytest

from psyche_utils.llm import GenerationSettings
from psyche_utils.rationales import (
    BASE_PROMPT,
    PROMPT_LIBRARY,
    LibraryProposer,
    RationalePrompt,
    RationaleResult,
    TeacherProposer,
    acceptance_by_round,
    choose_rationales,
    history_rows,
    judge_reply,
    optimize_rationales,
    reason_category,
    teacher_messages,
    unaccepted,
)
from psyche_utils.schema import Question

SETTINGS = GenerationSettings(max_new_tokens=32)


def _question(qid, answer="B", question_type="single", kind="knowledge", explanation="书面解析。"):
    return Question(
        id=qid,
        question=f"【题{qid}】下列哪一项正确？",
        options={"A": "选项一", "B": "选项二", "C": "选项三", "D": "选项四"},
        answer=answer,
        question_type=question_type,
        subject="普通心理学",
        explanation=explanation,
        kind=kind,
    )


def _prompt_id(user_content):
    """Which library prompt (or teacher rewrite) a teacher message was built from."""
    for prompt in PROMPT_LIBRARY:
        if user_content.startswith(prompt.instruction):
            return prompt.id
    return "rewritten"


class CannedTeacher:
    """Replies from a script keyed by (question id, prompt id, call number); records every call."""

    name = "scripted-teacher"

    def __init__(self, script):
        self.script = script
        self.calls = []

    def generate(self, prompts, settings):
        call = len(self.calls)
        self.calls.append(prompts)
        replies = []
        for messages in prompts:
            user = messages[-1]["content"]
            qid = re.search(r"【题(\w+)】", user).group(1)
            replies.append(self.script(qid, _prompt_id(user), call))
        return replies


def _reply(letters, rationale="先回忆定义，再比较选项。"):
    return f"<think>\n{rationale}\n</think>\n\n答案：{letters}"


def test_judge_reply_accepts_only_closed_think_and_exact_answer():
    q = _question("q1", answer="AC", question_type="multi")
    assert judge_reply(q, _reply("AC")).correct
    assert judge_reply(q, _reply("C、A")).correct
    assert judge_reply(q, _reply("A")).reason == "answered A, gold is AC"
    assert judge_reply(q, "答案：AC").reason == "no closed <think> block"
    assert judge_reply(q, "<think>想了很久").reason == "no closed <think> block"
    assert judge_reply(q, "<think></think>答案：AC").reason == "empty rationale"
    assert judge_reply(q, "<think>推理</think>我不确定").reason == "no option letter after </think>"


def test_accept_and_reject_in_round_zero():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B" if qid == "1" else "A", f"推理{qid}"))
    results = optimize_rationales([_question("1"), _question("2")], teacher, rounds=0, settings=SETTINGS, show_progress=False)
    assert [r.accepted for r in results] == [True, False]
    assert results[0].rationale == "推理1"
    assert results[1].rationale == ""
    assert [r.history[0].decision for r in results] == ["accepted", "rejected"]
    assert results[1].history[0].reason == "answered A, gold is B"
    assert len(teacher.calls) == 1 and len(teacher.calls[0]) == 2


def test_update_when_candidate_is_correct():
    # wrong with the base prompt, right with any other prompt
    teacher = CannedTeacher(lambda qid, pid, call: _reply("A") if pid == "step_by_step" else _reply("B", f"用{pid}推理"))
    (result,) = optimize_rationales([_question("1")], teacher, rounds=1, settings=SETTINGS, show_progress=False)
    assert result.accepted
    assert result.prompt.id != BASE_PROMPT.id
    assert result.rationale == f"用{result.prompt.id}推理"
    assert [h.decision for h in result.history] == ["rejected", "updated"]
    assert result.history[1].prompt_id == result.prompt.id


def test_revert_keeps_previous_accepted_version():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B", "最初的推理") if call == 0 else _reply("D"))
    (result,) = optimize_rationales([_question("1")], teacher, rounds=2, settings=SETTINGS, show_progress=False)
    assert result.accepted
    assert result.prompt == BASE_PROMPT
    assert result.rationale == "最初的推理"
    assert [h.decision for h in result.history] == ["accepted", "reverted", "reverted"]
    assert "kept previous accepted version" in result.history[1].reason


def test_revert_without_any_accepted_version_stays_rejected():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("C"))
    (result,) = optimize_rationales([_question("1")], teacher, rounds=2, settings=SETTINGS, show_progress=False)
    assert not result.accepted and result.rationale == ""
    assert result.history[-1].reason == "answered C, gold is B; kept no accepted version yet"


def test_correct_candidate_replaces_accepted_rationale_in_the_papers_mode():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B", f"第{call}轮推理"))
    (result,) = optimize_rationales([_question("1")], teacher, rounds=2, settings=SETTINGS, show_progress=False)
    assert result.rationale == "第2轮推理"
    assert [h.decision for h in result.history] == ["accepted", "updated", "updated"]


def test_refine_accepted_false_only_retries_failures():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B") if qid == "1" or call == 2 else _reply("A"))
    results = optimize_rationales(
        [_question("1"), _question("2")], teacher, rounds=2, settings=SETTINGS, refine_accepted=False, show_progress=False
    )
    assert [len(r.history) for r in results] == [1, 3]
    assert [len(batch) for batch in teacher.calls] == [2, 1, 1]
    assert [h.decision for h in results[1].history] == ["rejected", "reverted", "updated"]


def test_history_and_acceptance_by_round_are_hand_counted():
    # q1 right at once; q2 right from round 1 on; q3 never
    def script(qid, pid, call):
        return _reply("B") if qid == "1" or (qid == "2" and call >= 1) else _reply("A")

    results = optimize_rationales(
        [_question("1"), _question("2"), _question("3")], CannedTeacher(script), rounds=2, settings=SETTINGS, show_progress=False
    )
    rows = history_rows(results)
    assert len(rows) == 9
    assert {row["round"] for row in rows} == {0, 1, 2}
    assert acceptance_by_round(results) == [
        {"round": 0, "attempts": 3, "correct_attempts": 1, "questions_with_rationale": 1, "acceptance_rate": 1 / 3},
        {"round": 1, "attempts": 3, "correct_attempts": 2, "questions_with_rationale": 2, "acceptance_rate": 2 / 3},
        {"round": 2, "attempts": 3, "correct_attempts": 2, "questions_with_rationale": 2, "acceptance_rate": 2 / 3},
    ]


def test_teacher_never_sees_the_explanation():
    q = _question("1", explanation="因为选项二是定义本身，所以答案是B。")
    teacher = CannedTeacher(lambda qid, pid, call: _reply("A"))
    optimize_rationales([q], teacher, rounds=1, settings=SETTINGS, show_progress=False)
    for batch in teacher.calls:
        for messages in batch:
            assert all(q.explanation not in m["content"] for m in messages)


def test_library_proposer_fits_the_question_and_changes_the_prompt():
    proposer = LibraryProposer(seed=1)
    single = _question("s")
    multi_case = _question("m", answer="AB", question_type="multi", kind="case")
    for round_index in range(1, 8):
        pick = proposer.pick(single, BASE_PROMPT, round_index)
        assert pick.id != BASE_PROMPT.id and pick.applies_to == "any"
    picks = {proposer.pick(multi_case, BASE_PROMPT, r).id for r in range(1, 6)}
    assert {"case_formulation", "multi_check"} <= picks and BASE_PROMPT.id not in picks
    assert proposer.pick(single, BASE_PROMPT, 3) == LibraryProposer(seed=1).pick(single, BASE_PROMPT, 3)
    with pytest.raises(ValueError, match="no variant"):
        LibraryProposer(library=(BASE_PROMPT,)).pick(single, BASE_PROMPT, 1)


class ScriptedRewriter:
    name = "rewriter"

    def __init__(self, replies):
        self.replies = replies
        self.prompts = []

    def generate(self, prompts, settings):
        self.prompts.extend(prompts)
        return self.replies[: len(prompts)]


def test_teacher_proposer_uses_good_rewrites_and_falls_back_on_bad_ones():
    good = "请先回忆条件反射的定义与形成条件，再逐一比较各选项中刺激与反应的关系，注意区分经典条件反射与操作性条件反射。"
    replies = [good, "", "Think about the definition carefully please.", "请直接选择，答案是B，不用多想。"]
    rewriter = ScriptedRewriter(replies)
    proposer = TeacherProposer(rewriter, fallback=LibraryProposer(seed=3))
    questions = [_question(str(i)) for i in range(4)]
    proposals = proposer.propose(questions, [BASE_PROMPT] * 4, 1)
    assert proposals[0][0].origin == "teacher" and proposals[0][0].instruction == good
    assert proposals[0][1] == "teacher rewrite"
    notes = [note for _, note in proposals[1:]]
    assert notes == [
        "library fallback: rewrite is empty",
        "library fallback: rewrite is not mostly Chinese",
        "library fallback: rewrite states an answer",
    ]
    assert all(p.origin == "library" for p, _ in proposals[1:])
    assert all(q.explanation not in m["content"] for m_list in rewriter.prompts for m in m_list for q in questions)


def test_teacher_rewrite_is_used_in_the_next_generation():
    good = "请先回忆相关理论的核心要点，再判断每个选项是否与之相符，特别留意容易混淆的概念之间的差别。"
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B", "改写后推理") if pid == "rewritten" else _reply("A"))
    (result,) = optimize_rationales(
        [_question("1")], teacher, rounds=1, settings=SETTINGS, proposer=TeacherProposer(ScriptedRewriter([good])), show_progress=False
    )
    assert result.accepted and result.prompt.origin == "teacher" and result.prompt.instruction == good
    assert result.history[1].prompt_origin == "teacher"
    assert teacher_messages(_question("1"), result.prompt)[1]["content"].startswith(good)


def test_choose_rationales_prefers_teacher_then_explanation_and_reports_the_rest():
    q1, q2, q3, q4 = _question("1"), _question("2"), _question("3", explanation=" "), _question("4", explanation="")
    accepted = RationaleResult("1", BASE_PROMPT, "老师的推理", True)
    failed = RationaleResult("2", BASE_PROMPT)
    failed3 = RationaleResult("3", BASE_PROMPT)
    chosen, exclusions = choose_rationales([q1, q2, q3, q4], [accepted, failed, failed3])
    assert chosen["1"].origin == "teacher" and chosen["1"].text == "老师的推理" and chosen["1"].prompt_id == BASE_PROMPT.id
    assert chosen["2"].origin == "seed_explanation" and chosen["2"].text == "书面解析。"
    assert [(r.id, r.detail) for r in exclusions] == [
        ("3", "teacher rationale not accepted and no written explanation"),
        ("4", "not sent to the teacher and no written explanation"),
    ]
    only_teacher, dropped = choose_rationales([q1, q2], [accepted, failed], use_seed_explanations=False)
    assert list(only_teacher) == ["1"] and [r.id for r in dropped] == ["2"]


def test_invalid_arguments_are_refused():
    teacher = CannedTeacher(lambda qid, pid, call: _reply("B"))
    with pytest.raises(ValueError, match="rounds"):
        optimize_rationales([_question("1")], teacher, rounds=-1, show_progress=False)
    with pytest.raises(ValueError, match="unique"):
        optimize_rationales([_question("1"), _question("1")], teacher, show_progress=False)
    assert RationalePrompt("x", "y", applies_to="case").fits(_question("1")) is False


def test_unaccepted_lists_every_failed_question_with_a_countable_reason():
    teacher = CannedTeacher(lambda qid, pid, call: {"1": _reply("B"), "2": _reply("A"), "3": "乱码"}[qid])
    results = optimize_rationales([_question(q) for q in "123"], teacher, rounds=1, settings=SETTINGS, show_progress=False)
    assert [(e.id, e.stage, e.reason) for e in unaccepted(results)] == [
        ("2", "teacher_rationale", "wrong answer"),
        ("3", "teacher_rationale", "no closed <think> block"),
    ]
    assert unaccepted(results)[0].detail == "answered A, gold is B; kept no accepted version yet"
    assert reason_category("answered AC, gold is C") == "wrong answer"
