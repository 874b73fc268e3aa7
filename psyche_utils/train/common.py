"""Plumbing every training stage shares: recipes, resuming, saving, model cards and loss logs.

SFT and GRPO differ in their trainer, not in how a run is configured, resumed or written out.
This module holds that common part so both stages behave the same way:

* A **recipe** is a YAML file of flat keys, read by TRL's own parser (``trl.TrlParser``, the
  parser of TRL's scripts and of open-r1). Every key is a field of one dataclass: the TRL config
  (``SFTConfig``, ``GRPOConfig``) or one of this project's (:class:`ModelArguments`,
  :class:`RunArguments`, a stage's data arguments, :class:`LoraArguments`, GRPO's rewards). Each
  value is converted to its field's type or refused with the key and the type named; removed
  keys are refused with their replacement; unknown keys are refused naming the file. Overrides
  come from a dict (notebooks) or ``--key value`` pairs (command line) and go through the same
  parser, so a notebook run and an ``accelerate launch`` run of the same recipe get the same
  configuration.
* A run **resumes** from its newest usable checkpoint by default (incomplete ones are skipped
  and named), but only if the checkpoint was made from the same data, model and
  hyperparameters (a fingerprint file records them). Only the main process decides; the other
  processes use its decision.
* At the end the model is saved with the EOS tokens and sampling settings generation needs, LoRA
  runs save both the adapter and a merged copy, and a model card (``README.md``) and a loss log
  sit beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
import typing
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import TrlParser

from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.profiles import PROFILES, Profile, get_profile, select_precision

LOSS_LOG_NAME = "training_log.jsonl"
FINGERPRINT_NAME = "run_fingerprint.json"
MODEL_CARD_NAME = "README.md"
ADAPTER_DIR_NAME = "adapter"

#: Keys no recipe may use, in a file or on the command line. The pinned stack removed or renamed
#: most of them, and old public recipes still carry them; the message names the replacement.
REMOVED_KEYS = {
    "max_seq_length": "removed from TRL's SFTConfig: use max_length",
    "max_prompt_length": "removed from TRL's GRPOConfig: set max_prompt_tokens (prompts over it are removed and reported)",
    "evaluation_strategy": "removed from transformers: use eval_strategy",
    "warmup_ratio": "removed from transformers 5: use warmup_steps with a value below 1 (a fraction of all steps)",
    "gradient_checkpointing": (
        "a deprecated alias of activation_checkpointing in transformers 5; recipes use the new name only, "
        "so that the two can never disagree"
    ),
    "torch_dtype": "the model's dtype comes from the profile",
    "trust_remote_code": "this project never runs code shipped with a checkpoint",
}

#: Sections of the old recipe format, and where their keys went in the flat one.
OLD_SECTIONS = {
    "grpo": "move every key of `grpo:` to the top level",
    "data": "data.path -> train_file, data.max_prompt_tokens -> max_prompt_tokens, data.limit -> max_train_samples",
    "rewards": "rewards.names -> reward_funcs, rewards.weights -> reward_weights",
    "lora": "lora: null -> use_lora: false; lora.r/alpha/dropout/target_modules -> use_lora: true, lora_r, "
    "lora_alpha, lora_dropout, lora_target_modules",
}

#: Sampling settings a trained checkpoint is meant to be used with: the official Psyche-R1
#: inference settings. top_k and repetition_penalty are set explicitly so that Qwen2.5's shipped
#: values (top_k 20, repetition_penalty 1.05) do not leak into every later ``generate()``.
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.0}


class RecipeError(ValueError):
    """A recipe or an override that cannot become a valid training configuration."""


# ---------------------------------------------------------------------------------------------
# The project's own recipe keys (TRL's config classes hold the rest)


@dataclass
class ModelArguments:
    """Which model trains, and how it is loaded."""

    profile: str = field(default="tiny", metadata={"help": "tiny, qlora or full: how the base model is loaded"})

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {self.profile!r}")


@dataclass
class RunArguments:
    """How the run treats its output folder and this machine."""

    resume: bool = field(
        default=True, metadata={"help": "continue from the newest usable checkpoint of the same run; false starts over"}
    )
    allow_changed_hyperparameters: bool = field(
        default=False,
        metadata={"help": "resume although hyperparameters changed (the model card lists the changes)"},
    )
    cpu_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads while training; default: torch's own choice"}
    )


@dataclass
class LoraArguments:
    """LoRA adapters (used when ``use_lora`` is true, or by default when the profile says so)."""

    use_lora: bool | None = field(default=None, metadata={"help": "train LoRA adapters; default: what the profile says"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "'all-linear' or a comma-separated list of module names"}
    )
    merge_lora: bool = field(default=True, metadata={"help": "also save a merged full model beside the adapter"})


# ---------------------------------------------------------------------------------------------
# Reading a recipe with TRL's parser


def _allowed_kinds(hint: Any) -> tuple[bool, bool]:
    """(None allowed, dict allowed) for a dataclass field's type hint."""
    args = typing.get_args(hint)
    options = args if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return type(None) in options, any(option is dict or typing.get_origin(option) is dict for option in options)


def _kind(action: Any) -> str:
    """The converter's name: TRL's parser wraps ``T | None`` converters but keeps the inner name."""
    return getattr(action.type, "__name__", "") if action.type is not None else "str"


def _type_name(action: Any) -> str:
    if action.choices:
        return "one of " + ", ".join(map(str, action.choices))
    names = {"string_to_bool": "a boolean (true or false)", "int": "an integer", "float": "a number"}
    name = names.get(_kind(action), "a string")
    return f"a list of {name.split(' ', 1)[1]}s" if action.nargs in ("+", "*") else name


class RecipeParser(TrlParser):
    """``TrlParser`` that converts every recipe value to its field's type or refuses it.

    TRL's parser sets a YAML value as the argparse default without converting it (argparse only
    converts string defaults), so a quoted ``"30"`` or a ``false`` for a string field would reach
    the trainer as they are. This subclass converts each value exactly as the command line would
    (``1e-5`` -> 1e-05, ``"false"`` -> False, ``"30"`` -> 30), refuses what the command line
    would refuse, and turns argparse's exits into :class:`RecipeError`.
    """

    def __init__(self, dataclass_types: Sequence[type], source: str, overrides: Mapping[str, Any] | None = None):
        super().__init__(dataclass_types, allow_abbrev=False)
        self.source = source
        self.overrides = dict(overrides or {})
        self.values: dict[str, Any] = {}
        self._hints: dict[str, Any] = {}
        for dtype in dataclass_types:
            hints = typing.get_type_hints(dtype)
            self._hints.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})

    def error(self, message: str) -> typing.NoReturn:
        raise RecipeError(f"command line: {message}")

    def _action(self, key: str) -> Any:
        return self._option_string_actions.get(f"--{key}")

    def convert(self, key: str, value: Any, where: str) -> Any:
        """``value`` as the type of field ``key``; RecipeError naming both otherwise."""
        action = self._action(key)
        if key in REMOVED_KEYS:
            raise RecipeError(f"{where}: key {key!r} is not accepted: {REMOVED_KEYS[key]}")
        if action is None or key not in self._hints:
            raise RecipeError(f"{where}: unknown key {key!r}; every key must be a field of {self.class_names}")
        allows_none, allows_dict = _allowed_kinds(self._hints[key])
        expected = _type_name(action)

        def refuse(reason: str = "") -> typing.NoReturn:
            raise RecipeError(f"{where}: {key} must be {expected}, got {value!r}{reason}")

        if value is None:
            return None if allows_none else refuse(" (this key cannot be empty)")
        if isinstance(value, dict):
            return value if allows_dict else refuse()
        if action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            return [self._scalar(action, item, refuse) for item in items]
        if isinstance(value, list):
            refuse()
        return self._scalar(action, value, refuse)

    @staticmethod
    def _scalar(action: Any, value: Any, refuse: Callable[..., typing.NoReturn]) -> Any:
        """One value: a string goes through the command line's converter; other YAML values are checked."""
        kind = _kind(action)
        if isinstance(value, (list, dict)):
            refuse()
        if isinstance(value, bool) and kind != "string_to_bool":
            refuse(" (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the word)")
        try:
            if isinstance(value, str):
                converted = action.type(value) if action.type is not None else value
            elif kind == "string_to_bool":
                converted = value if isinstance(value, bool) else refuse()
            elif kind == "int":
                converted = value if isinstance(value, int) else refuse()
            elif kind == "float":
                converted = float(value) if isinstance(value, (int, float)) else refuse()
            else:
                refuse(" (quote it to make it a string)")
        except RecipeError:
            raise
        except (ValueError, TypeError, ArithmeticError, argparse.ArgumentTypeError):
            refuse()
        if action.choices and converted not in action.choices:
            refuse()
        return converted

    @property
    def class_names(self) -> str:
        return ", ".join(dtype.__name__ for dtype in self.dataclass_types)

    def set_defaults_with_config(self, **config: Any) -> list[str]:
        """TRL's hook for the YAML values: convert them (and the overrides) first, strictly."""
        typed = {key: self.convert(key, value, self.source) for key, value in config.items()}
        typed.update({key: self.convert(key, value, "overrides") for key, value in self.overrides.items()})
        self.values = typed
        return super().set_defaults_with_config(**typed)


@dataclass
class Recipe:
    """A parsed recipe: one instance per dataclass, plus where each value came from."""

    source: Path
    stage: str
    parts: dict[str, Any]
    file_values: dict[str, Any]
    overrides: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """The typed value of a flat recipe key, from whichever part owns it."""
        for part in self.parts.values():
            if key in {f.name for f in dataclasses.fields(part)}:
                return getattr(part, key)
        return default

    def __getitem__(self, key: str) -> Any:
        sentinel = object()
        value = self.get(key, sentinel)
        if value is sentinel:
            raise KeyError(key)
        return value

    @property
    def trainer(self) -> Any:
        """The TRL config (``SFTConfig`` or ``GRPOConfig``)."""
        return self.parts["trainer"]

    @property
    def given(self) -> dict[str, Any]:
        """Every key the recipe file or an override set, with its final typed value."""
        return {key: _plain(self.get(key)) for key in [*self.file_values, *[k for k in self.overrides if k not in self.file_values]]}

    @property
    def shown_source(self) -> str:
        return display_path(self.source)

    def describe(self) -> str:
        """One line: the recipe and the overrides this run applies."""
        overrides = ", ".join(f"{key}={_plain(self.get(key))!r}" for key in self.overrides) or "none"
        return f"recipe {self.shown_source}; overrides: {overrides}"


def _plain(value: Any) -> Any:
    """Enums as their value, so cards and fingerprints hold plain JSON."""
    value = getattr(value, "value", value)
    if isinstance(value, list):
        return [getattr(item, "value", item) for item in value]
    return value


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the repository when it is inside it."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _given_keys(argv: Sequence[str], parser: RecipeParser) -> list[str]:
    keys = []
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name.startswith("no_") and parser._action(name) is not None and parser._action(name[3:]) is not None:
                name = name[3:]
            keys.append(name)
    return keys


def parse_recipe(
    stage: str,
    dataclass_types: Mapping[str, type],
    recipe: str | Path,
    overrides: Mapping[str, Any] | None = None,
    argv: Sequence[str] = (),
    defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Recipe:
    """Read ``recipe`` with TRL's parser, apply ``overrides`` (dict) and ``argv`` (``--key value``).

    ``dataclass_types`` maps a part name ("model", "data", ..., "trainer") to its dataclass.
    ``defaults`` receives every key the file, the overrides or the command line set (typed) and
    returns keys to fill in where none of them does (the output folder, this machine's precision
    flags).
    """
    path = recipe_path(recipe, stage)
    file_values = read_recipe(path)
    overrides = dict(overrides or {})
    for key in overrides:
        if "." in key and key.split(".", 1)[0] in OLD_SECTIONS:
            raise RecipeError(f"override {key!r} uses the old sectioned format: {OLD_SECTIONS[key.split('.', 1)[0]]}")
    argv = list(argv)
    parser = RecipeParser(list(dataclass_types.values()), display_path(path), overrides)
    cli_keys = _given_keys(argv, parser)
    for key in cli_keys:
        if key in REMOVED_KEYS:
            raise RecipeError(f"command line: --{key} is not accepted: {REMOVED_KEYS[key]}")
        if "." in key and key.split(".", 1)[0] in OLD_SECTIONS:
            raise RecipeError(f"command line: --{key} uses the old sectioned format: {OLD_SECTIONS[key.split('.', 1)[0]]}")
    view = {key: parser.convert(key, value, display_path(path)) for key, value in file_values.items() if key != "env"}
    view.update({key: parser.convert(key, value, "overrides") for key, value in overrides.items()})
    namespace, _ = parser.parse_known_args(argv)
    view.update({key: getattr(namespace, key) for key in cli_keys if hasattr(namespace, key)})
    extra = {key: value for key, value in (defaults(view) if defaults else {}).items() if key not in view}
    parser.overrides = {**extra, **overrides}
    try:
        *parts, remaining = parser.parse_args_and_config(["--config", str(path), *argv], return_remaining_strings=True)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{display_path(path)}: {error}") from error
    if remaining:
        raise RecipeError(
            f"command line: unknown argument(s) {remaining}; every key must be a field of {parser.class_names}"
        )
    instances = dict(zip(dataclass_types, parts))
    result = Recipe(path, stage, instances, file_values, {}, dict(overrides))
    for key in overrides:
        result.overrides[key] = result.get(key)
    for key in cli_keys:
        result.overrides[key] = result.get(key)
    return result


#: The recipe each profile trains with when none is named (the same names in every stage).
RECIPE_FOR_PROFILE = {"tiny": "tiny_cpu", "qlora": "qlora_1gpu", "full": "full_8gpu"}
ACCELERATE_CONFIG_FOR_PROFILE = {"qlora": "single_gpu", "full": "zero3_8gpu"}


def default_recipe_for(stage: str, profile_name: str | None = None) -> Path:
    """The recipe a stage uses for a profile (by default the active one; a named one is not hardware-checked)."""
    name = profile_name if profile_name in RECIPE_FOR_PROFILE else get_profile(profile_name).name
    return recipe_path(RECIPE_FOR_PROFILE[name], stage)


def launch_command_for(stage: str, profile_name: str) -> str:
    """The shell command that trains a stage on a profile with its recipe."""
    recipe = f"configs/{stage}/{RECIPE_FOR_PROFILE[profile_name]}.yaml"
    if profile_name == "tiny":
        return f"python -m psyche_utils.train {stage} --config {recipe}"
    accelerate = f"configs/accelerate/{ACCELERATE_CONFIG_FOR_PROFILE[profile_name]}.yaml"
    return f"accelerate launch --config_file {accelerate} -m psyche_utils.train {stage} --config {recipe}"


def recipe_path(recipe: str | Path, stage: str) -> Path:
    """A recipe given as a path, or as a bare name looked up in ``configs/<stage>/``.

    A relative path that does not exist from the working directory is also tried from the
    repository root, so ``configs/sft/tiny_cpu.yaml`` works from a notebook in ``notebooks/``.
    """
    path = Path(recipe)
    if path.suffix not in {".yaml", ".yml"} and len(path.parts) == 1:
        path = CONFIGS_DIR / stage / f"{path.name}.yaml"
    elif not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.exists():
        available = sorted(p.stem for p in (CONFIGS_DIR / stage).glob("*.yaml"))
        raise RecipeError(f"recipe {recipe!r} not found (looked for {path}); recipes for {stage}: {available}")
    return path


def read_recipe(path: Path) -> dict[str, Any]:
    """The flat key/value mapping in a YAML recipe; an old sectioned recipe is refused with a fix."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{display_path(path)}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise RecipeError(f"{display_path(path)}: a recipe must be a mapping of keys to values, got {type(values).__name__}")
    sections = [key for key in OLD_SECTIONS if key in values and (isinstance(values[key], dict) or values[key] is None)]
    if sections:
        steps = "; ".join(f"{key}: {OLD_SECTIONS[key]}" for key in sections)
        raise RecipeError(
            f"{display_path(path)}: this is the old sectioned recipe format (section(s) {sections}); recipes are now "
            f"flat, one key per line. To convert: {steps}."
        )
    return values


def resolve_data_path(value: str | None, default: Path) -> Path:
    """A data file from a recipe: the default when unset; a relative path from here or the repository."""
    if not value:
        return default
    path = Path(value)
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def precision_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """This machine's precision flags (bf16 on Ampere and newer, fp16 before, fp32 on a CPU).

    Recipes leave ``bf16``/``fp16``/``use_cpu`` out so the same file runs on a T4, an H100 or a
    laptop; a recipe or override that sets one of them explicitly wins.
    """
    precision = select_precision()
    flags = {"bf16": precision.bf16, "fp16": precision.fp16, "use_cpu": precision.use_cpu}
    if any(key in values for key in flags):
        return {}
    return flags


def effective_batch_size(config: Any, num_processes: int) -> int:
    """Examples per optimizer update: per-device batch x processes x accumulation steps."""
    return int(config.per_device_train_batch_size) * num_processes * int(config.gradient_accumulation_steps)


def pin_one_device(num_processes: int, *, device_count: Callable[[], int] | None = None) -> str | None:
    """Make a one-process run use one GPU; returns what was done (None: nothing needed).

    With several GPUs visible to one process, the Trainer uses them all through DataParallel:
    the SFT batch silently becomes per-device x GPUs, and GRPO fails. Before CUDA starts, this
    limits the process to the first visible GPU; after it has started, that is impossible, and
    the run is refused with the fix.
    """
    import torch

    if num_processes > 1 or not torch.cuda.is_available():
        return None
    count = (device_count or torch.cuda.device_count)()
    if count <= 1:
        return None
    if torch.cuda.is_initialized():
        raise RecipeError(
            f"this one-process run sees {count} GPUs, and CUDA has already started, so it cannot be limited to one: "
            "restart with CUDA_VISIBLE_DEVICES=0 (or launch several processes with accelerate)"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible else "0"
    os.environ["CUDA_VISIBLE_DEVICES"] = first
    return f"one process, {count} GPUs visible: using GPU {first} only (CUDA_VISIBLE_DEVICES={first})"


def check_single_device(config: Any) -> None:
    """Refuse a config whose Trainer would spread one process over several GPUs."""
    if config.world_size == 1 and getattr(config, "n_gpu", 1) > 1:
        raise RecipeError(
            f"the Trainer sees {config.n_gpu} GPUs in one process and would multiply the batch by {config.n_gpu}: "
            "set CUDA_VISIBLE_DEVICES to one GPU or launch one process per GPU with accelerate"
        )


# ---------------------------------------------------------------------------------------------
# LoRA


def lora_config(r: int, alpha: int, dropout: float, target_modules: str | list[str]) -> Any:
    """A PEFT LoRA config. ``"all-linear"`` adapts every linear layer except the LM head.

    Passed to the TRL trainer as ``peft_config``: TRL then wraps the model, enables input
    gradients for gradient checkpointing and keeps 4-bit adapters in bf16, as QLoRA recommends.
    ``disable_dropout: true`` in a recipe also zeroes ``lora_dropout`` (TRL disables every
    dropout module of the wrapped model).
    """
    from peft import LoraConfig

    modules: str | list[str] = target_modules
    if isinstance(target_modules, str) and target_modules != "all-linear":
        modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")


def lora_from(arguments: LoraArguments, profile: Profile) -> Any:
    """The PEFT config a run trains with, or None for a full fine-tune."""
    use = profile.lora if arguments.use_lora is None else arguments.use_lora
    if not use:
        return None
    return lora_config(arguments.lora_r, arguments.lora_alpha, arguments.lora_dropout, arguments.lora_target_modules)


# ---------------------------------------------------------------------------------------------
# Resuming


def sha256_file(path: Path) -> str:
    """Hash of a file's bytes, read in blocks (training files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: TrainingArguments fields that change what training computes (others: logging, saving, speed).
TRAINING_HYPERPARAMETERS = (
    "learning_rate", "seed", "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "optim", "optim_args", "bf16", "fp16",
    "label_smoothing_factor", "world_size",
    # SFT
    "max_length", "packing", "packing_strategy", "assistant_only_loss", "completion_only_loss", "loss_type",
    "truncation_mode", "padding_free",
    # GRPO
    "num_generations", "generation_batch_size", "steps_per_generation", "num_iterations", "beta", "epsilon",
    "epsilon_high", "scale_rewards", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "max_completion_length", "importance_sampling_level", "mask_truncated_completions", "use_bias_correction_kl",
    "multi_objective_aggregation", "entropy_coef", "reward_weights", "use_vllm", "vllm_importance_sampling_correction",
    "vllm_importance_sampling_mode", "disable_dropout",
)


def hyperparameters(recipe: Recipe, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values that change training, for the fingerprint (LoRA and project keys included)."""
    config = recipe.trainer
    values = {key: _plain(getattr(config, key)) for key in TRAINING_HYPERPARAMETERS if hasattr(config, key)}
    lora = recipe.parts.get("lora")
    if lora is not None:
        values.update({f.name: getattr(lora, f.name) for f in dataclasses.fields(lora) if f.name != "merge_lora"})
    values.update(dict(extra or {}))
    return json.loads(json.dumps(values, default=str))


def checkpoint_problem(folder: Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from (None: it looks complete).

    Checks what a kill during saving leaves behind: an empty or partial folder, a missing or
    unreadable ``trainer_state.json``, a truncated safetensors file (its header promises more
    bytes than the file holds), a truncated optimizer or scheduler file (not a whole zip archive).
    """
    if not folder.is_dir() or not any(folder.iterdir()):
        return "empty folder"
    state = folder / "trainer_state.json"
    if not state.exists():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, TypeError):
        return "trainer_state.json is unreadable"
    weights = sorted(folder.glob("*.safetensors"))
    deepspeed = (folder / "latest").exists()
    if not weights and not deepspeed and not list(folder.glob("*.bin")):
        return "no model weights"
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError):
            return "model.safetensors.index.json is unreadable"
        missing = sorted(name for name in shards if not (folder / name).exists())
        if missing:
            return f"missing weight shard(s) {missing}"
    for file in weights:
        problem = _safetensors_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    for name in ("optimizer.pt", "scheduler.pt"):
        file = folder / name
        if not deepspeed and name == "optimizer.pt" and not file.exists():
            return "no optimizer.pt"
        if file.exists() and not zipfile.is_zipfile(file):
            return f"{name} is truncated or not a torch file"
    if deepspeed:
        tag = (folder / "latest").read_text(encoding="utf-8").strip()
        if not (folder / tag).is_dir():
            return f"DeepSpeed state folder {tag!r} is missing"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size < 8:
        return "truncated (no header)"
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        if 8 + header_size > size:
            return "truncated (header incomplete)"
        try:
            header = json.loads(handle.read(header_size))
        except ValueError:
            return "unreadable header"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if 8 + header_size + max(ends, default=0) > size:
        return f"truncated ({size} bytes, the header needs {8 + header_size + max(ends, default=0)})"
    return None


def checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders in ``output_dir``, newest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(output_dir: Path, report: Callable[[str], None] = print) -> Path | None:
    """The newest usable checkpoint; unusable newer ones are reported and skipped."""
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        report(f"Skipping {folder}: incomplete checkpoint ({problem})")
    return None


#: Fingerprint keys that identify the run itself; a mismatch is never allowed.
IDENTITY_KEYS = ("stage", "profile", "base_model", "init_from", "train_file_sha256", "records", "use_lora")


@dataclass
class ResumeDecision:
    """Where training starts, and what changed if it resumes with other hyperparameters."""

    checkpoint: Path | None
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None


def decide_resume(
    output_dir: Path, fingerprint: Mapping[str, Any], *, resume: bool, allow_changed_hyperparameters: bool = False
) -> ResumeDecision:
    """Decide where training starts (run on the main process only; it may write files).

    ``resume=False`` removes old ``checkpoint-*`` folders so the run really starts over.
    ``resume=True`` continues from the newest usable checkpoint, but only when the fingerprint
    saved beside it matches this run: resuming on other data or another model would mix two
    runs, and other hyperparameters would make the result neither run. Changed hyperparameters
    are accepted with ``allow_changed_hyperparameters`` (and recorded); other changes never.
    """
    fingerprint = json.loads(json.dumps(dict(fingerprint), default=str))
    fingerprint_file = output_dir / FINGERPRINT_NAME
    decision = ResumeDecision(None)
    old = checkpoints(output_dir)
    if old and not resume:
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"Starting over: removed {len(old)} old checkpoint(s) from {output_dir}")
    elif old:
        decision.checkpoint = latest_checkpoint(output_dir, report=lambda line: (decision.skipped.append(line), print(line)))
        if decision.checkpoint is None:
            print(f"No usable checkpoint in {output_dir}: starting from scratch")
    saved = json.loads(fingerprint_file.read_text(encoding="utf-8")) if fingerprint_file.exists() else {}
    history = saved.pop("changed_on_resume", [])
    if decision.checkpoint is not None and not fingerprint_file.exists():
        raise RecipeError(
            f"{decision.checkpoint} has no {FINGERPRINT_NAME} beside it, so which run made it cannot be checked: start "
            "over with resume=False (command line: --resume false) or choose another output_dir."
        )
    if decision.checkpoint is not None:
        different = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
        identity = [key for key in different if key in IDENTITY_KEYS or not key.startswith("hp.")]
        details = "; ".join(f"{key}: checkpoint {saved.get(key)!r}, now {fingerprint.get(key)!r}" for key in different)
        if identity:
            raise RecipeError(
                f"{decision.checkpoint} was made by a different run ({details}). Start over with resume=False "
                f"(command line: --resume false) or choose another output_dir."
            )
        if different and not allow_changed_hyperparameters:
            raise RecipeError(
                f"{decision.checkpoint} was trained with other hyperparameters ({details}). Resume anyway with "
                "allow_changed_hyperparameters=True (command line: --allow_changed_hyperparameters true; the model "
                "card records the change), start over with --resume false, or choose another output_dir."
            )
        decision.changed = {key.removeprefix("hp."): (saved.get(key), fingerprint.get(key)) for key in different}
        if different:
            print(f"Resuming from {decision.checkpoint} with changed hyperparameters: {details}")
            history.append({"checkpoint": decision.checkpoint.name, "changed": {k: list(v) for k, v in decision.changed.items()}})
        else:
            print(f"Resuming from {decision.checkpoint}")
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {**fingerprint, **({"changed_on_resume": history} if history else {})}
    fingerprint_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return decision


def prepare_output_dir(
    output_dir: Path,
    fingerprint: Mapping[str, Any],
    *,
    resume: bool,
    allow_changed_hyperparameters: bool = False,
    state: Any = None,
) -> ResumeDecision:
    """:func:`decide_resume` on the main process, then a barrier, then its decision on every process.

    Only the main process reads and writes the fingerprint and picks the checkpoint; the others
    receive its decision (or its error), so no process can read a fingerprint while it is being
    rewritten, and all processes resume from the same step.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = state or PartialState()
    payload: list[Any] = [None]
    if state.is_main_process:
        try:
            payload[0] = decide_resume(
                output_dir, fingerprint, resume=resume, allow_changed_hyperparameters=allow_changed_hyperparameters
            )
        except RecipeError as error:
            payload[0] = ResumeDecision(None, error=str(error))
    state.wait_for_everyone()
    if state.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    decision: ResumeDecision = payload[0]
    if decision.error:
        raise RecipeError(decision.error)
    return decision


# ---------------------------------------------------------------------------------------------
# Saving


def set_generation_defaults(model: Any, tokenizer: Any) -> list[int]:
    """Make generation stop at the end of the assistant turn and sample as the model is meant to.

    Qwen2.5 ends a turn with ``<|im_end|>`` (the tokenizer's EOS) and ends a document with
    ``<|endoftext|>`` (its pad token); a saved model that lists only one of them can run on
    past the answer. Both go into the generation config, the turn end first, together with
    :data:`GENERATION_DEFAULTS`, because transformers fills every sampling field a call leaves
    unset from this config.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    stop_ids = []
    for token_id in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token_id is not None and token_id not in stop_ids:
            stop_ids.append(int(token_id))
    base.generation_config.eos_token_id = stop_ids
    base.generation_config.pad_token_id = tokenizer.pad_token_id
    for key, value in GENERATION_DEFAULTS.items():
        setattr(base.generation_config, key, value)
    return stop_ids


def generation_card_text() -> str:
    """What the model card says about the saved sampling settings."""
    settings = ", ".join(f"{key}={value}" for key, value in GENERATION_DEFAULTS.items())
    return (
        f"`generation_config.json` holds the official Psyche-R1 inference settings ({settings}); top_k and "
        "repetition_penalty are written explicitly so Qwen2.5's shipped 20 and 1.05 do not apply."
    )


def save_trained_model(trainer: Any, output_dir: Path, *, merge_lora: bool, merged_dtype: Any = None) -> dict[str, Path]:
    """Save the final model; returns what was written (``model`` and, for LoRA, ``adapter``).

    Called on every process: under DeepSpeed ZeRO-3 the weights are sharded and saving gathers
    them, which all ranks must join. Full fine-tunes are written to ``output_dir``. LoRA runs
    write the adapter to ``output_dir/adapter`` and, with ``merge_lora``, a merged full model to
    ``output_dir`` (loaded like any checkpoint; the 4-bit base itself cannot hold merged weights,
    so the merge reloads the base in ``merged_dtype``).
    """
    model = trainer.model
    tokenizer = trainer.processing_class
    set_generation_defaults(model, tokenizer)
    is_lora = hasattr(model, "peft_config")
    written: dict[str, Path] = {}
    if not is_lora:
        trainer.save_model(str(output_dir))
        written["model"] = output_dir
        return written
    adapter_dir = output_dir / ADAPTER_DIR_NAME
    trainer.save_model(str(adapter_dir))
    written["adapter"] = adapter_dir
    if merge_lora:
        if trainer.is_world_process_zero():
            merge_adapter(adapter_dir, output_dir, tokenizer, dtype=merged_dtype)
        trainer.accelerator.wait_for_everyone()
        written["model"] = output_dir
    return written


def merge_adapter(adapter_dir: Path, output_dir: Path, tokenizer: Any, *, dtype: Any = None) -> Path:
    """Fold a LoRA adapter into a fresh copy of its base model and save the result."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_name = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_name, dtype=dtype or torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    set_generation_defaults(merged, tokenizer)
    merged.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return output_dir


# ---------------------------------------------------------------------------------------------
# Loss log and model card


def write_loss_log(log_history: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """The trainer's log history as JSON lines (one logging step per line), for plots."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(entry), sort_keys=True) + "\n" for entry in log_history), encoding="utf-8")
    return path


def read_loss_log(path: Path) -> list[dict[str, Any]]:
    """The training steps of a loss log (entries that carry a ``loss``), in step order."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train first (the loss log is written at the end of a run)")
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted((entry for entry in entries if "loss" in entry), key=lambda entry: entry["step"])


def _markdown_table(rows: Mapping[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| `{key}` | {json.dumps(value, ensure_ascii=False, default=str)} |" for key, value in rows.items()]
    return "\n".join(lines)


def write_model_card(
    output_dir: Path,
    *,
    title: str,
    summary: str,
    recipe: Recipe,
    data: Mapping[str, Any],
    result: Mapping[str, Any],
    usage: str,
    resume: ResumeDecision | None = None,
) -> Path:
    """``README.md`` beside the weights: what was trained, on what, how, and with what result."""
    values = {key: value for key, value in recipe.given.items() if key != "output_dir"}
    overrides = ", ".join(f"`{key}`" for key in recipe.overrides if key != "output_dir") or "none"
    sections = [
        f"# {title}",
        summary,
        f"## Recipe\n\nFrom `{recipe.shown_source}`; overridden keys: {overrides}. Final values:\n\n{_markdown_table(values)}",
        f"## Training data\n\n{_markdown_table(data)}",
        f"## Result\n\n{_markdown_table(result)}",
    ]
    if resume is not None and resume.changed:
        changes = {key: {"checkpoint": old, "now": new} for key, (old, new) in resume.changed.items()}
        sections.append(
            f"## Resumed with changed hyperparameters\n\nResumed from `{resume.checkpoint.name}` with "
            f"`allow_changed_hyperparameters`; these values differ from the ones the checkpoint was trained with, "
            f"so this model is neither run:\n\n{_markdown_table(changes)}"
        )
    if resume is not None and resume.skipped:
        sections.append("## Checkpoints skipped on resume\n\n" + "\n".join(f"- {line}" for line in resume.skipped))
    sections.append(f"## Generation settings\n\n{generation_card_text()}")
    sections.append(f"## How to load\n\n```python\n{usage.strip()}\n```")
    path = output_dir / MODEL_CARD_NAME
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Launching and the command line


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"max_steps": 5, "reward_funcs": ["format", "accuracy"]}`` as ``--key value`` arguments."""
    args: list[str] = []
    for key, value in overrides.items():
        if value is None:
            raise RecipeError(f"override {key!r}=None cannot be passed on a command line; set the key in a recipe file")
        if isinstance(value, dict):
            raise RecipeError(f"override {key!r} is a mapping, which the command line cannot carry")
        items = [_plain(item) for item in value] if isinstance(value, (list, tuple)) else [_plain(value)]
        args.append(f"--{key}")
        args += [str(item).lower() if isinstance(item, bool) else str(item) for item in items]
    return args


def launch_argv(stage: str, profile_name: str, recipe: Path, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The ``accelerate launch`` command for a stage, run with this Python (not whatever is on PATH)."""
    accelerate = CONFIGS_DIR / "accelerate" / f"{ACCELERATE_CONFIG_FOR_PROFILE[profile_name]}.yaml"
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", display_path(accelerate),
        "-m", "psyche_utils.train", stage, "--config", display_path(recipe), *override_args(overrides or {}),
    ]


def launch(stage: str, profile_name: str, recipe: Path, overrides: Mapping[str, Any] | None = None) -> None:
    """Run a stage through ``accelerate launch`` from the repository root; raise if it fails."""
    command = launch_argv(stage, profile_name, recipe, overrides)
    print("running:", shlex.join(command))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def project_errors() -> tuple[type[BaseException], ...]:
    """The errors the command line reports as one line: bad recipes, bad data, missing files."""
    from psyche_utils.datafiles import DataError
    from psyche_utils.formatting import RecordError
    from psyche_utils.profiles import ProfileError

    return (RecipeError, DataError, RecordError, FileNotFoundError, ProfileError)


def run_cli(stage: str, argv: Sequence[str], run: Callable[[Sequence[str]], int]) -> int:
    """Run a stage's command line; a project error becomes one line on stderr and exit status 2."""
    argv = list(argv)
    if "--config" not in argv:
        print(
            f"error: python -m psyche_utils.train {stage} needs --config FILE (for example "
            f"--config configs/{stage}/tiny_cpu.yaml; recipes: "
            f"{sorted(p.stem for p in (CONFIGS_DIR / stage).glob('*.yaml'))})",
            file=sys.stderr,
        )
        return 2
    try:
        return run(argv)
    except project_errors() as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the newest checkpoint", file=sys.stderr)
        return 130


def split_config_argument(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``[--config FILE, --key value ...]`` -> (FILE, the rest)."""
    args = list(argv)
    index = args.index("--config")
    if index + 1 >= len(args):
        raise RecipeError("--config needs a file name")
    recipe = args[index + 1]
    del args[index : index + 2]
    return recipe, args
