"""A tiny, offline stand-in for Qwen2.5-7B-Instruct.

The real model is 15 GB and needs the Hub; the tiny one is built here in about a second from
nothing but this repository. It has the same architecture family (Qwen2), the same special
tokens and the same chat template, so every line of training and evaluation code that runs on
it runs unchanged on the real model. Its weights are random: it babbles until it is trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer
from trl.chat_template_utils import qwen2_5_chat_template

from psyche_utils import prompts
from psyche_utils.paths import DATA_DIR, EVAL_DATA_DIR, outputs_dir

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

#: Everything that shapes the tiny model. Changing a value changes the cache key, so the
#: model is rebuilt exactly when its recipe changes; a change to the build code below bumps
#: ``format_version`` for the same reason.
TINY_RECIPE: dict[str, int] = {
    "vocab_size": 4096,
    "min_frequency": 2,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "format_version": 2,
}

_CORPUS_SUFFIXES = {".json", ".jsonl", ".txt", ".md"}


def corpus_files(data_dir: Path = DATA_DIR) -> list[Path]:
    """The repository's own training-side text, in a fixed order.

    Evaluation fixtures are left out so that no benchmark text shapes the vocabulary.
    """
    if not data_dir.exists():
        return []
    files = [
        path
        for path in data_dir.rglob("*")
        if path.is_file() and path.suffix in _CORPUS_SUFFIXES and EVAL_DATA_DIR not in path.parents
    ]
    return sorted(files, key=lambda path: path.relative_to(data_dir).as_posix())


def corpus_texts(data_dir: Path = DATA_DIR) -> list[str]:
    """Texts the tokenizer learns from: the prompts the model will see, then the data files."""
    texts = [
        prompts.SYSTEM_PROMPT_CASE,
        prompts.SYSTEM_PROMPT_GENERAL,
        prompts.THINK_INSTRUCTION,
        "<think>\n</think>\n\n答案：A B C D E",
    ]
    texts += [path.read_text(encoding="utf-8") for path in corpus_files(data_dir)]
    return texts


def recipe_key(texts: list[str], seed: int) -> str:
    """A short hash of the recipe, the corpus and the seed: the cache folder's name."""
    digest = hashlib.sha256()
    digest.update(json.dumps(TINY_RECIPE, sort_keys=True).encode())
    digest.update(f"seed={seed}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:12]


def train_tokenizer(texts: list[str]) -> Qwen2Tokenizer:
    """Train a byte-level BPE with Qwen2's normalizer and pre-tokenizer regex.

    Training with the same regex the reloaded ``Qwen2Tokenizer`` applies is what makes the
    saved tokenizer give identical ids after ``AutoTokenizer.from_pretrained``.
    """
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_RECIPE["vocab_size"],
        min_frequency=TINY_RECIPE["min_frequency"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    merges = json.loads(backend.to_str())["model"]["merges"]
    tokenizer = Qwen2Tokenizer(
        vocab=backend.get_vocab(),
        merges=[tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in merges],
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=TINY_RECIPE["max_position_embeddings"],
    )
    tokenizer.chat_template = qwen2_5_chat_template
    return tokenizer


def build_model(tokenizer: Qwen2Tokenizer, seed: int) -> Qwen2ForCausalLM:
    """A Qwen2 causal LM with random weights drawn from ``seed``."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=TINY_RECIPE["hidden_size"],
        intermediate_size=TINY_RECIPE["intermediate_size"],
        num_hidden_layers=TINY_RECIPE["num_hidden_layers"],
        num_attention_heads=TINY_RECIPE["num_attention_heads"],
        num_key_value_heads=TINY_RECIPE["num_key_value_heads"],
        max_position_embeddings=TINY_RECIPE["max_position_embeddings"],
        # Untied, as in Qwen2.5-7B: tied random embeddings make the model echo its last input token.
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    # Like Qwen2.5-Instruct: stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>.
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def tiny_model_dir(seed: int = 0) -> Path:
    """The cache folder the tiny model for ``seed`` lives in (built or not)."""
    return outputs_dir() / "tiny" / f"qwen2-tiny-seed{seed}-{recipe_key(corpus_texts(), seed)}"


def build_tiny_model(seed: int = 0, force: bool = False) -> Path:
    """Build (or reuse) the tiny model and tokenizer and return their folder.

    The build is written to a temporary folder and renamed into place, so two processes that
    build at once (a two-process ``accelerate launch``) never see half a model.
    """
    target = tiny_model_dir(seed)
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus_texts())
    model = build_model(tokenizer, seed)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        (staging / "recipe.json").write_text(
            json.dumps({"seed": seed, **TINY_RECIPE}, indent=2), encoding="utf-8"
        )
        if force and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tiny(seed: int = 0) -> tuple[Qwen2ForCausalLM, Qwen2Tokenizer]:
    """The tiny model and tokenizer, loaded the way the real ones are loaded."""
    path = build_tiny_model(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tokenizer
