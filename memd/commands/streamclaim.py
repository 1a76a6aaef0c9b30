"""XCLAIM and XAUTOCLAIM: pending entries change owner (Redis 7.0, ``t_stream.c``).

XCLAIM reads its ids until the first argument that is not one, then its options, as
Redis does; an id whose entry was deleted leaves the PEL silently (XCLAIM) or is
reported (XAUTOCLAIM's third element). Both are one StreamEdit: one WAL record.
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context, command
from memd.commands.streamgroups import apply_edits, group_of
from memd.commands.streaminfo import entry_reply
from memd.commands.streams import start_bound
from memd.commands.strings import SYNTAX, ll
from memd.engine.streamcodec import MIN_ID, StreamId, format_id, strict_id
from memd.errors import CommandError


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode(errors="replace")


@command("xclaim", -6, write=True)
def xclaim(ctx: Context, args: list[bytes]) -> object:
    key, gname, consumer = args[0], args[1], args[2]
    edit, g = group_of(ctx, key, gname)
    ks = ctx.keyspace
    minidle = max(0, ll(args[3], "Invalid min-idle-time argument for XCLAIM"))
    ids: list[StreamId] = []
    j = 4
    while j < len(args):
        try:
            ids.append(strict_id(args[j]))
        except CommandError:
            break
        j += 1
    now = ks.now_ms()
    delivery: int | None = None
    retry = -1
    force = justid = False
    last_id = MIN_ID
    while j < len(args):
        more = len(args) - 1 - j
        opt = args[j].lower()
        if opt == b"force":
            force = True
        elif opt == b"justid":
            justid = True
        elif opt == b"idle" and more:
            j += 1
            delivery = now - ll(args[j], "Invalid IDLE option argument for XCLAIM")
        elif opt == b"time" and more:
            j += 1
            delivery = ll(args[j], "Invalid TIME option argument for XCLAIM")
        elif opt == b"retrycount" and more:
            j += 1
            retry = ll(args[j], "Invalid RETRYCOUNT option argument for XCLAIM")
        elif opt == b"lastid" and more:
            j += 1
            last_id = strict_id(args[j])
        else:
            raise CommandError(f"Unrecognized XCLAIM option '{_text(args[j])}'")
        j += 1
    if last_id > g.last:
        g.last = last_id
        g.save()
    if delivery is None or delivery < 0 or delivery > now:
        delivery = now
    out: list[Any] = []
    seen = False
    for sid in ids:
        n = g.nack(sid)
        fields = ks.stream_entry(key, sid)
        if fields is None:
            if n is not None:
                g.drop_nack(sid)
            continue
        times = 0 if n is None else n.times
        if n is None:
            if not force:
                continue
            times = 1  # a NACK made by FORCE starts at one delivery, as Redis's does
        elif minidle and now - n.time < minidle:
            continue
        if not seen:
            g.see(consumer, now)
            seen = True
        if retry >= 0:
            times = retry
        elif not justid:
            times += 1
        g.put_nack(sid, consumer, delivery, times)
        out.append(format_id(sid) if justid else entry_reply((sid, fields)))
    apply_edits(ctx, [edit])
    return out


@command("xautoclaim", -6, write=True)
def xautoclaim(ctx: Context, args: list[bytes]) -> object:
    key, gname, consumer = args[0], args[1], args[2]
    ks = ctx.keyspace
    minidle = max(0, ll(args[3], "Invalid min-idle-time argument for XAUTOCLAIM"))
    start = start_bound(args[4])
    count = 100
    justid = False
    j = 5
    while j < len(args):
        more = len(args) - 1 - j
        opt = args[j].lower()
        if opt == b"count" and more:
            count = ll(args[j + 1], "COUNT must be > 0")
            if not 1 <= count <= (2**63 - 1) // 16:
                raise CommandError("COUNT must be > 0")
            j += 1
        elif opt == b"justid":
            justid = True
        else:
            raise CommandError(SYNTAX)
        j += 1
    edit, g = group_of(ctx, key, gname)
    now = ks.now_ms()
    attempts = count * 10
    claimed: list[Any] = []
    deleted: list[bytes] = []
    cursor = MIN_ID
    seen = False
    walk = g.pel(start)
    try:
        for n in walk:
            if not (attempts and count):
                cursor = n.id
                break
            attempts -= 1
            fields = ks.stream_entry(key, n.id)
            if fields is None:
                g.drop_nack(n.id)
                deleted.append(format_id(n.id))
                count -= 1
                continue
            if minidle and now - n.time < minidle:
                continue
            if not seen:
                g.see(consumer, now)
                seen = True
            g.put_nack(n.id, consumer, now, n.times if justid else n.times + 1)
            claimed.append(format_id(n.id) if justid else entry_reply((n.id, fields)))
            count -= 1
    finally:
        walk.close()  # type: ignore[attr-defined]
    apply_edits(ctx, [edit])
    return [format_id(cursor), claimed, deleted]


__all__ = ["xautoclaim", "xclaim"]
