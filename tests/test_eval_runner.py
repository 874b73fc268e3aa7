"""Cached, resumable generation; end-to-end scoring; the judge; the submission file; tables."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from psyche_utils.evaluation import load_cpsyexam, load_pceb, load_psydt, pceb_row
from psyche_utils.evaluation.judge import (
    DIMENSIONS,
    dimension_prompt,
    GenerativeJudge,
    JudgeParseError,
    ProbabilityJudge,
    parse_verdict,
    summarize_judgements,
)
from psyche_utils.evaluation.metrics import PCEB_ACCURACY_COLUMNS, cpsyexam_scores
from psyche_utils.evaluation.prompts import choice_prompt, dialogue_prompt, essay_prompt, few_shot_examples
from psyche_utils.evaluation.runner import generate_cached, run_choice, run_dialogues, run_essays
from psyche_utils.evaluation.submission import cpsyexam_submission
from psyche_utils.evaluation.tables import PUBLISHED_PCEB, pceb_comparison, plot_empathy_radar, plot_pceb_bars
from psyche_utils.llm import GenerationSettings, TransformersBackend
from psyche_utils.paths import EVAL_DATA_DIR
from psyche_utils.prompts import SYSTEM_PROMPT_CASE, SYSTEM_PROMPT_GENERAL, THINK_INSTRUCTION

SETTINGS = GenerationSettings(max_new_tokens=8)


class ScriptedBackend:
    """A backend whose reply is a function of the prompt; it counts what it was asked."""

    def __init__(self, reply, name: str = "scripted"):
        self.reply, self.name, self.calls = reply, name, []

    def generate(self, prompts, settings):
        self.calls.append(len(prompts))
        return [self.reply(messages) for messages in prompts]


def _pairs(n: int):
    return [(f"q{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def test_generation_is_cached_and_resumable(tmp_path):
    backend = ScriptedBackend(lambda m: m[-1]["content"].upper())
    replies, log = generate_cached(backend, "bench", _pairs(10), SETTINGS, chunk_size=4, cache_dir=tmp_path)
    assert replies["q3"] == "QUESTION 3" and backend.calls == [4, 4, 2] and log.generated == 10
    again, log = generate_cached(backend, "bench", _pairs(10), SETTINGS, chunk_size=4, cache_dir=tmp_path)
    assert again == replies and backend.calls == [4, 4, 2] and log.reused == 10
    # a run that died after its first chunk: only the missing chunks are generated
    lines = log.path.read_text(encoding="utf-8").splitlines()
    log.path.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    resumed, log = generate_cached(backend, "bench", _pairs(10), SETTINGS, chunk_size=4, cache_dir=tmp_path)
    assert resumed == replies and backend.calls[3:] == [4, 2] and log.reused == 4
    # an edited prompt regenerates its own chunk only (it sorts last, beside q9)
    edited = _pairs(10)
    edited[0] = ("q0", [{"role": "user", "content": "question zero"}])
    replies, _ = generate_cached(backend, "bench", edited, SETTINGS, chunk_size=4, cache_dir=tmp_path)
    assert replies["q0"] == "QUESTION ZERO" and backend.calls[5:] == [2]
    # other settings, other file
    generate_cached(backend, "bench", _pairs(10), GenerationSettings(max_new_tokens=9), chunk_size=4, cache_dir=tmp_path)
    assert backend.calls[6:] == [4, 4, 2]


def test_a_torn_last_line_is_reported_cut_off_and_regenerated(tmp_path):
    backend = ScriptedBackend(lambda m: m[-1]["content"].upper())
    replies, log = generate_cached(backend, "bench", _pairs(4), SETTINGS, chunk_size=2, cache_dir=tmp_path)
    text = log.path.read_text(encoding="utf-8")
    log.path.write_text(text[: text.rindex('"reply"')], encoding="utf-8")      # a crash in the middle of a write
    again, log = generate_cached(backend, "bench", _pairs(4), SETTINGS, chunk_size=2, cache_dir=tmp_path)
    assert again == replies and log.torn_line == 4 and log.reused == 2 and log.generated == 2
    assert "torn last line 4" in log.report() and backend.calls == [2, 2, 2]
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and all(json.loads(line) for line in lines)   # the torn line is gone, the file is valid
    third, log = generate_cached(backend, "bench", _pairs(4), SETTINGS, chunk_size=2, cache_dir=tmp_path)
    assert third == replies and log.torn_line is None and log.reused == 4


def test_cache_names_carry_the_preset_label(tmp_path):
    from psyche_utils.llm import generation_preset

    backend = ScriptedBackend(lambda m: "x")
    _, greedy = generate_cached(backend, "bench", _pairs(1), generation_preset("greedy", max_new_tokens=8), cache_dir=tmp_path)
    _, official = generate_cached(backend, "bench", _pairs(1), generation_preset("psyche_official"), cache_dir=tmp_path)
    assert greedy.path.name.startswith("bench-greedy-8-") and greedy.settings_label == "greedy-8"
    assert official.path.name.startswith("bench-t0.7-p0.9-2048-")


def test_a_corrupt_cache_line_is_an_error(tmp_path):
    backend = ScriptedBackend(lambda m: "x")
    _, log = generate_cached(backend, "bench", _pairs(2), SETTINGS, cache_dir=tmp_path)
    log.path.write_text('{"id": "q0"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        generate_cached(backend, "bench", _pairs(2), SETTINGS, cache_dir=tmp_path)


def _oracle(items):
    """Replies in the model's format with the gold answer after </think> (and distractors inside)."""
    answers = {json.dumps(choice_prompt(item), ensure_ascii=False): item.answer for item in items}
    return lambda messages: f"<think>\nA 不对，E 也不对。\n</think>\n\n答案：{answers[json.dumps(messages, ensure_ascii=False)]}"


def test_run_choice_end_to_end_with_perfect_answers(tmp_path):
    items = [item for item in load_pceb(EVAL_DATA_DIR / "pceb") if item.question_type != "essay"]
    frame, _ = run_choice(ScriptedBackend(_oracle(items)), items, SETTINGS, "pceb", cache_dir=tmp_path)
    # 40 items; the one with an empty gold gets no answer and is not scored under strict (NaN)
    assert len(frame) == 40 and frame.strict.isna().sum() == 1 and frame.answered.sum() == 39
    assert frame.dropna(subset=["strict"]).strict.eq(1.0).all() and frame.convention.eq("strict").all()
    row = pceb_row(frame.dropna(subset=["strict"]))
    assert all(row[column] == 100.0 for column in PCEB_ACCURACY_COLUMNS)
    official, _ = run_choice(ScriptedBackend(_oracle(items)), items, SETTINGS, "pceb", cache_dir=tmp_path,
                             convention="official")
    # officially the empty gold is scored, and the letter "A" in the reasoning is read as its answer: wrong
    assert official.strict.notna().all() and official.outcome.value_counts().to_dict() == {"complete": 39, "wrong": 1}


def test_unclosed_think_block_gives_no_answer(tmp_path):
    items = [item for item in load_pceb(EVAL_DATA_DIR / "pceb") if item.question_type == "single"][:3]
    frame, _ = run_choice(ScriptedBackend(lambda m: "<think>\n答案是A"), items, SETTINGS, "pceb", cache_dir=tmp_path)
    assert frame.pred.eq("").all() and frame.strict.eq(0.0).all()


def test_prompts_use_the_models_own_format():
    pceb = load_pceb(EVAL_DATA_DIR / "pceb")
    case = next(item for item in pceb if item.part == "case")
    messages = choice_prompt(case)
    assert messages[0]["content"] == SYSTEM_PROMPT_CASE
    assert messages[-1]["content"].startswith(THINK_INSTRUCTION) and "案例信息" in messages[-1]["content"]
    essay = next(item for item in pceb if item.part == "essay")
    assert essay_prompt(essay)[0]["content"] == SYSTEM_PROMPT_CASE
    theory = next(item for item in pceb if item.part == "theory")
    assert choice_prompt(theory)[0]["content"] == SYSTEM_PROMPT_GENERAL
    sample = load_psydt(EVAL_DATA_DIR / "soulchat")[2]
    turns = dialogue_prompt(sample)
    assert turns[0]["content"] == SYSTEM_PROMPT_GENERAL and turns[1:-1] == sample.history
    assert turns[-1]["content"].endswith(sample.user)


def test_few_shot_examples_match_type_prefer_subject_and_never_leak():
    train = load_cpsyexam(EVAL_DATA_DIR / "cpsyexam", "train").items
    dev = load_cpsyexam(EVAL_DATA_DIR / "cpsyexam", "dev").items
    target = next(item for item in dev if item.subject == "普通心理学" and item.question_type == "multi")
    shots = few_shot_examples(train, target, k=5)
    assert all(shot.question_type == "multi" for shot in shots)
    assert [shot.subject for shot in shots[:3]] == ["普通心理学"] * 3
    messages = choice_prompt(target, shots)
    assert len(messages) == 1 + 2 * 5 + 1
    assert messages[2]["content"].startswith("<think>") and "答案：" in messages[2]["content"]
    assert few_shot_examples(train + [target], target, k=5) == shots
    with pytest.raises(ValueError, match="few-shot pool"):
        few_shot_examples(train, target, k=7)


def test_cpsyexam_submission_format(tmp_path):
    test_items = load_cpsyexam(EVAL_DATA_DIR / "cpsyexam", "test").items
    backend = ScriptedBackend(lambda m: "</think>\n答案：B")
    frame, _ = run_choice(backend, test_items, SETTINGS, "cpsyexam-test", cache_dir=tmp_path)
    assert frame.strict.isna().all()
    submission = cpsyexam_submission({0: frame})
    assert list(submission) == ["zero_shot"]
    assert submission["zero_shot"]["KG-PCE-心理咨询师三级-单项选择题"] == [
        {"question_id": "31", "prediction": "B", "n_shot": 0}, {"question_id": "32", "prediction": "B", "n_shot": 0}]
    with pytest.raises(ValueError, match="zero-shot and five-shot"):
        cpsyexam_submission({3: frame})


def test_cpsyexam_scores_from_run_choice(tmp_path):
    dev = load_cpsyexam(EVAL_DATA_DIR / "cpsyexam", "dev").items
    frame, _ = run_choice(ScriptedBackend(lambda m: "答案：A"), dev, SETTINGS, "cpsyexam-dev", cache_dir=tmp_path)
    summary, per_task = cpsyexam_scores(frame)
    expected = per_task[per_task.question_type == "single"].accuracy.mean()
    assert summary["MCQA"] == pytest.approx(expected)
    singles = [i for i in dev if i.question_type == "single"]
    by_task = pd.DataFrame({"t": [i.task for i in singles], "a": [i.answer == "A" for i in singles]})
    assert summary["MCQA"] == pytest.approx(100 * by_task.groupby("t").a.mean().mean())
    assert summary["MRQA"] == 0.0  # no multi gold is the single letter A


def test_essays_and_dialogues_score_the_text_after_think(tmp_path):
    pceb = load_pceb(EVAL_DATA_DIR / "pceb")
    references = {essay_prompt(i)[-1]["content"]: i.answer for i in pceb if i.part == "essay"}
    backend = ScriptedBackend(lambda m: f"<think>分析</think>\n{references[m[-1]['content']]}")
    frame, _ = run_essays(backend, pceb.items, SETTINGS, cache_dir=tmp_path)
    assert len(frame) == 4 and frame["R-1"].gt(99.999).all() and frame["B-4"].gt(99.9).all()
    psydt = load_psydt(EVAL_DATA_DIR / "soulchat")
    frame, _ = run_dialogues(ScriptedBackend(lambda m: "<think>想</think>\n我在听。"), psydt.items, SETTINGS,
                             cache_dir=tmp_path)
    assert frame.reply.eq("我在听。").all()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("好的", "no JSON object"),
        ('{"strategy": 1} {"strategy": 2}', "2 JSON objects"),
        ('{"strategy": 1, "attitude": 2,}', "invalid JSON"),
        ('{"strategy": 1, "attitude": 2}', "missing keys: emotional_empathy"),
        ('{"strategy": 1, "attitude": 2, "emotional_empathy": 3, "cognitive_empathy": 0, "safety": 3, "x": 1}', "unexpected keys: x"),
        ('{"strategy": 4, "attitude": 2, "emotional_empathy": 3, "cognitive_empathy": 0, "safety": 3}', "strategy=4"),
        ('{"strategy": 2.5, "attitude": 2, "emotional_empathy": 3, "cognitive_empathy": 0, "safety": 3}', "strategy=2.5"),
        ('{"strategy": true, "attitude": 2, "emotional_empathy": 3, "cognitive_empathy": 0, "safety": 3}', "strategy=True"),
        ('<think>{"strategy": 1', "think block never closed"),
    ],
)
def test_parse_verdict_is_strict(text, reason):
    with pytest.raises(JudgeParseError, match=reason):
        parse_verdict(text)


def test_parse_verdict_reads_the_answer_after_think():
    verdict = '{"strategy": 3, "attitude": 2, "emotional_empathy": 1, "cognitive_empathy": 0, "safety": 3}'
    text = f'<think>草稿 {{"strategy": 0}}</think>\n```json\n{verdict}\n```'
    assert parse_verdict(text) == {"strategy": 3, "attitude": 2, "emotional_empathy": 1, "cognitive_empathy": 0, "safety": 3}


def test_generative_judge_counts_failures(tmp_path):
    samples = load_psydt(EVAL_DATA_DIR / "soulchat").items[:4]
    good = '{"strategy": 2, "attitude": 3, "emotional_empathy": 2, "cognitive_empathy": 1, "safety": 3}'
    backend = ScriptedBackend(lambda m: good if "我在听" in m[-1]["content"] else "不知道")
    replies = {s.id: ("我在听。" if i % 2 == 0 else "嗯") for i, s in enumerate(samples)}
    frame = GenerativeJudge(backend, cache_dir=tmp_path).judge(samples, replies, label="test")
    summary = summarize_judgements(frame)
    assert summary["judged"] == 4 and summary["parsed"] == 2 and summary["failed"] == 2
    assert summary["failure_reasons"] == {"no JSON object in the reply": 2}
    assert summary["attitude"] == 3.0 and summary["cognitive_empathy"] == 1.0


@pytest.fixture(scope="module")
def tiny(tiny_model_and_tokenizer):
    return tiny_model_and_tokenizer


def test_tiny_model_runs_deterministically(tiny, tmp_path):
    model, tokenizer = tiny
    items = [item for item in load_pceb(EVAL_DATA_DIR / "pceb") if item.question_type == "single"][:3]
    first, _ = run_choice(TransformersBackend(model, tokenizer, "tiny", batch_size=3, progress=False), items,
                          GenerationSettings(max_new_tokens=6), "pceb", cache_dir=tmp_path / "a")
    second, _ = run_choice(TransformersBackend(model, tokenizer, "tiny", batch_size=1, progress=False), items,
                           GenerationSettings(max_new_tokens=6), "pceb", cache_dir=tmp_path / "b")
    assert first.reply.tolist() == second.reply.tolist()


def test_probability_judge_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    samples = load_psydt(EVAL_DATA_DIR / "soulchat").items[:2]
    replies = {s.id: s.reference for s in samples}
    judge = ProbabilityJudge(model, tokenizer, "tiny-judge", batch_size=4)
    frame = judge.judge(samples, replies)
    again = ProbabilityJudge(model, tokenizer, "tiny-judge", batch_size=1).judge(samples, replies)
    for key in DIMENSIONS:
        assert frame[key].between(0, 3).all()
        assert frame[key].tolist() == pytest.approx(again[key].tolist(), abs=1e-4)  # padding does not change scores
    assert frame.digit_mass.between(0, 1).all()


def test_probability_judge_keeps_only_the_last_logits(tiny):
    import torch

    model, tokenizer = tiny
    samples = load_psydt(EVAL_DATA_DIR / "soulchat").items[:2]
    judge = ProbabilityJudge(model, tokenizer, "tiny-judge", batch_size=2)
    tokenizer.padding_side = "left"
    encoded = [judge._encode(dimension_prompt(s, s.reference, "safety")) for s in samples]
    kept = judge._digit_probabilities(encoded)
    batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt", padding=True)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions).logits
    assert full.shape[1] == max(len(e) for e in encoded) > 1           # every position, without logits_to_keep
    expected = torch.softmax(full[:, -1, :].float(), dim=-1)[:, judge.digit_ids]
    assert torch.allclose(kept, expected, atol=1e-6)


def test_tables_and_plots():
    assert PUBLISHED_PCEB.loc["Psyche-R1", "Case M"] == 56.26
    row = {column: 10.0 for column in PUBLISHED_PCEB.columns}
    table = pceb_comparison({"tiny-base": row}, chance=row, convention="strict")
    assert list(table.index[:3]) == ["tiny-base", "chance", "Qwen2.5-7B-Instruct"]
    assert list(table.source[:3]) == ["ours", "chance", "paper"] and len(table) == 2 + len(PUBLISHED_PCEB)
    assert list(table.convention[:3]) == ["strict", "expected value", "official (published)"]
    fig = plot_pceb_bars(table, intervals={"tiny-base": {"Case S": (2.0, 40.0)}})
    assert len(fig.axes) == 2 and fig.axes[1].get_title().endswith("our rows and chance")   # tiny rows in their own panel
    assert len(plot_pceb_bars(table[table.source == "paper"]).axes) == 1
    assert plot_empathy_radar({"a": {k: 1.0 for k in DIMENSIONS}, "none": {k: math.nan for k in DIMENSIONS}}) is not None


def test_find_checkpoints_lists_what_exists_and_what_is_missing(tmp_path, monkeypatch, tiny_model_path):
    from psyche_utils.evaluation import checkpoints as ckpt
    from psyche_utils.profiles import get_profile

    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(ckpt, "base_model_source", lambda profile: str(tiny_model_path))
    found, missing = ckpt.find_checkpoints(get_profile("tiny"))
    assert [c.stage for c in found] == ["base"] and found[0].path is None
    assert len(missing) == 2 and "03_sft" in missing[0] and "04_grpo" in missing[1]

    sft = tmp_path / "models" / "tiny" / "sft"
    sft.mkdir(parents=True)
    (sft / "config.json").write_text("{}", encoding="utf-8")
    found, missing = ckpt.find_checkpoints(get_profile("tiny"))
    assert [c.stage for c in found] == ["base", "sft"] and found[1].path == sft and len(missing) == 1
    before = found[1].name
    (sft / "model.safetensors").write_bytes(b"retrained")
    assert ckpt.find_checkpoints(get_profile("tiny"))[0][1].name != before  # new weights, new cache name
