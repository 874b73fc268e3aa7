"""Generate answers for a benchmark in batches, keep them on disk, and score them.

A full PCEB run of a 7B model takes hours, so replies are appended to a JSONL file per model,
benchmark and decoding settings as soon as each chunk finishes. A re-run (or a run resumed
after a crash) reads the file and only generates what is missing. A stored reply is reused only
if its prompt is byte-identical, so editing a prompt never mixes old and new answers.

Chunks are fixed in advance (items sorted by prompt length, then cut), and a chunk is always
generated whole: the same chunk sees the same inputs whether a run is fresh or resumed, which
keeps even sampled decoding repeatable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from psyche_utils.answers import extract_answer, split_reasoning
from psyche_utils.evaluation.loaders import DialogueSample, EvalItem
from psyche_utils.evaluation.metrics import essay_item_scores, score_choice
from psyche_utils.evaluation.prompts import choice_prompt, dialogue_prompt, essay_prompt, few_shot_examples
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.paths import outputs_path


@dataclass
class GenerationLog:
    """What a cached run did: how many replies came from disk and how many were generated."""

    path: Path
    reused: int = 0
    generated: int = 0


def _prompt_hash(messages: Messages) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def settings_tag(settings: GenerationSettings) -> str:
    """A short stable name for decoding settings, used in cache file names."""
    payload = json.dumps(asdict(settings), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:10]


def cache_file(backend_name: str, benchmark: str, settings: GenerationSettings, cache_dir: Path | None = None) -> Path:
    """outputs/eval/generations/<model>/<benchmark>-<settings>.jsonl (or under ``cache_dir``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", backend_name).strip("_") or "model"
    name = f"{benchmark}-{settings_tag(settings)}.jsonl"
    if cache_dir is not None:
        path = Path(cache_dir) / safe / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return outputs_path("eval", "generations", safe, name)


def _read_cache(path: Path) -> dict[str, tuple[str, str]]:
    stored: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return stored
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            stored[record["id"]] = (record["prompt_hash"], record["reply"])
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{path}: line {line_number}: not a cached reply ({error}); delete the file to regenerate") from error
    return stored


def generate_cached(
    backend: ChatBackend,
    benchmark: str,
    prompts: Sequence[tuple[str, Messages]],
    settings: GenerationSettings,
    *,
    chunk_size: int = 32,
    cache_dir: Path | None = None,
) -> tuple[dict[str, str], GenerationLog]:
    """Replies for ``(id, messages)`` pairs, generated in chunks and stored as they finish."""
    ids = [item_id for item_id, _ in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{benchmark}: item ids must be unique")
    log = GenerationLog(cache_file(backend.name, benchmark, settings, cache_dir))
    stored = _read_cache(log.path)
    hashes = {item_id: _prompt_hash(messages) for item_id, messages in prompts}
    ordered = sorted(prompts, key=lambda pair: (len(json.dumps(pair[1], ensure_ascii=False)), pair[0]))
    chunks = [ordered[i : i + chunk_size] for i in range(0, len(ordered), chunk_size)]
    replies: dict[str, str] = {}
    for chunk in tqdm(chunks, desc=f"{benchmark} ({backend.name})", unit="chunk"):
        if all(stored.get(item_id, ("", ""))[0] == hashes[item_id] for item_id, _ in chunk):
            replies.update({item_id: stored[item_id][1] for item_id, _ in chunk})
            log.reused += len(chunk)
            continue
        fresh = backend.generate([messages for _, messages in chunk], settings)
        with log.path.open("a", encoding="utf-8") as handle:
            for (item_id, _), reply in zip(chunk, fresh):
                handle.write(json.dumps({"id": item_id, "prompt_hash": hashes[item_id], "reply": reply}, ensure_ascii=False) + "\n")
        replies.update({item_id: reply for (item_id, _), reply in zip(chunk, fresh)})
        log.generated += len(chunk)
    return replies, log


def run_choice(
    backend: ChatBackend,
    items: Sequence[EvalItem],
    settings: GenerationSettings,
    benchmark: str,
    *,
    shot_pool: Sequence[EvalItem] = (),
    k_shot: int = 0,
    chunk_size: int = 32,
    cache_dir: Path | None = None,
) -> tuple[pd.DataFrame, GenerationLog]:
    """Ask every choice item, extract the letters after ``</think>`` and score them.

    Returns one row per item with the raw reply, the prediction, and strict/elastic credit
    (both NaN when the split withholds answers).
    """
    choice_items = [item for item in items if item.question_type in {"single", "multi"}]
    build: Callable[[EvalItem], Messages] = (
        (lambda item: choice_prompt(item, few_shot_examples(shot_pool, item, k_shot))) if k_shot else choice_prompt
    )
    prompts = [(item.id, build(item)) for item in choice_items]
    replies, log = generate_cached(backend, f"{benchmark}-{k_shot}shot", prompts, settings,
                                   chunk_size=chunk_size, cache_dir=cache_dir)
    rows = []
    for item in choice_items:
        reply = replies[item.id]
        pred = extract_answer(reply)
        strict, elastic = score_choice(pred, item.answer) if item.answer else (float("nan"), float("nan"))
        rows.append({
            "id": item.id, "part": item.part, "level": item.level, "subject": item.subject, "task": item.task,
            "native_id": item.native_id, "question_type": item.question_type, "gold": item.answer, "pred": pred,
            "answered": bool(pred), "strict": strict, "elastic": elastic, "reply": reply,
        })
    return pd.DataFrame(rows), log


def run_essays(
    backend: ChatBackend,
    items: Sequence[EvalItem],
    settings: GenerationSettings,
    benchmark: str = "pceb-essay",
    *,
    chunk_size: int = 32,
    cache_dir: Path | None = None,
) -> tuple[pd.DataFrame, GenerationLog]:
    """Answer the case essay questions; score the text after ``</think>`` against the reference."""
    essays = [item for item in items if item.question_type == "essay"]
    replies, log = generate_cached(backend, benchmark, [(item.id, essay_prompt(item)) for item in essays], settings,
                                   chunk_size=chunk_size, cache_dir=cache_dir)
    rows = []
    for item in essays:
        _, answer = split_reasoning(replies[item.id])
        rows.append({"id": item.id, "answer": answer, "reference": item.answer, "reply": replies[item.id],
                     **essay_item_scores(answer, item.answer)})
    return pd.DataFrame(rows), log


def run_dialogues(
    backend: ChatBackend,
    samples: Sequence[DialogueSample],
    settings: GenerationSettings,
    benchmark: str = "psydt",
    *,
    chunk_size: int = 32,
    cache_dir: Path | None = None,
) -> tuple[pd.DataFrame, GenerationLog]:
    """Reply to every PsyDT turn; the judged reply is the text after ``</think>``."""
    replies, log = generate_cached(backend, benchmark, [(s.id, dialogue_prompt(s)) for s in samples], settings,
                                   chunk_size=chunk_size, cache_dir=cache_dir)
    rows = [{"id": s.id, "tag": s.tag, "reply": split_reasoning(replies[s.id])[1], "raw": replies[s.id],
             "reference": s.reference} for s in samples]
    return pd.DataFrame(rows), log
