"""Generate answers for a benchmark in batches, keep them on disk, and score them.

A full PCEB run of a 7B model takes hours, so replies are appended to a JSONL file per model,
benchmark and decoding settings as soon as each chunk finishes. A re-run (or a run resumed
after a crash) reads the file and only generates what is missing. A stored reply is reused only
if its prompt is byte-identical, so editing a prompt never mixes old and new answers.

Chunks are fixed in advance (items sorted by prompt length, then cut), and a chunk is always
generated whole: the same chunk sees the same inputs whether a run is fresh or resumed, which
keeps even sampled decoding repeatable. Cache names carry the decoding preset's label
(``pceb-0shot-greedy-256-<hash>.jsonl``) so a table can say which settings produced it. A crash
in the middle of a write leaves a torn last line: it is reported, cut off and regenerated, not
fatal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from psyche_utils.datafiles import DataError, read_records

import pandas as pd
from psyche_utils.progress import progress

from psyche_utils.answers import split_reasoning
from psyche_utils.evaluation.conventions import Convention, get_convention, score_replies
from psyche_utils.evaluation.loaders import DialogueSample, EvalItem
from psyche_utils.evaluation.metrics import official_essay_item_scores
from psyche_utils.evaluation.prompts import choice_prompt, dialogue_prompt, essay_prompt, few_shot_examples
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.paths import outputs_path


@dataclass
class GenerationLog:
    """What a cached run did: how many replies came from disk and how many were generated."""

    path: Path
    settings_label: str = ""
    reused: int = 0
    generated: int = 0
    torn_line: int | None = None

    def report(self) -> str:
        note = f"; torn last line {self.torn_line} (a crash mid-write) was cut off and regenerated" if self.torn_line else ""
        return f"{self.path.name} [{self.settings_label}]: {self.reused} reused, {self.generated} generated{note}"


def _prompt_hash(messages: Messages) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def settings_tag(settings: GenerationSettings) -> str:
    """A short stable name for decoding settings, used in cache file names."""
    payload = json.dumps(asdict(settings), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:10]


def cache_file(backend_name: str, benchmark: str, settings: GenerationSettings, cache_dir: Path | None = None) -> Path:
    """outputs/eval/generations/<model>/<benchmark>-<preset label>-<settings hash>.jsonl (or under ``cache_dir``).

    The label (``greedy-256``, ``t0.7-p0.9-2048``) is for people; the hash covers every field.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", backend_name).strip("_") or "model"
    name = f"{benchmark}-{settings.label}-{settings_tag(settings)}.jsonl"
    if cache_dir is not None:
        path = Path(cache_dir) / safe / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return outputs_path("eval", "generations", safe, name)


def _read_cache(path: Path) -> tuple[dict[str, tuple[str, str]], int | None]:
    """Stored (prompt hash, reply) per id, and the number of a torn last line (then cut off the file).

    A later record for the same id wins (an edited prompt appends a new reply). Any other bad
    line is an error naming it: the file is not a cache of this runner.
    """
    stored: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return stored, None
    try:
        read = read_records(path, id_field=None, allow_torn_last_line=True)
    except DataError as error:
        raise ValueError(f"{error}\ndelete {path} to regenerate") from error
    if read.rejections:
        raise ValueError(f"{read.rejections[0]}; not a cached reply, delete {path} to regenerate")
    for line_number, record in read.records:
        if not isinstance(record.get("id"), str) or not isinstance(record.get("prompt_hash"), str) or not isinstance(record.get("reply"), str):
            raise ValueError(f"{path}: line {line_number}: not a cached reply (needs string id, prompt_hash and reply); "
                             "delete the file to regenerate")
        stored[record["id"]] = (record["prompt_hash"], record["reply"])
    if read.torn_last_line is not None:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(lines[: read.torn_last_line - 1]), encoding="utf-8")
    return stored, read.torn_last_line


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
    log = GenerationLog(cache_file(backend.name, benchmark, settings, cache_dir), settings.label)
    stored, log.torn_line = _read_cache(log.path)
    hashes = {item_id: _prompt_hash(messages) for item_id, messages in prompts}
    ordered = sorted(prompts, key=lambda pair: (len(json.dumps(pair[1], ensure_ascii=False)), pair[0]))
    chunks = [ordered[i : i + chunk_size] for i in range(0, len(ordered), chunk_size)]
    replies: dict[str, str] = {}
    for chunk in progress(chunks, desc=f"{benchmark} ({backend.name})", unit="chunk"):
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
    convention: str | Convention = "strict",
) -> tuple[pd.DataFrame, GenerationLog]:
    """Ask every choice item and score the replies under ``convention`` (default ``strict``).

    Returns one row per item with the raw reply, the prediction, whether it was answered, the
    outcome and strict/elastic credit (NaN when the split withholds answers, or when the
    convention cannot score the item's gold). Score the same replies under another convention
    with ``conventions.score_replies(items, dict(zip(frame.id, frame.reply)), name)``.
    """
    conv = get_convention(convention)
    choice_items = [item for item in items if item.question_type in {"single", "multi"}]
    build: Callable[[EvalItem], Messages] = (
        (lambda item: choice_prompt(item, few_shot_examples(shot_pool, item, k_shot))) if k_shot else choice_prompt
    )
    prompts = [(item.id, build(item)) for item in choice_items]
    replies, log = generate_cached(backend, f"{benchmark}-{k_shot}shot", prompts, settings,
                                   chunk_size=chunk_size, cache_dir=cache_dir)
    gradable = [item for item in choice_items if item.answer or item.official_answer or item.gold_problem]
    scored = score_replies(gradable, replies, conv).rows.set_index("id")
    rows = []
    for item in choice_items:
        reply = replies[item.id]
        pred = conv.prediction(reply, item)
        found = item.id in scored.index
        rows.append({
            "id": item.id, "part": item.part, "level": item.level, "subject": item.subject, "task": item.task,
            "native_id": item.native_id, "question_type": item.question_type, "gold": item.answer, "pred": pred,
            "answered": bool(pred), "outcome": scored.at[item.id, "outcome"] if found else "",
            "strict": scored.at[item.id, "strict"] if found else float("nan"),
            "elastic": scored.at[item.id, "elastic"] if found else float("nan"),
            "reply": reply, "convention": conv.name, "settings": settings.label,
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
    """Answer the case essay questions; score the text after ``</think>`` with the official ROUGE/BLEU."""
    essays = [item for item in items if item.question_type == "essay"]
    replies, log = generate_cached(backend, benchmark, [(item.id, essay_prompt(item)) for item in essays], settings,
                                   chunk_size=chunk_size, cache_dir=cache_dir)
    rows = []
    for item in essays:
        _, answer = split_reasoning(replies[item.id])
        rows.append({"id": item.id, "answer": answer, "reference": item.answer, "reply": replies[item.id],
                     **official_essay_item_scores(answer, item.answer)})
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
