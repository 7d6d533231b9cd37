"""Plain data across process boundaries, and message framing over raw file descriptors.

Candidate results cross into trusted code only as *plain data*: None, bool, int, float, str, list, and tagged
tuple/set/frozenset/dict/bytes/complex. Encoding checks exact types (`type(x) is int`), so subclasses and objects
with lying `__eq__`/`__bool__` cannot be encoded at all; decoding builds fresh builtin objects from JSON, so what
the trusted side compares never contains candidate code. Depth and size are capped.
"""

from __future__ import annotations

import collections
import itertools
import json
import operator
import os
import re
import struct

MAX_DEPTH = 100
_HEADER = struct.Struct(">I")
_SCALARS = (type(None), bool, int, float, str)


class NotPlainData(TypeError):
    """The value is not plain data (or is nested too deeply)."""


def safe_text(text) -> str:
    """text as a str that encodes to UTF-8: lone surrogates (which a candidate's str, exception message or output
    may hold, and which JSONL written with ensure_ascii=False, Arrow/Parquet and any UTF-8 writer reject) become
    backslash escapes. Called where candidate text enters trusted data (Verdict's answer and detail)."""
    if type(text) is not str:
        text = str(text)
    if text.isascii():   # O(1) for the usual ASCII text
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def to_plain(x, depth: int = 0):
    """Encode x as JSON-able plain data; raise NotPlainData for anything else."""
    t = type(x)
    if t in _SCALARS:
        return x
    if depth >= MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH}")
    if t is list:
        return [to_plain(v, depth + 1) for v in x]
    if t is tuple or t is set or t is frozenset:
        return {"t": t.__name__, "v": [to_plain(v, depth + 1) for v in x]}
    if t is dict:
        return {"t": "dict", "v": [[to_plain(k, depth + 1), to_plain(v, depth + 1)] for k, v in x.items()]}
    if t is bytes:
        return {"t": "bytes", "v": x.hex()}
    if t is complex:
        return {"t": "complex", "v": [x.real, x.imag]}
    if t in _DICTS:
        return {"t": t.__name__, "v": [[to_plain(k, depth + 1), to_plain(v, depth + 1)] for k, v in x.items()]}
    if t is type and _TYPES.get(x.__name__) is x:
        return {"t": "type", "v": x.__name__}
    raise NotPlainData(f"not plain data: {t.__name__}")


# dict subclasses from collections travel as their items and are rebuilt as the real class on the trusted side
_DICTS = (collections.Counter, collections.OrderedDict, collections.defaultdict)
_TYPES = {t.__name__: t for t in (int, float, str, bool, list, tuple, dict, set, frozenset, bytes, complex, type(None))}


_BUILD = {"tuple": tuple, "set": set, "frozenset": frozenset}
_DICT_TAGS = {"dict": dict, "Counter": collections.Counter, "OrderedDict": collections.OrderedDict,
              "defaultdict": lambda d: collections.defaultdict(None, d)}


def from_plain(o, depth: int = 0):
    """Decode what to_plain produced (after a JSON round trip); raise ValueError on anything malformed."""
    t = type(o)
    if t in _SCALARS:
        return o
    if depth >= MAX_DEPTH:
        raise ValueError("nested too deeply")
    if t is list:
        return [from_plain(v, depth + 1) for v in o]
    if t is not dict or set(o) != {"t", "v"}:
        raise ValueError("malformed plain data")
    tag, v = o["t"], o["v"]
    try:
        if tag in _BUILD and type(v) is list:
            return _BUILD[tag](from_plain(e, depth + 1) for e in v)
        if tag in _DICT_TAGS and type(v) is list:
            return _DICT_TAGS[tag]({from_plain(k, depth + 1): from_plain(e, depth + 1) for k, e in v})
        if tag == "type" and type(v) is str and v in _TYPES:
            return _TYPES[v]
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2 and all(type(e) is float for e in v):
            return complex(v[0], v[1])
    except (TypeError, ValueError) as e:   # unhashable set members, bad pairs, bad hex
        raise ValueError(f"malformed plain data: {e}") from None
    raise ValueError(f"malformed plain data (tag {tag!r})")


# One encoder for the process: json.dumps(obj, separators=...) builds a JSONEncoder per call, and in a freshly
# forked child every object that builds touches is a copy-on-write page fault.
# (Even JSONEncoder.encode builds a C encoder per call, so the C encoder itself is kept: no circular-reference
# check (plain data and our messages are trees), NaN/Infinity allowed and ASCII output, as json.dumps does.)


def _not_json(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_C_ENCODE = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(obj) -> bytes:
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(obj, 0)).encode()
    return _ENCODE(obj).encode()


def frame(obj) -> bytes:
    data = dumps(obj)
    return _HEADER.pack(len(data)) + data


def write_msg(fd: int, obj) -> None:
    """Write one length-prefixed JSON message to a raw fd (blocking)."""
    data = frame(obj)
    n = os.write(fd, data)
    if n < len(data):   # a pipe takes up to 64 KiB at once; only bigger messages loop
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_msg(fd: int, max_bytes: int = 1 << 30, loads=None):
    """Read one message; None at EOF. Raises ValueError if it is larger than max_bytes or not JSON.

    loads: the decoder, loads_untrusted unless the sender is one of our own processes (loads_ours)."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    (n,) = _HEADER.unpack(head)
    if n > max_bytes:
        raise ValueError(f"message of {n} bytes exceeds {max_bytes}")
    body = _read_exact(fd, n)
    return None if body is None else (loads or loads_untrusted)(body)


def loads_ours(data: bytes):
    """json.loads for frames one of our own processes wrote (the forker or worker to a judge): their plain data
    already passed loads_untrusted's bounds once, so the C decoder's speed without a Python call per int."""
    return json.loads(data)


class FrameBuffer:
    """Incremental reader for one framed message from a non-blocking fd (used with select)."""

    def __init__(self, max_bytes: int):
        self.buf = bytearray()
        self.max_bytes = max_bytes

    def feed(self, data: bytes):
        """Add bytes; return (done, message). Raises ValueError when the message is too large."""
        self.buf += data
        if len(self.buf) < _HEADER.size:
            return False, None
        (n,) = _HEADER.unpack_from(self.buf)
        if n > self.max_bytes:
            raise ValueError(too_large(n, self.max_bytes))
        if len(self.buf) < _HEADER.size + n:
            return False, None
        return True, loads_untrusted(bytes(self.buf[_HEADER.size:_HEADER.size + n]))


def too_large(n: int, max_bytes: int) -> str:
    return f"answer of {n} bytes exceeds the {max_bytes}-byte cap"


# What trusted code will decode, at most, in one message a candidate wrote. The byte cap alone still lets through
# answers that cost seconds of trusted CPU per check (16 MB of empty lists; ints of 10^5 digits, whose decimal
# conversion is quadratic), time taken from the honest checks queued behind. Checked on the bytes before any object
# is built, so a refused message costs a few C-speed scans, and an accepted one a bounded time on the trusted side.
MAX_ITEMS = 1 << 19                       # JSON values, counted as the [, { and , outside strings
MAX_INT_DIGITS = 100_000                  # digits of one int (str->int is quadratic in Python 3.11)
INT_DIGIT_BUDGET = MAX_INT_DIGITS ** 2    # the sum of the squared digit counts of all its ints: one int of 10^5
                                          # digits, or 10^4 ints of 10^3 digits, ...
# JSON nesting a message may have: to_plain's MAX_DEPTH levels, up to 3 JSON levels each (a tagged dict:
# {"t": "dict", "v": [[k, v], ...]}), and the message around them. Trusted code re-encodes and decodes what it
# accepted (forker -> worker -> judge), each time with C recursion that must stay well below the recursion limit.
MAX_JSON_DEPTH = 3 * MAX_DEPTH + 4

_DECODER = json.JSONDecoder()   # one instance: json.loads builds one per call
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')   # JSON strings: their brackets and commas are no structure
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")   # a step of +1 / -1, plus 1 (bytes are unsigned)
_DIGITS = b"0123456789"
_DIGIT_RUNS = bytes.maketrans(bytes(b for b in range(256) if b not in _DIGITS), b" " * (256 - len(_DIGITS)))


def loads_untrusted(data: bytes):
    """json.loads for bytes a candidate may have written, within the bounds above (ValueError beyond them).

    Our frames are ASCII JSON; other bytes raise UnicodeDecodeError, a ValueError like any malformed JSON.
    """
    _check_shape(data)
    try:
        return (_budget_decoder() if _costly_ints(data) else _DECODER).decode(data.decode("utf-8"))
    except RecursionError:   # (not after _check_shape; but no caller expects one from a decoder)
        raise ValueError("nested too deeply") from None


def _check_shape(data: bytes) -> None:
    """Raise ValueError if data holds more than MAX_ITEMS values or nests deeper than MAX_JSON_DEPTH.

    Bytes, not text: no UTF-8 sequence holds an ASCII byte, so brackets and quotes are found exactly. Counts over
    all of it are an upper bound; only when that is over a limit are strings left out and the depth measured (the
    running sum's maximum, in C: accumulate, map)."""
    opens = data.count(b"[") + data.count(b"{")
    if opens <= MAX_JSON_DEPTH and opens + data.count(b",") <= MAX_ITEMS:
        return
    bare = _STRINGS.sub(b'""', data)
    steps = bare.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    if len(steps) // 2 + bare.count(b",") > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} values")
    if max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)), default=0) > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")


def _costly_ints(data: bytes) -> bool:
    """Could the ints in data cost more than INT_DIGIT_BUDGET to convert? (An upper bound from all digits and the
    longest run of them, in C; then the decoder must count int by int.)"""
    digits = len(data) - len(data.translate(None, _DIGITS))
    if digits <= MAX_INT_DIGITS:
        return False
    return digits * max(map(len, data.translate(_DIGIT_RUNS).split())) > INT_DIGIT_BUDGET


def _budget_decoder() -> json.JSONDecoder:
    """A decoder that charges every int it parses to INT_DIGIT_BUDGET (a Python call per int: only for messages
    with more than MAX_INT_DIGITS digits in all, where ints could be costly)."""
    spent = [0]

    def parse_int(text: str) -> int:
        n = len(text)
        spent[0] += n * n
        if n > MAX_INT_DIGITS:
            raise ValueError(f"integer with more than {MAX_INT_DIGITS} digits")
        if spent[0] > INT_DIGIT_BUDGET:
            raise ValueError("integers too long in all (decimal conversion is quadratic)")
        return int(text)
    return json.JSONDecoder(parse_int=parse_int)
