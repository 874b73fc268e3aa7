"""Read the three evaluation benchmarks from their own release formats.

The loaders accept the folders exactly as the benchmark authors publish them (the PCEB tree of
JSON arrays, CPsyExam's per-task files, PsyDT's single-turn test file), so a learner can point
them at the real downloads. Real releases have quirks: answers padded with non-breaking or em
spaces, answers written ``A,B,C``, a single-choice question whose gold is ``AC``, a question whose
gold answer is empty, an unused option "E". The benchmarks' own evaluators score every item, so
the loaders keep every item too and *report* each quirk: a normalised value is listed in
``cleaned``, an item kept with a gold that the strict convention cannot use (or a duplicate id,
an unknown field) in ``flagged``, an item that cannot be typed at all in ``excluded``, and a
part of the layout that is absent in ``missing_parts``. A file that is not valid at all raises
``EvalDataError`` naming the file, record and field. Files are read through
``psyche_utils.datafiles`` (UTF-8 with or without a byte-order mark; anything else is named).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from psyche_utils.datafiles import DataError, read_records, unknown_fields

PCEB_PARTS = ("case", "moral", "theory", "essay")
PCEB_LEVELS = ("second", "third", "simulation")
#: The six folders a complete PCEB tree has; a missing one is reported, not silently skipped.
PCEB_FOLDERS = ("moral/single", "moral/multiple", "theory/single", "theory/multiple", "cases/mix", "cases/essay")
OPTION_LETTERS = "ABCDE"
CPSYEXAM_SPLITS = ("train", "dev", "test")
PSYDT_TEST_FILE = "PsyDTCorpus_test_single_turn_split.json"

_TYPE_FOLDERS = {"single": "single", "multiple": "multi"}
_CASE_PREFIXES = {"单选": "single", "多选": "multi"}
_CPSY_TYPES = {"single": "single", "multi": "multi", "单项选择题": "single", "多项选择题": "multi"}

#: Fields of the published record shapes; anything else is kept in ``EvalItem.extra`` and reported.
PCEB_FIELDS = {"id", "question", "options", "answer", "analysis"}
PCEB_CASE_FIELDS = {"id", "identifier", "general_info", "case_introduction", "questions_and_answers"}
PCEB_SUB_FIELDS = {"question", "options", "answer", "analysis"}
CPSYEXAM_FIELDS = {"id", "subject_name", "question_type", "kind", "question", "options", "answer", "explanation",
                   *OPTION_LETTERS}
_ANSWER_SEPARATORS = re.compile(r"[\s,，、;；/]+")

T = TypeVar("T")


class EvalDataError(ValueError):
    """A benchmark file cannot be read as the format it claims to be."""

    def __init__(self, source: str | Path, record: object, field_name: str, problem: str):
        self.source, self.record, self.field_name, self.problem = str(source), record, field_name, problem
        super().__init__(f"{source}: record {record}: field '{field_name}': {problem}")


@dataclass(frozen=True)
class Issue:
    """One thing a loader changed or left out, with where it was and why."""

    source: str
    record: str
    field: str
    problem: str


@dataclass(frozen=True)
class EvalItem:
    """One scored question: a choice question or a case essay question.

    ``answer`` holds sorted option letters for choice questions, the reference text for essays,
    and "" when the split withholds answers (CPsyExam test) or the gold has no usable letters
    (``gold_problem`` says why). ``official_answer`` is the gold exactly as the benchmark's own
    evaluator compares it (PCEB: the stripped string; CPsyExam: the string as released).
    """

    id: str
    benchmark: str
    part: str
    question_type: str
    question: str
    options: dict[str, str]
    answer: str
    source: str
    native_id: str
    context: str = ""
    level: str = ""
    subject: str = ""
    task: str = ""
    kind: str = ""
    explanation: str = ""
    official_answer: str = ""
    gold_problem: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DialogueSample:
    """One PsyDT test turn: the conversation so far and the counsellor's reference reply."""

    id: str
    tag: str
    system: str
    history: list[dict[str, str]]
    user: str
    reference: str
    source: str


@dataclass
class BenchmarkSet(Generic[T]):
    """The items a loader kept, plus everything it cleaned or excluded on the way."""

    name: str
    root: str
    items: list[T]
    excluded: list[Issue] = field(default_factory=list)
    cleaned: list[Issue] = field(default_factory=list)
    flagged: list[Issue] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    missing_parts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]

    def report(self) -> str:
        """A short human-readable account of what was loaded and what was not."""
        lines = [f"{self.name}: {len(self.items)} items from {self.root}"]
        if self.items and isinstance(self.items[0], EvalItem):
            counts = Counter((item.part, item.question_type) for item in self.items)
            lines.append("  " + ", ".join(f"{part}/{qtype}: {n}" for (part, qtype), n in sorted(counts.items())))
        lines += [f"  excluded {i.source} record {i.record} ({i.field}): {i.problem}" for i in self.excluded]
        lines += [f"  cleaned  {i.source} record {i.record} ({i.field}): {i.problem}" for i in self.cleaned]
        lines += [f"  kept     {i.source} record {i.record} ({i.field}): {i.problem}" for i in self.flagged]
        lines += [f"  ignored file (not part of the layout): {name}" for name in self.ignored_files]
        lines += [f"  missing from this tree: {part}" for part in self.missing_parts]
        return "\n".join(lines)


def _read_json_array(path: Path, label: str) -> list[Any]:
    """The records of one release file, read through ``psyche_utils.datafiles``.

    Ids are not checked here: release files have cases without ids, and duplicate ids are
    reported by the loaders (items are keyed by their record number, so they stay distinct).
    """
    try:
        read = read_records(path, id_field=None)
    except DataError as error:
        first = error.rejections[0]
        where = f"(line {first.line})" if first.line > 0 else "-"
        raise EvalDataError(label, where, first.field, first.reason) from error
    if read.rejections:
        first = read.rejections[0]
        raise EvalDataError(label, f"#{first.line}", first.field, first.reason)
    return [record for _, record in read.records]


def _note_unknown_fields(records: Sequence[Any], known: set[str], label: str, out: "BenchmarkSet[Any]") -> None:
    """One note per file for fields outside the published shape (they are kept in ``extra``)."""
    counts: Counter[str] = Counter()
    for record in records:
        if isinstance(record, dict):
            counts.update(unknown_fields(record, known))
    if counts:
        listed = ", ".join(f"{name} ({n} records)" for name, n in counts.items())
        out.flagged.append(Issue(label, "-", "<fields>", f"fields not in the published format, kept in item.extra: {listed}"))


def _note_duplicate_ids(native_ids: Sequence[str], label: str, out: "BenchmarkSet[Any]") -> None:
    """Blank and repeated native ids, named (predictions files key items by id, so they matter)."""
    seen: dict[str, int] = {}
    for index, native in enumerate(native_ids, start=1):
        if not native.strip():
            out.flagged.append(Issue(label, f"#{index}", "id", "blank id (the item is keyed by its record number)"))
        elif native in seen:
            out.flagged.append(Issue(label, f"#{index}", "id", f"duplicate id {native!r} (first at #{seen[native]}); "
                                     "the item is keyed by its record number"))
        else:
            seen[native] = index


def _require(record: Any, key: str, label: str, where: object, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(record, dict):
        raise EvalDataError(label, where, "-", f"expected an object, found {type(record).__name__}")
    if key not in record:
        raise EvalDataError(label, where, key, "missing")
    value = record[key]
    if not isinstance(value, kind):
        raise EvalDataError(label, where, key, f"expected {getattr(kind, '__name__', kind)}, found {type(value).__name__}")
    return value


def _options(record: dict[str, Any], label: str, where: object) -> dict[str, str]:
    """Option letter -> text. Accepts an "options" object or flat A..E columns (Hub rows)."""
    if "options" in record:
        raw = record["options"]
        if not isinstance(raw, dict):
            raise EvalDataError(label, where, "options", f"expected an object, found {type(raw).__name__}")
    else:
        raw = {letter: record[letter] for letter in OPTION_LETTERS if letter in record}
        if not raw:
            raise EvalDataError(label, where, "options", "missing")
    options: dict[str, str] = {}
    for letter, text in raw.items():
        if letter not in OPTION_LETTERS:
            raise EvalDataError(label, where, f"options.{letter}", "option keys must be letters A-E")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise EvalDataError(label, where, f"options.{letter}", f"expected text, found {type(text).__name__}")
        options[letter] = text.strip()
    return options


def _clean_answer(
    raw: Any, options: Mapping[str, str], question_type: str, label: str, where: str, out: "BenchmarkSet[Any]",
) -> tuple[str, str]:
    """(sorted answer letters, problem) for a gold answer; every item is kept.

    Spaces (non-breaking, em), full-width letters, lowercase and separators (``A,B,C``) are
    normalised and the change is listed in ``cleaned``. A gold with no usable letters keeps
    letters "" and a problem (the strict convention skips it; the official evaluators score it);
    a multi-letter gold in a single-choice file and a letter naming an empty option are kept and
    flagged, because the official evaluators score those items too.
    """
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise EvalDataError(label, where, "answer", f"expected text, found {type(raw).__name__}")
    text = _ANSWER_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()
    if not text:
        out.flagged.append(Issue(label, where, "answer", "empty gold answer (kept: the official evaluator scores it)"))
        return "", "empty gold answer"
    if any(ch not in OPTION_LETTERS for ch in text):
        problem = f"{raw!r} is not made of option letters"
        out.flagged.append(Issue(label, where, "answer", f"{problem} (kept: the official evaluator scores it)"))
        return "", problem
    letters = "".join(sorted(set(text)))
    blank = [ch for ch in letters if not options.get(ch)]
    if blank:
        out.flagged.append(Issue(label, where, "answer", f"{raw!r} names option(s) {''.join(blank)} that have no text"))
    if question_type == "single" and len(letters) != 1:
        out.flagged.append(Issue(label, where, "answer", f"single-choice question with answer {raw!r} (kept and scored as released)"))
    if letters != raw:
        out.cleaned.append(Issue(label, where, "answer", f"{raw!r} -> {letters!r}"))
    return letters, ""


# --------------------------------------------------------------------------- PCEB


def _pceb_root(root: str | Path) -> Path:
    path = Path(root)
    if (path / "benchmark").is_dir():
        path = path / "benchmark"
    if not path.is_dir():
        raise FileNotFoundError(
            f"PCEB folder not found: {path}. Download the 'benchmark' folder of the PsycoLLM repository "
            "(MindIntLab-HFUT/PsycoLLM) and pass its path, or use the fixtures in data/eval/pceb."
        )
    return path


def load_pceb(root: str | Path) -> BenchmarkSet[EvalItem]:
    """Every PCEB question under ``root``: one item per choice question or essay question.

    Layout: ``{moral,theory}/{single,multiple}/<level>/*.json`` and ``cases/{mix,essay}/<level>/*.json``.
    Case choice sub-questions are expanded and typed by their 单选/多选 prefix. Item ids carry the
    file and the record number (``pceb:<file>#<record>``, ``#<case>.<sub>`` for cases), so they
    are unique even where a release repeats a native id.
    """
    base = _pceb_root(root)
    result: BenchmarkSet[EvalItem] = BenchmarkSet("PCEB", str(base), [])
    files = sorted(base.rglob("*.json"), key=lambda p: p.relative_to(base).as_posix())
    seen_folders = set()
    for path in files:
        rel = path.relative_to(base).as_posix()
        parts = rel.split("/")
        if len(parts) == 4 and parts[0] in {"moral", "theory"} and parts[1] in _TYPE_FOLDERS:
            _load_pceb_plain(path, rel, parts[0], _TYPE_FOLDERS[parts[1]], parts[2], result)
        elif len(parts) == 4 and parts[0] == "cases" and parts[1] == "mix":
            _load_pceb_cases(path, rel, parts[2], result)
        elif len(parts) == 4 and parts[0] == "cases" and parts[1] == "essay":
            _load_pceb_essays(path, rel, parts[2], result)
        else:
            result.ignored_files.append(rel)
            continue
        seen_folders.add("/".join(parts[:2]))
    if not result.items:
        raise EvalDataError(base, "-", "-", "no PCEB questions found (expected moral/, theory/ and cases/ folders)")
    result.missing_parts = [folder for folder in PCEB_FOLDERS if folder not in seen_folders]
    return result


def _load_pceb_plain(path: Path, rel: str, part: str, qtype: str, level: str, out: BenchmarkSet[EvalItem]) -> None:
    records = _read_json_array(path, rel)
    _note_unknown_fields(records, PCEB_FIELDS, rel, out)
    natives = []
    for index, record in enumerate(records, start=1):
        where = f"#{index}"
        question = _require(record, "question", rel, where)
        options = _options(record, rel, where)
        native = str(record.get("id", index))
        natives.append(native)
        raw = record.get("answer")
        answer, problem = _clean_answer(raw, options, qtype, rel, f"{where} (id {native})", out)
        out.items.append(EvalItem(
            id=f"pceb:{rel}#{index}", benchmark="pceb", part=part, question_type=qtype, question=question.strip(),
            options=options, answer=answer, source=rel, native_id=native, level=level,
            explanation=str(record.get("analysis") or "").strip(), official_answer=str(raw or "").strip(),
            gold_problem=problem, extra={k: record[k] for k in unknown_fields(record, PCEB_FIELDS)},
        ))
    _note_duplicate_ids(natives, rel, out)


def _case_context(record: dict[str, Any], rel: str, where: str) -> str:
    info = _require(record, "general_info", rel, where).strip()
    intro = _require(record, "case_introduction", rel, where).strip()
    return f"{info}\n{intro}"


def _case_subquestions(
    records: Sequence[Any], rel: str
) -> Iterator[tuple[str, int, int, dict[str, Any], str, str]]:
    """Each sub-question of a case file, with its case context, case and sub-question numbers and a location."""
    for index, case in enumerate(records, start=1):
        case_where = f"#{index}"
        context = _case_context(case, rel, case_where)
        case_id = str(case.get("id", index))
        for k, sub in enumerate(_require(case, "questions_and_answers", rel, case_where, list), start=1):
            where = f"#{index}.{k} (case {case_id})"
            yield context, index, k, sub, where, _require(sub, "question", rel, where).strip()


def _load_pceb_cases(path: Path, rel: str, level: str, out: BenchmarkSet[EvalItem]) -> None:
    records = _read_json_array(path, rel)
    _note_unknown_fields(records, PCEB_CASE_FIELDS, rel, out)
    _note_duplicate_ids([str(c.get("id", i)) for i, c in enumerate(records, start=1) if isinstance(c, dict)], rel, out)
    for context, index, k, sub, where, question in _case_subquestions(records, rel):
        prefix = question[:2]
        if prefix not in _CASE_PREFIXES:
            out.excluded.append(Issue(rel, where, "question", "no 单选/多选 prefix, so the question type is unknown"))
            continue
        qtype = _CASE_PREFIXES[prefix]
        options = _options(sub, rel, where)
        raw = sub.get("answer")
        answer, problem = _clean_answer(raw, options, qtype, rel, where, out)
        out.items.append(EvalItem(
            id=f"pceb:{rel}#{index}.{k}", benchmark="pceb", part="case", question_type=qtype, question=question,
            options=options, answer=answer, source=rel, native_id=f"{records[index - 1].get('id', index)}.{k}",
            context=context, level=level, explanation=str(sub.get("analysis") or "").strip(),
            official_answer=str(raw or "").strip(), gold_problem=problem,
            extra={key: sub[key] for key in unknown_fields(sub, PCEB_SUB_FIELDS)},
        ))


def _load_pceb_essays(path: Path, rel: str, level: str, out: BenchmarkSet[EvalItem]) -> None:
    records = _read_json_array(path, rel)
    _note_unknown_fields(records, PCEB_CASE_FIELDS, rel, out)
    for context, index, k, sub, where, question in _case_subquestions(records, rel):
        reference = str(sub.get("answer") or "").strip()
        if not reference:
            out.excluded.append(Issue(rel, where, "answer", "empty reference answer"))
            continue
        out.items.append(EvalItem(
            id=f"pceb:{rel}#{index}.{k}", benchmark="pceb", part="essay", question_type="essay", question=question,
            options={}, answer=reference, source=rel, native_id=f"{records[index - 1].get('id', index)}.{k}",
            context=context, level=level, official_answer=reference,
        ))


# --------------------------------------------------------------------------- CPsyExam


def cpsyexam_records(
    records: Sequence[Mapping[str, Any]], source: str, *, task: str = "", require_answers: bool = True,
    out: BenchmarkSet[EvalItem] | None = None,
) -> BenchmarkSet[EvalItem]:
    """CPsyExam records (file rows or Hub rows) as items; answers optional for the test split.

    ``task`` is the task file's stem (``KG-GEE-普通心理学-单项选择题``), the unit the official
    evaluator averages over; Hub rows without one get ``<subject>-<单项选择题|多项选择题>``.
    """
    out = out if out is not None else BenchmarkSet("CPsyExam", source, [])
    _note_unknown_fields(records, CPSYEXAM_FIELDS, source, out)
    natives = []
    for index, record in enumerate(records, start=1):
        record = dict(record)
        native = str(record.get("id", index))
        natives.append(native)
        where = f"#{index} (id {native})"
        question = _require(record, "question", source, where)
        subject = _require(record, "subject_name", source, where).strip()
        raw_type = _require(record, "question_type", source, where).strip()
        if raw_type not in _CPSY_TYPES:
            raise EvalDataError(source, where, "question_type", f"{raw_type!r} is neither 'single' nor 'multi'")
        qtype = _CPSY_TYPES[raw_type]
        options = _options(record, source, where)
        raw_answer = record.get("answer")
        if not require_answers and not (raw_answer or "").strip():
            answer, problem = "", ""
        else:
            answer, problem = _clean_answer(raw_answer, options, qtype, source, where, out)
        item_task = task or f"{subject}-{'单项选择题' if qtype == 'single' else '多项选择题'}"
        out.items.append(EvalItem(
            id=f"cpsyexam:{item_task}#{index}", benchmark="cpsyexam", part=subject, question_type=qtype,
            question=question.strip(), options=options, answer=answer, source=source, native_id=native,
            subject=subject, task=item_task, kind=str(record.get("kind") or ""),
            explanation=str(record.get("explanation") or "").strip(), official_answer=str(raw_answer or ""),
            gold_problem=problem, extra={k: record[k] for k in unknown_fields(record, CPSYEXAM_FIELDS)},
        ))
    _note_duplicate_ids(natives, source, out)
    return out


def load_cpsyexam(root: str | Path, split: str = "dev", *, require_answers: bool | None = None) -> BenchmarkSet[EvalItem]:
    """CPsyExam from a local copy: ``<root>/<split>/<task>.json`` (task = file stem, e.g.
    ``KG-PCE-心理咨询师三级-单项选择题``). The test split withholds answers, so by default only
    train and dev must have them; score dev, write a submission for test. Every record is kept
    (the release's train/dev/test hold 9,855 / 1,097 / 3,902); the other splits that are absent
    from ``root`` are listed in ``missing_parts``.
    """
    if split not in CPSYEXAM_SPLITS:
        raise ValueError(f"split must be one of {CPSYEXAM_SPLITS}, got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        present = [name for name in CPSYEXAM_SPLITS if (Path(root) / name).is_dir()]
        raise FileNotFoundError(
            f"CPsyExam split folder not found: {folder} (splits present: {', '.join(present) or 'none'}). Unpack the "
            "CPsyExam release (train/dev/test folders of per-task JSON files) there, load it with load_cpsyexam_hub, "
            "or use data/eval/cpsyexam."
        )
    needs_answers = split != "test" if require_answers is None else require_answers
    out: BenchmarkSet[EvalItem] = BenchmarkSet(f"CPsyExam ({split})", str(folder), [])
    for path in sorted(folder.glob("*.json")):
        label = f"{split}/{path.name}"
        cpsyexam_records(_read_json_array(path, label), label, task=path.stem, require_answers=needs_answers, out=out)
    if not out.items:
        raise EvalDataError(folder, "-", "-", "no CPsyExam records found")
    out.missing_parts = [f"{name}/" for name in CPSYEXAM_SPLITS if not (Path(root) / name).is_dir()]
    return out


def load_cpsyexam_hub(
    split: str = "validation", *, dataset_id: str = "CAS-SIAT-XinHai/CPsyExam", config: str | None = None,
    require_answers: bool | None = None, **load_kwargs: Any,
) -> BenchmarkSet[EvalItem]:
    """CPsyExam through ``datasets.load_dataset`` (a Hub id, or a local folder/loader script).

    Needs network access for a Hub id; the rows go through the same checks as the local files.
    """
    from datasets import load_dataset

    rows = load_dataset(dataset_id, config, split=split, **load_kwargs)
    needs_answers = split != "test" if require_answers is None else require_answers
    source = f"{dataset_id}:{config or 'default'}:{split}"
    return cpsyexam_records(list(rows), source, task=config or "", require_answers=needs_answers)


# --------------------------------------------------------------------------- PsyDT (SoulChat2.0 test set)


def load_psydt(path: str | Path) -> BenchmarkSet[DialogueSample]:
    """PsyDT single-turn test samples; the last assistant message of each is the reference reply.

    ``path`` is the JSON file or the folder that holds ``PsyDTCorpus_test_single_turn_split.json``.
    """
    file = Path(path)
    if file.is_dir():
        file = file / PSYDT_TEST_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"PsyDT test file not found: {file}. Download {PSYDT_TEST_FILE} from the ModelScope dataset "
            "YIRONGCHEN/PsyDTCorpus, or use data/eval/soulchat."
        )
    label = file.name
    out: BenchmarkSet[DialogueSample] = BenchmarkSet("PsyDT (SoulChat2.0 test)", str(file), [])
    for index, record in enumerate(_read_json_array(file, label), start=1):
        native = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        where = f"#{index} (id {native})"
        messages = _require(record, "messages", label, where, list)
        for k, message in enumerate(messages):
            role = _require(message, "role", label, f"{where} message {k}")
            _require(message, "content", label, f"{where} message {k}")
            if role not in {"system", "user", "assistant"}:
                raise EvalDataError(label, f"{where} message {k}", "role", f"unknown role {role!r}")
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
            raise EvalDataError(label, where, "messages", "must end with a user turn followed by the reference assistant turn")
        reference = messages[-1]["content"].strip()
        if not reference:
            out.excluded.append(Issue(label, where, "messages[-1].content", "empty reference reply"))
            continue
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        history = [dict(m) for m in messages[1 if system else 0 : -2]]
        out.items.append(DialogueSample(
            id=f"psydt:{native}", tag=str(record.get("normalizedTag", "")), system=system, history=history,
            user=messages[-2]["content"].strip(), reference=reference, source=label,
        ))
    return out
