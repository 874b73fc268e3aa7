import json

import pytest

from psyche_utils.answers import extract_answer, split_reasoning
from psyche_utils.formatting import (
    RecordError,
    Exclusion,
    card_path,
    filter_by_tokens,
    grpo_record,
    parse_chat,
    read_dataset,
    render_chat,
    filter_well_formed,
    sft_dialogue_record,
    sft_question_record,
    token_lengths,
    validate_grpo_record,
    validate_sft_record,
    verify_card,
    write_dataset,
)
from psyche_utils.prompts import SYSTEM_PROMPT_CASE, SYSTEM_PROMPT_GENERAL, THINK_INSTRUCTION
from psyche_utils.schema import Post, Question


def _question(qid="q1", answer="ACD", question_type="multi", kind="knowledge", stem="下列属于焦虑障碍的有？"):
    return Question(
        id=qid,
        question=stem,
        options={"A": "惊恐障碍", "B": "双相障碍", "C": "广泛性焦虑障碍", "D": "社交焦虑障碍", "E": ""},
        answer=answer,
        question_type=question_type,
        subject="变态心理学",
        explanation="双相障碍属于心境障碍。",
        kind=kind,
    )


POST = Post(id="p1", post="最近总是失眠，白天也没精神，很焦虑。", reply="听起来你最近很辛苦。", topic="睡眠")


def test_sft_question_record_has_the_contract_shape():
    record = sft_question_record(_question(), "先回忆焦虑障碍的分类，双相障碍属于心境障碍。", "teacher")
    assert list(record) == ["id", "source", "rationale_origin", "question_type", "subject", "messages"]
    assert (record["source"], record["rationale_origin"], record["question_type"]) == ("question", "teacher", "multi")
    system, user, assistant = record["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT_GENERAL}
    assert user["role"] == "user" and user["content"].startswith(THINK_INSTRUCTION)
    assert "E." not in user["content"]
    assert assistant["content"] == "<think>\n先回忆焦虑障碍的分类，双相障碍属于心境障碍。\n</think>\n\n答案：ACD"
    assert extract_answer(assistant["content"]) == "ACD"
    validate_sft_record(record)


def test_case_questions_get_the_case_system_prompt():
    record = grpo_record(_question(kind="case", answer="B", question_type="single"))
    assert record["prompt"][0]["content"] == SYSTEM_PROMPT_CASE
    assert list(record) == ["id", "prompt", "answer", "question_type", "subject"]
    validate_grpo_record(record)


def test_dialogue_record_carries_the_analysis_in_the_think_block():
    record = sft_dialogue_record(POST, "来访者失眠、压力大；先共情，再给建议。", POST.reply, "teacher_dialogue")
    assert record["question_type"] == "dialogue" and record["subject"] == "睡眠"
    assert record["messages"][2]["content"] == "<think>\n来访者失眠、压力大；先共情，再给建议。\n</think>\n\n听起来你最近很辛苦。"
    assert record["messages"][1]["content"].endswith(POST.post)
    validate_sft_record(record)
    assert sft_dialogue_record(Post("p2", "帖子", "回复"), "分析", "回复", "teacher_dialogue")["subject"] == "dialogue"


def test_empty_analysis_is_refused_and_filtered_with_a_report():
    empty = sft_dialogue_record(POST, "", POST.reply, "shipped_reply")
    assert empty["messages"][2]["content"] == "<think>\n\n</think>\n\n听起来你最近很辛苦。"
    with pytest.raises(RecordError, match=r"'messages\[2\].content' is not well formed.*empty reasoning block"):
        validate_sft_record(empty)
    good = sft_question_record(_question(), "推理", "teacher")
    kept, removed = filter_well_formed([good, empty])
    assert kept == [good]
    assert removed == [Exclusion(POST.id, "sft_format", "not well formed", "empty reasoning block")]


def test_builders_refuse_wrong_origins_and_empty_text():
    with pytest.raises(RecordError, match="q1.*origin"):
        sft_question_record(_question(), "推理", "shipped_reply")
    with pytest.raises(RecordError, match="'rationale' is empty"):
        sft_question_record(_question(), "  ", "teacher")
    with pytest.raises(RecordError, match="'reply' is empty"):
        sft_dialogue_record(POST, "分析", "", "teacher_dialogue")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(source="book"), "'source'"),
        (lambda r: r.update(question_type="dialogue"), "'question_type'"),
        (lambda r: r["messages"].pop(), "'messages'"),
        (lambda r: r["messages"][2].update(content="答案：ACD"), r"'messages\[2\].content'"),
        (lambda r: r["messages"][1].update(role="assistant"), r"'messages\[1\].role'"),
    ],
)
def test_sft_validation_names_the_field(change, field):
    record = sft_question_record(_question(), "推理", "seed_explanation")
    change(record)
    with pytest.raises(RecordError, match=f"id 'q1'.*{field}"):
        validate_sft_record(record)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(answer="CA"), "'answer'"),
        (lambda r: r.update(answer="F"), "'answer'"),
        (lambda r: r.update(question_type="single"), "'answer'"),
        (lambda r: r.update(question_type="essay"), "'question_type'"),
        (lambda r: r["prompt"].append({"role": "assistant", "content": "x"}), "'prompt'"),
    ],
)
def test_grpo_validation_names_the_field(change, field):
    record = grpo_record(_question())
    change(record)
    with pytest.raises(RecordError, match=f"id 'q1'.*{field}"):
        validate_grpo_record(record)


def test_render_with_the_chat_template_and_parse_back(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    for record in (
        sft_question_record(_question(), "第一步：回忆分类。\n第二步：排除B。", "teacher"),
        sft_dialogue_record(POST, "来访者焦虑，需要被理解。", "听起来你最近很辛苦，我们一起想想办法。", "teacher_dialogue"),
    ):
        text = render_chat(tokenizer, record["messages"])
        assert text.startswith("<|im_start|>system\n")
        assert parse_chat(text) == record["messages"]
        reasoning, answer = split_reasoning(parse_chat(text)[-1]["content"])
        assert reasoning and answer
    assert extract_answer(parse_chat(render_chat(tokenizer, sft_question_record(_question(), "推理", "teacher")["messages"]))[-1]["content"]) == "ACD"
    with pytest.raises(RecordError, match="outside any turn"):
        parse_chat("stray text<|im_start|>user\nhi<|im_end|>\n")


def test_token_filter_removes_and_reports_long_prompts(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    short = grpo_record(_question("short"))
    long = grpo_record(_question("long", stem="来访者的情况如下：" + "他长期失眠、焦虑、注意力不集中。" * 40))
    lengths = token_lengths(tokenizer, [short["prompt"], long["prompt"]], add_generation_prompt=True)
    expected_short = len(tokenizer.apply_chat_template(short["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
    assert lengths[0] == expected_short and lengths[1] > lengths[0]
    kept, removed, measured = filter_by_tokens([short, long], tokenizer, lengths[0], kind="grpo")
    assert [r["id"] for r in kept] == ["short"]
    assert removed == [Exclusion("long", "grpo_token_budget", "over token budget", f"{lengths[1]} > {lengths[0]} tokens")]
    assert measured == lengths
    sft = sft_question_record(_question("s"), "推理", "teacher")
    (sft_length,) = token_lengths(tokenizer, [sft["messages"]], add_generation_prompt=False)
    assert filter_by_tokens([sft], tokenizer, sft_length, kind="sft")[0] == [sft]
    assert filter_by_tokens([sft], tokenizer, sft_length - 1, kind="sft")[0] == []
    with pytest.raises(ValueError, match="kind"):
        filter_by_tokens([sft], tokenizer, 10, kind="dpo")


def test_card_counts_match_the_file_and_output_is_deterministic(tmp_path):
    records = [
        sft_question_record(_question("q1"), "推理一", "teacher"),
        sft_question_record(_question("q2", answer="B", question_type="single"), "推理二", "seed_explanation"),
        sft_dialogue_record(POST, "来访者失眠，先共情。", POST.reply, "teacher_dialogue"),
    ]
    exclusions = [Exclusion("q9", "rationale", "no usable rationale"), Exclusion("p9", "dialogue", "shipped reply fails checks")]
    path = tmp_path / "sft.jsonl"
    card = write_dataset(records, path, kind="sft", settings={"seed": 42}, exclusions=exclusions)
    assert card_path(path).name == "sft.card.json"
    assert json.loads(card_path(path).read_text(encoding="utf-8")) == card
    assert card["records"] == 3
    assert card["by_source"] == {"dialogue": 1, "question": 2}
    assert card["by_rationale_origin"] == {"seed_explanation": 1, "teacher": 1, "teacher_dialogue": 1}
    assert card["by_question_type"] == {"dialogue": 1, "multi": 1, "single": 1}
    assert card["exclusions"] == {"dialogue: shipped reply fails checks": 1, "rationale: no usable rationale": 1}
    assert verify_card(path) == card
    assert read_dataset(path, "sft") == records
    first = path.read_bytes()
    write_dataset(records, path, kind="sft", settings={"seed": 42}, exclusions=exclusions)
    assert path.read_bytes() == first

    import datasets

    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert loaded.num_rows == 3 and loaded[0]["messages"] == records[0]["messages"]

    tampered = json.loads(card_path(path).read_text(encoding="utf-8"))
    tampered["by_source"]["question"] = 5
    card_path(path).write_text(json.dumps(tampered), encoding="utf-8")
    with pytest.raises(RecordError, match="sha256|by_source"):
        verify_card(path)
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match="sha256"):
        verify_card(path)


def test_write_and_read_name_the_bad_record(tmp_path):
    good = grpo_record(_question("g1"))
    with pytest.raises(RecordError, match="record 2.*'id' duplicates 'g1'"):
        write_dataset([good, dict(good)], tmp_path / "grpo.jsonl", kind="grpo", settings={})
    path = tmp_path / "grpo.jsonl"
    write_dataset([good], path, kind="grpo", settings={})
    path.write_text(path.read_text(encoding="utf-8") + '{"id": "g2", "answer": "B"}\nnot json\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"grpo.jsonl, line 3, field '<json>': not valid JSON"):
        read_dataset(path, "grpo")
    path.write_text(path.read_text(encoding="utf-8").replace("not json\n", ""), encoding="utf-8")
    with pytest.raises(RecordError, match=r"grpo.jsonl:2 \(id 'g2'\): field 'subject'"):
        read_dataset(path, "grpo")
    with pytest.raises(FileNotFoundError, match="02_rationales_and_selection"):
        read_dataset(tmp_path / "missing.jsonl", "grpo")
