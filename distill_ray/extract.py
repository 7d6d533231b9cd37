"""Extract the candidate program from a completion: prefix + completion, cut where the function ends."""

from __future__ import annotations

FENCE = "```"


def extract_program(response_prefix: str, completion: str) -> str:
    """The response prefix opened a function; keep its indented body and drop anything after it
    (chatter, a second function, a closing code fence)."""
    text = completion if response_prefix else _strip_opening_fence(completion)
    text = text.split(FENCE, 1)[0]
    lines = (response_prefix + text).splitlines()
    if not lines:
        return ""
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # back at top level: the function is over
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def _strip_opening_fence(text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith(FENCE):
        return stripped.split("\n", 1)[1] if "\n" in stripped else ""
    return text
