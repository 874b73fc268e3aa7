"""The one reader for every JSON, JSONL and CSV data file the tutorial touches.

Data arrives from people: files saved by Excel (a UTF-8 byte-order mark, or GBK on a Chinese
Windows), hand-edited JSONL with a torn line, a JSON array saved under a ``.jsonl`` name, two
records with the same id, a path with a typo. Each of these gets one clear message here that
names the file, the line or record and the field, so no loader has to repeat the checks and no
record is dropped without a report.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psyche_utils.paths import REPO_ROOT

#: File endings that mark a string as a local file, never a Hugging Face Hub dataset id.
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".parquet", ".arrow", ".yaml", ".yml")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_BOM = "\ufeff"
_RESAVE_HINT = "re-save it as UTF-8 (in Excel: File > Save As > 'CSV UTF-8'; in an editor: encoding UTF-8)"


@dataclass(frozen=True)
class Rejection:
    """One problem with one record: where it is (file and line or record number) and which field."""

    source: str
    line: int
    record_id: str | None
    field: str
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        record = f" [id {self.record_id}]" if self.record_id else ""
        where = f", {self.unit} {self.line}" if self.line > 0 else ""
        return f"{self.source}{where}{record}, field '{self.field}': {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataError(ValueError):
    """Raised by a strict read: the message lists every bad record, not just the first."""

    def __init__(self, rejections: list[Rejection]):
        self.rejections = list(rejections)
        lines = "\n".join(f"  - {rejection}" for rejection in self.rejections)
        super().__init__(f"{len(self.rejections)} problem(s) in the records:\n{lines}")


@dataclass
class RecordsRead:
    """What a read found: numbered records, the problems, and a torn last line if one was allowed."""

    source: str
    unit: str
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    torn_last_line: int | None = None


def display_path(path: str | Path) -> str:
    """A path as messages show it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _file_error(path: Path, line: int, field_name: str, reason: str, unit: str = "line") -> DataError:
    return DataError([Rejection(display_path(path), line, None, field_name, reason, unit)])


def read_text(path: str | Path, *, allow_empty: bool = False) -> str:
    """A data file's text: UTF-8 with or without a byte-order mark, anything else named with a fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        guess = " (it looks like GBK, what Excel saves on a Chinese system)" if _decodes_as_gbk(raw) else ""
        reason = f"not UTF-8 at byte {error.start}{guess}: {_RESAVE_HINT}"
        raise _file_error(path, line, "<encoding>", reason) from None
    text = text.removeprefix(_BOM)
    if not allow_empty and not text.strip():
        raise _file_error(path, 0, "<file>", "the file is empty: expected at least one record")
    return text


def _decodes_as_gbk(raw: bytes) -> bool:
    try:
        raw.decode("gbk")
    except UnicodeDecodeError:
        return False
    return True


def read_json(path: str | Path) -> Any:
    """One JSON document, with the line and column of a syntax error."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _file_error(path, error.lineno, "<json>", f"not valid JSON: {error.msg} (column {error.colno})") from None


def read_records(
    path: str | Path, *, id_field: str | None = "id", allow_torn_last_line: bool = False
) -> RecordsRead:
    """Records of a JSONL file (numbered by line) or a JSON array file (numbered by record).

    Bad lines, records that are not objects, blank ids and duplicate ids become rejections, so a
    lenient caller can go on and report them; ``strict`` turns them into one error. With
    ``allow_torn_last_line`` an unparsable final line (a crash mid-write) is set aside in
    ``torn_last_line`` instead: the reason a resumable cache exists is to survive that crash.
    """
    path = Path(path)
    text = read_text(path, allow_empty=allow_torn_last_line)
    source = display_path(path)
    if path.suffix == ".json":
        read = RecordsRead(source, "record")
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise _file_error(path, 1, "<json>", "expected a JSON array of records (or an object with a 'data' array)")
        numbered: list[tuple[int, Any]] = list(enumerate(data, 1))
    else:
        read = RecordsRead(source, "line")
        if text.lstrip().startswith("[") and _is_json_array(text):
            raise _file_error(
                path, 1, "<json>", "this is one JSON array, not JSON Lines: write one object per line, or rename the file to .json"
            )
        numbered = []
        lines = text.splitlines()
        last_content = max((number for number, line in enumerate(lines, 1) if line.strip()), default=0)
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                if allow_torn_last_line and number == last_content and not text.endswith("\n"):
                    read.torn_last_line = number
                    continue
                read.rejections.append(
                    Rejection(source, number, None, "<json>", f"not valid JSON: {error.msg} (column {error.colno})")
                )
    first_seen: dict[str, int] = {}
    for number, record in numbered:
        if not isinstance(record, dict):
            read.rejections.append(Rejection(source, number, None, "<record>", f"expected a JSON object, got {type(record).__name__}", read.unit))
            continue
        if id_field is not None:
            problem = _id_problem(record, id_field, first_seen, number, read.unit)
            if problem:
                record_id = record.get(id_field)
                read.rejections.append(Rejection(source, number, str(record_id) if record_id is not None else None, id_field, problem, read.unit))
                continue
            first_seen[str(record[id_field]).strip()] = number
        read.records.append((number, record))
    read.rejections.sort(key=lambda rejection: rejection.line)
    return read


def _is_json_array(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def _id_problem(record: dict[str, Any], id_field: str, first_seen: dict[str, int], number: int, unit: str) -> str | None:
    value = record.get(id_field)
    if value is None:
        return "missing"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"expected a string or an integer, got {type(value).__name__}"
    key = str(value).strip()
    if not key:
        return "blank (only whitespace)"
    if key in first_seen:
        return f"duplicate id {key!r} (first seen at {unit} {first_seen[key]})"
    return None


def strict(read: RecordsRead) -> list[tuple[int, dict[str, Any]]]:
    """The records of a read, or one DataError that lists every rejection."""
    if read.rejections:
        raise DataError(read.rejections)
    return read.records


def unknown_fields(record: dict[str, Any], known: Iterable[str]) -> list[str]:
    """The record's fields that a loader does not know, in file order (kept and reported, not dropped)."""
    known_set = set(known)
    return [name for name in record if name not in known_set]


def looks_local(path_or_id: str | Path) -> bool:
    """True for anything that can only be a local path: a file ending, ./ or ~, or a first part that is a local folder."""
    if isinstance(path_or_id, Path):
        return True
    text = path_or_id.strip()
    return (
        text.lower().endswith(LOCAL_SUFFIXES)
        or text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") != 1
        or not _HUB_ID.fullmatch(text)
        or Path(text.split("/")[0]).is_dir()
    )


def resolve_location(path_or_id: str | Path) -> Path | str:
    """An existing local path, or a bare ``owner/name`` Hub dataset id; a missing local path is an error.

    A typo in a local path (``data/seed_question.jsonl``) must not become a download attempt of a
    Hub dataset that does not exist, so anything that looks local has to exist.
    """
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    if looks_local(path_or_id):
        raise FileNotFoundError(_missing_message(path))
    return str(path_or_id).strip()


def _missing_message(path: Path) -> str:
    message = f"{display_path(path)}: no such file or folder"
    parent = path.parent if path.parent.is_dir() else None
    if parent is not None:
        close = difflib.get_close_matches(path.name, [child.name for child in parent.iterdir()], n=1)
        if close:
            message += f" (did you mean {display_path(parent / close[0])}?)"
    return message
