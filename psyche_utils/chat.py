"""Multi-turn chat with a Psyche-R1 style model, with the crisis screen in front of it.

One turn: screen the user text (``psyche_utils.safety``); a flagged turn gets the referral reply
and never reaches the model, now or in any later turn's history. Otherwise the user text gets the
model's own think instruction (``prompts.build_messages``), the history is trimmed to a token
budget, tokens are streamed as they are generated, the reasoning is split from the reply, and the
reply (and the reasoning, which the notebook shows collapsed) is screened before it is shown.
Only the visible reply goes back into the history: the model's reasoning never does, so a long
think block cannot crowd real conversation out of the context window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import TextStreamer

from psyche_utils.answers import split_reasoning
from psyche_utils.llm import ChatBackend, GenerationSettings, Messages
from psyche_utils.prompts import build_messages
from psyche_utils.safety import (
    LLMRiskClassifier,
    Referral,
    ScreenResult,
    default_referral,
    screen,
    screen_many,
    screen_reply,
)

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

    def generation(self, turn_index: int) -> GenerationSettings:
        """Per-turn decoding settings; the seed moves with the turn so turns do not repeat each other."""
        return GenerationSettings(self.max_new_tokens, self.temperature, self.top_p, self.seed + turn_index)


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
        sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p}
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(device),
                max_new_tokens=settings.max_new_tokens,
                do_sample=not settings.greedy,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=_CallbackStreamer(self.tokenizer, on_text) if on_text else None,
                **sampling,
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
        if self.reply_screen_fn(self.released + chunk).flagged:
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

    @property
    def flagged(self) -> bool:
        """True when the user turn was routed to the referral reply (the model was not called)."""
        return self.screen.flagged

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

    Returns (kept history, full prompt messages, prompt token count). The new user turn is always
    kept, even when it alone is over budget: cutting it would answer a question nobody asked.
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
    reply_screen_fn: Callable[[str], ScreenResult] = screen_reply
    classifier: LLMRiskClassifier | None = None
    referral: Referral | None = None
    history: Messages = field(default_factory=list)
    transcript: list[ChatTurn] = field(default_factory=list)

    def _screen(self, text: str) -> ScreenResult:
        return screen_many([text], keyword_screen=self.screen_fn, classifier=self.classifier)[0]

    def send(self, user_text: str, on_text: TextCallback | None = None) -> ChatTurn:
        """Answer one user turn. ``on_text`` receives the streamed text (the referral, when flagged)."""
        referral = self.referral or default_referral()
        verdict = self._screen(user_text)
        if verdict.flagged:
            reply = referral.reply(verdict, user_text)
            if on_text:
                on_text(reply)
            turn = ChatTurn(user_text, reply, None, verdict)
            self.transcript.append(turn)
            return turn

        kept, messages, tokens = trim_history(
            self.tokenizer, user_text, self.history, self.settings.history_token_budget, case=self.settings.case
        )
        dropped = (len(self.history) - len(kept)) // 2
        stream = ScreenedStream(on_text, self.reply_screen_fn) if on_text else None
        raw = self.generator(messages, self.settings.generation(len(self.transcript)), stream)
        if stream:
            stream.flush()
        reasoning, answer = split_reasoning(raw)
        reply_verdict = self._check_reply(reasoning, answer)
        if reply_verdict.flagged:
            answer, reasoning, raw = referral.unsafe_reply(user_text), None, None
            if on_text:
                on_text("\n" + answer)
        # The user turn goes in as the model read it (think instruction included); the reasoning never does.
        self.history = kept + [messages[-1], {"role": "assistant", "content": answer}]
        turn = ChatTurn(user_text, answer, reasoning, verdict, reply_verdict, raw, tokens, dropped)
        self.transcript.append(turn)
        return turn

    def _check_reply(self, reasoning: str | None, answer: str) -> ScreenResult:
        """The reply check on the answer, then on the reasoning (shown collapsed, so it is shown too)."""
        verdict = self.reply_screen_fn(answer)
        if not verdict.flagged and reasoning:
            verdict = self.reply_screen_fn(reasoning)
        return verdict

    def reset(self) -> None:
        self.history = []
        self.transcript = []
