"""A scripted stand-in for a model behind the ChatBackend interface, shared by the safety tests."""

from __future__ import annotations

from psyche_utils.llm import GenerationSettings


class RecordingBackend:
    """Returns the given strings in turn (a scripted stand-in, not a model) and records every prompt."""

    name = "recording"

    def __init__(self, replies: list[str]):
        self.replies = replies
        self.prompts: list[list[dict[str, str]]] = []

    def generate(self, prompts, settings: GenerationSettings) -> list[str]:
        self.prompts.extend(prompts)
        return [self.replies[i % len(self.replies)] for i in range(len(prompts))]
