import pytest
import torch

from psyche_utils.answers import extract_answer
from psyche_utils.formatting import question_messages
from psyche_utils.llm import GenerationSettings, OpenAICompatibleBackend
from psyche_utils.schema import Question
from psyche_utils.selection import (
    LikelihoodSolver,
    answer_candidates,
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


def test_answer_candidates_cover_every_allowed_answer():
    single = _question("s", "B")
    multi = Question("m", "题", {"A": "甲", "B": "乙", "C": "丙", "D": "丁", "E": ""}, "AC", "multi", "普通心理学", "")
    assert answer_candidates(single) == ["A", "B", "C", "D"]
    assert len(answer_candidates(multi)) == 11  # C(4,2) + C(4,3) + C(4,4)
    assert answer_candidates(multi)[:3] == ["AB", "AC", "AD"] and answer_candidates(multi)[-1] == "ABCD"


def _naive_scores(model, tokenizer, solver, question):
    """Score each candidate with one unpadded, uncached forward pass per candidate."""
    prompt, answers = solver.encode(question)
    scores = []
    for answer in answers:
        with torch.inference_mode():
            logprobs = model(input_ids=torch.tensor([prompt + answer])).logits.log_softmax(-1)[0]
        scores.append(sum(logprobs[len(prompt) - 1 + j, token].item() for j, token in enumerate(answer)))
    return scores


def test_likelihood_solver_matches_unbatched_scoring(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    solver = LikelihoodSolver(model, tokenizer, "tiny", batch_size=2, progress=False)
    questions = [QUESTIONS[1], _question("q4，一道题干更长、需要更多词元才能读完的题目", "D")]
    scores = solver.score([solver.encode(q) for q in questions])
    for question, values in zip(questions, scores):
        assert len(values) == len(answer_candidates(question))
        assert values == pytest.approx(_naive_scores(model, tokenizer, solver, question), abs=1e-4)


def test_likelihood_solvers_answer_validly_and_differ_by_seed(tiny_model_and_tokenizer):
    from psyche_utils.tiny import load_tiny

    model, tokenizer = tiny_model_and_tokenizer
    other_model, other_tokenizer = load_tiny(seed=1)
    questions = [_question(f"q{i}", "A" if i % 2 else "BC") for i in range(8)]
    first = LikelihoodSolver(model, tokenizer, "tiny-seed0", progress=False)
    replies = first.solve(questions, GenerationSettings())
    assert replies == first.solve(questions, GenerationSettings())
    letters = [extract_answer(reply) for reply in replies]
    assert all(len(l) == 1 if q.question_type == "single" else len(l) >= 2 for l, q in zip(letters, questions))
    second = LikelihoodSolver(other_model, other_tokenizer, "tiny-seed1", progress=False)
    chat = ScriptedSolver("qwen", {q.id: "<think>想</think>答案：A" for q in questions})
    records = cross_select(questions, [first, second, chat])
    assert [name for name in records[0].predictions] == ["tiny-seed0", "tiny-seed1", "qwen"]
    assert any(r.predictions["tiny-seed0"] != r.predictions["tiny-seed1"] for r in records)


def test_guesser_expectation_by_hand():
    from psyche_utils.selection import guesser_expectation

    single, multi = _question("s", "A"), _question("m", "AB")
    # single: 4 answers, 2 guessers -> p = 1 - (3/4)^2 = 7/16; multi: 11 sets -> p = 1 - (10/11)^2 = 21/121
    mean, sd = guesser_expectation([single, multi], 2)
    p1, p2 = 7 / 16, 21 / 121
    assert mean == pytest.approx(p1 + p2)
    assert sd == pytest.approx((p1 * (1 - p1) + p2 * (1 - p2)) ** 0.5)
    assert guesser_expectation([single], 1) == pytest.approx((0.25, (0.25 * 0.75) ** 0.5))
    with pytest.raises(ValueError, match="n_solvers"):
        guesser_expectation([single], 0)
