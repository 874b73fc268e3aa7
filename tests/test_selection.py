import pytest

from psyche_utils.formatting import question_messages
from psyche_utils.llm import GenerationSettings, OpenAICompatibleBackend
from psyche_utils.schema import Question
from psyche_utils.selection import (
    assign_pool,
    cross_select,
    pool_ids,
    resplit,
    solver_accuracy,
    solvers_from_env,
)


def _question(qid, answer):
    return Question(
        id=qid,
        question=f"【{qid}】下列说法正确的是？",
        options={"A": "甲", "B": "乙", "C": "丙", "D": "丁"},
        answer=answer,
        question_type="single" if len(answer) == 1 else "multi",
        subject="普通心理学",
        explanation="",
    )


QUESTIONS = [_question("q1", "A"), _question("q2", "BD"), _question("q3", "C")]


class ScriptedSolver:
    """Answers each question id with a scripted reply; records the prompts it saw."""

    def __init__(self, name, answers):
        self.name = name
        self.answers = answers
        self.seen = []

    def generate(self, prompts, settings):
        self.seen.append(prompts)
        return [self.answers[p[-1]["content"].split("【", 1)[1].split("】", 1)[0]] for p in prompts]


def _panel():
    return [
        ScriptedSolver("qwen", {"q1": "<think>想</think>答案：A", "q2": "<think>想</think>答案：B", "q3": "答案：D"}),
        ScriptedSolver("llama", {"q1": "<think>想</think>答案：A", "q2": "<think>想</think>答案：D、B", "q3": "<think>没想完"}),
        ScriptedSolver("phi", {"q1": "<think>想</think>答案：C", "q2": "<think>想</think>答案：ABD", "q3": "<think>A或C</think>选B"}),
    ]


def test_rule_at_least_one_correct_goes_to_sft():
    records = cross_select(QUESTIONS, _panel(), settings=GenerationSettings(max_new_tokens=8))
    assert [r.predictions for r in records] == [
        {"qwen": "A", "llama": "A", "phi": "C"},
        {"qwen": "B", "llama": "BD", "phi": "ABD"},
        {"qwen": "D", "llama": "", "phi": "B"},
    ]
    assert [r.n_correct for r in records] == [2, 1, 0]
    assert [r.pool for r in records] == ["sft", "sft", "grpo"]
    assert pool_ids(records, "sft") == ["q1", "q2"] and pool_ids(records, "grpo") == ["q3"]
    assert solver_accuracy(records) == {"qwen": 1 / 3, "llama": 2 / 3, "phi": 0.0}


def test_threshold_moves_questions_to_grpo():
    records = cross_select(QUESTIONS, _panel(), min_correct=2)
    assert [r.pool for r in records] == ["sft", "grpo", "grpo"]
    assert [r.pool for r in resplit(records, 1)] == ["sft", "sft", "grpo"]
    assert [assign_pool(n, 3) for n in range(4)] == ["grpo", "grpo", "grpo", "sft"]


def test_solvers_see_the_training_prompt_once_in_one_batch():
    panel = _panel()
    cross_select(QUESTIONS, panel)
    for solver in panel:
        assert len(solver.seen) == 1
        assert solver.seen[0] == [question_messages(q) for q in QUESTIONS]


def test_invalid_panels_are_refused():
    with pytest.raises(ValueError, match="at least one solver"):
        cross_select(QUESTIONS, [])
    twins = [ScriptedSolver("same", {}), ScriptedSolver("same", {})]
    with pytest.raises(ValueError, match="unique"):
        cross_select(QUESTIONS, twins)
    with pytest.raises(ValueError, match="min_correct"):
        cross_select(QUESTIONS, _panel(), min_correct=4)
    with pytest.raises(ValueError, match="min_correct"):
        cross_select(QUESTIONS, _panel(), min_correct=0)
    with pytest.raises(ValueError, match="pool"):
        pool_ids([], "dpo")


def test_solvers_from_env(monkeypatch):
    monkeypatch.delenv("PSYCHE_SOLVER_URLS", raising=False)
    assert solvers_from_env() == []
    monkeypatch.setenv(
        "PSYCHE_SOLVER_URLS", "Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1, microsoft/phi-4@http://127.0.0.1:8001/v1"
    )
    monkeypatch.setenv("PSYCHE_SOLVER_KEY", "secret")
    solvers = solvers_from_env()
    assert all(isinstance(s, OpenAICompatibleBackend) for s in solvers)
    assert [s.model for s in solvers] == ["Qwen/Qwen2.5-7B-Instruct", "microsoft/phi-4"]
    assert str(solvers[1].client.base_url).startswith("http://127.0.0.1:8001/v1")
    assert solvers[0].client.api_key == "secret"
    monkeypatch.setenv("PSYCHE_SOLVER_URLS", "Qwen/Qwen2.5-7B-Instruct@http://h:1/v1,http://h:2/v1")
    with pytest.raises(ValueError, match="entry 2 .*MODEL@BASE_URL"):
        solvers_from_env()
