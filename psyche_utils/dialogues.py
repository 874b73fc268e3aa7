"""Empathetic dialogue synthesis (the paper's step 4).

Each cleaned help-seeker post gets its reply rewritten by a teacher with an empathy-focused
instruction: a think block analysing what the person feels and needs, then the reply. A
rewrite is only kept when it has a non-empty analysis and passes every check below; a failed
rewrite is reported with its reasons. The shipped reply (checked the same way) stands in only
on request, and then fails the SFT format check because it has no written analysis.

The checks are deliberately mechanical. They catch what a pipeline at scale produces by
accident (empty or looping output, pasted links, a reply that just repeats the post, advice
that must never reach a help-seeker); they do not judge how empathetic a reply is, which is
what the SoulChat2.0 judge in the evaluation stage is for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

from psyche_utils.answers import split_reasoning
from psyche_utils.formatting import Exclusion
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.paths import CONFIGS_DIR
from psyche_utils.prompts import SYSTEM_PROMPT_GENERAL
from psyche_utils.schema import Post

HARMFUL_TERMS_PATH = CONFIGS_DIR / "data" / "harmful_advice_terms.txt"

EMPATHY_INSTRUCTION = (
    "下面是一位求助者在心理咨询平台上的求助帖，以及一条已有的回复。请你以专业心理咨询师的身份，"
    "把这条回复改写得更有共情、更有帮助：\n"
    "1. 先准确说出求助者可能的情绪和处境，让对方感到被理解；\n"
    "2. 肯定对方求助的勇气，不评判、不说教、不轻描淡写；\n"
    "3. 给出一两条具体、温和、可行的建议；情况严重时建议寻求专业帮助或拨打心理援助热线；\n"
    "4. 不做诊断，不给用药建议，不留联系方式或链接；用自然的中文口语，{min_chars}到{max_chars}字。\n"
    "先在<think>和</think>之间简要分析求助者的情绪、需要和风险，然后在</think>之后只写改写后的回复。\n\n"
    "【求助帖】\n{post}\n\n【已有回复】\n{reply}"
)

_URL = re.compile(r"https?://|www\.|\b[\w-]+\.(?:com|cn|net|org|cc|top|xyz)\b", re.IGNORECASE)
_AD = re.compile(
    r"加(?:我)?(?:微信|vx|v信|qq|QQ)|微信号|vx[:：]?\s*\w|扫码|二维码|关注公众号|私信我|点击链接|"
    r"优惠|折扣|限时|免费领取|下单|购买课程|报名链接|代理加盟",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class ReplyChecks:
    """The bounds a rewritten reply must respect (parameters, so a course can tighten them)."""

    min_chars: int = 40
    max_chars: int = 600
    max_post_similarity: float = 0.8
    min_cjk_ratio: float = 0.5
    min_distinct_ngram_ratio: float = 0.6
    ngram: int = 4


def load_harmful_terms(path: Path = HARMFUL_TERMS_PATH) -> dict[str, str]:
    """Read the maintained list of harmful-advice terms: term -> category.

    Format: ``[category]`` headers, one term per line, ``#`` comments. A term outside any
    category, or listed twice, is an error naming the line.
    """
    terms: dict[str, str] = {}
    category = ""
    for line_number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([\w-]+)\]", line)
        if header:
            category = header.group(1)
            continue
        if not category:
            raise ValueError(f"{path}:{line_number}: term {line!r} comes before any [category] header")
        if line in terms:
            raise ValueError(f"{path}:{line_number}: term {line!r} is listed twice")
        terms[line] = category
    if not terms:
        raise ValueError(f"{path}: no terms found")
    return terms


def distinct_ngram_ratio(text: str, n: int) -> float:
    """Share of distinct character n-grams; low values mean the text loops."""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def check_reply(post: str, reply: str, terms: Mapping[str, str], checks: ReplyChecks = ReplyChecks()) -> list[str]:
    """Every reason the reply is unusable, each as "category" or "category: detail"; [] = passes."""
    text = reply.strip()
    if not text:
        return ["empty reply"]
    reasons = []
    if _URL.search(text):
        reasons.append("link")
    if _AD.search(text):
        reasons.append("ad or contact")
    if not checks.min_chars <= len(text) <= checks.max_chars:
        reasons.append(f"length: {len(text)} characters, outside {checks.min_chars}-{checks.max_chars}")
    visible = sum(1 for ch in text if not ch.isspace())
    cjk_ratio = len(_CJK.findall(text)) / visible
    if cjk_ratio < checks.min_cjk_ratio:
        reasons.append(f"not Chinese: {cjk_ratio:.0%} Chinese characters, need {checks.min_cjk_ratio:.0%}")
    distinct = distinct_ngram_ratio(text, checks.ngram)
    if distinct < checks.min_distinct_ngram_ratio:
        reasons.append(
            f"repetitive: {distinct:.0%} distinct {checks.ngram}-grams, need {checks.min_distinct_ngram_ratio:.0%}"
        )
    post_text = post.strip()
    if post_text:
        similarity = SequenceMatcher(None, post_text, text, autojunk=False).ratio()
        if (len(post_text) >= 20 and post_text in text) or similarity >= checks.max_post_similarity:
            reasons.append(f"copies the post: similarity {similarity:.2f}")
    found = sorted(term for term in terms if term in text)
    if found:
        reasons.append("harmful advice: " + ", ".join(f"{term} ({terms[term]})" for term in found))
    return reasons


def reason_category(reason: str) -> str:
    """The category part of a check reason ("length: 12 ..." -> "length")."""
    return reason.split(":", 1)[0]


def rewrite_messages(post: Post, checks: ReplyChecks = ReplyChecks()) -> Messages:
    """The chat prompt asking the teacher for an analysis and an empathetic rewrite."""
    user = EMPATHY_INSTRUCTION.format(
        min_chars=checks.min_chars, max_chars=checks.max_chars, post=post.post.strip(), reply=post.reply.strip()
    )
    return [{"role": "system", "content": SYSTEM_PROMPT_GENERAL}, {"role": "user", "content": user}]


@dataclass
class DialogueResult:
    """One post's rewrite: the analysis, the reply, and why it was rejected (if it was)."""

    post_id: str
    reasoning: str
    reply: str
    accepted: bool
    reasons: list[str] = field(default_factory=list)


def judge_rewrite(post: Post, raw: str, terms: Mapping[str, str], checks: ReplyChecks = ReplyChecks()) -> DialogueResult:
    """Split a teacher reply into analysis and reply, then run every check on the reply."""
    reasoning, reply = split_reasoning(raw)
    if reasoning is None:
        return DialogueResult(post.id, "", reply, False, ["no closed <think> analysis"])
    reasons = check_reply(post.post, reply, terms, checks)
    if not reasoning:
        reasons.insert(0, "empty analysis")
    if reasoning and _URL.search(reasoning):
        reasons.append("link in analysis")
    return DialogueResult(post.id, reasoning, reply, not reasons, reasons)


def rewrite_dialogues(
    posts: Sequence[Post],
    teacher: ChatBackend,
    terms: Mapping[str, str],
    *,
    settings: GenerationSettings | None = None,
    checks: ReplyChecks = ReplyChecks(),
) -> list[DialogueResult]:
    """Rewrite every post's reply in one batched teacher call and check each result."""
    if not posts:
        return []
    settings = settings or GenerationSettings(max_new_tokens=512)
    raws = teacher.generate([rewrite_messages(post, checks) for post in posts], settings)
    return [judge_rewrite(post, raw, terms, checks) for post, raw in zip(posts, raws)]


@dataclass(frozen=True)
class Dialogue:
    """The dialogue a post is trained on and where its reply came from."""

    post: Post
    reasoning: str
    reply: str
    origin: str


def choose_dialogues(
    posts: Sequence[Post],
    results: Sequence[DialogueResult],
    terms: Mapping[str, str],
    *,
    use_shipped_replies: bool = False,
    checks: ReplyChecks = ReplyChecks(),
) -> tuple[list[Dialogue], list[Exclusion]]:
    """An accepted rewrite; with ``use_shipped_replies``, else the shipped reply if it passes the same checks.

    ``results`` may cover only some posts. Every failed rewrite and every post left out is
    reported with its reasons. A shipped reply has no written analysis, so its SFT record has
    an empty think block and ``formatting.filter_well_formed`` removes it with a report: the
    option exists to show that choice, and it is off by default.
    """
    by_id = {result.post_id: result for result in results}
    chosen: list[Dialogue] = []
    exclusions: list[Exclusion] = []
    for post in posts:
        result = by_id.get(post.id)
        if result is not None and result.accepted:
            chosen.append(Dialogue(post, result.reasoning, result.reply.strip(), "teacher_dialogue"))
            continue
        if result is not None:
            exclusions.extend(
                Exclusion(post.id, "dialogue_rewrite", reason_category(reason), reason) for reason in result.reasons
            )
        if not use_shipped_replies:
            exclusions.append(Exclusion(post.id, "dialogue", "no accepted rewrite"))
            continue
        problems = check_reply(post.post, post.reply, terms, checks)
        if problems:
            exclusions.append(Exclusion(post.id, "dialogue", "shipped reply fails checks", "; ".join(problems)))
            continue
        chosen.append(Dialogue(post, "", post.reply.strip(), "shipped_reply"))
    return chosen, exclusions
