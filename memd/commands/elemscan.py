"""HSCAN / SSCAN (and any element SCAN): arguments, cursor and reply shared by the families.

The engine pages through a collection in sub-key order
(:meth:`memd.engine.elemscan.ElemScanMixin.scan_elems`), so an element that
exists for the whole iteration is returned at least once. The cursor is the
last sub-key considered, written as the keyspace SCAN writes keys
(:func:`memd.commands.keys.encode_cursor`: a decimal integer clients parse
as a number); a sub-key longer than ``CURSOR_KEY_MAX`` bytes is cut to that
prefix, which can only repeat elements, never skip one.

Checks run in Redis's order: the cursor, then the key (a missing key is an
empty, finished scan before any option is read), then its type, then the
options (MATCH, COUNT; TYPE only belongs to the keyspace SCAN).
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context
from memd.commands.keys import CURSOR_KEY_MAX, decode_cursor, encode_cursor, glob_match, scan_options

def scan_command(ctx: Context, args: list[bytes], type_: int, *, with_values: bool) -> object:
    """``args``: key, cursor, options. Fields and values flattened when ``with_values``."""
    key = args[0]
    after = decode_cursor(args[1])
    ks = ctx.keyspace
    if ks.typed_meta(key, type_) is None:
        return [b"0", []]
    count, pattern, _ = scan_options(args[2:])
    if after is not None and not isinstance(after, bytes):  # a number no scan of memd's handed out
        return [b"0", []]
    pairs, resume = ks.scan_elems(key, after, count)
    # a resume point cut to CURSOR_KEY_MAX at or before the cursor given would loop forever: read on
    while resume is not None and len(resume) > CURSOR_KEY_MAX and after is not None \
            and resume[:CURSOR_KEY_MAX] <= after:
        more, resume = ks.scan_elems(key, resume, count)
        pairs += more
    if pattern is not None:
        pairs = [p for p in pairs if glob_match(pattern, p[0])]
    out: list[Any] = []
    for sub, value in pairs:
        out.append(sub)
        if with_values:
            out.append(value)
    return [encode_cursor(resume), out]


__all__ = ["scan_command"]
