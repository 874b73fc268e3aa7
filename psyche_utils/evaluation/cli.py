"""Score any model's replies from the command line: ``python -m psyche_utils.evaluation ...``.

Three steps, so that generation can happen anywhere (a vLLM server, a hosted API, another
machine) and scoring stays the same code as in notebook 05:

``items``       write one JSON line per scored item: its ``id``, the chat ``messages`` to send
                (the notebook's prompts) and what scoring needs.
``score``       read ``{"id", "reply"}`` lines and print the paper's columns under a named
                convention (``official``, ``official-after-think``, ``official-2024``, ``strict``).
``submission``  turn zero- and five-shot replies to the CPsyExam test split into the file its
                organisers' scorer reads.

Every problem in an input (a broken line, an unknown id, an item without a reply, a non-text
reply) is an error naming the file and line, printed as one line on stderr with exit status 2.
``--allow-missing`` lets items without a reply through; they are then counted and reported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from psyche_utils.answers import split_reasoning
from psyche_utils.datafiles import DataError, read_records
from psyche_utils.evaluation.conventions import CONVENTIONS, get_convention, score_replies, summary_json
from psyche_utils.evaluation.loaders import EvalDataError, EvalItem, load_cpsyexam, load_pceb, load_psydt
from psyche_utils.evaluation.metrics import official_essay_scores
from psyche_utils.evaluation.prompts import choice_prompt, dialogue_prompt, essay_prompt, few_shot_examples
from psyche_utils.evaluation.submission import cpsyexam_submission

EXIT_INPUT_ERROR = 2


class CliError(ValueError):
    """A problem with the command's input; printed as one line, exit status 2."""


def _load_choice_items(benchmark: str, data: Path, split: str) -> list[EvalItem]:
    if benchmark == "pceb":
        return load_pceb(data).items
    return load_cpsyexam(data, split).items


def _item_record(item: EvalItem, messages: list[dict[str, str]], k_shot: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": item.id, "messages": messages, "benchmark": item.benchmark, "part": item.part,
                              "question_type": item.question_type, "native_id": item.native_id, "source": item.source}
    if item.question_type == "essay":
        record["reference"] = item.answer
    else:
        record.update({"answer": item.answer, "official_answer": item.official_answer,
                       "gold_problem": item.gold_problem, "task": item.task, "subject": item.subject, "n_shot": k_shot})
    return record


def command_items(args: argparse.Namespace) -> int:
    """Write the items and their prompts as JSON lines."""
    records: list[dict[str, Any]] = []
    if args.benchmark == "psydt":
        for sample in load_psydt(args.data):
            records.append({"id": sample.id, "messages": dialogue_prompt(sample), "benchmark": "psydt",
                            "tag": sample.tag, "reference": sample.reference})
    else:
        items = _load_choice_items(args.benchmark, args.data, args.split)
        pool = load_cpsyexam(args.data, "train").items if args.benchmark == "cpsyexam" and args.shots else []
        for item in items:
            if item.question_type == "essay":
                messages = essay_prompt(item)
            else:
                messages = choice_prompt(item, few_shot_examples(pool, item, args.shots) if args.shots else ())
            records.append(_item_record(item, messages, args.shots))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} items to {args.out}", file=sys.stderr)
    return 0


def read_replies(path: Path, known_ids: set[str]) -> dict[str, str]:
    """``{"id", "reply"}`` lines as a dict; any bad line, unknown id or duplicate is a ``CliError``."""
    try:
        read = read_records(path, id_field="id")
    except DataError as error:
        raise CliError("; ".join(str(r) for r in error.rejections)) from error
    if read.rejections:
        raise CliError(f"{read.rejections[0]}" + (f" (and {len(read.rejections) - 1} more)" if len(read.rejections) > 1 else ""))
    replies: dict[str, str] = {}
    for number, record in read.records:
        item_id = str(record["id"])
        if item_id not in known_ids:
            raise CliError(f"{read.source}, {read.unit} {number} [id {item_id}]: no such item in the benchmark "
                           "(write the ids with the 'items' command)")
        if not isinstance(record.get("reply"), str):
            raise CliError(f"{read.source}, {read.unit} {number} [id {item_id}], field 'reply': "
                           f"expected the raw reply text, got {type(record.get('reply')).__name__}")
        replies[item_id] = record["reply"]
    return replies


def _check_complete(ids: Sequence[str], replies: dict[str, str], source: Path, allow_missing: bool) -> list[str]:
    missing = [item_id for item_id in ids if item_id not in replies]
    if missing and not allow_missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CliError(f"{source}: no reply for item {missing[0]}{more} (pass --allow-missing to score without them)")
    return missing


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def score_files(benchmark: str, data: Path, split: str, predictions: Path, convention: str,
                allow_missing: bool = False) -> dict[str, Any]:
    """The summary ``score`` prints: paper columns, counts, convention, and what was missing."""
    conv = get_convention(convention)
    items = _load_choice_items(benchmark, data, split)
    if benchmark == "cpsyexam" and not any(item.answer or item.official_answer for item in items):
        raise CliError(f"CPsyExam {split} has no answers to score against; use the 'submission' command for the test split")
    replies = read_replies(predictions, {item.id for item in items})
    missing = _check_complete([item.id for item in items], replies, predictions, allow_missing)
    present = [item for item in items if item.id in replies]
    scored = score_replies(present, replies, conv)
    essays = [item for item in present if item.question_type == "essay"]
    essay = None
    if essays:
        read = (lambda reply: reply) if conv.reads == "whole reply" else (lambda reply: split_reasoning(reply)[1])
        essay = official_essay_scores([read(replies[item.id]) for item in essays], [item.answer for item in essays])
    summary = summary_json(benchmark, scored, essay)
    if essay is not None:
        summary["essays"] = {"n": essay["n"], "empty": essay["empty"]}
    summary["missing_replies"] = len(missing)
    return summary


def _print_table(benchmark: str, summary: dict[str, Any]) -> None:
    print(f"{benchmark} scored under the '{summary['convention']}' convention ({CONVENTIONS[summary['convention']].description})")
    print(f"items {summary['n']}, answered {summary['answered']}, unanswered {summary['n'] - summary['answered']}, "
          f"replies missing {summary['missing_replies']}")
    rows = []
    for name, counts in summary["counts"].items():
        value = summary[name] if benchmark == "pceb" else counts["accuracy"]
        rows.append({"column" if benchmark == "pceb" else "task": name, "value": value,
                     "counted": counts["counted"], "answered": counts["answered"], "total": counts["total"]})
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    keys = ["Avg", "Avg'", "R-1", "R-L", "B-4"] if benchmark == "pceb" else ["MCQA", "MRQA", "Avg"]
    print("  ".join(f"{key} {summary[key]:.2f}" for key in keys if summary.get(key) is not None and not math.isnan(summary[key])))
    for note in summary["skipped"]:
        print(f"skipped: {note}")


def command_score(args: argparse.Namespace) -> int:
    summary = score_files(args.benchmark, args.data, args.split, args.predictions, args.convention, args.allow_missing)
    if args.json:
        print(json.dumps(_json_safe(summary), ensure_ascii=False))
    else:
        _print_table(args.benchmark, summary)
    return 0


def command_submission(args: argparse.Namespace) -> int:
    conv = get_convention(args.convention)
    items = load_cpsyexam(args.data, "test").items
    by_id = {item.id: item for item in items}
    settings = ((0, args.zero_shot), (5, args.five_shot))
    read = {k_shot: read_replies(path, set(by_id)) for k_shot, path in settings}   # every input checked before any output
    missing = {k_shot: _check_complete(list(by_id), read[k_shot], path, args.allow_missing) for k_shot, path in settings}
    frames = {}
    for k_shot, path in settings:
        if missing[k_shot]:
            print(f"{path}: {len(missing[k_shot])} test questions without a reply are left out of the submission",
                  file=sys.stderr)
        rows = [{"task": by_id[i].task, "native_id": by_id[i].native_id, "pred": conv.prediction(reply, by_id[i])}
                for i, reply in read[k_shot].items()]
        frames[k_shot] = pd.DataFrame(rows, columns=["task", "native_id", "pred"])
        unanswered = int((frames[k_shot].pred == "").sum())
        print(f"{k_shot}-shot: {len(rows)} predictions ({unanswered} unreadable, written as \"\")", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cpsyexam_submission(frames), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.evaluation", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    items = sub.add_parser("items", help="write the items and their chat prompts as JSON lines")
    items.add_argument("--benchmark", required=True, choices=["pceb", "cpsyexam", "psydt"])
    items.add_argument("--data", required=True, type=Path, help="benchmark folder (or the PsyDT file)")
    items.add_argument("--split", default="dev", help="CPsyExam split (train, dev, test)")
    items.add_argument("--shots", type=int, default=0, choices=[0, 5], help="CPsyExam few-shot examples from train")
    items.add_argument("--out", required=True, type=Path)
    items.set_defaults(run=command_items)

    score = sub.add_parser("score", help="score replies under a named convention")
    score.add_argument("--benchmark", required=True, choices=["pceb", "cpsyexam"])
    score.add_argument("--data", required=True, type=Path)
    score.add_argument("--split", default="dev")
    score.add_argument("--predictions", required=True, type=Path, help='JSONL of {"id": ..., "reply": "<raw reply>"}')
    score.add_argument("--convention", default="official", choices=list(CONVENTIONS))
    score.add_argument("--json", action="store_true", help="print one JSON object keyed by the paper's column names")
    score.add_argument("--allow-missing", action="store_true", help="score without items that have no reply (reported)")
    score.set_defaults(run=command_score)

    subm = sub.add_parser("submission", help="write the CPsyExam test submission file")
    subm.add_argument("--data", required=True, type=Path)
    subm.add_argument("--zero-shot", required=True, type=Path)
    subm.add_argument("--five-shot", required=True, type=Path)
    subm.add_argument("--out", required=True, type=Path)
    subm.add_argument("--convention", default="strict", choices=list(CONVENTIONS),
                      help="how answers are read from the replies (strict writes sorted letters)")
    subm.add_argument("--allow-missing", action="store_true")
    subm.set_defaults(run=command_submission)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CliError, EvalDataError, DataError, FileNotFoundError, ValueError) as error:
        message = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_INPUT_ERROR
