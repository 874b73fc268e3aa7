"""Exact and near-duplicate removal, and the contamination check against evaluation sets.

Both rest on one idea: two texts are near-duplicates when the Jaccard similarity of their sets
of character n-grams is high. Chinese has no spaces, so characters (not words) are the unit.
Comparing every pair is quadratic; MinHash signatures with locality-sensitive hashing
(datasketch) find the candidate pairs in near-linear time, and every candidate is then checked
with the exact Jaccard similarity, so what is reported as a duplicate really is one.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from datasketch import MinHash, MinHashLSH
from psyche_utils.progress import progress as progress_bar

from psyche_utils import datafiles
from psyche_utils.paths import EVAL_DATA_DIR
from psyche_utils.schema import Question

T = TypeVar("T")


# --------------------------------------------------------------------------- text features


_NOT_WORD = re.compile(r"[\W_]+")


def normalize_for_matching(text: str) -> str:
    """Fold width and case, drop whitespace, punctuation and symbols: "( )" and "（ ）" must match."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).lower())


def _ngrams_of_normalized(text: str, n: int) -> set[str]:
    if len(text) <= n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def char_ngrams(text: str, n: int = 5) -> set[str]:
    """The set of character n-grams of the normalised text (the whole text if it is shorter than n)."""
    return _ngrams_of_normalized(normalize_for_matching(text), n)


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; two empty sets count as identical."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def question_text(question: Question) -> str:
    """What makes two questions the same question: the stem and the options, in letter order."""
    return question.question + " " + " ".join(question.options[letter] for letter in sorted(question.options))


def question_stem(question: Question) -> str:
    return question.question


def _candidate_threshold(threshold: float) -> float:
    """LSH is run below the real threshold: at the threshold itself it would miss about half of
    the pairs that sit right on it. The extra candidates cost one exact Jaccard each."""
    return max(0.05, round(threshold * 0.8, 4))


def _minhashes(shingles: Sequence[set[str]], num_perm: int, seed: int) -> list[MinHash]:
    """MinHash signatures that share one set of permutations (built once, not per text).

    CRC32 (C code, called directly) replaces datasketch's default SHA-1 wrapper as the base hash:
    the affine32 scheme mixes every base hash with a MurmurHash3 finaliser before permuting, so a
    fast, well-spread 32-bit hash is all it needs, and hashing stops dominating the run time.
    """
    encoded = ([gram.encode("utf-8") for gram in sorted(grams)] for grams in shingles)
    return list(MinHash.generator(encoded, num_perm=num_perm, seed=seed, hashfunc=zlib.crc32))


# --------------------------------------------------------------------------- deduplication


@dataclass(frozen=True)
class RemovedDuplicate:
    """A record removed because an earlier kept record says the same thing."""

    id: str
    kept_id: str
    match: str  # "exact" (same normalised text) or "near" (Jaccard >= threshold)
    similarity: float


@dataclass(frozen=True)
class DuplicateCluster:
    """A kept record and every record removed as its duplicate."""

    kept_id: str
    removed_ids: tuple[str, ...]
    similarities: tuple[float, ...]


@dataclass
class DedupResult(Generic[T]):
    """What survived, what was removed (and in favour of which record), and the LSH work done."""

    kept: list[T]
    removed: list[RemovedDuplicate]
    threshold: float
    ngram: int
    candidate_pairs: int = 0
    verified_pairs: int = 0

    @property
    def clusters(self) -> list[DuplicateCluster]:
        grouped: dict[str, list[RemovedDuplicate]] = {}
        for item in self.removed:
            grouped.setdefault(item.kept_id, []).append(item)
        return [
            DuplicateCluster(kept_id, tuple(r.id for r in members), tuple(r.similarity for r in members))
            for kept_id, members in grouped.items()
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "kept": len(self.kept),
            "removed_exact": sum(r.match == "exact" for r in self.removed),
            "removed_near": sum(r.match == "near" for r in self.removed),
            "clusters": len(self.clusters),
            "lsh_candidates": self.candidate_pairs,
            "verified_pairs": self.verified_pairs,
        }


def deduplicate(
    records: Sequence[T],
    *,
    text: Callable[[T], str] = question_text,  # type: ignore[assignment]
    record_id: Callable[[T], str] = lambda record: record.id,  # type: ignore[attr-defined]
    threshold: float = 0.6,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 42,
    progress: bool = False,
) -> DedupResult[T]:
    """Keep the first of every group of exact or near-duplicate records, in input order.

    Exact duplicates (same normalised text) are caught by hashing. The rest are compared with
    MinHash LSH: each record queries the index of records already kept, candidates are checked
    with the true n-gram Jaccard, and a record whose best match reaches ``threshold`` is removed
    in favour of that match; otherwise it is kept and added to the index. Input order decides
    which member survives, so put the records you trust most (e.g. the seed bank) first.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    normalized = [normalize_for_matching(text(record)) for record in records]
    ids = [record_id(record) for record in records]
    removed: list[RemovedDuplicate] = []
    first_by_text: dict[str, int] = {}
    unique: list[int] = []
    for index, key in enumerate(normalized):
        if key in first_by_text:
            removed.append(RemovedDuplicate(ids[index], ids[first_by_text[key]], "exact", 1.0))
        else:
            first_by_text[key] = index
            unique.append(index)

    shingles = {index: _ngrams_of_normalized(normalized[index], ngram) for index in unique}
    signatures = dict(zip(unique, _minhashes([shingles[i] for i in unique], num_perm, seed)))
    lsh = MinHashLSH(threshold=_candidate_threshold(threshold), num_perm=num_perm)
    kept_indices: list[int] = []
    candidates = verified = 0
    for index in progress_bar(unique, desc="near-duplicates", show=progress):
        best: tuple[float, int] | None = None
        for other in lsh.query(signatures[index]):
            candidates += 1
            similarity = jaccard(shingles[index], shingles[other])
            if similarity >= threshold:
                verified += 1
                if best is None or (similarity, -other) > (best[0], -best[1]):
                    best = (similarity, other)
        if best is None:
            lsh.insert(index, signatures[index])
            kept_indices.append(index)
        else:
            removed.append(RemovedDuplicate(ids[index], ids[best[1]], "near", round(best[0], 4)))
    kept_set = set(kept_indices)
    return DedupResult(
        kept=[records[i] for i in range(len(records)) if i in kept_set],
        removed=removed,
        threshold=threshold,
        ngram=ngram,
        candidate_pairs=candidates,
        verified_pairs=verified,
    )


# --------------------------------------------------------------------------- evaluation sets


@dataclass(frozen=True)
class EvalItem:
    """One text of an evaluation set that training data must not contain."""

    set_name: str
    id: str
    text: str


@dataclass
class EvalCorpus:
    """Every evaluation text found under a folder, grouped by set, plus what could not be read."""

    sets: dict[str, list[EvalItem]]
    problems: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.sets.items()}


_SPLITS = {"train", "dev", "validation", "test"}


def _set_name(relative: Path) -> str:
    """data/eval/pceb/theory/... -> "pceb"; data/eval/cpsyexam/dev/... -> "cpsyexam/dev"."""
    parts = relative.parts
    if len(parts) > 2 and parts[1] in _SPLITS:
        return f"{parts[0]}/{parts[1]}"
    return parts[0] if len(parts) > 1 else relative.stem


def _texts_of_record(record: Any) -> list[tuple[str, str]]:
    """(suffix, text) pairs to check for one native record of PCEB, CPsyExam, SoulChat or a safety set."""
    if not isinstance(record, dict):
        return []
    found: list[tuple[str, str]] = []
    if isinstance(record.get("question"), str) and record["question"].strip():
        found.append(("", record["question"]))
    sub_items = record.get("questions_and_answers")
    if isinstance(sub_items, list):
        case = str(record.get("case_introduction") or "")
        if case.strip():
            found.append(("#case", case))
        for number, item in enumerate(sub_items, 1):
            if isinstance(item, dict) and isinstance(item.get("question"), str):
                found.append((f"#q{number}", f"{case} {item['question']}"))
    messages = record.get("messages")
    if isinstance(messages, list):
        for number, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
                found.append((f"#turn{number}", message["content"]))
    for key in ("prompt", "post", "text"):
        if not found and isinstance(record.get(key), str) and record[key].strip():
            found.append(("", record[key]))
    return found


def _read_json_records(path: Path) -> list[Any]:
    """Every record of a JSON/JSONL evaluation file, through the one reader (``datafiles``).

    Ids are not checked here (benchmark files have their own id schemes); a single JSON object
    that is not a record list is read as one record. Unreadable lines raise DataError.
    """
    if path.suffix == ".json":
        data = datafiles.read_json(path)
        if isinstance(data, dict):
            data = data.get("data", [data])
        return data if isinstance(data, list) else [data]
    return [record for _, record in datafiles.strict(datafiles.read_records(path, id_field=None))]


def load_eval_items(eval_dir: str | Path = EVAL_DATA_DIR) -> EvalCorpus:
    """Read every JSON/JSONL file under ``eval_dir`` in its native benchmark format.

    Understands records with a "question" (PCEB theory/moral, CPsyExam), case wrappers with
    "questions_and_answers" (PCEB cases: the case text alone and case + each sub-question),
    chat records with "messages" (SoulChat: every user turn) and plain "prompt"/"text" records.
    Files or records it cannot read are listed in ``problems``, never skipped silently.
    """
    eval_dir = Path(eval_dir)
    corpus = EvalCorpus(sets={})
    if not eval_dir.is_dir():
        corpus.problems.append(f"{eval_dir}: no evaluation folder")
        return corpus
    for path in sorted(p for p in eval_dir.rglob("*") if p.suffix in {".json", ".jsonl"} and p.is_file()):
        relative = path.relative_to(eval_dir)
        try:
            records = _read_json_records(path)
        except datafiles.DataError as error:
            corpus.problems.append(f"{relative}: unreadable ({error})")
            continue
        name = _set_name(relative)
        items = corpus.sets.setdefault(name, [])
        unknown = 0
        for number, record in enumerate(records, 1):
            texts = _texts_of_record(record)
            if not texts:
                unknown += 1
            base = str(record.get("id", number)) if isinstance(record, dict) else str(number)
            items.extend(EvalItem(name, f"{relative}:{base}{suffix}", text) for suffix, text in texts)
        if unknown:
            corpus.problems.append(f"{relative}: {unknown} record(s) with no question, case, messages or prompt")
    corpus.sets = {name: items for name, items in corpus.sets.items() if items}
    return corpus


# --------------------------------------------------------------------------- contamination


@dataclass(frozen=True)
class ContaminationHit:
    """A training record that overlaps an evaluation item."""

    train_id: str
    eval_set: str
    eval_id: str
    match: str  # "exact" or "near"
    similarity: float
    train_text: str
    eval_text: str


@dataclass
class ContaminationReport:
    """Every overlap between a training set and the evaluation sets, and the settings used."""

    hits: list[ContaminationHit]
    train_size: int
    eval_sizes: dict[str, int]
    threshold: float
    ngram: int

    @property
    def flagged_ids(self) -> set[str]:
        return {hit.train_id for hit in self.hits}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per evaluation set: flagged training records, split into exact and near matches."""
        table: dict[str, dict[str, int]] = {}
        for name in self.eval_sizes:
            hits = [hit for hit in self.hits if hit.eval_set == name]
            exact = {hit.train_id for hit in hits if hit.match == "exact"}
            near = {hit.train_id for hit in hits} - exact
            table[name] = {"eval_items": self.eval_sizes[name], "exact": len(exact), "near": len(near)}
        return table

    def remove(self, records: Iterable[T], record_id: Callable[[T], str] = lambda r: r.id) -> tuple[list[T], list[T]]:  # type: ignore[attr-defined]
        """(clean records, flagged records), both in input order."""
        clean, flagged = [], []
        for record in records:
            (flagged if record_id(record) in self.flagged_ids else clean).append(record)
        return clean, flagged


def contamination_report(
    train: Sequence[T],
    eval_sets: Mapping[str, Sequence[EvalItem | str]] | EvalCorpus,
    *,
    text: Callable[[T], str] = question_stem,  # type: ignore[assignment]
    record_id: Callable[[T], str] = lambda record: record.id,  # type: ignore[attr-defined]
    threshold: float = 0.7,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 42,
) -> ContaminationReport:
    """Flag every training record whose text matches an evaluation item exactly or nearly.

    Defaults follow the measurement quoted for PCEB vs CPsyExam: character 5-grams and
    Jaccard >= 0.7 on question stems. Every LSH candidate is confirmed with the exact Jaccard.
    """
    sets = eval_sets.sets if isinstance(eval_sets, EvalCorpus) else eval_sets
    items = [
        item if isinstance(item, EvalItem) else EvalItem(name, f"{name}:{number}", item)
        for name, values in sets.items()
        for number, item in enumerate(values, 1)
    ]
    eval_shingles = [char_ngrams(item.text, ngram) for item in items]
    by_text: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_text.setdefault(normalize_for_matching(item.text), []).append(index)
    lsh = MinHashLSH(threshold=_candidate_threshold(threshold), num_perm=num_perm)
    for index, signature in enumerate(_minhashes(eval_shingles, num_perm, seed)):
        lsh.insert(index, signature)

    train_texts = [text(record) for record in train]
    train_shingles = [char_ngrams(value, ngram) for value in train_texts]
    hits: list[ContaminationHit] = []
    for record, value, grams, signature in zip(train, train_texts, train_shingles, _minhashes(train_shingles, num_perm, seed)):
        exact = set(by_text.get(normalize_for_matching(value), []))
        for index in sorted(exact | set(lsh.query(signature))):
            similarity = 1.0 if index in exact else jaccard(grams, eval_shingles[index])
            if similarity >= threshold:
                item = items[index]
                hits.append(
                    ContaminationHit(
                        record_id(record), item.set_name, item.id, "exact" if index in exact else "near",
                        round(similarity, 4), value, item.text,
                    )
                )
    return ContaminationReport(
        hits=hits,
        train_size=len(train),
        eval_sizes={name: len(values) for name, values in sets.items()},
        threshold=threshold,
        ngram=ngram,
    )
