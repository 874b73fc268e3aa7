"""Plumbing every training stage shares: recipes, resuming, saving, model cards and loss logs.

SFT and GRPO differ in their trainer, not in how a run is configured, resumed or written out.
This module holds that common part so both stages behave the same way:

* A **recipe** is a YAML file of flat keys (TRL style). Keys that belong to the TRL config
  (``SFTConfig``, ``GRPOConfig``) and keys of the stage's own run-arguments dataclass live side by
  side; a key that belongs to neither is an error that names the file. Overrides come from a
  dict (notebooks) or ``--key value`` pairs (command line) and go through the same path, so a
  notebook run and an ``accelerate launch`` run of the same recipe get the same configuration.
* A run **resumes** from its newest checkpoint by default, but only if the checkpoint was made
  from the same data and base model (a fingerprint file records them); otherwise it stops with
  an error instead of silently continuing a different run.
* At the end the model is saved with the EOS tokens generation needs, LoRA runs save both the
  adapter and a merged copy, and a model card (``README.md``) and a loss log sit beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.trainer_utils import get_last_checkpoint

from psyche_utils.paths import CONFIGS_DIR, REPO_ROOT
from psyche_utils.profiles import get_profile, select_precision

LOSS_LOG_NAME = "training_log.jsonl"
FINGERPRINT_NAME = "run_fingerprint.json"
MODEL_CARD_NAME = "README.md"
ADAPTER_DIR_NAME = "adapter"

#: Keys no recipe may use: the pinned stack removed or renamed them, and old public recipes still
#: carry them. Caught here with the replacement in the message instead of deep inside TRL.
REMOVED_KEYS = {
    "max_seq_length": "use max_length",
    "max_prompt_length": "filter prompts by token length in the data step (notebook 02)",
    "evaluation_strategy": "use eval_strategy",
    "warmup_ratio": "use warmup_steps with a value below 1 (a fraction of the total steps)",
    "gradient_checkpointing": "use activation_checkpointing (its transformers 5 name)",
    "torch_dtype": "the model's dtype comes from the profile",
    "trust_remote_code": "this project never runs code shipped with a checkpoint",
}


class RecipeError(ValueError):
    """A recipe or an override that cannot become a valid training configuration."""


# ---------------------------------------------------------------------------------------------
# Recipes and overrides


#: The recipe each profile trains with when none is named (the same names in every stage).
RECIPE_FOR_PROFILE = {"tiny": "tiny_cpu", "qlora": "qlora_1gpu", "full": "full_8gpu"}
ACCELERATE_CONFIG_FOR_PROFILE = {"qlora": "single_gpu", "full": "zero3_8gpu"}


def default_recipe_for(stage: str, profile_name: str | None = None) -> Path:
    """The recipe a stage uses for a profile (by default the active one)."""
    return recipe_path(RECIPE_FOR_PROFILE[get_profile(profile_name).name], stage)


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
    """The flat key/value mapping in a YAML recipe."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys to values, got {type(values).__name__}")
    return values


def _field_names(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype) if f.init}


def check_keys(values: Mapping[str, Any], dataclass_types: Sequence[type], source: str) -> None:
    """Reject removed keys (with their replacement) and keys no config class knows."""
    for key in values:
        if key in REMOVED_KEYS:
            raise RecipeError(f"{source}: key {key!r} does not exist in the pinned TRL/transformers: {REMOVED_KEYS[key]}")
    unknown = sorted(set(values) - _field_names(dataclass_types))
    if unknown:
        names = ", ".join(dtype.__name__ for dtype in dataclass_types)
        raise RecipeError(f"{source}: unknown key(s) {unknown}; every key must be a field of {names}")


def parse_overrides(argv: Sequence[str], dataclass_types: Sequence[type]) -> tuple[Path | None, dict[str, Any]]:
    """``--config FILE --key value ...`` -> (recipe path, typed overrides).

    The values are converted by the same ``HfArgumentParser`` TRL's own command line uses (so
    ``--packing``, ``--packing false`` and ``--learning_rate 1e-5`` mean what they mean there),
    but only the keys actually given come back: the recipe's values are never reset to the
    dataclass defaults.
    """
    args = list(argv)
    config = None
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise RecipeError("--config needs a file name")
        config = Path(args[index + 1])
        del args[index : index + 2]
    namespace, unknown = HfArgumentParser(tuple(dataclass_types), allow_abbrev=False).parse_known_args(args)
    if unknown:
        raise RecipeError(f"unknown command-line argument(s) {unknown}; keys are fields of the config classes")
    fields = _field_names(dataclass_types)
    given = set()
    for token in args:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            given.add(name[3:] if name.startswith("no_") and name[3:] in fields else name)
    values = vars(namespace)
    return config, {name: values[name] for name in sorted(given)}


def build_configs(
    dataclass_types: Sequence[type], values: Mapping[str, Any], source: str
) -> tuple[Any, ...]:
    """One instance of each dataclass, filled from ``values`` (each key goes to its owner)."""
    check_keys(values, dataclass_types, source)
    try:
        return HfArgumentParser(tuple(dataclass_types)).parse_dict(dict(values))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{source}: {error}") from error


def device_overrides() -> dict[str, Any]:
    """What a GPU recipe must change to run on this machine: nothing with CUDA, fp32 on a CPU.

    TRL configs default to bf16 and refuse it on a CPU, so tests and CPU runs of a GPU recipe
    pass these values explicitly; a recipe file never changes silently.
    """
    precision = select_precision()
    return {} if not precision.use_cpu else {"use_cpu": True, "bf16": False, "fp16": False}


def effective_batch_size(config: Any, num_processes: int) -> int:
    """Examples per optimizer update: per-device batch x processes x accumulation steps."""
    return int(config.per_device_train_batch_size) * num_processes * int(config.gradient_accumulation_steps)


# ---------------------------------------------------------------------------------------------
# LoRA


def lora_config(r: int, alpha: int, dropout: float, target_modules: str | list[str]) -> Any:
    """A PEFT LoRA config. ``"all-linear"`` adapts every linear layer except the LM head.

    Passed to the TRL trainer as ``peft_config``: TRL then wraps the model, enables input
    gradients for gradient checkpointing and keeps 4-bit adapters in bf16, as QLoRA recommends.
    """
    from peft import LoraConfig

    modules: str | list[str] = target_modules
    if isinstance(target_modules, str) and target_modules != "all-linear":
        modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")


# ---------------------------------------------------------------------------------------------
# Resuming


def sha256_file(path: Path) -> str:
    """Hash of a file's bytes, read in blocks (training files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder in ``output_dir``, if any."""
    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    return Path(found) if found else None


def prepare_output_dir(
    output_dir: Path, fingerprint: Mapping[str, Any], *, resume: bool, is_main_process: bool = True
) -> Path | None:
    """Decide where training starts; return the checkpoint to resume from (None = from scratch).

    ``resume=False`` removes old ``checkpoint-*`` folders so the run really starts over.
    ``resume=True`` continues from the newest checkpoint, but only when the fingerprint saved
    beside it (data hash, base model, ...) matches this run: resuming on different data would
    mix two runs without any error.
    """
    fingerprint = dict(fingerprint)
    fingerprint_file = output_dir / FINGERPRINT_NAME
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is not None and not resume:
        if is_main_process:
            old = sorted(output_dir.glob("checkpoint-*"))
            for folder in old:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"Starting over: removed {len(old)} old checkpoint(s) from {output_dir}")
        checkpoint = None
    if checkpoint is not None:
        saved = json.loads(fingerprint_file.read_text(encoding="utf-8")) if fingerprint_file.exists() else {}
        different = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
        if different:
            details = "; ".join(f"{key}: checkpoint {saved.get(key)!r}, now {fingerprint.get(key)!r}" for key in different)
            raise RecipeError(
                f"{checkpoint} was made by a different run ({details}). Start over with resume=False "
                f"(command line: --resume false) or choose another output_dir."
            )
        print(f"Resuming from {checkpoint}")
    if is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        fingerprint_file.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return checkpoint


# ---------------------------------------------------------------------------------------------
# Saving


def set_generation_eos(model: Any, tokenizer: Any) -> list[int]:
    """Make generation stop at the end of the assistant turn, whatever the checkpoint said.

    Qwen2.5 ends a turn with ``<|im_end|>`` (the tokenizer's EOS) and ends a document with
    ``<|endoftext|>`` (its pad token); a saved model that lists only one of them can run on
    past the answer. Both go into the generation config, the turn end first.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    stop_ids = []
    for token_id in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token_id is not None and token_id not in stop_ids:
            stop_ids.append(int(token_id))
    base.generation_config.eos_token_id = stop_ids
    base.generation_config.pad_token_id = tokenizer.pad_token_id
    return stop_ids


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
    set_generation_eos(model, tokenizer)
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
    set_generation_eos(merged, tokenizer)
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
    recipe_source: str,
    recipe: Mapping[str, Any],
    data: Mapping[str, Any],
    result: Mapping[str, Any],
    usage: str,
) -> Path:
    """``README.md`` beside the weights: what was trained, on what, how, and with what result."""
    text = "\n\n".join(
        [
            f"# {title}",
            summary,
            f"## Recipe\n\nFrom `{recipe_source}`, with overrides applied:\n\n{_markdown_table(recipe)}",
            f"## Training data\n\n{_markdown_table(data)}",
            f"## Result\n\n{_markdown_table(result)}",
            f"## How to load\n\n```python\n{usage.strip()}\n```",
        ]
    )
    path = output_dir / MODEL_CARD_NAME
    path.write_text(text + "\n", encoding="utf-8")
    return path
