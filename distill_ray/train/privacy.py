"""Which target tokens may carry private information (the swing objective's per-token score in [0, 1]).

Three scorers, chosen by name (``TrainSettings.privacy_scorer``):

- ``regex``: ``DEFAULT_PATTERNS`` plus the user's ``privacy_patterns``.
- ``list``: the exact strings the user declares private (``privacy_terms``: names, known secrets).
- ``likelihood``: no text rule; a token is private when the teacher predicts it far more confidently than
  the rest of its row (``likelihood_scores``), i.e. the teacher seems to have memorised it. It needs the
  teacher's log-probability of each target token, so the swing objective scores it, not ``make_batch``.

The text scorers (``PrivacyScorer``) run on the decoded target text, so a match can span several tokens
(an email address is many tokens); each token's score is the highest of any match overlapping its characters.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

import torch

SCORERS = ("regex", "list", "likelihood")

# Only shapes that are private whatever the task: email addresses, and runs of >= 4 digits (PINs, phone and
# account numbers; a space or dash may separate the digits). This project's targets are programs
# (``return 19 - 7``, ``return "abc"[::-1]``) whose numbers are short operands and whose capitalised words
# are ``True``/``None``; flagging numbers or names by default would blur the very answers being distilled.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",              # email
    r"(?<![\w.])\d(?:[ -]?\d){3,}(?![\w.])",     # >= 4 digits, not part of a word or a decimal like 3.14159
)

# likelihood: a token is fully private when its teacher log-probability exceeds the row's median by
# 2 * LIKELIHOOD_MARGIN nats (~55x as likely as a typical token of the row), not at all below 1 margin (~7x).
LIKELIHOOD_MARGIN = 2.0


class PrivacyScorer(Protocol):
    """A text scorer: the privacy score in [0, 1] of every character of ``text``."""

    def __call__(self, text: str) -> list[float]: ...


def regex_scorer(patterns: Sequence[str] = (), defaults: Sequence[str] = DEFAULT_PATTERNS) -> PrivacyScorer:
    compiled = [re.compile(p) for p in [*defaults, *patterns]]
    return lambda text: _match_scores(text, compiled)


def list_scorer(terms: Sequence[str]) -> PrivacyScorer:
    """Exact, case-sensitive occurrences of each term; a term that starts/ends with a letter or digit must
    not continue a longer word there (``Al`` does not flag ``Always``)."""
    compiled = [re.compile((r"\b" if t[0].isalnum() else "") + re.escape(t) + (r"\b" if t[-1].isalnum() else ""))
                for t in terms if t]
    return lambda text: _match_scores(text, compiled)


def text_scorer(name: str = "regex", patterns: Sequence[str] = (), terms: Sequence[str] = ()) -> PrivacyScorer:
    if name == "regex":
        return regex_scorer(patterns)
    if name == "list":
        return list_scorer(terms)
    raise ValueError(f"privacy scorer {name!r} does not score text; text scorers: regex, list")


def _match_scores(text: str, compiled: list[re.Pattern]) -> list[float]:
    scores = [0.0] * len(text)
    for pattern in compiled:
        for match in pattern.finditer(text):
            scores[match.start():match.end()] = [1.0] * (match.end() - match.start())
    return scores


def char_scores(text: str, patterns: Sequence[str] = ()) -> list[float]:
    """Privacy score of every character of ``text`` under the regex scorer."""
    return regex_scorer(patterns)(text)


def token_scores(tokenizer, token_ids: Sequence[int], patterns: Sequence[str] = (),
                 scorer: PrivacyScorer | None = None) -> list[float]:
    """Privacy score of each token: the max over its characters in the decoded sequence (``scorer``, else
    the regex scorer with ``patterns``). Tokens are decoded one by one and joined, so each token owns a
    known character span of the text the scorer sees."""
    pieces = [tokenizer.decode([token_id]) for token_id in token_ids]
    scores = (scorer or regex_scorer(patterns))("".join(pieces))
    result, start = [], 0
    for piece in pieces:
        result.append(max(scores[start:start + len(piece)], default=0.0))
        start += len(piece)
    return result


def likelihood_scores(logprobs: torch.Tensor, mask: torch.Tensor, margin: float = LIKELIHOOD_MARGIN) -> torch.Tensor:
    """[B, T] scores from the teacher's log-probability of each target token (``mask``: target tokens; NaN
    log-probabilities are not scored).

    The reference is the row's median: what the context makes typical for this teacher on this text. The
    score is relative, so a uniformly likely (or unlikely) row scores 0 everywhere: a row memorised from end
    to end is not caught here (declare such secrets with ``regex``/``list``)."""
    logprobs = logprobs.float()
    known = mask & ~logprobs.isnan()   # NaN: no teacher log-probability for that token (left unscored)
    masked = torch.where(known, logprobs, torch.full_like(logprobs, float("nan")))
    median = masked.nanmedian(dim=1, keepdim=True).values
    scores = ((masked - median - margin) / margin).clamp(0.0, 1.0)
    return torch.where(known, scores, torch.zeros_like(scores))


def stored_target_logprobs(ids: torch.Tensor, logprobs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logprob of each label in its stored top-k ([N, K] each, labels [N]); a label outside the top-k
    gets the smallest stored logprob, an upper bound (such a token is not peaked anyway)."""
    hit = ids == labels[:, None]
    found = torch.where(hit, logprobs, torch.full_like(logprobs, float("-inf"))).amax(dim=-1)
    floor = torch.where(torch.isfinite(logprobs), logprobs, torch.full_like(logprobs, float("inf"))).amin(dim=-1)
    return torch.where(hit.any(dim=-1), found, floor)
