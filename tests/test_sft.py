"""SFT: configuration, data errors, loss masks, learning, resuming and saving on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sft_fixture import fake_checkpoint, fixture_records, write_fixture
from transformers import AutoModelForCausalLM, TrainerCallback

from psyche_utils.formatting import RecordError
from psyche_utils.llm import GenerationSettings, TransformersBackend
from psyche_utils.models import load_model_and_tokenizer
from psyche_utils.profiles import get_profile
from psyche_utils.train import common
from psyche_utils.train.common import RecipeError, decide_resume, read_loss_log
from psyche_utils.train.sft import (
    is_well_formed,
    load_recipe,
    loss_mask_spans,
    run_sft,
    token_loss,
    well_formed_rate,
)

#: Small, fast settings for the tests (the tiny recipe itself is sized for the notebook's data).
QUICK = {"per_device_train_batch_size": 2, "logging_steps": 1, "disable_tqdm": True, "save_strategy": "no"}


# ---------------------------------------------------------------------------------------------
# Configuration


def test_command_line_overrides_are_typed_and_only_the_given_keys():
    recipe = load_recipe(
        "configs/sft/tiny_cpu.yaml",
        argv=["--learning_rate", "1e-4", "--packing", "--resume", "false", "--max_train_samples", "8"],
    )
    assert recipe.shown_source == "configs/sft/tiny_cpu.yaml"
    assert recipe.overrides == {"learning_rate": 1e-4, "packing": True, "resume": False, "max_train_samples": 8}
    assert recipe.trainer.max_steps == 150, "keys not given keep the recipe's value"


def test_output_dir_defaults_to_the_profile_model_dir():
    config = load_recipe("tiny_cpu").trainer
    assert Path(config.output_dir).parts[-3:] == ("models", "tiny", "sft")


# ---------------------------------------------------------------------------------------------
# Data and formats


def test_missing_training_file_says_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_rationales_and_selection"):
        run_sft("tiny_cpu", {"train_file": str(tmp_path / "sft.jsonl"), "output_dir": str(tmp_path / "out")})


def test_malformed_record_names_file_line_and_field(tmp_path):
    records = fixture_records(2)
    records[1]["messages"][2]["content"] = "答案：A"  # no think block
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(RecordError, match=r"sft\.jsonl:2.*messages\[2\]\.content"):
        run_sft("tiny_cpu", {"train_file": str(path), "output_dir": str(tmp_path / "out")})


def test_loss_falls_on_the_assistant_turn_only(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    messages = fixture_records(1)[0]["messages"]
    spans = loss_mask_spans(tokenizer, messages)
    trained = "".join(text for text, carries_loss, _ in spans if carries_loss)
    ignored = "".join(text for text, carries_loss, _ in spans if not carries_loss)
    assert trained.strip().startswith(messages[2]["content"])
    assert trained.rstrip().endswith("<|im_end|>"), "the turn end carries loss, so the model learns to stop"
    assert messages[0]["content"] in ignored and messages[1]["content"] in ignored
    assert "".join(text for text, _, _ in spans) == tokenizer.apply_chat_template(messages, tokenize=False)
    everything = loss_mask_spans(tokenizer, messages, assistant_only=False)
    assert all(carries_loss for _, carries_loss, _ in everything)
    assert sum(n for _, _, n in everything) == sum(n for _, _, n in spans)


def test_token_loss_matches_the_model_loss_on_each_part(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    record = fixture_records(1)[0]
    spans = loss_mask_spans(tokenizer, record["messages"])
    ids = torch.tensor([tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=False)])
    assistant = torch.tensor([[loss for _, loss, n in spans for _ in range(n)]])
    with torch.no_grad():
        for part, keep in (("assistant", assistant), ("prompt", ~assistant)):
            expected = model(input_ids=ids, labels=torch.where(keep, ids, -100)).loss.item()
            assert token_loss(model, tokenizer, [record], part=part) == pytest.approx(expected, rel=1e-4)
    # Padding in a batch changes nothing: two records together give the token-weighted mean.
    pair = fixture_records(2)
    assert token_loss(model, tokenizer, pair, batch_size=2) == pytest.approx(token_loss(model, tokenizer, pair, batch_size=1), rel=1e-4)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<think>\n推理\n</think>\n\n答案：B", True),
        ("<think>\n\n</think>\n\n你一定很辛苦。", False),  # empty reasoning: the official prompt asks for reasoning
        ("<think>\n推理\n</think>\n\n", False),  # no answer
        ("<think>\n推理没有结束", False),  # never closed
        ("答案：B", False),  # no think block
        ("<think>\n<think>\n</think>\n\n答案：B", False),  # opened twice
        ("<think>\na\n</think>\n</think>\n\n答案：B", False),  # closed twice
        ("前言<think>\na\n</think>\n\n答案：B", False),  # text before the block
    ],
)
def test_is_well_formed(reply, expected):
    from psyche_utils import answers

    assert is_well_formed is answers.is_well_formed, "one definition of a well-formed reply"
    assert is_well_formed(reply) is expected


def test_well_formed_rate():
    assert well_formed_rate(["<think>\na\n</think>\n\nB", "B", "<think>\nb\n</think>\n\nC", "x"]) == 0.5
    assert well_formed_rate([]) == 0.0


def test_packed_sequences_do_not_attend_to_each_other(tiny_model_and_tokenizer):
    """Packing (padding-free) relies on restarting position ids: the second example's logits
    must be the same packed behind another example as alone. transformers only derives the
    per-example mask from the position ids without a KV cache, which is why training passes
    use_cache=False."""
    model, tokenizer = tiny_model_and_tokenizer
    first = tokenizer("合理情绪疗法由艾利斯提出。", return_tensors="pt")["input_ids"]
    second = tokenizer("依恋理论由鲍尔比提出，答案：B", return_tensors="pt")["input_ids"]
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(first.shape[1]), torch.arange(second.shape[1])]).unsqueeze(0)
    with torch.no_grad():
        alone = model(input_ids=second).logits
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, first.shape[1] :]
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Training runs (tiny model, seconds each)


def _sample(model, tokenizer, records, seed=0):
    backend = TransformersBackend(model, tokenizer, name="tiny", batch_size=16, progress=False)
    settings = GenerationSettings(max_new_tokens=48, temperature=0.7, top_p=0.9, seed=seed)
    return backend.generate([record["messages"][:2] for record in records], settings)


@pytest.mark.slow
def test_tiny_sft_learns_the_think_format_and_writes_everything(tmp_path, tiny_model_and_tokenizer):
    train_file = write_fixture(tmp_path / "sft.jsonl", 48, seed=0)
    held_out = fixture_records(16, seed=1, prefix="held")
    base, tokenizer = tiny_model_and_tokenizer
    before = well_formed_rate(_sample(base, tokenizer, held_out))

    output_dir = tmp_path / "model"
    run = run_sft(
        "tiny_cpu",
        {**QUICK, "per_device_train_batch_size": 4, "train_file": str(train_file), "output_dir": str(output_dir),
         "max_steps": 96, "learning_rate": 3e-3},
    )
    assert run.final_loss < 0.35 * run.first_loss, (run.first_loss, run.final_loss)

    trained, trained_tokenizer = load_model_and_tokenizer(get_profile("tiny"), output_dir)
    after = well_formed_rate(_sample(trained, trained_tokenizer, held_out))
    assert before == 0.0
    assert after >= 0.75, after

    # What the run leaves behind: weights, stop tokens, loss log, model card, fingerprint.
    generation = json.loads((output_dir / "generation_config.json").read_text(encoding="utf-8"))
    stop = generation["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop and tokenizer.pad_token_id in stop
    log = read_loss_log(output_dir / common.LOSS_LOG_NAME)
    assert [entry["step"] for entry in log] == list(range(1, run.global_step + 1))
    card = (output_dir / common.MODEL_CARD_NAME).read_text(encoding="utf-8")
    assert common.sha256_file(train_file) in card and "learning_rate" in card and "0.003" in card
    assert json.loads((output_dir / common.FINGERPRINT_NAME).read_text())["records"] == 48


class StopAt(TrainerCallback):
    """Interrupt training after ``step`` updates, as a crash or a time limit would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_interrupted_run_resumes_from_the_saved_step(tmp_path):
    train_file = write_fixture(tmp_path / "sft.jsonl", 16)
    settings = {**QUICK, "train_file": str(train_file), "max_steps": 6, "save_strategy": "steps", "save_steps": 3}

    interrupted = tmp_path / "interrupted"
    first = run_sft("tiny_cpu", {**settings, "output_dir": str(interrupted)}, callbacks=[StopAt(3)])
    assert first.global_step == 3 and (interrupted / "checkpoint-3").is_dir()

    resumed = run_sft("tiny_cpu", {**settings, "output_dir": str(interrupted)})
    assert resumed.resumed_from == interrupted / "checkpoint-3"
    assert resumed.global_step == 6
    assert [entry["step"] for entry in resumed.log] == [1, 2, 3, 4, 5, 6]

    straight = tmp_path / "straight"
    run_sft("tiny_cpu", {**settings, "output_dir": str(straight)})
    resumed_weights = load_file(interrupted / "model.safetensors")
    straight_weights = load_file(straight / "model.safetensors")
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-5, rtol=1e-4, msg=name)

    # Starting over removes the old checkpoints instead of resuming from them.
    fresh = run_sft("tiny_cpu", {**settings, "output_dir": str(interrupted), "resume": False, "max_steps": 2,
                                 "save_strategy": "no"})
    assert fresh.resumed_from is None and fresh.global_step == 2
    assert not list(interrupted.glob("checkpoint-*"))


def test_resume_refuses_a_checkpoint_made_from_other_data(tmp_path):
    assert decide_resume(tmp_path, {"train_file_sha256": "aaa", "records": 16}, resume=True).checkpoint is None
    fake_checkpoint(tmp_path / "checkpoint-3", 3)
    decision = decide_resume(tmp_path, {"train_file_sha256": "aaa", "records": 16}, resume=True)
    assert decision.checkpoint == tmp_path / "checkpoint-3"
    with pytest.raises(RecipeError, match=r"checkpoint-3.*train_file_sha256.*'aaa'.*'bbb'.*--resume false"):
        decide_resume(tmp_path, {"train_file_sha256": "bbb", "records": 16}, resume=True)


@pytest.mark.slow
def test_lora_run_saves_the_adapter_and_an_equivalent_merged_model(tmp_path, tiny_model_and_tokenizer):
    train_file = write_fixture(tmp_path / "sft.jsonl", 8)
    output_dir = tmp_path / "lora"
    run_sft(
        "tiny_cpu",
        {**QUICK, "train_file": str(train_file), "output_dir": str(output_dir), "use_lora": True, "lora_r": 4,
         "lora_alpha": 8, "max_steps": 3, "learning_rate": 1e-2},
    )
    assert (output_dir / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with_adapter, tokenizer = load_model_and_tokenizer(get_profile("tiny"), output_dir / "adapter")
    base, _ = tiny_model_and_tokenizer
    ids = tokenizer("来访者中心疗法由罗杰斯提出。", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
        adapter_logits = with_adapter(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4), "the adapter changed nothing"


# ---------------------------------------------------------------------------------------------
# Records over max_length: removed and reported, never truncated unseen


def _varied_records(count: int) -> list[dict]:
    """Fixture records whose replies grow with the index, so a budget splits them."""
    records = fixture_records(count)
    for index, record in enumerate(records):
        reply = record["messages"][2]["content"]
        record["messages"][2]["content"] = reply.replace("</think>", "补充说明。" * index + "\n</think>", 1)
    return records


def test_lengths_are_measured_as_trl_tokenizes(tmp_path, tiny_model_and_tokenizer):
    from trl import SFTConfig, SFTTrainer

    from psyche_utils.train.sft import records_to_dataset, training_token_lengths

    model, tokenizer = tiny_model_and_tokenizer
    records = _varied_records(6)
    for assistant_only in (True, False):
        config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_length=None, report_to="none",
                           assistant_only_loss=assistant_only)
        trainer = SFTTrainer(model=model, args=config, train_dataset=records_to_dataset(records), processing_class=tokenizer)
        trl_lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        assert training_token_lengths(tokenizer, records, assistant_only_loss=assistant_only) == trl_lengths


@pytest.mark.slow
def test_records_over_max_length_are_removed_and_reported(tmp_path, tiny_model_and_tokenizer, capsys):
    from psyche_utils.train.sft import training_token_lengths

    _, tokenizer = tiny_model_and_tokenizer
    records = _varied_records(12)
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    lengths = training_token_lengths(tokenizer, records, assistant_only_loss=True)
    budget = sorted(lengths)[7]
    over = [r["id"] for r, n in zip(records, lengths) if n > budget]
    assert 0 < len(over) < len(records)
    settings = {**QUICK, "train_file": str(path), "output_dir": str(tmp_path / "out"), "max_steps": 2,
                "max_length": budget}
    run = run_sft("tiny_cpu", settings)
    assert run.examples == len(records) - len(over) and [rid for rid, _ in run.removed] == over
    printed = capsys.readouterr().out
    assert f"Removed {len(over)} of {len(records)} records longer than max_length {budget}" in printed
    card = (tmp_path / "out" / common.MODEL_CARD_NAME).read_text(encoding="utf-8")
    assert f"| `records_read` | {len(records)} |" in card
    assert f"| `records_trained_on` | {len(records) - len(over)} |" in card
    assert f"| `removed_over_max_length_{budget}` | {len(over)} |" in card
    assert all(rid in card for rid in over)
    with pytest.raises(RecipeError, match=rf"{len(over)} record\(s\) are longer than max_length {budget} tokens: {over[0]}"):
        run_sft("tiny_cpu", {**settings, "refuse_overlong": True, "output_dir": str(tmp_path / "refused")})
