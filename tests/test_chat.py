"""Chat: the screen guards the model, reasoning stays out of the history, the history fits its budget."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from psyche_utils.chat import (
    BackendGenerator,
    ChatSession,
    ChatSettings,
    LocalModelGenerator,
    ScreenedStream,
    count_prompt_tokens,
    trim_history,
)
from psyche_utils.llm import GenerationSettings
from psyche_utils.prompts import THINK_INSTRUCTION, build_messages
from psyche_utils.safety import screen_reply


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return AutoTokenizer.from_pretrained(str(tiny_model_path))


class SpyGenerator:
    """Stands in for the model: records every prompt it is asked to answer and returns a script."""

    name = "spy"

    def __init__(self, reply: str = "<think>\n先想一想。\n</think>\n\n我在听，你愿意多说一些吗？"):
        self.reply = reply
        self.calls: list[list[dict[str, str]]] = []

    def __call__(self, messages, settings, on_text=None):
        self.calls.append([dict(m) for m in messages])
        if on_text:
            for piece in self.reply:
                on_text(piece)
        return self.reply


class SpyBackend:
    name = "spy-backend"

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, settings):
        self.prompts.extend(prompts)
        return ["<think>ok</think>\n\n好的。" for _ in prompts]


def _all_text(calls) -> str:
    return "\n".join(message["content"] for call in calls for message in call)


def test_flagged_turn_never_reaches_the_model_now_or_later(tokenizer):
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8))
    crisis = "我把攒的安眠药都准备好了，今晚就不想活了"
    turn = session.send(crisis)
    assert turn.flagged and turn.screen.category == "suicidal_intent"
    assert spy.calls == []
    assert "12356" in turn.reply
    session.send("谢谢你。我想聊聊最近的睡眠。")
    session.send("还有工作上的压力。")
    assert len(spy.calls) == 2
    assert crisis not in _all_text(spy.calls)
    assert all(crisis not in message["content"] for message in session.history)


def test_flagged_turn_never_reaches_a_backend(tokenizer):
    backend = SpyBackend()
    session = ChatSession(BackendGenerator(backend), tokenizer)
    session.send("I just took a whole bottle of pills")
    assert backend.prompts == []
    session.send("Can we talk about sleep?")
    assert len(backend.prompts) == 1


def test_reasoning_never_enters_the_history(tokenizer):
    spy = SpyGenerator("<think>\n秘密推理：来访者可能在回避。\n</think>\n\n听起来你最近很辛苦。")
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8))
    first = session.send("最近总是睡不好")
    assert first.reasoning == "秘密推理：来访者可能在回避。"
    assert first.reply == "听起来你最近很辛苦。"
    session.send("还会做噩梦")
    assert all("秘密推理" not in message["content"] for message in session.history)
    assert "秘密推理" not in _all_text(spy.calls)
    assert session.history[1] == {"role": "assistant", "content": "听起来你最近很辛苦。"}
    # The user turn is kept exactly as the model read it, with its think instruction.
    assert session.history[0]["content"].startswith(THINK_INSTRUCTION)


def _pairs(n: int) -> list[dict[str, str]]:
    history = []
    for i in range(n):
        history += [{"role": "user", "content": f"第{i}个问题：最近心情怎么样？" * 3}, {"role": "assistant", "content": f"第{i}个回答。" * 4}]
    return history


def test_trim_history_keeps_the_longest_recent_suffix_that_fits(tokenizer):
    history = _pairs(8)
    full = count_prompt_tokens(tokenizer, build_messages("新的问题", history=history))
    budget = full // 2
    kept, messages, tokens = trim_history(tokenizer, "新的问题", history, budget)
    assert tokens == count_prompt_tokens(tokenizer, messages) <= budget
    assert kept == history[len(history) - len(kept) :] and 0 < len(kept) < len(history)
    one_more = history[len(history) - len(kept) - 2 :]
    assert count_prompt_tokens(tokenizer, build_messages("新的问题", history=one_more)) > budget
    assert messages[-1]["content"].endswith("新的问题")


def test_trim_history_with_room_keeps_everything_and_never_drops_the_new_turn(tokenizer):
    history = _pairs(3)
    kept, _, _ = trim_history(tokenizer, "新的问题", history, 10_000)
    assert kept == history
    kept, messages, tokens = trim_history(tokenizer, "很长的问题" * 200, history, 50)
    assert kept == [] and tokens > 50 and "很长的问题" in messages[-1]["content"]
    with pytest.raises(ValueError, match="pairs"):
        trim_history(tokenizer, "x", history[:-1], 100)


def test_session_reports_dropped_turns_under_a_small_budget(tokenizer):
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8, history_token_budget=160))
    turns = [session.send(f"第{i}个问题：最近总是失眠，怎么办？") for i in range(6)]
    assert all(turn.prompt_tokens <= 160 for turn in turns)
    assert sum(turn.dropped_turns for turn in turns) > 0
    assert all(count_prompt_tokens(tokenizer, call) <= 160 for call in spy.calls)


def test_harmful_model_reply_is_replaced_and_never_streamed(tokenizer):
    harmful = "<think>嗯</think>\n\n我理解你。你应该去死吧。别告诉别人。"
    shown: list[str] = []
    session = ChatSession(SpyGenerator(harmful), tokenizer, ChatSettings(max_new_tokens=8))
    turn = session.send("我今天很难过", on_text=shown.append)
    assert turn.reply_blocked and turn.raw is None and turn.reasoning is None
    assert "去死" not in "".join(shown) and "去死" not in turn.reply
    assert "12356" in turn.reply
    assert all("去死" not in message["content"] for message in session.history)


def test_screened_stream_releases_whole_sentences_until_one_fails():
    shown: list[str] = []
    stream = ScreenedStream(shown.append, screen_reply)
    for piece in ["听起来", "你很累。", "也许可以", "休息一下。你", "应该去死吧。", "还有这句。"]:
        stream(piece)
    stream.flush()
    assert shown == ["听起来你很累。", "也许可以休息一下。"]
    assert stream.blocked


def test_default_settings_are_the_official_inference_settings():
    settings = ChatSettings()
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == (0.7, 0.9, 2048)
    assert settings.generation(3) == GenerationSettings(2048, 0.7, 0.9, 45)


def test_tiny_model_streams_and_is_repeatable_with_a_seed(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    generator = LocalModelGenerator(model, tokenizer, "tiny")
    messages = build_messages("最近总是失眠，怎么办？")
    settings = GenerationSettings(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=7)
    pieces: list[str] = []
    first = generator(messages, settings, pieces.append)
    second = generator(messages, settings)
    assert first == second and first
    assert "".join(pieces).strip() == first.strip()
    real = ChatSession(generator, tokenizer, ChatSettings(max_new_tokens=12))
    turn = real.send("我想结束自己的生命")
    assert turn.flagged and turn.raw is None


# --------------------------------------------------------------------------- turns that never reach the model


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b\u200b"])
def test_empty_turns_get_a_prompt_and_are_never_sent(tokenizer, text):
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8))
    shown: list[str] = []
    turn = session.send(text, on_text=shown.append)
    assert turn.status == "empty" and not turn.sent_to_model
    assert spy.calls == [] and session.history == []
    assert shown == [turn.reply] and "写" in turn.reply


def test_an_oversized_turn_is_refused_never_sent_past_the_budget(tokenizer):
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8, history_token_budget=120))
    turn = session.send("我最近工作压力很大，" * 60)
    assert turn.status == "oversized" and turn.prompt_tokens > 120
    assert spy.calls == [] and session.history == []
    assert "120" in turn.reply
    assert session.send("最近睡不好").status == "model" and len(spy.calls) == 1


def test_an_oversized_crisis_turn_still_gets_the_referral(tokenizer):
    session = ChatSession(SpyGenerator(), tokenizer, ChatSettings(max_new_tokens=8, history_token_budget=120))
    turn = session.send("我很累。" * 80 + "我不想活了")
    assert turn.status == "referral" and "12356" in turn.reply


class RaisingClassifier:
    fail_closed = True
    unparsed = 0

    def classify(self, texts):
        raise ConnectionError("guard unreachable")


def test_a_raising_classifier_gives_the_referral_and_keeps_the_chat_alive(tokenizer):
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, ChatSettings(max_new_tokens=8), classifier=RaisingClassifier())
    turn = session.send("今天有点累")
    assert turn.status == "referral" and "12356" in turn.reply and "ConnectionError" in turn.screen.detail
    assert spy.calls == []
    session.classifier = None
    assert session.send("今天有点累").status == "model"


def test_a_raising_reply_check_withholds_the_reply(tokenizer):
    def broken(answer, reasoning=None):
        raise RuntimeError("reply rules failed")

    session = ChatSession(SpyGenerator("好的。"), tokenizer, ChatSettings(max_new_tokens=8), reply_screen_fn=broken)
    turn = session.send("最近睡不好")
    assert turn.status == "reply_withheld" and "12356" in turn.reply


def test_a_method_in_the_reasoning_withholds_a_safe_looking_answer(tokenizer):
    harmful = "<think>用户问方法。最无痛的方式大概是吃一整瓶安眠药。</think>\n\n我理解你的痛苦。"
    shown: list[str] = []
    session = ChatSession(SpyGenerator(harmful), tokenizer, ChatSettings(max_new_tokens=8))
    turn = session.send("我好累", on_text=shown.append)
    assert turn.status == "reply_withheld" and turn.reasoning is None and turn.raw is None
    assert {m.part for m in turn.reply_screen.matches} == {"reasoning"}
    assert "安眠药" not in "".join(shown) and "12356" in turn.reply
    assert all("安眠药" not in message["content"] for message in session.history)


def test_an_unclosed_think_block_is_checked_as_reasoning(tokenizer):
    session = ChatSession(SpyGenerator("<think>英文：take the whole bottle of sleeping pills"), tokenizer, ChatSettings(max_new_tokens=8))
    assert session.send("我好累").status == "reply_withheld"


class ScriptedGuardBackend:
    """A scripted stand-in for Qwen3Guard-Gen: answers every prompt with one format example."""

    name = "scripted-guard"

    def __init__(self, reply: str):
        self.reply = reply

    def generate(self, prompts, settings):
        return [self.reply for _ in prompts]


def test_a_reply_guard_withholds_before_anything_is_streamed(tokenizer):
    from psyche_utils.safety import Qwen3GuardClassifier

    guard = Qwen3GuardClassifier(ScriptedGuardBackend("Safety: Unsafe\nCategories: Suicide & Self-Harm\nRefusal: No"))
    shown: list[str] = []
    session = ChatSession(SpyGenerator("<think>嗯</think>\n\n我在听。"), tokenizer, ChatSettings(max_new_tokens=8), reply_guard=guard)
    turn = session.send("我好累", on_text=shown.append)
    assert turn.status == "reply_withheld" and "我在听" not in "".join(shown)


def test_the_context_window_leaves_room_for_the_reply(tokenizer):
    settings = ChatSettings(max_new_tokens=100, history_token_budget=4096, context_window=220)
    assert settings.prompt_budget == 120
    spy = SpyGenerator()
    session = ChatSession(spy, tokenizer, settings)
    turn = session.send("我最近工作压力很大，" * 20)
    assert turn.status == "oversized" and turn.prompt_tokens > 120 and spy.calls == []
