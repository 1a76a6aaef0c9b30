"""Full-text tokens: the pure part of how memories are indexed (no connection, no SQL).

Besides the words of a memory's text, the FTS index holds hashed tokens in two more
columns: ``ns`` (the namespace and each of its label prefixes) and ``f`` (one per
top-level field whose value ``fields`` keeps exactly), so a search under a prefix, or
with an equality FILTER, narrows inside FTS5 instead of ranking every match. Any store
that indexes memories the same way computes these tokens with these functions.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import orjson

from memd.jsontext import loads_strict
from memd.store.base import Cond

SAFE_INT = 1 << 53  # the bound ``fields`` keeps integers under (exact in a double)
FIELDS_MAX_TEXT = 64  # and the longest string it keeps


# Namespaces, field names and the short values ``fields`` keeps repeat across memories, and a blake2b
# token costs ~3 µs to make: the flush (under the GIL) looks them up instead (tokens.index_entry).
@functools.lru_cache(maxsize=4096)
def ns_tokens(ns: str) -> str:
    """FTS tokens for a namespace and each of its label prefixes (``a``, ``a.b``...).

    The ``ns`` column lets a search under a prefix intersect posting lists in
    FTS5 instead of ranking every match and filtering afterwards: 2-4x faster
    for common words when the prefix holds a tenth of the memories. Hashes,
    because the tokenizer would split labels at '-' and '.'.
    """
    labels = ns.split(".")
    return " ".join(prefix_token(".".join(labels[:i])) for i in range(1, len(labels) + 1))


def prefix_token(prefix: str) -> str:
    """The ``ns`` column's token for one namespace prefix."""
    return "n" + hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()


def kept(value: Any) -> str | int | None:
    """What ``fields`` holds for a memory whose field equals ``value`` (see tokens.fields_of); None: the placeholder."""
    if isinstance(value, str):
        return value if len(value) <= FIELDS_MAX_TEXT else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
            and abs(value) < SAFE_INT:
        return int(value)
    return None


@functools.lru_cache(maxsize=1 << 16)
def field_token(field: str, value: str | int) -> str:
    """The ``f`` column's token for one top-level field holding ``value`` (a string and a number never share one)."""
    kind = "s" if isinstance(value, str) else "i"
    return "f" + hashlib.blake2b(_utf8(f"{field}\0{kind}{value}").encode(), digest_size=8).hexdigest()


def field_tokens(fields: str | None) -> str:
    """FTS tokens for the ``f`` column: one per top-level field ``fields`` holds exactly.

    With them an equality FILTER becomes posting lists FTS5 intersects with the query
    (and the namespace prefix), so a rare filter on a common word ranks a few hundred
    matches instead of tens of thousands and checks each against the filter. The SQL
    condition stays the judge; tokens only narrow. A value ``fields`` could not parse
    (kept whole, see tokens.fields_of) gets none.
    """
    if not fields:
        return ""
    try:
        members = loads_strict(fields)
    except ValueError:
        return ""
    if not isinstance(members, dict):
        return ""
    return " ".join(field_token(k, v) for k, v in members.items() if kept(v) is not None)


def filter_match(conds: list[Cond]) -> str:
    """FTS5 terms on the ``f`` column that every memory matching ``conds`` has ('' if none)."""
    terms = []
    for field, op, value in conds:
        if op not in ("$eq", "$in"):
            continue
        held = [kept(v) for v in (value if op == "$in" else [value])]
        if held and all(k is not None for k in held):  # not when a value is one fields does not keep
            terms.append("f : (" + " OR ".join(field_token(field, k) for k in held if k is not None) + ")")
    return " AND ".join(terms)



def _utf8(text: str) -> str:
    """``text`` as SQLite can store it: a lone surrogate (JSON allows ``\\ud800``) becomes '?'."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="replace").decode()
    return text


def text_of(value: str | None) -> str:
    """The text FTS indexes for a memory: its JSON's string values at any depth, in document order.

    Not its field names. Computed here rather than by SQLite's json_tree, which cuts a
    string at its first NUL (``"x\\u0000y zebra"`` indexed as ``x``); '' for a value that
    is not JSON.
    """
    if value is None:
        return ""
    try:
        doc = loads_strict(value)
    except ValueError:
        return ""
    return _text(doc)


def _text(doc: Any) -> str:
    texts: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return _utf8(" ".join(texts))


def _dump(value: str | int) -> str:
    """``json.dumps(value, ensure_ascii=False)``; orjson writes strings and integers alike, 5x faster,
    but refuses lone surrogates (then json writes them, and _utf8 replaces them)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _utf8(json.dumps(value, ensure_ascii=False))


@functools.lru_cache(maxsize=4096)
def render_name(field: str) -> str:
    """How ``fields`` writes a member's name and its colon; FILTER's substring tests search for this."""
    return _dump(field) + ":"


@functools.lru_cache(maxsize=1 << 16)
def render_member(field: str, value: str | int | None) -> str:
    """How ``fields`` writes one member (None: the placeholder); FILTER's substring tests search for this."""
    return render_name(field) + ("[]" if value is None else _dump(value))


def fields_of(value: str | None) -> str | None:
    """A memory's FILTER view (the ``fields`` column): its top-level members, each kept or a placeholder.

    Every value ``fields`` cannot hold exactly and cheaply (objects, arrays, fractional reals,
    booleans, null, numbers beyond 2^53, strings over 64 characters) becomes the placeholder
    ``[]``; an integral real is kept as the integer it equals (5.0 as 5: FILTER compares
    numbers by value). A filter reads this ~60-byte object instead of parsing the ~1 KB
    value, and goes to the value only for a placeholder. Written by Python, not SQLite's
    JSON functions, which cut strings at NUL (json.dumps escapes every control character);
    a value that is not a JSON object is kept whole, so a filter fails on it as it would on
    the value.
    """
    if value is None:
        return None
    try:
        doc = loads_strict(value)
    except ValueError:
        return value
    return _fields(doc, value)


def _fields(doc: Any, value: str) -> str:
    if not isinstance(doc, dict):
        return value
    return "{" + ",".join(render_member(k, kept(v)) for k, v in doc.items()) + "}"


def index_entry(value: str) -> tuple[str, str, str]:
    """``(fields_of, text_of, field_tokens of those fields)`` of a stored value, from one parse.

    What the flush writes for each memory it stores, computed in Python before the
    statements run so that SQLite calls back into no Python function (each call would take
    the GIL from the event loop) and the ~1 KB value is parsed once, not three times.
    Equal to the three functions' results, which unindexing replays (tests/unit/test_jsontext.py).
    """
    try:
        doc = loads_strict(value)
    except ValueError:
        return value, "", field_tokens(value)
    fields = _fields(doc, value)
    tokens = _repeated_field_tokens(fields) if len(fields) <= REPEATED_FIELDS_MAX else field_tokens(fields)
    return fields, _text(doc), tokens


# A FILTER view is a few short members, and memories of one kind share most of them (kind, topic,
# stars...): the flush takes their tokens from this cache (~0.2 µs) instead of parsing the view and
# hashing its members again (~3 µs per memory, under the GIL). Pure, so equal to field_tokens.
REPEATED_FIELDS_MAX = 256
_repeated_field_tokens = functools.lru_cache(maxsize=8192)(field_tokens)
