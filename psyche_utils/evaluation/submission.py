"""CPsyExam's test answers are withheld: results are scored by submitting a predictions file.

The file groups predictions by setting and task in the layout ``merge_answers.py`` writes and
``evaluate_submission.py`` reads: ``{"zero_shot": {task: [{"question_id", "prediction", "n_shot"}]},
"five_shot": {...}}``. The scorer compares each prediction with the answer as an exact string,
so predictions are written as sorted option letters ("AC"); an unreadable reply is written as
"" (the scorer counts it, as wrong).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

SETTING_KEYS = {0: "zero_shot", 5: "five_shot"}


def _natural_key(native_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order ("9" before "10"), others after them as text."""
    return (int(native_id), "") if native_id.isdigit() else (1 << 62, native_id)


def cpsyexam_submission(results: Mapping[int, pd.DataFrame]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Submission content from frames with ``task``, ``native_id`` and ``pred`` (``run_choice``
    output), keyed by number of shots (0 and/or 5)."""
    submission: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for k_shot, frame in sorted(results.items()):
        if k_shot not in SETTING_KEYS:
            raise ValueError(f"CPsyExam reports zero-shot and five-shot only, got {k_shot}-shot")
        tasks: dict[str, list[dict[str, Any]]] = {}
        ordered = frame.assign(_key=frame.native_id.map(_natural_key)).sort_values(["task", "_key"])
        for row in ordered.itertuples():
            tasks.setdefault(row.task, []).append(
                {"question_id": str(row.native_id), "prediction": row.pred, "n_shot": k_shot})
        submission[SETTING_KEYS[k_shot]] = tasks
    return submission


def write_cpsyexam_submission(results: Mapping[int, pd.DataFrame], path: str | Path) -> Path:
    """Write the submission JSON (UTF-8, readable) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cpsyexam_submission(results), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
