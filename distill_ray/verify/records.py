"""One p3/gsm8k check's outcome as the watching zygote writes it (zygote.c: put_record) and the worker reads it.

A record is RECORD's fields, then the candidate's report frame body (its JSON, untrusted bytes), then the tail of
its output. The forker passes records to the worker unread, so decoding the candidate's JSON happens here, with
codec's bounded decoder; the worker still never trusts more than the plain data in it.
"""

from __future__ import annotations

import struct

from distill_ray.verify import codec

RECORD = struct.Struct("<iiiqqdii")   # index, why, wait status, claimed bytes, cap, seconds, body length, tail length
OK, EOF, TIMEOUT, TOO_LARGE, NO_FORK, ERROR, CPU = range(7)   # zygote.c's WHY_* (ERROR: written by the forker)
_WHY = {OK: "ok", EOF: "eof", TIMEOUT: "timeout", CPU: "cpu"}   # TIMEOUT: the wall-clock cap; CPU: the budget


def error(index: int, text: str) -> bytes:
    """The forker's own record for a check the zygote could not finish (it died)."""
    body = text.encode()
    return RECORD.pack(index, ERROR, 0, 0, 0, 0.0, len(body), 0) + body


def replies(data: bytes) -> list[dict]:
    """batch._one's reply for each record in data."""
    out, pos = [], 0
    while pos + RECORD.size <= len(data):
        _, why, status, claimed, cap, seconds, body_len, tail_len = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        body, tail = data[pos:pos + body_len], data[pos + body_len:pos + body_len + tail_len]
        pos += body_len + tail_len
        out.append(_reply(why, status, claimed, cap, seconds, body, tail))
    return out


def _reply(why: int, status: int, claimed: int, cap: int, seconds: float, body: bytes, tail: bytes) -> dict:
    if why == NO_FORK:
        return {"error": "forker: could not start the candidate", "seconds": seconds}
    if why == ERROR:
        return {"error": body.decode("utf-8", "replace"), "seconds": seconds}
    msg, reason = None, _WHY.get(why, "")
    if why == OK:
        try:
            msg = codec.loads_untrusted(body)
        except (ValueError, RecursionError) as e:
            reason = f"bad message: {e}"
    elif why == TOO_LARGE:
        reason = f"bad message: {codec.too_large(claimed, cap)}"
    return {"msg": msg, "why": reason, "status": status, "tail": tail.decode("utf-8", "replace").strip(),
            "seconds": seconds}
