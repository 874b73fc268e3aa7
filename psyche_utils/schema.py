"""Typed records that flow between the data stages.

Every stage reads and writes these shapes, so a broken record is caught once, at the door,
with the file, line and field named, instead of surfacing as a cryptic error mid-training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Question:
    """A multiple-choice psychology question with its gold answer and written explanation."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    question_type: str
    subject: str
    explanation: str
    kind: str = "knowledge"
    source: str = "seed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Question:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})


@dataclass(frozen=True)
class Post:
    """A help-seeker's single-turn post and a reply to it."""

    id: str
    post: str
    reply: str
    topic: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Post:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})
