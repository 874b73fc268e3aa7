"""Supervised fine-tuning: teach the base model to think inside ``<think>`` and then answer.

One function, :func:`run_sft`, trains every profile: the notebook calls it in-process, and
``python -m psyche_utils.train sft --config configs/sft/<recipe>.yaml [--key value ...]`` calls
it from the command line, which is what ``accelerate launch`` runs on one GPU or eight. The
recipe decides the hyperparameters; the profile it names decides how the base model is loaded
(the tiny stand-in, Qwen2.5-7B-Instruct in 4-bit with LoRA adapters, or in bf16 for a full
fine-tune). Loss is computed on the assistant turns only (``assistant_only_loss``): the model
should learn to write rationales and answers, not to reproduce the system prompt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from psyche_utils.answers import THINK_CLOSE, THINK_OPEN, split_reasoning
from psyche_utils.formatting import card_path, read_dataset
from psyche_utils.memory import GIB, estimate_for_profile
from psyche_utils.models import base_model_source, load_model_and_tokenizer
from psyche_utils.paths import REPO_ROOT, model_dir, outputs_path
from psyche_utils.profiles import get_profile, select_precision
from psyche_utils.train.common import (
    LOSS_LOG_NAME,
    build_configs,
    effective_batch_size,
    lora_config,
    parse_overrides,
    prepare_output_dir,
    read_loss_log,
    read_recipe,
    default_recipe_for,
    launch_command_for,
    recipe_path,
    save_trained_model,
    sha256_file,
    write_loss_log,
    write_model_card,
)

STAGE = "sft"


@dataclass
class SFTRunArguments:
    """Recipe keys that are about this project's run rather than TRL's trainer."""

    profile: str = field(default="tiny", metadata={"help": "tiny, qlora or full: how the base model is loaded"})
    train_file: str | None = field(
        default=None, metadata={"help": "SFT records (JSON lines); default outputs/data/sft.jsonl from notebook 02"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "train on the first N records only (quick trials)"}
    )
    resume: bool = field(
        default=True, metadata={"help": "continue from the newest checkpoint of the same run; false starts over"}
    )
    use_lora: bool | None = field(default=None, metadata={"help": "train LoRA adapters; default: what the profile says"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "'all-linear' or a comma-separated list of module names"}
    )
    merge_lora: bool = field(default=True, metadata={"help": "also save a merged full model beside the adapter"})
    cpu_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads while training; default: torch's own choice"}
    )


@dataclass
class SFTRun:
    """What a finished run leaves behind, for the notebook's plots and tables."""

    output_dir: Path
    log: list[dict[str, Any]]
    global_step: int
    resumed_from: Path | None
    train_runtime: float
    train_tokens: int
    examples: int
    effective_batch: int

    @property
    def first_loss(self) -> float:
        return float(self.log[0]["loss"])

    @property
    def final_loss(self) -> float:
        return float(self.log[-1]["loss"])

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_runtime if self.train_runtime > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Configuration


def default_recipe(profile_name: str | None = None) -> Path:
    """The recipe for a profile (by default the active one)."""
    return default_recipe_for(STAGE, profile_name)


def recipe_values(recipe: str | Path, overrides: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """The recipe file's keys with the overrides applied and the output folder filled in."""
    path = recipe_path(recipe, STAGE)
    values = {**read_recipe(path), **dict(overrides or {})}
    values.setdefault("output_dir", str(model_dir(str(values.get("profile", "tiny")), STAGE)))
    return path, values


def load_configs(
    recipe: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[SFTRunArguments, SFTConfig, dict[str, Any]]:
    """Run arguments, the ``SFTConfig`` and the merged values, from a recipe plus overrides."""
    path, values = recipe_values(recipe, overrides)
    run_args, config = build_configs((SFTRunArguments, SFTConfig), values, source=str(path))
    return run_args, config, values


# ---------------------------------------------------------------------------------------------
# Data


def train_file_path(run_args: SFTRunArguments) -> Path:
    """Where the SFT records are read from."""
    return Path(run_args.train_file) if run_args.train_file else outputs_path("data", "sft.jsonl")


def load_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Validated SFT records (errors name the file, line and field), optionally the first N."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/02_rationales_and_selection.ipynb first (it writes the SFT data)"
        )
    records = read_dataset(path, "sft")
    if not records:
        raise ValueError(f"{path} holds no records: there is nothing to train on")
    return records[:limit] if limit else records


def records_to_dataset(records: Sequence[Mapping[str, Any]]) -> Dataset:
    """A conversational dataset (one ``messages`` column), the format TRL masks per role."""
    return Dataset.from_list([{"messages": list(record["messages"])} for record in records])


def data_summary(path: Path, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the model card says about the data: file, hash, size and the data card's counts."""
    try:
        shown = path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        shown = path.name
    summary: dict[str, Any] = {"file": shown, "sha256": sha256_file(path), "records_used": len(records)}
    card = card_path(path)
    if card.exists():
        card_data = json.loads(card.read_text(encoding="utf-8"))
        for key in ("records", "by_source", "by_rationale_origin", "by_question_type", "rejections"):
            if key in card_data:
                summary[f"card.{key}"] = card_data[key]
    return summary


# ---------------------------------------------------------------------------------------------
# Training


def run_sft(
    recipe: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
) -> SFTRun:
    """Train (or resume) one SFT run and save the model, its card and its loss log.

    ``recipe`` is a path or a name under ``configs/sft/`` (default: the active profile's recipe);
    ``overrides`` replace recipe keys, exactly like ``--key value`` on the command line.
    """
    recipe = recipe if recipe is not None else default_recipe()
    run_args, config, values = load_configs(recipe, overrides)
    profile = get_profile(run_args.profile)
    use_lora = profile.lora if run_args.use_lora is None else run_args.use_lora
    state = PartialState()
    output_dir = Path(config.output_dir)

    data_path = train_file_path(run_args)
    records = load_records(data_path, run_args.max_train_samples)
    fingerprint = {
        "stage": STAGE,
        "profile": profile.name,
        "base_model": base_model_source(profile),
        "train_file_sha256": sha256_file(data_path),
        "records": len(records),
        "use_lora": use_lora,
    }
    checkpoint = prepare_output_dir(output_dir, fingerprint, resume=run_args.resume, is_main_process=state.is_main_process)
    state.wait_for_everyone()

    effective = effective_batch_size(config, config.world_size)
    if state.is_main_process:
        estimate = estimate_for_profile(
            profile,
            per_device_batch=config.per_device_train_batch_size,
            seq_len=config.max_length or profile.max_length,
            gradient_checkpointing=bool(config.activation_checkpointing),
            num_processes=config.world_size,
            lora=use_lora,
            lora_rank=run_args.lora_r,
        )
        print(f"SFT on profile {profile.name!r}: {len(records)} records, effective batch {effective} "
              f"({config.per_device_train_batch_size} x {config.world_size} process(es) x "
              f"{config.gradient_accumulation_steps} accumulation), output {output_dir}")
        if profile.device == "cpu":
            print(f"{estimate.describe()} of RAM")
        elif torch.cuda.is_available():
            print(estimate.verdict(torch.cuda.get_device_properties(0).total_memory / GIB))

    # The config exists before the model is loaded: under DeepSpeed ZeRO-3 that order lets
    # transformers create the weights already sharded across the processes.
    model, tokenizer = load_model_and_tokenizer(profile, for_training=True)
    peft_config = (
        lora_config(run_args.lora_r, run_args.lora_alpha, run_args.lora_dropout, run_args.lora_target_modules)
        if use_lora
        else None
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=records_to_dataset(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    threads = torch.get_num_threads()
    if run_args.cpu_threads:
        torch.set_num_threads(run_args.cpu_threads)
    try:
        started = time.perf_counter()
        outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)

    save_trained_model(trainer, output_dir, merge_lora=run_args.merge_lora, merged_dtype=select_precision().dtype)
    log = [entry for entry in trainer.state.log_history if "loss" in entry]
    tokens = max((int(entry.get("num_tokens", 0)) for entry in log), default=0)
    run = SFTRun(
        output_dir=output_dir,
        log=log,
        global_step=trainer.state.global_step,
        resumed_from=checkpoint,
        train_runtime=float(outcome.metrics.get("train_runtime", wall)),
        train_tokens=tokens,
        examples=len(records),
        effective_batch=effective,
    )
    if state.is_main_process:
        write_loss_log(trainer.state.log_history, output_dir / LOSS_LOG_NAME)
        _write_card(run, values, Path(recipe_path(recipe, STAGE)), profile.name, use_lora, data_summary(data_path, records))
    state.wait_for_everyone()
    return run


def _write_card(
    run: SFTRun, values: Mapping[str, Any], recipe_file: Path, profile_name: str, use_lora: bool, data: dict[str, Any]
) -> None:
    try:
        recipe_shown = recipe_file.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        recipe_shown = recipe_file.name
    recipe = {key: value for key, value in values.items() if key != "output_dir"}
    result = {
        "global_step": run.global_step,
        "resumed_from": run.resumed_from.name if run.resumed_from else None,
        "first_logged_loss": round(run.first_loss, 4) if run.log else None,
        "final_logged_loss": round(run.final_loss, 4) if run.log else None,
        "train_runtime_s": round(run.train_runtime, 1),
        "train_tokens": run.train_tokens,
        "effective_batch": run.effective_batch,
    }
    layout = "a merged full model; the LoRA adapter alone is in `adapter/`" if use_lora else "a full model"
    write_model_card(
        run.output_dir,
        title=f"Psyche-R1 tutorial: SFT model ({profile_name} profile)",
        summary=(
            f"Supervised fine-tuning of {get_profile(profile_name).model_id} "
            f"to answer in the Psyche-R1 format: reasoning inside `<think> ... </think>`, then the answer. "
            f"Loss on assistant turns only. This folder holds {layout}, the loss log `{LOSS_LOG_NAME}` and this card."
        ),
        recipe_source=recipe_shown,
        recipe=recipe,
        data=data,
        result=result,
        usage=(
            "from psyche_utils.models import load_model_and_tokenizer\n"
            "from psyche_utils.paths import model_dir\n"
            "from psyche_utils.profiles import get_profile\n\n"
            f"profile = get_profile({profile_name!r})\n"
            f"model, tokenizer = load_model_and_tokenizer(profile, model_dir({profile_name!r}, 'sft'))"
        ),
    )


def load_run(output_dir: Path) -> list[dict[str, Any]]:
    """The loss log of a finished run (for plotting without retraining)."""
    return read_loss_log(output_dir / LOSS_LOG_NAME)


# ---------------------------------------------------------------------------------------------
# Looking inside: which tokens carry loss, is a reply well formed, loss on answer tokens


def training_chat_template(tokenizer: Any) -> str | None:
    """The template TRL trains with: the tokenizer's own if it marks assistant turns, else TRL's copy.

    Qwen2.5's stock template has no ``{% generation %}`` markers, so TRL swaps in its training
    version of the same template, which renders identical text and also reports which tokens
    belong to assistant turns.
    """
    return None if has_generation_markers(tokenizer.chat_template) else get_training_chat_template(tokenizer)


def loss_mask_spans(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, assistant_only: bool = True) -> list[tuple[str, bool, int]]:
    """The rendered conversation as (text, carries loss, token count) spans.

    With ``assistant_only`` the loss falls on the assistant turn (its ``<|im_end|>`` included, so
    the model learns to stop); without it, on every token.
    """
    encoded = tokenizer.apply_chat_template(
        list(messages),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        chat_template=training_chat_template(tokenizer),
    )
    ids = list(encoded["input_ids"])
    mask = [bool(bit) for bit in encoded["assistant_masks"]] if assistant_only else [True] * len(ids)
    spans: list[tuple[str, bool, int]] = []
    start = 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or mask[index] != mask[start]:
            spans.append((tokenizer.decode(ids[start:index]), mask[start], index - start))
            start = index
    return spans


def is_well_formed(reply: str) -> bool:
    """One think block, opened first and closed, then a non-empty answer.

    The reasoning may be empty: the shipped empathetic replies have no written analysis, and
    their training examples carry an empty think block rather than an invented one.
    """
    text = reply.strip()
    reasoning, answer = split_reasoning(text)
    return (
        text.startswith(THINK_OPEN)
        and reasoning is not None
        and text.count(THINK_OPEN) == 1
        and text.count(THINK_CLOSE) == 1
        and bool(answer)
    )


def well_formed_rate(replies: Sequence[str]) -> float:
    """Fraction of replies that are well formed (0.0 for no replies)."""
    return sum(map(is_well_formed, replies)) / len(replies) if replies else 0.0


def token_loss(
    model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]], *, part: str = "assistant", batch_size: int = 8
) -> float:
    """Mean next-token loss of ``model`` on one part of each conversation.

    ``part="assistant"``: the replies (what SFT is for); ``part="prompt"``: everything else
    (system prompt, instruction, question). Measured the same way whatever the training mask
    was, so runs with and without ``assistant_only_loss`` can be compared on each part.
    """
    if part not in {"assistant", "prompt"}:
        raise ValueError(f"part must be 'assistant' or 'prompt', got {part!r}")
    template = training_chat_template(tokenizer)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in range(0, len(records), batch_size):
        encoded = [
            tokenizer.apply_chat_template(
                list(record["messages"]), tokenize=True, return_dict=True,
                return_assistant_tokens_mask=True, chat_template=template,
            )
            for record in records[start : start + batch_size]
        ]
        width = max(len(item["input_ids"]) for item in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
        in_part = torch.zeros((len(encoded), width), dtype=torch.bool)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, item in enumerate(encoded):
            length = len(item["input_ids"])
            ids[row, :length] = torch.tensor(item["input_ids"])
            assistant = torch.tensor(item["assistant_masks"], dtype=torch.bool)
            in_part[row, :length] = assistant if part == "assistant" else ~assistant
            attention[row, :length] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none")
        keep = in_part[:, 1:].to(device)
        total += float(losses[keep].sum())
        count += int(keep.sum())
    model.train(was_training)
    return total / count if count else float("nan")


# ---------------------------------------------------------------------------------------------
# Command line


def launch_command(profile_name: str) -> str:
    """The shell command that trains a profile with this stage's recipe."""
    return launch_command_for(STAGE, profile_name)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m psyche_utils.train sft --config FILE [--key value ...]``."""
    recipe, overrides = parse_overrides(list(argv or []), (SFTRunArguments, SFTConfig))
    run = run_sft(recipe, overrides)
    if PartialState().is_main_process:
        print(json.dumps(
            {"output_dir": str(run.output_dir), "global_step": run.global_step,
             "first_loss": run.first_loss if run.log else None, "final_loss": run.final_loss if run.log else None,
             "train_runtime_s": round(run.train_runtime, 2), "tokens_per_second": round(run.tokens_per_second, 1)},
            indent=2,
        ))
    return 0

