"""The four cleaning rules of the Psyche-R1 data pipeline, one function each, plus a change report.

Raw forum posts and scraped questions carry emoji, links and ads, repeat themselves and mix
half-width and full-width punctuation. Each rule below fixes one of those problems and can be
tested, switched off or reordered on its own; ``clean_text`` runs them in order and records which
rules changed the text, so every edit the pipeline makes can be inspected afterwards.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from psyche_utils.schema import Post, Question

CJK = r"\u3400-\u4dbf\u4e00-\u9fff"
_CJK_CHAR = re.compile(f"[{CJK}]")
# Full-width marks that count as "Chinese context" for the punctuation rule.
_CJK_PUNCT = "，。？！：；、（）“”‘’《》【】……—"

def _neighbour(text: Sequence[str], index: int, step: int) -> str:
    """The nearest character to one side of ``index`` that is not a space ("" at the ends)."""
    index += step
    while 0 <= index < len(text) and text[index] in " \t\u3000":
        index += step
    return text[index] if 0 <= index < len(text) else ""


# --------------------------------------------------------------------------- rule 1: emoji and emoticons

_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, supplemental symbols
    "\u2600-\u27bf"  # miscellaneous symbols and dingbats
    "\u2b00-\u2bff"  # arrows and stars used as emoji
    "\u2300-\u23ff"  # technical symbols such as the hourglass
    "\ufe0f\u200d\u20e3"  # variation selector, zero-width joiner, keycap
    "]+"
)
_BRACKET_EMOJI = re.compile(r"\[[\u4e00-\u9fff]{1,4}\]")  # forum stickers such as [哭] or [微笑]
_LATIN_EMOTICONS = re.compile(r"(?<![A-Za-z])(?:QAQ|QwQ|TAT|T_T|orz|OTZ|XD)(?![A-Za-z])")
_SYMBOL_EMOTICONS = re.compile(r"\^_\^|>_<|-_-|[:;]-?[()DPp](?![A-Za-z])|\([^()\s]{0,3}[╥﹏ω•´`◕‿≧≦][^()\s]{0,6}\)")


def remove_emoji(text: str) -> str:
    """Drop emoji, forum stickers like [哭] and text emoticons like T_T, QAQ or ^_^.

    An emoji standing between two Chinese clauses often did the job of a comma
    ("不适合读研😢 想退学"), so there it is replaced by "，" instead of nothing.
    """

    def replacement(match: re.Match[str]) -> str:
        before = _neighbour(match.string, match.start(), -1)
        after = _neighbour(match.string, match.end() - 1, 1)
        return "，" if _CJK_CHAR.match(before) and _CJK_CHAR.match(after) else ""

    for pattern in (_EMOJI, _BRACKET_EMOJI, _LATIN_EMOTICONS, _SYMBOL_EMOTICONS):
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------- rule 2: ads and links

_URL_CHARS = r"[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]"
_URL = re.compile(f"https?://{_URL_CHARS}+|www\\.{_URL_CHARS}+|(?<![A-Za-z0-9-])[A-Za-z0-9-]+\\.(?:com|cn|net|org|vip|top|cc)(?![A-Za-z0-9])(?:/{_URL_CHARS}*)?")
AD_PATTERNS = (
    r"加\s*(?:我\s*)?(?:微信|V信|vx|VX|v|V|QQ|qq)",
    r"微信号|vx[:：]|VX[:：]",
    r"扫码|二维码",
    r"公众号",
    r"关注.{0,8}回复",
    r"点击.{0,8}(?:链接|领取|购买)",
    r"免费领取|立即领取|限时优惠|优惠券|最后\d+个名额",
    r"转发给.{0,4}(?:好友|朋友)",
)
_AD = re.compile("|".join(AD_PATTERNS))
_SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;\n]*")


def split_sentences(text: str) -> list[str]:
    """Sentences with their closing punctuation kept, split on Chinese and ASCII sentence marks."""
    return _SENTENCE.findall(text)


def remove_ads_and_links(text: str) -> str:
    """Delete links, then every sentence that advertises (add-me-on-WeChat, scan the QR code, ...)."""
    text = _URL.sub("", text)
    return "".join(sentence for sentence in split_sentences(text) if not _AD.search(sentence))


# --------------------------------------------------------------------------- rule 3: consistent punctuation

_HALF_TO_FULL = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；", ".": "。"}
_ELLIPSIS = re.compile(r"(?:\.{3,}|。{3,}|…+)")
_REPEATED_MARK = re.compile(r"([，。？！：；])\1+")
_PARENS = re.compile(r"\(([^()]*)\)")


def _is_chinese_context(char: str) -> bool:
    return bool(_CJK_CHAR.match(char)) or char in _CJK_PUNCT


def normalize_punctuation(text: str) -> str:
    """Use full-width Chinese punctuation wherever the surrounding text is Chinese.

    ASCII marks next to Chinese characters become their full-width forms; decimals, English
    words and URLs are left alone. "(...)" holding Chinese (or just the blank of a choice
    question) becomes "（...）", "..." becomes "……", doubled marks like "！！！" collapse to one
    and straight double quotes become “ ”.
    """
    text = _ELLIPSIS.sub("……", text)
    text = _PARENS.sub(
        lambda m: f"（{m.group(1)}）" if not m.group(1).strip() or _CJK_CHAR.search(m.group(1)) else m.group(0), text
    )
    chars = list(text)
    for index, char in enumerate(text):
        if char not in _HALF_TO_FULL:
            continue
        before, after = _neighbour(chars, index, -1), _neighbour(text, index, 1)
        if char == "." and (before.isascii() and before.isalnum() and (after.isascii() and after.isalnum() or not after)):
            continue  # 3.5, e.g. or a trailing English full stop
        if _is_chinese_context(before) or (after and _CJK_CHAR.match(after)):
            chars[index] = _HALF_TO_FULL[char]
    text = "".join(chars)
    if text.count('"') >= 2 and _CJK_CHAR.search(text):
        quote = iter(["“", "”"] * text.count('"'))
        text = re.sub('"', lambda _: next(quote), text)
    return _REPEATED_MARK.sub(r"\1", text)


# --------------------------------------------------------------------------- rule 4: redundant content

_SPACES = re.compile(r"[ \t\r\n\u3000\u00a0]+")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{CJK}{_CJK_PUNCT}]) (?=[{CJK}{_CJK_PUNCT}])")
_REPEATED_PHRASE = re.compile(f"([{CJK}]{{2,6}})\\1{{2,}}")
_REPEATED_CHAR = re.compile(f"([{CJK}])\\1{{3,}}")


def remove_redundancy(text: str) -> str:
    """Remove what adds nothing: extra whitespace, repeated sentences and stuttered phrases.

    A sentence identical to, or a tail of, the sentence just before it is dropped
    ("像一台机器。像一台机器。"), a phrase said three or more times in a row is said once
    ("好累好累好累"), and a character run of four or more is cut to two ("哈哈哈哈" -> "哈哈").
    The blank of a choice question, "（ ）", keeps its space.
    """
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_BETWEEN_CJK.sub("", text).replace("（）", "（ ）")
    text = _REPEATED_PHRASE.sub(r"\1", text)
    text = _REPEATED_CHAR.sub(r"\1\1", text)
    kept: list[str] = []
    for sentence in split_sentences(text):
        core = sentence.strip()
        previous = kept[-1].strip() if kept else ""
        if core and previous and (core == previous or (len(core) >= 4 and previous.endswith(core))):
            continue
        kept.append(sentence)
    return "".join(kept).strip()


# --------------------------------------------------------------------------- running the rules

Rule = Callable[[str], str]
RULES: dict[str, Rule] = {
    "emoji": remove_emoji,
    "ads_links": remove_ads_and_links,
    "punctuation": normalize_punctuation,
    "redundancy": remove_redundancy,
}
DEFAULT_RULES: tuple[str, ...] = tuple(RULES)


def clean_text(text: str, rules: Sequence[str] = DEFAULT_RULES) -> tuple[str, list[str]]:
    """Apply the named rules in order; return the clean text and the rules that changed it."""
    changed = []
    for name in rules:
        if name not in RULES:
            raise ValueError(f"unknown cleaning rule {name!r}; choose from {', '.join(RULES)}")
        new = RULES[name](text)
        if new != text:
            changed.append(name)
        text = new
    return text, changed


@dataclass(frozen=True)
class FieldChange:
    """One field of one record that cleaning altered."""

    record_id: str
    field: str
    rules: tuple[str, ...]
    before: str
    after: str


@dataclass(frozen=True)
class Dropped:
    """A record cleaning had to remove, and why."""

    record_id: str
    reason: str


@dataclass
class CleaningReport:
    """Everything cleaning did: each field it changed and each record it removed."""

    total: int = 0
    changes: list[FieldChange] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)

    def rule_counts(self) -> dict[str, int]:
        """How many fields each rule changed."""
        counts = Counter(rule for change in self.changes for rule in change.rules)
        return {rule: counts.get(rule, 0) for rule in RULES}

    @property
    def changed_records(self) -> int:
        return len({change.record_id for change in self.changes})

    def rows(self) -> list[dict[str, str]]:
        """One row per changed field, ready for a pandas table."""
        return [
            {"id": c.record_id, "field": c.field, "rules": ", ".join(c.rules), "before": c.before, "after": c.after}
            for c in self.changes
        ]


def _clean_field(record_id: str, name: str, value: str, rules: Sequence[str], report: CleaningReport) -> str:
    cleaned, changed = clean_text(value, rules)
    if changed:
        report.changes.append(FieldChange(record_id, name, tuple(changed), value, cleaned))
    return cleaned


def _meaningful_length(text: str) -> int:
    return len(_CJK_CHAR.findall(text)) + sum(char.isascii() and char.isalnum() for char in text)


def clean_posts(
    posts: Iterable[Post], rules: Sequence[str] = DEFAULT_RULES, min_chars: int = 6
) -> tuple[list[Post], CleaningReport]:
    """Clean post and reply of every record; drop (and report) those left with too little text."""
    report = CleaningReport()
    kept = []
    for post in posts:
        report.total += 1
        text = _clean_field(post.id, "post", post.post, rules, report)
        reply = _clean_field(post.id, "reply", post.reply, rules, report)
        if _meaningful_length(text) < min_chars:
            report.dropped.append(Dropped(post.id, f"post has fewer than {min_chars} characters after cleaning: {post.post!r}"))
        elif _meaningful_length(reply) < min_chars:
            report.dropped.append(Dropped(post.id, f"reply has fewer than {min_chars} characters after cleaning: {post.reply!r}"))
        else:
            kept.append(replace(post, post=text, reply=reply))
    return kept, report


def clean_questions(
    questions: Iterable[Question], rules: Sequence[str] = DEFAULT_RULES
) -> tuple[list[Question], CleaningReport]:
    """Clean stem, options and explanation of every question (answers and ids are never touched)."""
    report = CleaningReport()
    kept = []
    for question in questions:
        report.total += 1
        stem = _clean_field(question.id, "question", question.question, rules, report)
        options = {
            letter: _clean_field(question.id, f"option {letter}", text, rules, report)
            for letter, text in question.options.items()
        }
        explanation = _clean_field(question.id, "explanation", question.explanation, rules, report)
        if not stem:
            report.dropped.append(Dropped(question.id, f"question is empty after cleaning: {question.question!r}"))
            continue
        kept.append(replace(question, question=stem, options=options, explanation=explanation))
    return kept, report
