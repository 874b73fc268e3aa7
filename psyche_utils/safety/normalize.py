"""Text views the crisis screen and the reply check match on, each with a map back to the original.

People write the same words in many surface forms: full-width letters, spaces or zero-width
characters between characters ("我 想 自 杀"), a dot inside a word ("自.杀"), traditional
characters ("自殺"), or pinyin ("wo xiang zisha"). A keyword list should not have to spell
out every one of them, so the text is folded into views first:

- ``basic``: NFKC, lower case, straight quotes, white space runs as one space (what the screen
  always matched on);
- ``folded``: ``basic`` plus zero-width and joiner characters removed everywhere, traditional
  characters converted to simplified (OpenCC ``t2s``), and white space, symbols and punctuation
  removed *between CJK characters* (clause punctuation such as "，" only when it splits single
  characters, so "没意思，想死" keeps its two clauses), and English words spelled out letter by
  letter ("k i l l", "w a n t  t o  d i e") joined, digits and marks used as letters inside a word
  read as letters ("d1e", "d!e"), and a mark inside an English word removed ("su_icide");
- ``pinyin``: the folded text with every CJK character replaced by its toneless pinyin and every
  non-letter removed, for homophones ("紫砂" reads "zisha" like "自杀") and typed pinyin.

Every view keeps ``index``: for each of its characters, the offset in the ORIGINAL text it came
from, so evidence shown to a reviewer points at what the person actually wrote.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_ZERO_WIDTH = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
) | frozenset(chr(c) for c in range(0xFE00, 0xFE10))
# Clause punctuation is removed between CJK characters only when it splits single characters.
_CLAUSE_MARKS = frozenset("，。！？；：、,.!?;:…")
_SPELLING_MARKS = frozenset(" .-_*·")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def is_cjk(char: str) -> bool:
    """A Han character (the unified ideograph blocks a user's text uses)."""
    code = ord(char)
    return 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F


def _is_separator(char: str) -> bool:
    """White space, punctuation or a symbol: what people put between characters to dodge a filter."""
    return char.isspace() or unicodedata.category(char)[0] in "PSZ" or char in _ZERO_WIDTH


@dataclass(frozen=True)
class TextView:
    """One folded form of a text; ``index[i]`` is the original offset of ``text[i]``."""

    name: str
    text: str
    index: tuple[int, ...]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that view characters ``start:end`` came from."""
        if start >= end:
            return (self.index[start], self.index[start]) if start < len(self.index) else (0, 0)
        return self.index[start], self.index[end - 1] + 1


def basic_view(text: str) -> TextView:
    """NFKC, lower case, straight quotes and single spaces, mapped back character by character."""
    chars: list[str] = []
    index: list[int] = []
    for offset, char in enumerate(text):
        for piece in unicodedata.normalize("NFKC", char).lower().translate(_QUOTES):
            if piece.isspace():
                if not chars or chars[-1] == " ":
                    continue
                piece = " "
            chars.append(piece)
            index.append(offset)
    while chars and chars[-1] == " ":
        chars.pop()
        index.pop()
    return TextView("basic", "".join(chars), tuple(index))


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional to simplified Chinese, one character for one so offsets survive.

    OpenCC converts phrases; when a phrase conversion would change the length, the text is
    converted character by character instead, which keeps the index map exact.
    """
    converted = _t2s().convert(text)
    if len(converted) == len(text):
        return converted
    singles = [_t2s().convert(char) for char in text]
    return "".join(s if len(s) == 1 else c for s, c in zip(singles, text))


def _drop_between_cjk(chars: list[str], index: list[int]) -> tuple[list[str], list[int]]:
    keep = [True] * len(chars)
    i = 0
    while i < len(chars):
        if not _is_separator(chars[i]):
            i += 1
            continue
        start = i
        while i < len(chars) and _is_separator(chars[i]):
            i += 1
        before, after = start - 1, i
        if before < 0 or after >= len(chars) or not (is_cjk(chars[before]) and is_cjk(chars[after])):
            continue
        run = chars[start:after]
        if any(char in _CLAUSE_MARKS for char in run):
            # "没意思，想死" is two clauses; "自，杀" and "我，想，死" split single characters.
            single_before = before == 0 or not is_cjk(chars[before - 1])
            single_after = after + 1 >= len(chars) or not is_cjk(chars[after + 1])
            if not (single_before or single_after):
                continue
        for j in range(start, after):
            keep[j] = False
    return [c for c, k in zip(chars, keep) if k], [o for o, k in zip(index, keep) if k]


def _is_letter(char: str) -> bool:
    return "a" <= char <= "z"


def _single(chars: list[str], i: int) -> bool:
    """A letter with no letter on either side: one letter of a word spelled out."""
    return _is_letter(chars[i]) and (i == 0 or not _is_letter(chars[i - 1])) and (i + 1 >= len(chars) or not _is_letter(chars[i + 1]))


def _word_gap(index: list[int], left: int, right: int) -> bool:
    """Two or more spaces stood between view characters ``left`` and ``right`` in the original."""
    return index[right] - index[left] > 2


def _join_spelled_out(chars: list[str], index: list[int]) -> tuple[list[str], list[int]]:
    """Join words spelled out letter by letter ("k i l l", "s.u.i.c.i.d.e", "w a n t  t o  d i e").

    A run is three or more single letters with the same mark between them ("I w.a.n.t" joins
    "want" and leaves "I" alone). Two or more spaces mark a word break, so in double-spaced
    spelling two-letter words join too. A lone "a" or "i" after a long space-spelled run is a word
    of its own ("s u i c i d e a lot"), and so is a leading "i" ("i w a n t").
    """
    keep = [True] * len(chars)
    i, n = 0, len(chars)
    while i < n:
        if not (_single(chars, i) and i + 2 < n and chars[i + 1] in _SPELLING_MARKS and _single(chars, i + 2)):
            i += 1
            continue
        mark = chars[i + 1]
        j, count = i, 1
        while j + 2 < n and chars[j + 1] == mark and _single(chars, j + 2) and not (mark == " " and _word_gap(index, j, j + 2)):
            j += 2
            count += 1
        gap_before = i >= 2 and chars[i - 1] == " " and _word_gap(index, i - 2, i)
        gap_after = j + 2 < n and chars[j + 1] == " " and _word_gap(index, j, j + 2)
        if count >= 4 and mark == " " and chars[j] in "ai" and j + 3 < n and chars[j + 1] == " " and _is_letter(chars[j + 3]):
            j -= 2
            count -= 1
        if count >= 4 and mark == " " and chars[i] == "i":
            i += 2
            count -= 1
        if count >= 3 or (count == 2 and mark == " " and (gap_before or gap_after)):
            for k in range(i + 1, j, 2):
                keep[k] = False
            i = j + 1
        else:
            i += 1
    return [c for c, k in zip(chars, keep) if k], [o for o, k in zip(index, keep) if k]


_INNER_MARKS = frozenset("_*~·.")


def _drop_inner_marks(chars: list[str], index: list[int]) -> tuple[list[str], list[int]]:
    """Remove a mark put inside an English word to dodge a filter ("su_icide", "ki*ll", "su.icide")."""
    keep = [
        not (c in _INNER_MARKS and 0 < i < len(chars) - 1 and _is_letter(chars[i - 1]) and _is_letter(chars[i + 1]))
        for i, c in enumerate(chars)
    ]
    return [c for c, k in zip(chars, keep) if k], [o for o, k in zip(index, keep) if k]


_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
# Marks read as a letter only between two letters ("d!e"); at a word's end they are punctuation ("help!").
_LEET_INNER = {"!": "i", "|": "l"}


def _unleet(chars: list[str]) -> list[str]:
    """Digits standing for letters inside a word ("w4nt t0 d1e"); a digit next to a digit is a number."""
    out = list(chars)
    for i, char in enumerate(chars):
        before = chars[i - 1] if i > 0 else ""
        after = chars[i + 1] if i + 1 < len(chars) else ""
        if char in _LEET_INNER and _is_letter(before) and _is_letter(after):
            out[i] = _LEET_INNER[char]
        elif char in _LEET and (_is_letter(before) or _is_letter(after)) and not (before.isdigit() or after.isdigit()):
            out[i] = _LEET[char]
    return out


# Characters people write instead of 死 to get past a filter ("好想亖"); one character for one.
_DEATH_SUBSTITUTES = str.maketrans({"亖": "死", "㱙": "死"})
# Whole English words typed without the apostrophe or misspelt, written out so the list needs one spelling.
_SHORTHAND = {
    "dont": "don't", "cant": "can't", "wont": "won't", "didnt": "didn't", "doesnt": "doesn't", "isnt": "isn't",
    "wouldnt": "wouldn't", "couldnt": "couldn't", "shouldnt": "shouldn't", "aint": "ain't",
    "im": "i'm", "ive": "i've", "youre": "you're", "theyll": "they'll", "itll": "it'll",
    "wanna": "want to", "gonna": "going to", "gotta": "got to",
    "kil": "kill", "kiling": "killing", "myslef": "myself", "mysef": "myself", "myelf": "myself",
    "suicde": "suicide", "sucide": "suicide", "suicid": "suicide",
}


def _expand_shorthand(chars: list[str], index: list[int]) -> tuple[list[str], list[int]]:
    """Write out whole words from ``_SHORTHAND``; each new character maps to a character of the word it replaces."""
    out: list[str] = []
    out_index: list[int] = []
    i, n = 0, len(chars)
    while i < n:
        if not _is_letter(chars[i]) or (i > 0 and (_is_letter(chars[i - 1]) or chars[i - 1] == "'")):
            out.append(chars[i])
            out_index.append(index[i])
            i += 1
            continue
        j = i
        while j < n and _is_letter(chars[j]):
            j += 1
        word = "".join(chars[i:j])
        replacement = _SHORTHAND.get(word) if not (j < n and chars[j] == "'") else None
        if replacement is None:
            out.extend(chars[i:j])
            out_index.extend(index[i:j])
        else:
            out.extend(replacement)
            out_index.extend(index[i + min(k, j - i - 1)] for k in range(len(replacement)))
        i = j
    return out, out_index


def folded_view(text: str, *, simplify: bool = True) -> TextView:
    """``basic`` plus zero-width removal, traditional -> simplified, substitutes for 死 read as 死, separators
    between CJK removed, English words spelled out letter by letter joined, digits and marks used as letters
    read as letters, marks inside an English word removed, and apostrophe-less contractions and common
    misspellings written out."""
    base = basic_view(text)
    pairs = [(c, o) for c, o in zip(base.text, base.index) if c not in _ZERO_WIDTH]
    chars = [c for c, _ in pairs]
    index = [o for _, o in pairs]
    if simplify and any(is_cjk(c) for c in chars):
        chars = list(to_simplified("".join(chars)))
    chars = list("".join(chars).translate(_DEATH_SUBSTITUTES))
    chars, index = _drop_between_cjk(chars, index)
    chars, index = _join_spelled_out(_unleet(chars), index)
    chars, index = _drop_inner_marks(chars, index)
    chars, index = _expand_shorthand(chars, index)
    return TextView("folded", "".join(chars), tuple(index))


def pinyin_view(folded: TextView) -> TextView:
    """Toneless pinyin of every CJK character plus the ASCII letters typed, nothing else.

    Word breaks vanish ("wo xiang zi sha" and "我想紫砂" both read "woxiangzisha"), so pinyin
    rules in the list carry their own context words to stay specific.
    """
    from pypinyin import Style, lazy_pinyin

    chars: list[str] = []
    index: list[int] = []
    text = folded.text
    i = 0
    while i < len(text):
        if is_cjk(text[i]):
            j = i
            while j < len(text) and is_cjk(text[j]):
                j += 1
            run = text[i:j]
            syllables = lazy_pinyin(run, style=Style.NORMAL)
            if len(syllables) != len(run):
                syllables = [lazy_pinyin(char, style=Style.NORMAL)[0] for char in run]
            for k, syllable in enumerate(syllables):
                for letter in syllable:
                    if "a" <= letter <= "z":
                        chars.append(letter)
                        index.append(folded.index[i + k])
            i = j
            continue
        if "a" <= text[i] <= "z":
            chars.append(text[i])
            index.append(folded.index[i])
        elif not text[i].isspace():
            # A digit or symbol ends a pinyin word: "100kms" must not read as letters run together.
            chars.append("|")
            index.append(folded.index[i])
        i += 1
    return TextView("pinyin", "".join(chars), tuple(index))


def normalize(text: str) -> str:
    """The basic folding (kept for callers that want one string): NFKC, lower case, single spaces."""
    return basic_view(text).text


def views(text: str, *, fold: bool = True, pinyin: bool = False) -> list[TextView]:
    """The views a screen matches on: always ``basic``; ``folded`` and ``pinyin`` when asked."""
    result = [basic_view(text)]
    if fold:
        folded = folded_view(text)
        if folded.text != result[0].text:
            result.append(folded)
        if pinyin and re.search(r"[a-z\u3400-\u9fff]", folded.text):
            result.append(pinyin_view(folded))
    return result
