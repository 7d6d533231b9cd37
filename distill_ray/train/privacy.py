"""Which target tokens may carry private information (the swing objective's per-token score in [0, 1]).

The detectors run on the decoded target text, so a match can span several tokens (an email address is many
tokens) and context decides (``Paris`` after a full stop is not a name; in mid-sentence it may be). Each
token's score is the highest score of any match overlapping its characters.
"""

from __future__ import annotations

import re
from typing import Sequence

# (pattern, score): how likely a match is private. Numbers and emails are the classic leaks (PINs, phone
# numbers, account ids); a capitalised word in mid-sentence is often a name but also often not.
DEFAULT_DETECTORS: tuple[tuple[str, float], ...] = (
    (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 1.0),                  # email
    (r"\d+(?:[.,:/-]\d+)*", 0.9),                            # digits, numbers, dates, phone-like groups
    (r"(?<![.!?\n]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*", 0.5),  # capitalised words not starting a sentence
)
PATTERN_SCORE = 1.0  # user patterns are explicit: treat matches as surely private


def char_scores(text: str, patterns: Sequence[str] = (), detectors=DEFAULT_DETECTORS) -> list[float]:
    """Privacy score of every character of ``text``."""
    scores = [0.0] * len(text)
    for pattern, score in [*detectors, *((p, PATTERN_SCORE) for p in patterns)]:
        for match in re.finditer(pattern, text):
            for i in range(match.start(), match.end()):
                scores[i] = max(scores[i], score)
    return scores


def token_scores(tokenizer, token_ids: Sequence[int], patterns: Sequence[str] = ()) -> list[float]:
    """Privacy score of each token: the max over its characters in the decoded sequence. Tokens are decoded
    one by one and joined, so each token owns a known character span of the text the detectors see."""
    pieces = [tokenizer.decode([token_id]) for token_id in token_ids]
    scores = char_scores("".join(pieces), patterns)
    result, start = [], 0
    for piece in pieces:
        result.append(max(scores[start:start + len(piece)], default=0.0))
        start += len(piece)
    return result
