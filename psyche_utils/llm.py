"""One interface for "generate replies to these chat prompts".

Every stage that needs a language model - the teacher that writes questions and rationales,
the solver panel, the evaluated model, the empathy judge - talks to a ``ChatBackend``. The
tiny model, a local 7B and a vLLM or hosted server are then interchangeable, and a disk cache
in front of any of them means a re-run notebook never pays for the same generation twice.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from psyche_utils.progress import progress

Messages = list[dict[str, str]]
_SQL_CHUNK = 500


@dataclass(frozen=True)
class GenerationSettings:
    """Every sampling field of one decoding run, stated explicitly.

    transformers fills each field a ``generate()`` call leaves unset from the checkpoint's own
    ``generation_config`` (Qwen2.5-7B-Instruct ships temperature 0.7, top_p 0.8, top_k 20,
    repetition_penalty 1.05), so a run is only what it says it is when every field is passed.
    ``temperature`` 0.0 means greedy decoding; ``top_k`` 0 means no top-k cut-off.
    ``top_k`` and ``repetition_penalty`` are keyword-only so that older positional calls
    ``GenerationSettings(max_new_tokens, temperature, top_p, seed)`` keep their meaning.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    _: KW_ONLY
    top_k: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens <= 0:
            problems.append(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if problems:
            raise ValueError("GenerationSettings: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def label(self) -> str:
        """A short name for tables and cache files: ``greedy-256``, ``t0.7-p0.9-2048``, ``t0.7-p0.8-k20-r1.05-2048``.

        The seed is left out on purpose (it does not change what the settings mean); cache keys
        that must tell seeds apart use ``asdict(settings)``.
        """
        if self.greedy:
            parts = ["greedy"]
        else:
            parts = [f"t{self.temperature:g}", f"p{self.top_p:g}"]
            if self.top_k:
                parts.append(f"k{self.top_k}")
        if self.repetition_penalty != 1.0:
            parts.append(f"r{self.repetition_penalty:g}")
        parts.append(str(self.max_new_tokens))
        return "-".join(parts)


PRESETS: dict[str, GenerationSettings] = {
    "greedy": GenerationSettings(max_new_tokens=256, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0),
    # The model card's inference settings for Psyche-R1.
    "psyche_official": GenerationSettings(
        max_new_tokens=2048, temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.0
    ),
}


def generation_preset(name: str, **overrides: Any) -> GenerationSettings:
    """A named preset, with any field replaced: ``generation_preset("greedy", max_new_tokens=64)``."""
    if name not in PRESETS:
        raise KeyError(f"Unknown generation preset {name!r}; choose one of {sorted(PRESETS)}.")
    known = {f.name for f in fields(GenerationSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"generation_preset({name!r}): unknown field(s) {unknown}; GenerationSettings has {sorted(known)}.")
    return replace(PRESETS[name], **overrides)


def generate_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` that leave nothing to the checkpoint's generation_config.

    Greedy: ``do_sample=False`` switches every sampling warper off (transformers applies
    temperature/top-k/top-p/min-p only when sampling), and the logit processors that act in
    greedy mode too (repetition penalty, n-gram blocking) get neutral values. Sampling: every
    warper gets an explicit value (``min_p=0.0`` and ``typical_p=1.0`` are no-ops), so an inherited
    ``top_k=20`` or ``min_p`` cannot narrow the distribution behind the caller's back.
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": not settings.greedy,
        "num_beams": 1,
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": 0,
    }
    if not settings.greedy:
        kwargs.update(
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
        )
    return kwargs


class ChatBackend(Protocol):
    """Anything that turns chat prompts into reply strings, in order."""

    name: str

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]: ...


#: Called as each reply is ready: (index into the prompts, text, whether it is a finished reply
#: worth caching). Backends that accept ``on_reply`` let ``CachedBackend`` store replies one by
#: one, so a failure late in a long list loses nothing that already came back.
ReplyCallback = Callable[[int, str, bool], None]


class TransformersBackend:
    """A local ``transformers`` model: batched, left-padded, length-sorted, seeded.

    Prompts are sorted by length so each batch pads as little as possible, then the replies
    are put back in the caller's order. Seeding per batch makes sampled runs repeatable.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 8, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.progress = progress
        self.tokenizer.padding_side = "left"

    def generate(
        self, prompts: Sequence[Messages], settings: GenerationSettings, on_reply: ReplyCallback | None = None
    ) -> list[str]:
        """Replies in the prompts' order; ``on_reply`` hears each batch's replies as soon as they exist."""
        encoded = [
            self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
            for messages in prompts
        ]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        replies: list[str] = [""] * len(encoded)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch_index, batch in enumerate(progress(batches, desc=f"generate ({self.name})", show=self.progress)):
            texts = self._generate_batch([encoded[i] for i in batch], settings, batch_index)
            for i, text in zip(batch, texts):
                replies[i] = text
                if on_reply is not None:
                    on_reply(i, text, True)
        return replies

    def _generate_batch(self, ids: list[list[int]], settings: GenerationSettings, batch_index: int) -> list[str]:
        padded = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        device = next(self.model.parameters()).device
        torch.manual_seed(settings.seed + batch_index)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=padded["input_ids"].to(device),
                attention_mask=padded["attention_mask"].to(device),
                pad_token_id=self.tokenizer.pad_token_id,
                **generate_kwargs(settings),
            )
        new_tokens = output[:, padded["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class BackendError(RuntimeError):
    """A remote model could not answer (after retries where retrying could help)."""


DEFAULT_CONCURRENCY = 32
DEFAULT_TIMEOUT_S = 600.0
CONCURRENCY_ENV_VAR = "PSYCHE_TEACHER_CONCURRENCY"
TIMEOUT_ENV_VAR = "PSYCHE_TEACHER_TIMEOUT"


def _setting_from_env(value: float | None, env_var: str, default: float, cast: Callable[[str], float]) -> float:
    """An explicit argument, else the environment variable, else the default; a bad value names the variable."""
    if value is not None:
        return value
    raw = os.environ.get(env_var, "").strip()
    if not raw:
        return default
    try:
        parsed = cast(raw)
    except ValueError:
        raise BackendError(f"{env_var}={raw!r} is not a number") from None
    if parsed <= 0:
        raise BackendError(f"{env_var}={raw!r} must be positive")
    return parsed


@dataclass
class RunReport:
    """What the last ``generate`` call got back: how many replies, and how many were not clean stops."""

    requested: int = 0
    completed: int = 0
    truncated: int = 0
    empty: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)

    def summary(self, name: str) -> str:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.finish_reasons.items()))
        return (
            f"{name}: {self.completed}/{self.requested} replies; {self.truncated} stopped early and "
            f"{self.empty} came back empty (finish reasons {reasons or 'none'}). "
            "Those replies are returned but not cached; raise max_new_tokens (or the server's "
            "--max-model-len) and run again to ask for them anew."
        )


class OpenAICompatibleBackend:
    """A vLLM server or hosted model behind the OpenAI chat-completions API.

    The official ``openai`` client does the HTTP work, including retries with exponential
    backoff on 429/5xx and time-outs; a thread pool bounds how many requests are in flight.
    A vLLM server batches whatever is in flight, so concurrency is its throughput knob: the
    defaults (32 requests, 600 s per request) suit a local server writing 2k-token replies;
    ``PSYCHE_TEACHER_CONCURRENCY`` / ``PSYCHE_TEACHER_TIMEOUT`` or the arguments change them.

    Every sampling field is sent: vLLM, like transformers, fills unset fields from the model's
    generation_config (Qwen2.5: top_k 20, repetition_penalty 1.05), so ``top_k`` and
    ``repetition_penalty`` travel in ``extra_body``. ``vllm_sampling=False`` leaves them out
    for a hosted API that rejects unknown fields.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        max_concurrency: int | None = None,
        max_retries: int = 5,
        timeout: float | None = None,
        *,
        vllm_sampling: bool = True,
        progress: bool = True,
    ):
        from openai import OpenAI

        self.name = f"openai:{model}@{base_url}"
        self.model = model
        self.max_retries = max_retries
        self.max_concurrency = int(_setting_from_env(max_concurrency, CONCURRENCY_ENV_VAR, DEFAULT_CONCURRENCY, int))
        self.timeout = float(_setting_from_env(timeout, TIMEOUT_ENV_VAR, DEFAULT_TIMEOUT_S, float))
        self.vllm_sampling = vllm_sampling
        self.progress = progress
        self.last_report = RunReport()
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=self.timeout)

    @classmethod
    def from_env(
        cls,
        url_var: str = "PSYCHE_TEACHER_URL",
        model_var: str = "PSYCHE_TEACHER_MODEL",
        key_var: str = "PSYCHE_TEACHER_KEY",
        **kwargs: Any,
    ) -> OpenAICompatibleBackend | None:
        """The backend the environment describes, or None when ``url_var`` is unset."""
        base_url = os.environ.get(url_var)
        if not base_url:
            return None
        model = os.environ.get(model_var)
        if not model:
            raise BackendError(f"{url_var} is set but {model_var} is not: name the served model too.")
        return cls(base_url, model, api_key=os.environ.get(key_var, "EMPTY"), **kwargs)

    def request_arguments(self, messages: Messages, settings: GenerationSettings) -> dict[str, Any]:
        """The chat-completions arguments for one prompt: every sampling field, nothing left to the server."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
        }
        if self.vllm_sampling:
            # vLLM: top_k 0 disables the cut-off (its SamplingParams prefers 0, quietly accepts -1).
            arguments["extra_body"] = {
                "top_k": settings.top_k,
                "repetition_penalty": settings.repetition_penalty,
            }
        return arguments

    def _complete(self, messages: Messages, settings: GenerationSettings) -> tuple[str, str]:
        """(text, finish_reason) for one prompt; a refused or failed request is a BackendError."""
        from openai import APIStatusError, AuthenticationError, OpenAIError, PermissionDeniedError

        try:
            response = self.client.chat.completions.create(**self.request_arguments(messages, settings))
        except (AuthenticationError, PermissionDeniedError) as error:
            raise BackendError(
                f"{self.name} refused the request ({error.status_code}): the API key is missing or not allowed "
                f"to use model {self.model!r}. Set PSYCHE_TEACHER_KEY (or api_key=). Server said: {error.message}"
            ) from error
        except APIStatusError as error:
            if 400 <= error.status_code < 500 and error.status_code not in (408, 409, 429):
                raise BackendError(f"{self.name} rejected the request ({error.status_code}): {error.message}") from error
            raise BackendError(f"{self.name} failed after {self.max_retries} retries: {error}") from error
        except OpenAIError as error:
            raise BackendError(f"{self.name} failed after {self.max_retries} retries: {error}") from error
        except ValueError as error:  # a 200 whose body is not JSON (a proxy's HTML page, say)
            raise BackendError(f"{self.name} sent a reply that is not JSON: {error}") from error
        if not getattr(response, "choices", None):
            raise BackendError(f"{self.name} sent a reply without choices: {str(response)[:200]}")
        choice = response.choices[0]
        content = choice.message.content
        finish = choice.finish_reason or "unknown"
        if content is None:
            return "", finish if finish != "stop" else "empty"
        return content, finish

    def generate(
        self, prompts: Sequence[Messages], settings: GenerationSettings, on_reply: ReplyCallback | None = None
    ) -> list[str]:
        """Replies in the prompts' order, each handed to ``on_reply`` the moment it arrives.

        The first request that fails for good cancels every request not yet sent, waits for the
        ones in flight (their replies still reach ``on_reply``) and raises. Replies that did not
        stop cleanly (cut off at max_tokens, filtered, or ``content: null``) come back as text
        but are reported as not cacheable, counted in ``last_report`` and warned about.
        """
        report = RunReport(requested=len(prompts))
        self.last_report = report
        replies: list[str] = [""] * len(prompts)
        failure: BaseException | None = None
        stop = threading.Event()

        def attempt(messages: Messages) -> tuple[str, str] | None:
            if stop.is_set():  # an earlier request failed for good: send nothing more
                return None
            try:
                return self._complete(messages, settings)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = {pool.submit(attempt, messages): i for i, messages in enumerate(prompts)}
            bar = progress(total=len(futures), desc=f"generate ({self.model})", show=self.progress)
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if failure is None:
                        failure = error
                        for pending in futures:
                            pending.cancel()
                    continue
                outcome = future.result()
                if outcome is None:
                    continue
                text, finish = outcome
                index = futures[future]
                replies[index] = text
                report.completed += 1
                report.finish_reasons[finish] = report.finish_reasons.get(finish, 0) + 1
                clean = finish == "stop" and bool(text)
                if not text:
                    report.empty += 1
                elif finish != "stop":
                    report.truncated += 1
                if on_reply is not None:
                    on_reply(index, text, clean)
                bar.update(1)
            bar.close()
        if failure is not None:
            done = f" ({report.completed} of {len(prompts)} replies had arrived and were kept)" if report.completed else ""
            raise BackendError(f"{failure}{done}") from failure
        if report.truncated or report.empty:
            warnings.warn(report.summary(self.name), stacklevel=2)
        return replies


class CachedBackend:
    """Any backend with an on-disk cache in front of it (one SQLite file).

    The key covers the backend's name, the exact messages and every field of the settings, so
    changing any of them asks the model again, and nothing else ever does. A backend whose
    ``generate`` takes ``on_reply`` has each reply written as it arrives; replies it marks as not
    clean (truncated or empty) are returned but never stored.
    """

    def __init__(self, backend: ChatBackend, cache_path: str | Path):
        self.backend = backend
        self.name = backend.name
        self.cache_path = Path(cache_path)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0
        self.not_cached = 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.cache_path, timeout=60)

    def key(self, messages: Messages, settings: GenerationSettings) -> str:
        payload = json.dumps([self.backend.name, list(messages), asdict(settings)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _lookup(self, keys: list[str]) -> dict[str, str]:
        unique = sorted(set(keys))
        found: dict[str, str] = {}
        with self._connect() as db:
            for start in range(0, len(unique), _SQL_CHUNK):
                chunk = unique[start : start + _SQL_CHUNK]
                query = f"SELECT key, reply FROM replies WHERE key IN ({','.join('?' * len(chunk))})"
                found.update(db.execute(query, chunk).fetchall())
        return found

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        keys = [self.key(messages, settings) for messages in prompts]
        stored = self._lookup(keys)
        missing: dict[str, Messages] = {}
        for key, messages in zip(keys, prompts):
            if key not in stored:
                missing.setdefault(key, messages)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            missing_keys = list(missing)
            fresh: dict[str, str] = {}
            with self._connect() as db:

                def keep(index: int, text: str, cacheable: bool) -> None:
                    fresh[missing_keys[index]] = text
                    if cacheable:
                        db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (missing_keys[index], text))
                        db.commit()
                    else:
                        self.not_cached += 1

                if "on_reply" in inspect.signature(self.backend.generate).parameters:
                    self.backend.generate(list(missing.values()), settings, on_reply=keep)
                else:
                    for index, text in enumerate(self.backend.generate(list(missing.values()), settings)):
                        keep(index, text, True)
            stored.update(fresh)
        return [stored[key] for key in keys]
