"""Multi-turn chat with a Psyche-R1 style model, with the crisis screen in front of it.

One turn: an empty turn gets a prompt to write something; otherwise the user text is screened
(``psyche_utils.safety``: keywords, then an optional guard model), and a flagged turn gets the
referral reply and never reaches the model, now or in any later turn's history. A turn that alone
is longer than the token budget is refused with a message, never sent past the context. Otherwise
the user text gets the model's own think instruction (``prompts.build_messages``), the history is
trimmed to the budget, tokens are streamed one checked sentence at a time, the reasoning is split
from the reply, and the reply AND the reasoning are checked before anything more is shown. A
flagged reply is replaced by the referral-first reply and is never kept. Only the visible reply
goes back into the history: the model's reasoning never does.

With ``fail_closed`` (the default) an error inside any screening layer gives the referral reply,
is logged and recorded on the turn, and the chat goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import TextStreamer

from psyche_utils.answers import THINK_OPEN, split_reasoning
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages, generate_kwargs
from psyche_utils.prompts import build_messages
from psyche_utils.safety import (
    Qwen3GuardClassifier,
    Referral,
    RiskClassifier,
    ScreenResult,
    default_referral,
    layer_error,
    screen,
    screen_many,
    screen_reply,
)
from psyche_utils.safety.normalize import folded_view

TextCallback = Callable[[str], None]

# The official Psyche-R1 inference settings.
OFFICIAL_TEMPERATURE = 0.7
OFFICIAL_TOP_P = 0.9
OFFICIAL_MAX_NEW_TOKENS = 2048


@dataclass(frozen=True)
class ChatSettings:
    """Sampling and context settings for one chat session (defaults: the official inference)."""

    max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS
    temperature: float = OFFICIAL_TEMPERATURE
    top_p: float = OFFICIAL_TOP_P
    seed: int = 42
    history_token_budget: int = 4096
    case: bool = False
    context_window: int | None = None  # the model's context length, when known: prompt + reply must fit it

    @property
    def prompt_budget(self) -> int:
        """Tokens a prompt may use: the history budget, and room for the reply inside the context window."""
        if self.context_window is None:
            return self.history_token_budget
        return min(self.history_token_budget, self.context_window - self.max_new_tokens)

    def generation(self, turn_index: int) -> GenerationSettings:
        """Per-turn decoding settings; the seed moves with the turn so turns do not repeat each other."""
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed + turn_index
        )


class ReplyGenerator(Protocol):
    """Anything that answers one chat prompt, optionally streaming text as it is produced."""

    name: str

    def __call__(self, messages: Messages, settings: GenerationSettings, on_text: TextCallback | None = None) -> str: ...


class _CallbackStreamer(TextStreamer):
    """transformers' TextStreamer, sending each finished piece of text to a callback, not stdout."""

    def __init__(self, tokenizer: Any, callback: TextCallback):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.callback = callback

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.callback(text)


class LocalModelGenerator:
    """A loaded ``transformers`` model (any profile) that streams its tokens while generating."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "local"):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    def __call__(self, messages: Messages, settings: GenerationSettings, on_text: TextCallback | None = None) -> str:
        encoded = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        input_ids = encoded["input_ids"].to(device)
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(device),
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=_CallbackStreamer(self.tokenizer, on_text) if on_text else None,
                **generate_kwargs(settings),
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


class BackendGenerator:
    """Any ``ChatBackend`` (a vLLM or hosted server): no token streaming, the reply arrives whole."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend
        self.name = backend.name

    def __call__(self, messages: Messages, settings: GenerationSettings, on_text: TextCallback | None = None) -> str:
        text = self.backend.generate([messages], settings)[0]
        if on_text:
            on_text(text)
        return text


class ScreenedStream:
    """Passes streamed text on one sentence at a time, each only after the text so far passes the reply check.

    Streaming and "screen the reply before it is shown" pull in opposite directions; releasing whole
    sentences keeps the reply arriving live while nothing unscreened reaches the reader. Once a
    sentence fails, nothing more is released and ``blocked`` is set.
    """

    BOUNDARIES = "。！？!?\n；;"

    def __init__(self, on_text: TextCallback, reply_screen_fn: Callable[[str], ScreenResult]):
        self.on_text = on_text
        self.reply_screen_fn = reply_screen_fn
        self.released = ""
        self.pending = ""
        self.blocked = False

    def _release(self, chunk: str) -> None:
        if self.blocked or not chunk:
            return
        try:
            flagged = self.reply_screen_fn(self.released + chunk).flagged
        except Exception as error:  # a failing check releases nothing more
            layer_error("stream reply check", error, fail_closed=True)
            flagged = True
        if flagged:
            self.blocked = True
            return
        self.released += chunk
        self.on_text(chunk)

    def __call__(self, piece: str) -> None:
        self.pending += piece
        cut = max(self.pending.rfind(mark) for mark in self.BOUNDARIES)
        if cut >= 0:
            chunk, self.pending = self.pending[: cut + 1], self.pending[cut + 1 :]
            self._release(chunk)

    def flush(self) -> None:
        chunk, self.pending = self.pending, ""
        self._release(chunk)


@dataclass
class ChatTurn:
    """What happened in one turn, for display and for tests."""

    user: str
    reply: str
    reasoning: str | None
    screen: ScreenResult
    reply_screen: ScreenResult | None = None
    raw: str | None = None
    prompt_tokens: int = 0
    dropped_turns: int = 0
    status: str = "model"  # "model" | "referral" | "reply_withheld" | "empty" | "oversized"

    @property
    def flagged(self) -> bool:
        """True when the user turn was routed to the referral reply (the model was not called)."""
        return self.screen.flagged

    @property
    def sent_to_model(self) -> bool:
        return self.status in ("model", "reply_withheld")

    @property
    def reply_blocked(self) -> bool:
        return self.reply_screen is not None and self.reply_screen.flagged


def count_prompt_tokens(tokenizer: Any, messages: Messages) -> int:
    """Tokens the model reads for this prompt, chat template and generation header included."""
    return len(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=False))


def trim_history(
    tokenizer: Any, user_text: str, history: Messages, budget: int, *, case: bool = False
) -> tuple[Messages, list[dict[str, str]], int]:
    """Drop the oldest user/assistant pairs until the whole prompt fits ``budget`` tokens.

    Returns (kept history, full prompt messages, prompt token count). The new user turn is never
    cut (that would answer a question nobody asked): when it alone is over budget the count says so,
    and ``ChatSession`` refuses the turn instead of sending it past the budget.
    """
    if len(history) % 2:
        raise ValueError("history must hold whole user/assistant pairs")
    kept = list(history)
    messages = build_messages(user_text, case=case, history=kept)
    tokens = count_prompt_tokens(tokenizer, messages)
    while tokens > budget and kept:
        kept = kept[2:]
        messages = build_messages(user_text, case=case, history=kept)
        tokens = count_prompt_tokens(tokenizer, messages)
    return kept, messages, tokens


@dataclass
class ChatSession:
    """A conversation: screen, trim, generate (streamed), split reasoning, screen reply, remember."""

    generator: ReplyGenerator
    tokenizer: Any
    settings: ChatSettings = field(default_factory=ChatSettings)
    screen_fn: Callable[[str], ScreenResult] = screen
    reply_screen_fn: Callable[..., ScreenResult] = screen_reply
    classifier: RiskClassifier | None = None
    reply_guard: Qwen3GuardClassifier | None = None
    referral: Referral | None = None
    fail_closed: bool = True
    history: Messages = field(default_factory=list)
    transcript: list[ChatTurn] = field(default_factory=list)

    def _screen(self, text: str) -> ScreenResult:
        return screen_many([text], keyword_screen=self.screen_fn, classifier=self.classifier, fail_closed=self.fail_closed)[0]

    def _finish(self, turn: ChatTurn, on_text: TextCallback | None, shown: str | None = None) -> ChatTurn:
        if on_text and shown is not None:
            on_text(shown)
        self.transcript.append(turn)
        return turn

    def send(self, user_text: str, on_text: TextCallback | None = None) -> ChatTurn:
        """Answer one user turn. ``on_text`` receives the streamed text (the referral, when flagged)."""
        referral = self.referral or default_referral()
        if not folded_view(user_text).text.strip():
            reply = referral.empty_turn(user_text)
            return self._finish(ChatTurn(user_text, reply, None, ScreenResult(False, None), status="empty"), on_text, reply)
        verdict = self._screen(user_text)
        if verdict.flagged:
            reply = referral.reply(verdict, user_text)
            return self._finish(ChatTurn(user_text, reply, None, verdict, status="referral"), on_text, reply)

        budget = self.settings.prompt_budget
        kept, messages, tokens = trim_history(self.tokenizer, user_text, self.history, budget, case=self.settings.case)
        if tokens > budget:
            reply = referral.oversized_turn(user_text, tokens, budget)
            return self._finish(ChatTurn(user_text, reply, None, verdict, prompt_tokens=tokens, status="oversized"), on_text, reply)
        dropped = (len(self.history) - len(kept)) // 2
        # A reply guard judges the whole reply, so with one nothing is streamed before it has spoken.
        stream = ScreenedStream(on_text, self.reply_screen_fn) if on_text and self.reply_guard is None else None
        raw = self.generator(messages, self.settings.generation(len(self.transcript)), stream)
        if stream:
            stream.flush()
        reasoning, answer = split_reasoning(raw)
        reply_verdict = self._check_reply(user_text, raw, reasoning, answer)
        status = "model"
        if reply_verdict.flagged:
            answer, reasoning, raw, status = referral.unsafe_reply(user_text), None, None, "reply_withheld"
            if on_text:
                on_text(("\n" if stream else "") + answer)
        elif on_text and stream is None:
            on_text(answer)
        # The user turn goes in as the model read it (think instruction included); the reasoning never does,
        # and a withheld reply is replaced by the referral text it was replaced with on screen.
        self.history = kept + [messages[-1], {"role": "assistant", "content": answer}]
        turn = ChatTurn(user_text, answer, reasoning, verdict, reply_verdict, raw, tokens, dropped, status)
        self.transcript.append(turn)
        return turn

    def _check_reply(self, user_text: str, raw: str, reasoning: str | None, answer: str) -> ScreenResult:
        """The reply check on the answer and the reasoning (an unclosed think block counts as reasoning),
        then the reply guard; an error in either fails closed when ``fail_closed`` is set."""
        if reasoning is None and THINK_OPEN in raw:
            reasoning = raw
        try:
            verdict = self.reply_screen_fn(answer, reasoning)
        except Exception as error:
            return layer_error("reply_checks", error, fail_closed=self.fail_closed)
        if verdict.flagged or self.reply_guard is None:
            return verdict
        try:
            return self.reply_guard.classify_replies([(user_text, answer)])[0]
        except Exception as error:
            return layer_error("reply_guard", error, fail_closed=self.fail_closed)

    def reset(self) -> None:
        self.history = []
        self.transcript = []
