"""What every teacher engine shares: sampling settings, one generation, and the engine protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 4                    # samples per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str                     # the completion, after the prompt (and after any response prefix)
    prompt_tokens: int
    completion_tokens: int
    finished: bool                # ended on a stop token rather than the token budget


class TeacherEngine(Protocol):
    name: str

    def render(self, messages: list[dict], response_prefix: str = "") -> str:
        """Turn chat messages into the exact prompt text this model continues."""

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[Generation]]:
        """``sampling.n`` generations for each prompt, in prompt order."""
