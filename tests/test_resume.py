"""Resuming like a careful user expects: broken checkpoints skipped, changed hyperparameters refused,
one process deciding for all, and killed runs (SIGINT, SIGKILL, a kill during a save) that end with
the same weights as an uninterrupted run.

Weights are compared with ``torch.equal`` (bit-identical): on one CPU thread the resumed run
replays exactly the arithmetic of the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sft_fixture import fake_checkpoint, write_fixture

from psyche_utils.paths import REPO_ROOT
from psyche_utils.train import common
from psyche_utils.train.common import (
    FINGERPRINT_NAME,
    RecipeError,
    ResumeDecision,
    checkpoint_problem,
    decide_resume,
    latest_checkpoint,
    override_args,
    prepare_output_dir,
)

IDENTITY = {"stage": "sft", "train_file_sha256": "aaa", "records": 16}


# ---------------------------------------------------------------------------------------------
# Which checkpoint is usable


def test_a_complete_checkpoint_has_no_problem(tmp_path: Path):
    assert checkpoint_problem(fake_checkpoint(tmp_path / "checkpoint-2", 2)) is None


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: [p.unlink() for p in f.iterdir()], "empty folder"),
        (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda f: (f / "trainer_state.json").write_text("{\"glob", encoding="utf-8"), "trainer_state.json is unreadable"),
        (lambda f: _truncate(f / "model.safetensors", 40), "model.safetensors: truncated"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00"), "model.safetensors: truncated"),
        (lambda f: (f / "model.safetensors").unlink(), "no model weights"),
        (lambda f: _truncate(f / "optimizer.pt", 30), "optimizer.pt is truncated"),
        (lambda f: (f / "optimizer.pt").unlink(), "no optimizer.pt"),
    ],
    ids=["empty", "no-state", "bad-state", "truncated-weights", "no-header", "no-weights", "truncated-optimizer",
         "no-optimizer"],
)
def test_incomplete_checkpoints_are_recognised(tmp_path: Path, damage, problem):
    folder = fake_checkpoint(tmp_path / "checkpoint-4", 4)
    damage(folder)
    assert problem in checkpoint_problem(folder)


def _truncate(path: Path, drop: int) -> None:
    """Cut the last ``drop`` bytes, as a kill in the middle of writing the file would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - drop])


def test_the_newest_usable_checkpoint_is_chosen_and_the_skipped_ones_named(tmp_path: Path):
    decide_resume(tmp_path, IDENTITY, resume=True)  # the first run writes its fingerprint
    fake_checkpoint(tmp_path / "checkpoint-2", 2)
    _truncate(fake_checkpoint(tmp_path / "checkpoint-4", 4) / "model.safetensors", 40)
    (tmp_path / "checkpoint-6").mkdir()
    messages: list[str] = []
    assert latest_checkpoint(tmp_path, report=messages.append) == tmp_path / "checkpoint-2"
    assert [m.split(":")[0] for m in messages] == [f"Skipping {tmp_path / 'checkpoint-6'}", f"Skipping {tmp_path / 'checkpoint-4'}"]
    decision = decide_resume(tmp_path, IDENTITY, resume=True)
    assert decision.checkpoint == tmp_path / "checkpoint-2" and len(decision.skipped) == 2


def test_no_usable_checkpoint_means_a_fresh_start(tmp_path: Path, capsys):
    (tmp_path / "checkpoint-3").mkdir()
    assert decide_resume(tmp_path, IDENTITY, resume=True).checkpoint is None
    assert "No usable checkpoint" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The fingerprint


def test_changed_hyperparameters_are_refused_with_the_list_then_allowed_by_the_flag(tmp_path: Path):
    before = {**IDENTITY, "hp.learning_rate": 0.001, "hp.seed": 42, "hp.lora_r": 16}
    assert decide_resume(tmp_path, before, resume=True).checkpoint is None
    fake_checkpoint(tmp_path / "checkpoint-3", 3)
    after = {**before, "hp.learning_rate": 0.002, "hp.seed": 7}
    with pytest.raises(RecipeError, match=r"other hyperparameters \(hp\.learning_rate: checkpoint 0\.001, now 0\.002; "
                                          r"hp\.seed: checkpoint 42, now 7\).*allow_changed_hyperparameters"):
        decide_resume(tmp_path, after, resume=True)
    decision = decide_resume(tmp_path, after, resume=True, allow_changed_hyperparameters=True)
    assert decision.changed == {"learning_rate": (0.001, 0.002), "seed": (42, 7)}
    saved = json.loads((tmp_path / FINGERPRINT_NAME).read_text(encoding="utf-8"))
    assert saved["hp.learning_rate"] == 0.002
    assert saved["changed_on_resume"] == [{"checkpoint": "checkpoint-3", "changed": {"learning_rate": [0.001, 0.002],
                                                                                      "seed": [42, 7]}}]
    # Other data is never allowed, whatever the flag says; nor a checkpoint of unknown origin.
    with pytest.raises(RecipeError, match="different run"):
        decide_resume(tmp_path, {**after, "records": 17}, resume=True, allow_changed_hyperparameters=True)
    (tmp_path / FINGERPRINT_NAME).unlink()
    with pytest.raises(RecipeError, match=f"no {FINGERPRINT_NAME}"):
        decide_resume(tmp_path, after, resume=True, allow_changed_hyperparameters=True)


def test_the_fingerprint_holds_what_changes_training():
    from psyche_utils.train.sft import load_recipe

    values = common.hyperparameters(load_recipe("tiny_cpu"))
    for key in ("learning_rate", "seed", "max_length", "assistant_only_loss", "per_device_train_batch_size",
                "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "max_steps", "lora_r",
                "lora_alpha", "lora_dropout", "use_lora", "world_size"):
        assert key in values, key
    assert common.hyperparameters(load_recipe("tiny_cpu", {"learning_rate": 1e-4}))["learning_rate"] == 1e-4
    from psyche_utils.train.grpo import load_recipe as load_grpo

    grpo_values = common.hyperparameters(load_grpo("tiny_cpu"))
    for key in ("beta", "num_generations", "reward_weights", "temperature", "loss_type", "scale_rewards"):
        assert key in grpo_values, key


# ---------------------------------------------------------------------------------------------
# Several processes: rank 0 decides


class FakeState:
    def __init__(self, main: bool, processes: int):
        self.is_main_process, self.num_processes, self.events = main, processes, []

    def wait_for_everyone(self):
        self.events.append("barrier")


def test_only_rank_0_reads_and_writes_the_fingerprint(tmp_path: Path, monkeypatch):
    import accelerate.utils

    sent = ResumeDecision(tmp_path / "checkpoint-2")
    calls = []

    def broadcast(payload, from_process=0):
        calls.append(list(payload))
        payload[0] = sent  # what rank 0 decided
        return payload

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    monkeypatch.setattr(common, "decide_resume", lambda *a, **k: pytest.fail("a non-main process decided"))
    worker = FakeState(main=False, processes=2)
    assert prepare_output_dir(tmp_path, IDENTITY, resume=True, state=worker) is sent
    assert worker.events == ["barrier"] and calls == [[None]]
    assert not (tmp_path / FINGERPRINT_NAME).exists()


def test_rank_0_errors_reach_every_process(tmp_path: Path, monkeypatch):
    import accelerate.utils

    def refuse(*args, **kwargs):
        raise RecipeError("checkpoint-2 was made by a different run")

    monkeypatch.setattr(common, "decide_resume", refuse)
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda payload, from_process=0: payload)
    with pytest.raises(RecipeError, match="different run"):
        prepare_output_dir(tmp_path, IDENTITY, resume=True, state=FakeState(main=True, processes=2))


# ---------------------------------------------------------------------------------------------
# Killed runs end where an uninterrupted run ends


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(stage: str, recipe: str, overrides: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "psyche_utils.train", stage, "--config", recipe, *override_args(overrides)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(process: subprocess.Popen, checkpoint: Path, sig: signal.Signals, timeout: float = 240) -> str:
    """Send ``sig`` as soon as ``checkpoint`` is complete; returns the process's stderr."""
    deadline = time.monotonic() + timeout
    while checkpoint_problem(checkpoint) is not None:
        if process.poll() is not None:
            raise AssertionError(f"run ended before {checkpoint.name}: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {checkpoint.name} within {timeout} s")
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == (130 if sig == signal.SIGINT else -9), stderr[-3000:]
    return stderr


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


def _sft_settings(tmp_path: Path) -> dict:
    train_file = write_fixture(tmp_path / "sft.jsonl", 24)
    return {"train_file": str(train_file), "per_device_train_batch_size": 2, "max_steps": 16, "save_strategy": "steps",
            "save_steps": 2, "save_total_limit": 10, "logging_steps": 1, "disable_tqdm": True, "learning_rate": 3e-3}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_sft_killed_and_resumed_ends_with_the_uninterrupted_weights(tmp_path: Path, sig, tiny_model_path):
    from psyche_utils.train.sft import run_sft

    settings = _sft_settings(tmp_path)
    killed = tmp_path / "killed"
    stderr = _kill_after(_start("sft", "configs/sft/tiny_cpu.yaml", {**settings, "output_dir": str(killed)}),
                         killed / "checkpoint-4", sig)
    if sig == signal.SIGINT:
        assert "Traceback" not in stderr and "interrupted" in stderr
    if sig == signal.SIGKILL:
        # A kill during a save: the newest checkpoint is half written, and an empty one sits above it.
        newest = common.checkpoints(killed)[0]
        _truncate(newest / "model.safetensors", 100)
        (killed / "checkpoint-99").mkdir()
    resumed = run_sft("tiny_cpu", {**settings, "output_dir": str(killed)})
    assert resumed.resumed_from is not None and resumed.global_step == 16
    if sig == signal.SIGKILL:
        assert resumed.resumed_from not in (killed / "checkpoint-99", newest)
    card = (killed / common.MODEL_CARD_NAME).read_text(encoding="utf-8")
    assert resumed.resumed_from.name in card
    straight = tmp_path / "straight"
    run_sft("tiny_cpu", {**settings, "output_dir": str(straight)})
    _assert_same_weights(killed, straight)


@pytest.fixture(scope="module")
def grpo_start(tmp_path_factory, tiny_model_path) -> Path:
    """A tiny model briefly SFT-trained to write the think layout part of the time, plus GRPO prompts."""
    from test_grpo import fixture_questions

    from psyche_utils.formatting import grpo_record, sft_question_record, write_dataset
    from psyche_utils.train.sft import run_sft

    workdir = tmp_path_factory.mktemp("grpo-resume")
    questions = fixture_questions()
    write_dataset([grpo_record(q) for q in questions], workdir / "grpo.jsonl", kind="grpo", settings={"fixture": True})
    sft_records = [{**sft_question_record(q, q.explanation, "seed_explanation"), "id": f"s-{i}-{k}"}
                   for k in range(4) for i, q in enumerate(questions)]
    (workdir / "sft.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft_records),
                                       encoding="utf-8")
    run_sft("tiny_cpu", {"train_file": str(workdir / "sft.jsonl"), "output_dir": str(workdir / "sft"), "max_steps": 40,
                         "per_device_train_batch_size": 8, "save_strategy": "no", "disable_tqdm": True,
                         "lr_scheduler_type": "constant", "resume": False})
    return workdir


def _grpo_settings(workdir: Path) -> dict:
    return {"init_from": str(workdir / "sft"), "train_file": str(workdir / "grpo.jsonl"), "max_steps": 6,
            "max_completion_length": 12, "num_generations": 4, "per_device_train_batch_size": 16,
            "generation_batch_size": 16, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 10,
            "resume": True, "disable_tqdm": True}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_grpo_killed_and_resumed_ends_with_the_uninterrupted_weights(grpo_start: Path, tmp_path: Path, sig):
    from psyche_utils.train.grpo import run_grpo

    settings = _grpo_settings(grpo_start)
    killed = tmp_path / "killed"
    wait_for = "checkpoint-4" if sig == signal.SIGKILL else "checkpoint-2"
    stderr = _kill_after(_start("grpo", "configs/grpo/tiny_cpu.yaml", {**settings, "output_dir": str(killed)}),
                         killed / wait_for, sig)
    if sig == signal.SIGINT:
        assert "Traceback" not in stderr
    else:
        newest = common.checkpoints(killed)[0]
        (newest / "trainer_state.json").unlink()  # killed before the trainer state was written
    resumed = run_grpo("tiny_cpu", {**settings, "output_dir": str(killed)})
    assert resumed.resumed_from is not None and resumed.global_step == 6
    if sig == signal.SIGKILL:
        assert resumed.resumed_from != newest
    straight = tmp_path / "straight"
    run_grpo("tiny_cpu", {**settings, "output_dir": str(straight)})
    _assert_same_weights(killed, straight)
