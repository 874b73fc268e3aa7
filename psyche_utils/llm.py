"""One interface for "generate replies to these chat prompts".

Every stage that needs a language model - the teacher that writes questions and rationales,
the solver panel, the evaluated model, the empathy judge - talks to a ``ChatBackend``. The
tiny model, a local 7B and a vLLM or hosted server are then interchangeable, and a disk cache
in front of any of them means a re-run notebook never pays for the same generation twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

Messages = list[dict[str, str]]
_SQL_CHUNK = 500


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; temperature 0 means greedy (deterministic) decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class ChatBackend(Protocol):
    """Anything that turns chat prompts into reply strings, in order."""

    name: str

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]: ...


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

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        encoded = [
            self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
            for messages in prompts
        ]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        replies: list[str] = [""] * len(encoded)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch_index, batch in enumerate(tqdm(batches, desc=f"generate ({self.name})", disable=not self.progress)):
            texts = self._generate_batch([encoded[i] for i in batch], settings, batch_index)
            for i, text in zip(batch, texts):
                replies[i] = text
        return replies

    def _generate_batch(self, ids: list[list[int]], settings: GenerationSettings, batch_index: int) -> list[str]:
        padded = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        device = next(self.model.parameters()).device
        sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p}
        torch.manual_seed(settings.seed + batch_index)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=padded["input_ids"].to(device),
                attention_mask=padded["attention_mask"].to(device),
                max_new_tokens=settings.max_new_tokens,
                do_sample=not settings.greedy,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = output[:, padded["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class BackendError(RuntimeError):
    """A remote model could not answer, after every retry."""


class OpenAICompatibleBackend:
    """A vLLM server or hosted model behind the OpenAI chat-completions API.

    The official ``openai`` client does the HTTP work, including retries with exponential
    backoff on 429/5xx and time-outs; a thread pool bounds how many requests are in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 120.0,
    ):
        from openai import OpenAI

        self.name = f"openai:{model}@{base_url}"
        self.model = model
        self.max_concurrency = max_concurrency
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)

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

    def _complete(self, messages: Messages, settings: GenerationSettings) -> str:
        from openai import OpenAIError

        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=list(messages),
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
            )
        except OpenAIError as error:
            raise BackendError(f"{self.name} failed after retries: {error}") from error
        except ValueError as error:  # a 200 whose body is not JSON (a proxy's HTML page, say)
            raise BackendError(f"{self.name} sent a reply that is not JSON: {error}") from error
        if not getattr(response, "choices", None):
            raise BackendError(f"{self.name} sent a reply without choices: {str(response)[:200]}")
        content = response.choices[0].message.content
        return content or ""

    def generate(self, prompts: Sequence[Messages], settings: GenerationSettings) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(self._complete, messages, settings) for messages in prompts]
            return [future.result() for future in tqdm(futures, desc=f"generate ({self.model})")]


class CachedBackend:
    """Any backend with an on-disk cache in front of it (one SQLite file).

    The key covers the backend's name, the exact messages and the settings, so changing any of
    them asks the model again, and nothing else ever does.
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
            fresh = self.backend.generate(list(missing.values()), settings)
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?)", zip(missing, fresh))
            stored.update(zip(missing, fresh))
        return [stored[key] for key in keys]
