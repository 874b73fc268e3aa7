"""Read the final answer out of a model reply, and decide whether a reply is well formed.

``is_well_formed`` is the one definition of the reply format in this project: the SFT data
check, the SFT evaluation and the GRPO format reward all call it, so SFT never teaches a shape
that GRPO then penalises.

A reasoning model mentions many options while it thinks ("A is wrong because ..."), so only the
text after ``</think>`` counts. Inside that text the official PCEB evaluator takes the last run of
option letters; an explicit "答案：" marker, when present, is trusted first.
"""

from __future__ import annotations

import re
import unicodedata

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
OPTION_LETTERS = "ABCDE"

# A run of option letters joined by separators, not glued to other Latin letters
# (so "ADHD" or "and" never count as answers). Capital letters are the usual form; a
# lowercase run ("答案：b") is only used when the text has no capital one.
_SEPARATORS = r"[\s,，、;；/和与及]*"
_UPPER_RUN = re.compile(rf"(?<![A-Za-z])([A-E](?:{_SEPARATORS}[A-E])*)(?![A-Za-z])")
_LOWER_RUN = re.compile(rf"(?<![A-Za-z])([a-e](?:{_SEPARATORS}[a-e])*)(?![A-Za-z])")
# An explicit "答案" outranks "选项"/"选择": a reply may name the answer, then discuss other
# options ("答案：C。选项A和B都不符合"), and only the named answer counts.
_ANSWER_MARKERS = (
    re.compile(r"(?:最终答案|正确答案|答案|answer)\s*(?:是|为|应为|应选)?\s*[:：]?", re.IGNORECASE),
    re.compile(r"(?:选择|选项)\s*(?:是|为|应为|应选)?\s*[:：]?"),
)


# One think block, then the answer. DOTALL because reasoning spans many lines; the negative
# look-aheads make a second "<think>" or "</think>" anywhere fail the match.
_NO_TAG = rf"(?:(?!{re.escape(THINK_OPEN)}|{re.escape(THINK_CLOSE)}).)*"
_WELL_FORMED = re.compile(
    rf"^{re.escape(THINK_OPEN)}(?P<reasoning>{_NO_TAG}){re.escape(THINK_CLOSE)}(?P<answer>{_NO_TAG})$",
    re.DOTALL,
)


def is_well_formed(reply: str) -> bool:
    """True for exactly one ``<think>`` block at the start, non-empty reasoning, then a non-empty answer.

    Surrounding whitespace is ignored. An empty think block fails: the official inference prompt
    asks for written reasoning on every turn, empathetic replies included.
    """
    match = _WELL_FORMED.match(reply.strip())
    return bool(match and match["reasoning"].strip() and match["answer"].strip())


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split a reply into (reasoning, answer part).

    Reasoning is the text between the first ``<think>`` and the last ``</think>``; None when
    there is no closed think block. A reply whose think block never closes has no answer part.
    A reply with no think tags at all (a model that does not reason aloud) is all answer.
    """
    close = text.rfind(THINK_CLOSE)
    if close == -1:
        return None, "" if THINK_OPEN in text else text.strip()
    open_ = text.find(THINK_OPEN)
    start = open_ + len(THINK_OPEN) if -1 < open_ < close else 0
    return text[start:close].strip(), text[close + len(THINK_CLOSE) :].strip()


def normalize_letters(text: str) -> str:
    """Sorted unique option letters in ``text``, with full-width and lowercase folded."""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(sorted({ch for ch in folded if ch in OPTION_LETTERS}))


def extract_answer(text: str) -> str:
    """Sorted unique option letters of the final answer; "" when there is none."""
    _, answer_part = split_reasoning(text)
    answer_part = unicodedata.normalize("NFKC", answer_part)
    for marker in _ANSWER_MARKERS:
        matches = list(marker.finditer(answer_part))
        if matches:
            found = _letter_run(answer_part[matches[-1].end() :], first=True)
            if found:
                return found
    return _letter_run(answer_part, first=False)


def _letter_run(text: str, *, first: bool) -> str:
    """The first (after a marker) or last (official rule) run of option letters."""
    for pattern in (_UPPER_RUN, _LOWER_RUN):
        runs = pattern.findall(text)
        if runs:
            return normalize_letters(runs[0] if first else runs[-1])
    return ""
