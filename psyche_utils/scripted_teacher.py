"""A scripted teacher: rules, not a language model.

On the CPU-only ``tiny`` profile the local model has random weights, so every step that needs a
teacher (question generation, the quality judge, rationales, prompt rewrites, empathetic rewrites,
the empathy judge) fails, and the accept/update/revert branches of the pipeline never run.
``ScriptedTeacher`` is a small rule-based stand-in that implements the ``ChatBackend`` protocol of
``psyche_utils.llm``: it recognises which task a prompt is, answers in the real output format the
real parser expects, and with probability ``error_rate`` makes the kind of mistake a real teacher
makes (a wrong answer letter, broken JSON, no think block, a reply that fails the dialogue checks),
so the control flow shows both branches.

Everything it writes is a template filled by rules; its name and its think blocks say so
("scripted teacher — rules, not a language model"). It never sees gold answers: it "solves" a
multiple-choice question by a transparent rule, the option whose text is best supported by the
reference texts it was given (the textbook passages, which a real teacher would also have read):
an option found verbatim in a passage scores 1, otherwise its share of character bigrams found
in the best-matching passage. Single choice takes the best option; multiple choice takes every
option found verbatim (at least the best two); a stem asking for the exception ("不包括") reverses
the order.

Replies are deterministic given the prompt, the teacher's ``seed`` and the settings' seed: the
error draw and every choice come from a hash of the three.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from psyche_utils.llm import GenerationSettings, Messages
from psyche_utils.prompts import MULTI_CHOICE_HINT

SCRIPTED_LABEL = "scripted teacher — rules, not a language model"
THINK_MARK = "【脚本教师：规则模板，不是语言模型】"

TASKS = (
    "question_generation",
    "quality_judge",
    "rationale",
    "prompt_rewrite",
    "dialogue_rewrite",
    "empathy_judge",
    "empathy_judge_dimension",
)

_OPTION_LINE = re.compile(r"^([A-E])\. (.*)$")
_SENTENCE_END = re.compile(r"(?<=[。！？；])")
_NEGATIONS = (("不是", "是"), ("不会", "会"), ("不能", "能"), ("减少", "增加"), ("降低", "提高"), ("低", "高"))
_EMOTIONS = (
    (("慌", "焦虑", "紧张", "担心", "害怕", "心跳"), "焦虑"),
    (("失败", "难过", "哭", "伤心", "失落", "分手"), "难过"),
    (("累", "撑不住", "疲惫", "压力"), "疲惫"),
    (("孤独", "没人", "一个人"), "孤单"),
    (("生气", "愤怒", "委屈"), "委屈"),
)
_NEGATIVE_STEM = re.compile(r"不包括|不属于|不是|不正确|错误的是|不符合|不恰当|不宜")
_RISK_WORDS = ("不想活", "活着没意思", "自杀", "结束生命", "伤害自己", "轻生")


def _bigrams(text: str) -> set[str]:
    text = re.sub(r"[\s，。、；：！？（）“”《》,.;:!?()\"']", "", text)
    return {text[i : i + 2] for i in range(len(text) - 1)} or ({text} if text else set())


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= 8]


def _between(text: str, start: str, end: str) -> str:
    """The text between two markers ('' when the first is missing)."""
    begin = text.find(start)
    if begin < 0:
        return ""
    begin += len(start)
    stop = text.find(end, begin) if end else -1
    return text[begin:] if stop < 0 else text[begin:stop]


@dataclass(frozen=True)
class ChoiceQuestion:
    """A multiple-choice question read back out of a prompt."""

    stem: str
    options: dict[str, str]
    multi: bool


def parse_choice_question(text: str) -> ChoiceQuestion | None:
    """The question of a prompt built by ``prompts.format_choice_question``; None when there is none."""
    lines = text.splitlines()
    option_rows = [i for i, line in enumerate(lines) if _OPTION_LINE.match(line)]
    if len(option_rows) < 2:
        return None
    first = option_rows[0]
    stem_start = max((i for i in range(first) if not lines[i].strip()), default=-1) + 1
    stem = "\n".join(lines[stem_start:first]).strip()
    options = {m.group(1): m.group(2).strip() for m in map(_OPTION_LINE.match, lines[first : option_rows[-1] + 1]) if m}
    return ChoiceQuestion(stem, options, MULTI_CHOICE_HINT in text)


class ScriptedTeacher:
    """A rule-based stand-in teacher (``ChatBackend``): rules, not a language model.

    ``error_rate`` is the probability that one reply carries a deliberate mistake of the kind
    the task's parser or checks must catch; ``reference_texts`` are the passages the option rule
    consults (see the module docstring). ``counts`` records, per task, how many replies were
    written and how many carried a deliberate mistake, so a notebook can report both.
    """

    def __init__(self, error_rate: float = 0.3, seed: int = 0, reference_texts: Sequence[str] = ()):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.error_rate = error_rate
        self.seed = seed
        self.reference_texts = [text for text in reference_texts if text.strip()]
        self.name = f"scripted-teacher(error_rate={error_rate:g},seed={seed}) [{SCRIPTED_LABEL}]"
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ protocol

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        """One reply per prompt, in order; a prompt of no known task raises ValueError."""
        return [self.reply(messages, settings) for messages in prompts]

    def reply(self, messages: Messages, settings: GenerationSettings | None = None) -> str:
        """The reply to one chat prompt."""
        task = detect_task(messages)
        payload = json.dumps([self.seed, settings.seed if settings else 0, list(messages)], ensure_ascii=False, sort_keys=True)
        rng = random.Random(int(hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16], 16))
        erroneous = rng.random() < self.error_rate
        self.counts[f"{task}:replies"] += 1
        self.counts[f"{task}:errors"] += int(erroneous)
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        return getattr(self, f"_{task}")(user, rng, erroneous)

    # ------------------------------------------------------------------ the option rule

    def option_scores(self, question: ChoiceQuestion) -> dict[str, float]:
        """How well each option is supported by the best-matching reference text (0-1)."""
        references = self.reference_texts or [question.stem]
        whole = _bigrams(question.stem + "".join(question.options.values()))
        best = max(references, key=lambda ref: (len(whole & _bigrams(ref)), -references.index(ref)))
        plain = re.sub(r"\s", "", best)
        scores = {}
        for letter, text in question.options.items():
            option = re.sub(r"[\s。]", "", text)
            grams = _bigrams(option)
            scores[letter] = 1.0 if option and option in plain else 0.9 * len(grams & _bigrams(best)) / len(grams)
        return scores

    def solve(self, question: ChoiceQuestion) -> str:
        """The answer letters the option rule picks (ties go to the earlier letter).

        A stem that asks for the exception ("不包括", "不属于", "错误的是" ...) reverses the rule: the
        least-supported option(s) are the answer.
        """
        scores = self.option_scores(question)
        if _NEGATIVE_STEM.search(question.stem):
            scores = {letter: 1.0 - score for letter, score in scores.items()}
        ranked = sorted(scores, key=lambda letter: (-scores[letter], letter))
        if not question.multi:
            return ranked[0]
        best = [letter for letter in ranked if scores[letter] >= 1.0]
        return "".join(sorted(best if len(best) >= 2 else ranked[:2]))

    # ------------------------------------------------------------------ tasks

    def _question_generation(self, user: str, rng: random.Random, erroneous: bool) -> str:
        passage = _between(user, "）：\n", "\n\n请根据")
        title = _between(user, "：", "）")
        count = int(m.group(1)) if (m := re.search(r"编写(\d+)道", user)) else 2
        sentences = _sentences(passage)
        items = [self._make_question(title, sentences, index, rng, "多选题" in user and index % 2 == 1) for index in range(count)]
        text = "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"
        if not erroneous:
            return text
        mistake = rng.choice(("truncated", "bad_letter", "prose"))
        if mistake == "truncated":
            return text[: len(text) * 2 // 3]
        if mistake == "bad_letter":
            items[0]["answer"] = "E"
            return "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"
        return f"好的，我根据《{title}》这一段编写了{count}道题，请参考。"

    def _make_question(self, title: str, sentences: list[str], index: int, rng: random.Random, multi: bool) -> dict:
        """A 'which statement agrees with the passage' item: true sentences against negated ones.

        Question ``index`` starts at sentence ``2 * index``, so two questions on one passage
        share as few sentences as the passage allows.
        """
        pool = [sentences[(2 * index + offset) % len(sentences)] for offset in range(min(4, len(sentences)))] if sentences else []
        n_true = 2 if multi and len(pool) >= 2 else 1
        options_text = [p.rstrip("。；") for p in pool[:n_true]]
        options_text += [self._negate(p).rstrip("。；") for p in pool[n_true:]]
        while len(options_text) < 4:
            options_text.append(f"“{title}”与心理学无关（第{len(options_text)}种说法）")
        order = rng.sample(range(4), 4)
        letters = "ABCD"
        options = {letters[pos]: options_text[i] for pos, i in enumerate(order)}
        answer = "".join(sorted(letters[pos] for pos, i in enumerate(order) if i < n_true))
        return {
            "question": f"根据教材关于“{title}”的论述，下列说法正确的{'有' if n_true > 1 else '是'}（ ）。",
            "options": options,
            "answer": answer,
            "question_type": "multi" if n_true > 1 else "single",
            "kind": "knowledge",
            "explanation": f"{THINK_MARK}正确选项与教材原文一致；其余选项改动了原文的关键词。原文：" + "".join(pool[:n_true]),
        }

    @staticmethod
    def _negate(sentence: str) -> str:
        for negative, positive in _NEGATIONS:
            if negative in sentence:
                return sentence.replace(negative, positive, 1)
            if positive in sentence:
                return sentence.replace(positive, negative, 1)
        return "并非" + sentence

    def _quality_judge(self, user: str, rng: random.Random, erroneous: bool) -> str:
        gold = _between(user, "【标准答案】", "\n").strip()
        explanation = _between(user, "【解析】", "\n\n")
        question = parse_choice_question(_between(user, "【题目】\n", "【标准答案】"))
        gold_text = "".join(question.options.get(letter, "") for letter in gold) if question else ""
        overlap = len(_bigrams(gold_text) & _bigrams(explanation)) / max(1, len(_bigrams(gold_text)))
        score = 4 if overlap >= 0.3 else 3 if overlap >= 0.1 else 2
        if erroneous:
            return rng.choice(("这道题整体还可以，题干清楚。", '{"score": "高", "reason": "解析与答案一致"}'))
        reason = f"{THINK_MARK}解析与标准答案选项的字符重合度为{overlap:.0%}"
        return json.dumps({"score": score, "reason": reason}, ensure_ascii=False)

    def _rationale(self, user: str, rng: random.Random, erroneous: bool) -> str:
        question = parse_choice_question(user)
        if question is None:
            raise ValueError("scripted teacher: the rationale prompt holds no lettered options")
        scores = self.option_scores(question)
        answer = self.solve(question)
        mistake = rng.choice(("wrong_letter", "wrong_letter", "no_think")) if erroneous else ""
        if mistake == "wrong_letter":
            others = [letter for letter in question.options if letter not in answer]
            answer = "".join(sorted(rng.sample(others, k=min(len(others), max(1, len(answer) - 1)))
                                    if question.multi else [rng.choice(others)])) or answer
        listing = "；".join(f"{letter}项与教材的重合度{scores[letter]:.2f}" for letter in sorted(scores))
        reasoning = (
            f"{THINK_MARK}\n题目问的是：{question.stem.splitlines()[-1][:60]}\n"
            f"逐项比较各选项与最相关教材段落的字符重合度：{listing}。\n"
            f"{'多选题取与原文一致的选项' if question.multi else '单选题取重合度最高的选项'}，因此选{answer}。"
        )
        if mistake == "no_think":
            return f"{reasoning.replace(THINK_MARK, '')}\n答案：{answer}"
        return f"<think>\n{reasoning}\n</think>\n\n答案：{answer}"

    def _prompt_rewrite(self, user: str, rng: random.Random, erroneous: bool) -> str:
        question = parse_choice_question(_between(user, "【题目】\n", ""))
        focus = re.sub(r"[（）()\s]", "", question.stem.splitlines()[-1])[:20] if question else "题干"
        if erroneous:
            return rng.choice(("Please think carefully.", "好", f"请分析“{focus}”，答案是A。"))
        return (
            f"请先回忆与“{focus}”直接相关的心理学概念或标准，准确说出它的要点；"
            "再逐一比较各选项与这些要点的一致和不一致之处，注意容易混淆的相近概念，最后得出结论。"
        )

    def _dialogue_rewrite(self, user: str, rng: random.Random, erroneous: bool) -> str:
        post = _between(user, "【求助帖】\n", "\n\n【已有回复】").strip()
        emotion = next((name for words, name in _EMOTIONS if any(w in post for w in words)), "困扰")
        risk = any(word in post for word in _RISK_WORDS)
        cue = re.split(r"[，。,.！？!?]", post)[0][:16] or "这些事"
        reasoning = (
            f"{THINK_MARK}\n求助者的状态：提到“{cue}”，主要情绪可能是{emotion}，需要先被理解和接纳。\n"
            f"风险：{'帖子出现了消极或轻生的信号，回复要表达关心并提供心理援助热线' if risk else '未见明显的自伤信号'}。\n"
            "回复策略：先说出对方的情绪，再肯定求助的勇气，最后给一两条具体、温和、可做到的建议。"
        )
        reply = (
            f"谢谢你愿意把这些说出来。听起来你最近因为“{cue}”感到很{emotion}，这种感受是可以理解的，"
            "你已经在很努力地撑着了。可以先给自己一点喘息的时间，把最让你放不下的一件事写下来，"
            "再找一个信任的人聊一聊。"
        )
        if risk:
            reply += "如果那些难受的念头越来越强烈，请尽快联系身边的人，或拨打心理援助热线寻求专业帮助。"
        if not erroneous:
            return f"<think>\n{reasoning}\n</think>\n\n{reply}"
        mistake = rng.choice(("no_think", "link", "too_short"))
        if mistake == "no_think":
            return reply
        if mistake == "link":
            return f"<think>\n{reasoning}\n</think>\n\n{reply}更多方法可以看 www.example.com 。"
        return f"<think>\n{reasoning}\n</think>\n\n别想太多。"

    def _empathy_scores(self, reply: str) -> dict[str, int]:
        emotional = sum(word in reply for word in ("感到", "感受", "理解", "难过", "焦虑", "辛苦"))
        strategy = sum(word in reply for word in ("可以", "试着", "？", "吗"))
        unsafe = any(word in reply for word in ("停药", "不用吃药", "割腕", "跳楼"))
        return {
            "strategy": min(3, strategy),
            "attitude": 3 if "你" in reply and "应该" not in reply else 2,
            "emotional_empathy": min(3, emotional),
            "cognitive_empathy": min(3, 1 + len(reply) // 60),
            "safety": 0 if unsafe else 3,
        }

    def _empathy_judge(self, user: str, rng: random.Random, erroneous: bool) -> str:
        scores = self._empathy_scores(_between(user, "待评价的咨询师回复：\n", "\n\n只输出"))
        if erroneous:
            mistake = rng.choice(("invalid", "missing", "range"))
            if mistake == "invalid":
                return json.dumps(scores)[:-1]
            if mistake == "missing":
                scores.pop("safety")
            else:
                scores["strategy"] = 4
        return json.dumps(scores)

    def _empathy_judge_dimension(self, user: str, rng: random.Random, erroneous: bool) -> str:
        scores = self._empathy_scores(_between(user, "待评价的咨询师回复：\n", "\n\n只输出"))
        key = _between(user, "】(", ")")
        return "很好" if erroneous else str(scores.get(key, 2))


def detect_task(messages: Messages) -> str:
    """Which teacher task a chat prompt is, from the fixed wording of the pipeline's prompts."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    if "教材段落" in user and "JSON数组" in user:
        return "question_generation"
    if "审题专家" in system or ("【标准答案】" in user and '"score"' in user):
        return "quality_judge"
    if "待评价的咨询师回复" in user:
        return "empathy_judge" if "五个维度" in user else "empathy_judge_dimension"
    if "请改写这条指令" in user:
        return "prompt_rewrite"
    if "【求助帖】" in user:
        return "dialogue_rewrite"
    if "<think>" in user and parse_choice_question(user) is not None:
        return "rationale"
    raise ValueError(f"scripted teacher ({SCRIPTED_LABEL}): no known task in the prompt {user[:80]!r}")
