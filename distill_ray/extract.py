"""Extract the candidate program from a completion: prefix + completion, cut where the function ends."""

from __future__ import annotations

FENCE = "```"


def extract_program(response_prefix: str, completion: str) -> str:
    """The response prefix opened a function; keep its indented body and drop anything after it
    (chatter, a second function, a closing code fence)."""
    text = completion if response_prefix else _strip_opening_fence(completion)
    text = text.split(FENCE, 1)[0]
    if response_prefix.endswith(":\n") and _starts_flush_left(text):
        text = _indent_body(text)
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


def _starts_flush_left(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return bool(first) and not first[0].isspace() and not first.startswith(("def ", "class ", "@"))


def _indent_body(text: str) -> str:
    """A body written flush-left after ``def f():`` (small models do): indent it, up to its first ``return``."""
    body = []
    for line in text.splitlines():
        body.append("    " + line if line.strip() else "")
        if line.startswith("return"):
            break
    return "\n".join(body)
