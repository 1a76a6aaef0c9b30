"""JSON of memories, fast: orjson wherever it reads and writes exactly what the standard library does.

A MEM.PUT parses its value and stores it as compact text, and every flush parses it again to
index it: with ``json`` that was ~10 µs per 1 KB value each way, on the event loop or under the
GIL; orjson takes ~1 µs. memd's stored text and its error messages were defined by ``json``
(``separators=(",", ":")``, ``ensure_ascii=False``, no NaN): they must not change. Measured
against ``json`` (tests/unit/test_jsontext.py), orjson differs only in

- floats: Python's ``repr`` writes ``1e-05`` where orjson writes ``0.00001`` (exponent form
  starts below 1e-4 in Python; both write ``1e+16`` from 1e16);
- integers beyond 64 bits, which orjson reads as floats (and writes in exponent form);
- what it refuses and why: its error texts, a 1,024-level nesting limit (``json`` stops at the
  recursion limit), 255 levels when writing.

So :func:`compact` hands back orjson's text only when the value holds no float that could be
written differently (nonzero and below 1e-4 in magnitude, or from 2^63: what a huge integer
became), and ``None`` otherwise, including every input orjson refuses: the caller then runs
``json``, which gives the exact text or the exact error as before. (A regular expression over
the text for exponents costs 20 µs per KB; walking the parsed value, ~1 µs.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_HUGE = float(1 << 63)


def compact(raw: bytes) -> tuple[Any, str] | None:
    """``(object, compact text)`` as ``json`` would give them, or None: ask ``json`` (see module doc)."""
    try:
        obj = orjson.loads(raw)
        out = orjson.dumps(obj)
    except (ValueError, TypeError):  # JSONDecodeError, JSONEncodeError (depth), and their kin
        return None
    if not _floats_written_alike(obj):
        return None
    return obj, out.decode()


_FLAT = frozenset((str, int, bool, type(None)))  # members that hold no float


def _floats_written_alike(obj: Any) -> bool:
    """Whether every float in ``obj`` is one orjson writes as Python's ``repr`` does."""
    if type(obj) is dict:  # most values: an object of strings and integers (half the cost of the walk)
        for v in obj.values():
            if type(v) not in _FLAT:
                break
        else:
            return True
    stack = [obj]
    pop, extend = stack.pop, stack.extend
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            extend(node.values())
        elif kind is list:
            extend(node)
        elif kind is float and node != 0.0 and not 1e-4 <= abs(node) < _HUGE:
            return False
    return True


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str) -> Any:
    """JSON as SQLite reads it (no NaN or Infinity); ValueError if it is not JSON (or too deep to read).

    orjson first; what it refuses (lone surrogates, deep nesting, huge numbers...) gets
    ``json``'s verdict, so the result is ``json``'s for every input, except that integers
    beyond 64 bits come back as floats (indexing keeps neither: see tokens.kept).
    """
    try:
        return orjson.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
