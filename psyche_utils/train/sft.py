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
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from psyche_utils.answers import is_well_formed
from psyche_utils.formatting import card_path, read_dataset
from psyche_utils.memory import GIB, estimate_for_profile
from psyche_utils.models import base_model_source, load_model_and_tokenizer
from psyche_utils.paths import model_dir, outputs_path
from psyche_utils.profiles import Profile, get_profile, select_precision
from psyche_utils.train.common import (
    LOSS_LOG_NAME,
    LoraArguments,
    ModelArguments,
    Recipe,
    RecipeError,
    ResumeDecision,
    RunArguments,
    check_single_device,
    default_recipe_for,
    display_path,
    effective_batch_size,
    hyperparameters,
    launch,
    launch_command_for,
    lora_from,
    parse_recipe,
    pin_one_device,
    precision_defaults,
    prepare_output_dir,
    read_loss_log,
    resolve_data_path,
    run_cli,
    save_trained_model,
    sha256_file,
    split_config_argument,
    write_loss_log,
    write_model_card,
)

STAGE = "sft"


@dataclass
class SFTDataArguments:
    """Which records SFT trains on, and what happens to records longer than ``max_length``."""

    train_file: str | None = field(
        default=None, metadata={"help": "SFT records (JSON lines); default outputs/data/sft.jsonl from notebook 02"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "train on the first N records only (quick trials)"}
    )
    refuse_overlong: bool = field(
        default=False,
        metadata={"help": "stop with an error when a record is longer than max_length (default: remove and report it)"},
    )


#: The dataclasses a SFT recipe's keys belong to, by part name.
SFT_PARTS = {
    "model": ModelArguments,
    "run": RunArguments,
    "data": SFTDataArguments,
    "lora": LoraArguments,
    "trainer": SFTConfig,
}


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
    removed: list[tuple[str, int]] = field(default_factory=list)

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


def _defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keys a recipe leaves to the machine: the output folder and the precision flags."""
    return {"output_dir": str(model_dir(str(values.get("profile", "tiny")), STAGE)), **precision_defaults(values)}


def load_recipe(
    recipe: str | Path | Recipe | None = None, overrides: Mapping[str, Any] | None = None, argv: Sequence[str] = ()
) -> Recipe:
    """A SFT recipe (path or name under ``configs/sft/``; default: the active profile's) with overrides.

    ``overrides`` (a dict) and ``argv`` (``--key value`` strings) go through TRL's parser like
    the file's own keys, so every value has its field's type.
    """
    if isinstance(recipe, Recipe):
        if overrides or argv:
            return parse_recipe(STAGE, SFT_PARTS, recipe.source, {**recipe.raw, **dict(overrides or {})}, argv, _defaults)
        return recipe
    return parse_recipe(STAGE, SFT_PARTS, recipe if recipe is not None else default_recipe(), overrides, argv, _defaults)


# ---------------------------------------------------------------------------------------------
# Data


def train_file_path(data: SFTDataArguments) -> Path:
    """Where the SFT records are read from."""
    return resolve_data_path(data.train_file, outputs_path("data", "sft.jsonl"))


def load_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Validated SFT records (errors name the file, line and field), optionally the first N."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/02_rationales_and_selection.ipynb first (it writes the SFT data)"
        )
    records = read_dataset(path, "sft")
    if not records:
        raise RecipeError(f"{path} holds no records: there is nothing to train on")
    return records[:limit] if limit else records


def records_to_dataset(records: Sequence[Mapping[str, Any]]) -> Dataset:
    """A conversational dataset (one ``messages`` column), the format TRL masks per role."""
    return Dataset.from_list([{"messages": list(record["messages"])} for record in records])


def training_token_lengths(tokenizer: Any, records: Sequence[Mapping[str, Any]], *, assistant_only_loss: bool) -> list[int]:
    """Each record's length in tokens, tokenized exactly as ``SFTTrainer`` will tokenize it.

    TRL renders a conversation with ``apply_chat_template(tokenize=True)``, with its training
    template when the loss is on assistant turns only (the same text, plus turn markers).
    """
    template = training_chat_template(tokenizer) if assistant_only_loss else None
    return [
        len(tokenizer.apply_chat_template(list(record["messages"]), tokenize=True, return_dict=True,
                                          chat_template=template)["input_ids"])
        for record in records
    ]


def drop_overlong(
    records: Sequence[dict[str, Any]], lengths: Sequence[int], max_length: int | None, *, refuse: bool, source: str
) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
    """Records that fit ``max_length`` and the (id, length) of the others.

    TRL would cut a longer record at ``max_length`` (usually through the answer it exists to
    teach) and drop it entirely when nothing trainable is left; here it is removed before the
    trainer sees it and reported, or the run stops when ``refuse`` is set.
    """
    if max_length is None:
        return list(records), []
    removed = [(str(record["id"]), length) for record, length in zip(records, lengths) if length > max_length]
    if removed and refuse:
        shown = ", ".join(f"{rid} ({length})" for rid, length in removed[:20])
        raise RecipeError(
            f"{source}: {len(removed)} record(s) are longer than max_length {max_length} tokens: {shown}"
            f"{' ...' if len(removed) > 20 else ''}; raise max_length, filter the data, or unset refuse_overlong"
        )
    kept = [record for record, length in zip(records, lengths) if length <= max_length]
    if not kept:
        raise RecipeError(f"{source}: every record is longer than max_length {max_length} tokens: nothing to train on")
    return kept, removed


def data_summary(path: Path, records_read: int, records: Sequence[Mapping[str, Any]], removed: Sequence[tuple[str, int]],
                 max_length: int | None) -> dict[str, Any]:
    """What the model card says about the data: file, hash, what was trained on and what was removed."""
    summary: dict[str, Any] = {
        "file": display_path(path),
        "sha256": sha256_file(path),
        "records_read": records_read,
        "records_trained_on": len(records),
        f"removed_over_max_length_{max_length}": len(removed),
    }
    if removed:
        summary["removed_ids"] = [rid for rid, _ in removed]
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
    recipe: str | Path | Recipe | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
) -> SFTRun:
    """Train (or resume) one SFT run and save the model, its card and its loss log.

    ``recipe`` is a path or a name under ``configs/sft/`` (default: the active profile's recipe)
    or a loaded :class:`Recipe`; ``overrides`` replace recipe keys, exactly like ``--key value``
    on the command line.
    """
    state = PartialState()
    pinned = pin_one_device(state.num_processes)
    loaded = load_recipe(recipe, overrides)
    model_args, run_args, data_args = loaded.parts["model"], loaded.parts["run"], loaded.parts["data"]
    config: SFTConfig = loaded.trainer
    profile = get_profile(model_args.profile)
    peft_config = lora_from(loaded.parts["lora"], profile)
    output_dir = Path(config.output_dir)
    if state.is_main_process:
        print(f"SFT: {loaded.describe()}")
        if pinned:
            print(pinned)
    check_single_device(config)

    data_path = train_file_path(data_args)
    all_records = load_records(data_path, data_args.max_train_samples)
    tokenizer = AutoTokenizer.from_pretrained(base_model_source(profile))
    lengths = training_token_lengths(tokenizer, all_records, assistant_only_loss=bool(config.assistant_only_loss))
    records, removed = drop_overlong(
        all_records, lengths, config.max_length, refuse=data_args.refuse_overlong, source=display_path(data_path)
    )
    if removed and state.is_main_process:
        print(f"Removed {len(removed)} of {len(all_records)} records longer than max_length {config.max_length} "
              f"tokens (never truncated): {', '.join(f'{rid} ({n})' for rid, n in removed)}")
    fingerprint = {
        "stage": STAGE,
        "profile": profile.name,
        "base_model": base_model_source(profile),
        "train_file_sha256": sha256_file(data_path),
        "records": len(records),
        "use_lora": peft_config is not None,
        **{f"hp.{key}": value for key, value in hyperparameters(loaded).items()},
    }
    decision = prepare_output_dir(
        output_dir, fingerprint, resume=run_args.resume,
        allow_changed_hyperparameters=run_args.allow_changed_hyperparameters, state=state,
    )
    checkpoint = decision.checkpoint

    devices = max(1, int(config.n_gpu)) if config.world_size == 1 else 1
    effective = effective_batch_size(config, config.world_size * devices)
    if state.is_main_process:
        estimate = estimate_for_profile(
            profile,
            per_device_batch=config.per_device_train_batch_size,
            seq_len=config.max_length or profile.max_length,
            gradient_checkpointing=bool(config.activation_checkpointing),
            num_processes=config.world_size,
            lora=peft_config is not None,
            lora_rank=loaded.parts["lora"].lora_r,
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
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=records_to_dataset(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    if not config.packing and len(trainer.train_dataset) != len(records):
        raise RecipeError(
            f"TRL kept {len(trainer.train_dataset)} of {len(records)} records after its own preparation; "
            "the length filter and TRL disagree"
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

    save_trained_model(trainer, output_dir, merge_lora=loaded.parts["lora"].merge_lora, merged_dtype=select_precision().dtype)
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
        removed=removed,
    )
    if state.is_main_process:
        write_loss_log(trainer.state.log_history, output_dir / LOSS_LOG_NAME)
        _write_card(run, loaded, profile.name, peft_config is not None,
                    data_summary(data_path, len(all_records), records, removed, config.max_length), decision)
    state.wait_for_everyone()
    return run


def _write_card(
    run: SFTRun, recipe: Recipe, profile_name: str, use_lora: bool, data: dict[str, Any], decision: ResumeDecision
) -> None:
    result = {
        "global_step": run.global_step,
        "examples_seen": run.global_step * run.effective_batch,
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
        resume=decision,
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


def run_or_launch(
    profile: Profile, recipe: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Train from a notebook: in this process, or through ``accelerate launch`` for a multi-process profile.

    Either way the loss log is read back from the run's output folder.
    """
    loaded = load_recipe(recipe or default_recipe(profile.name), overrides)
    if profile.num_processes > 1:
        launch(STAGE, profile.name, loaded.source, loaded.raw)
    else:
        run_sft(loaded)
    return load_run(Path(loaded.trainer.output_dir))


def _main(argv: Sequence[str]) -> int:
    recipe, rest = split_config_argument(argv)
    run = run_sft(load_recipe(recipe, argv=rest))
    if PartialState().is_main_process:
        print(json.dumps(
            {"output_dir": str(run.output_dir), "global_step": run.global_step,
             "first_loss": run.first_loss if run.log else None, "final_loss": run.final_loss if run.log else None,
             "train_runtime_s": round(run.train_runtime, 2), "tokens_per_second": round(run.tokens_per_second, 1),
             "records_trained_on": run.examples, "removed_over_max_length": len(run.removed)},
            indent=2,
        ))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m psyche_utils.train sft --config FILE [--key value ...]``."""
    return run_cli(STAGE, list(argv or []), _main)
