"""Extract the candidate program from a completion: prefix + completion, cut where the program ends."""

from __future__ import annotations

import re

FENCE = "```"
# Top-level lines a function-writing answer may have: helpers, imports, decorators, comments, constants
# (`NO_OF_CHARS = 256`). Anything else at top level (a test call, `print`, `if __name__`, prose) ends it.
MODULE_LINE = re.compile(r"(def |async def |class |@|import |from \S+ import |#|[A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*\s*(:[^=]+)?=(?!=))")


def extract_program(response_prefix: str, completion: str, kind: str = "") -> str:
    """The candidate program ``kind`` asks for: a module of functions for ``asserts``, else the one function
    the response prefix opened."""
    if kind == "asserts":
        return extract_module(response_prefix, completion)
    return extract_function(response_prefix, completion)


def extract_function(response_prefix: str, completion: str) -> str:
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


def extract_module(response_prefix: str, completion: str) -> str:
    """Functions with their imports and helpers (``asserts`` tasks): the prefix (a HumanEval prompt, kept
    whole) plus the completion, or without a prefix the completion's first fenced block (chat models put the
    code in one, between prose); cut at the first top-level line that is not part of a module of functions."""
    if response_prefix:
        text = completion.split(FENCE, 1)[0]
    else:
        text = _first_fenced_block(completion)
    kept = []
    for line in text.splitlines():
        if line.strip() and not line[0].isspace() and not MODULE_LINE.match(line):
            break
        kept.append(line)
    program = (response_prefix + "\n".join(kept)).rstrip()
    return program + "\n" if program else ""


def _first_fenced_block(text: str) -> str:
    """The code inside the first ```` ``` ```` fence (its language tag dropped); the text itself without one."""
    if FENCE not in text:
        return text
    after = text.split(FENCE, 1)[1]
    body = after.split("\n", 1)[1] if "\n" in after else ""
    return body.split(FENCE, 1)[0]


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
