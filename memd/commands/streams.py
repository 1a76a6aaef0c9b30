"""Stream commands: XADD XRANGE XREVRANGE XLEN XDEL XTRIM XREAD XSETID XINFO (consumer groups:
:mod:`memd.commands.streamgroups`).

Redis 7.0 semantics (``t_stream.c``): options are parsed, and refused, in Redis's order
and with its texts; ids are read as ``streamGenericParseIDOrReply`` reads them
(:mod:`memd.engine.streamcodec`). Two deliberate differences, both inside what Redis
documents:

- ``MAXLEN ~`` / ``MINID ~`` trim exactly to the bound (at most LIMIT entries, 100 x
  100 when LIMIT is absent, as Redis's default), where Redis removes only whole radix
  tree nodes and so keeps more. ``~`` promises "at least" the bound; memd keeps exactly it.

XREAD BLOCK serves what is there at once, as Redis does; when it has to wait, the client is
parked (:mod:`memd.commands.streamblocking`); inside MULTI it answers a null array at once,
and in a script BLOCK is refused, as in Redis.
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context, batched, command, wrong_arity
from memd.commands.blocking import may_block
from memd.commands.commandtable import subcommand
from memd.commands.strings import SYNTAX, ll
from memd.engine.streamcodec import (
    MAX_ID,
    MIN_ID,
    StreamId,
    decr_id,
    format_id,
    incr_id,
    interval_id,
    parse_id,
    strict_id,
)
from memd.commands.streaminfo import entries_reply, info_consumers, info_groups, info_stream
from memd.engine.streams import StreamEdit, Trim
from memd.errors import CommandError
from memd.resp import NullArray, PairMap, SimpleString

APPROX_LIMIT = 100 * 100  # Redis's LIMIT for ~ without one: 100 x stream-node-max-entries
OK = SimpleString("OK")
NO_BLOCK = -1  # parse_read's timeout when BLOCK was not given


def start_bound(raw: bytes) -> StreamId:
    """A range's lower bound (incomplete: seq 0); ``(`` excludes it."""
    sid, exclusive = interval_id(raw, 0)
    if exclusive:
        nxt = incr_id(sid)
        if nxt is None:
            raise CommandError("invalid start ID for the interval")
        return nxt
    return sid


def end_bound(raw: bytes) -> StreamId:
    """A range's upper bound (incomplete: seq max); ``(`` excludes it."""
    sid, exclusive = interval_id(raw, 2**64 - 1)
    if exclusive:
        prev = decr_id(sid)
        if prev is None:
            raise CommandError("invalid end ID for the interval")
        return prev
    return sid


# ---- XADD, XTRIM --------------------------------------------------------------------------------

def parse_trim(args: list[bytes], xadd: bool) -> tuple[Trim | None, int, bool, StreamId | None, bool]:
    """``streamParseAddOrTrimArgsOrReply`` over ``args`` (key first): (trim, index of the id,
    NOMKSTREAM, explicit id or None, seq given)."""
    n = len(args)
    i = 1
    maxlen: int | None = None
    minid: StreamId | None = None
    strategy = False
    approx = False
    limit = 0
    limit_given = False
    nomkstream = False
    want: StreamId | None = None
    seq_given = True
    while i < n:
        more = n - 1 - i
        opt = args[i]
        low = opt.lower()
        if xadd and opt[:1] == b"*" and opt[1:2] in (b"", b"\x00"):
            break
        if low in (b"maxlen", b"minid") and more:
            if strategy:
                raise CommandError("syntax error, MAXLEN and MINID options at the same time are not compatible")
            approx = False
            nxt = args[i + 1]
            if more >= 2 and nxt in (b"~", b"="):
                approx = nxt == b"~"
                i += 1
            if low == b"maxlen":
                maxlen = ll(args[i + 1])
                if maxlen < 0:
                    raise CommandError("The MAXLEN argument must be >= 0.")
            else:
                minid = strict_id(args[i + 1])
            strategy = True
            i += 1
        elif low == b"limit" and more:
            limit = ll(args[i + 1])
            if limit < 0:
                raise CommandError("The LIMIT argument must be >= 0.")
            limit_given = True
            i += 1
        elif xadd and low == b"nomkstream":
            nomkstream = True
        elif xadd:
            want, seq_given = parse_id(opt, 0, strict=True, seq_star=True)
            break
        else:
            raise CommandError(SYNTAX)
        i += 1
    if limit and not strategy:
        raise CommandError("syntax error, LIMIT cannot be used without specifying a trimming strategy")
    if not xadd and not strategy:
        raise CommandError("syntax error, XTRIM must be called with a trimming strategy")
    if limit_given:
        if not approx:
            raise CommandError("syntax error, LIMIT cannot be used without the special ~ option")
    elif approx:
        limit = APPROX_LIMIT
    else:
        limit = 0
    trim = Trim(maxlen, minid, approx, limit) if strategy else None
    return trim, i, nomkstream, want, seq_given


def _xadd_args(args: list[bytes]) -> tuple[Trim | None, bool, StreamId | None, bool, list[bytes]]:
    if len(args) == 4 and args[1] == b"*":  # XADD key * field value: nothing else to parse
        return None, False, None, True, args[2:]
    trim, idpos, nomkstream, want, seq_given = parse_trim(args, True)
    fields = args[idpos + 1:]
    if len(fields) < 2 or len(fields) % 2:
        raise wrong_arity("xadd")
    if want == MIN_ID and seq_given:
        raise CommandError("The ID specified in XADD must be greater than 0-0")
    return trim, nomkstream, want, seq_given, fields


@command("xadd", -5, write=True)
def xadd(ctx: Context, args: list[bytes]) -> object:
    trim, nomkstream, want, seq_given, fields = _xadd_args(args)
    sid = ctx.keyspace.xadd(args[0], fields, want, seq_given, nomkstream, trim)
    return None if sid is None else format_id(sid)


@batched("xadd")
def xadd_run(ctx: Context, calls: list[list[bytes]]) -> list[Any]:
    """A pipelined run of XADDs: the replies of the calls one after the other, ONE engine.apply
    (one StreamEdit per stream, one op each), so a run costs one WAL record."""
    ks = ctx.keyspace
    edits: dict[bytes, StreamEdit] = {}
    replies: list[Any] = []
    append = replies.append
    for args in calls:
        try:
            key = args[0]
            if len(args) == 4 and args[1] == b"*":  # XADD key * field value: no options, an id from the clock
                edit = edits.get(key)
                if edit is None:
                    edit = edits[key] = ks.stream_edit(key, ks.stream_meta(key))
                append(b"%d-%d" % ks.xadd_auto_into(edit, args[2:]))  # (format_id, inline)
                continue
            trim, nomkstream, want, seq_given, fields = _xadd_args(args)
            edit = edits.get(key)
            if edit is None:
                m = ks.stream_meta(key)
                if m is None and nomkstream:
                    append(None)
                    continue
                edit = edits[key] = ks.stream_edit(key, m)
            append(format_id(ks.xadd_into(edit, fields, want, seq_given, trim)))
        except CommandError as exc:
            append(exc)
    ks.apply_stream_edits(list(edits.values()))
    return replies


@command("xtrim", -4, write=True)
def xtrim(ctx: Context, args: list[bytes]) -> object:
    trim, _, _, _, _ = parse_trim(args, False)
    assert trim is not None
    return ctx.keyspace.xtrim(args[0], trim)


# ---- reads --------------------------------------------------------------------------------------

def _xrange(ctx: Context, args: list[bytes], rev: bool) -> object:
    start = start_bound(args[2] if rev else args[1])
    end = end_bound(args[1] if rev else args[2])
    count = -1
    j = 3
    while j < len(args):
        if args[j].lower() == b"count" and j + 1 < len(args):
            count = max(0, ll(args[j + 1]))
            j += 2
        else:
            raise CommandError(SYNTAX)
    ks = ctx.keyspace
    if ks.stream_meta(args[0]) is None:
        return []
    if count == 0:
        return NullArray
    return entries_reply(ks.stream_range(args[0], start, end, max(count, 0), rev))


@command("xrange", -4)
def xrange(ctx: Context, args: list[bytes]) -> object:
    return _xrange(ctx, args, False)


@command("xrevrange", -4)
def xrevrange(ctx: Context, args: list[bytes]) -> object:
    return _xrange(ctx, args, True)


@command("xlen", 2)
def xlen(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.xlen(args[0])


@command("xdel", -3, write=True)
def xdel(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.stream_meta(args[0]) is None:
        return 0
    return ks.xdel(args[0], [strict_id(a) for a in args[1:]])


@command("xsetid", -3, write=True)
def xsetid(ctx: Context, args: list[bytes]) -> object:
    sid = strict_id(args[1])
    entries_added = -1
    max_deleted = MIN_ID
    i = 2
    while i < len(args):
        more = len(args) - 1 - i
        opt = args[i].lower()
        if opt == b"entriesadded" and more:
            entries_added = ll(args[i + 1])
            if entries_added < 0:
                raise CommandError("entries_added must be positive")
        elif opt == b"maxdeletedid" and more:
            max_deleted = strict_id(args[i + 1])
            if sid < max_deleted:
                raise CommandError("The ID specified in XSETID is smaller than the provided max_deleted_entry_id")
        else:
            raise CommandError(SYNTAX)
        i += 2
    ctx.keyspace.xsetid(args[0], sid, entries_added, max_deleted)
    return OK


# ---- XREAD --------------------------------------------------------------------------------------

def parse_read(ctx: Context, args: list[bytes], group: bool
               ) -> tuple[int, int, bool, int, bytes | None, bytes | None]:
    """XREAD / XREADGROUP options: (count, BLOCK's milliseconds or NO_BLOCK, noack, index of the first
    key, group, consumer)."""
    count = 0
    timeout = NO_BLOCK
    noack = False
    streams = -1
    gname: bytes | None = None
    consumer: bytes | None = None
    i = 0
    n = len(args)
    while i < n:
        more = n - 1 - i
        opt = args[i].lower()
        if opt == b"block" and more:
            if _in_script(ctx):
                name = "xreadgroup" if group else "xread"
                raise CommandError(f"{name} command is not allowed with BLOCK option from scripts")
            i += 1
            timeout = ll(args[i], "timeout is not an integer or out of range")
            if timeout < 0:
                raise CommandError("timeout is negative")
        elif opt == b"count" and more:
            i += 1
            count = max(0, ll(args[i]))
        elif opt == b"streams" and more:
            streams = i + 1
            if (n - streams) % 2:
                raise CommandError("Unbalanced XREAD list of streams: for each stream key an ID or '$' must be "
                                   "specified.")
            break
        elif opt == b"group" and more >= 2:
            if not group:
                raise CommandError("The GROUP option is only supported by XREADGROUP. You called XREAD instead.")
            gname, consumer = args[i + 1], args[i + 2]
            i += 2
        elif opt == b"noack":
            if not group:
                raise CommandError("The NOACK option is only supported by XREADGROUP. You called XREAD instead.")
            noack = True
        else:
            raise CommandError(SYNTAX)
        i += 1
    if streams < 0:
        raise CommandError(SYNTAX)
    if group and gname is None:
        raise CommandError("Missing GROUP option for XREADGROUP")
    return count, timeout, noack, streams, gname, consumer


def _in_script(ctx: Context) -> bool:
    """Whether ``ctx`` runs a script's commands (Redis refuses BLOCK there, not only ignores it)."""
    if ctx.may_block or ctx.multi is not None:
        return False
    from memd.commands.scripting import scripting  # (here: the scripting module imports the command table)
    return scripting(ctx).script_ctx is ctx


def read_reply(ctx: Context, served: list[tuple[bytes, list[Any]]]) -> object:
    """XREAD's reply: per stream served, its name and entries (RESP3: a map); none: a null array."""
    if not served:
        return NullArray
    if ctx.protocol >= 3:
        return PairMap(served)
    return [[key, entries] for key, entries in served]


def may_park(ctx: Context, timeout: int) -> bool:
    """Whether a reader that found nothing parks: BLOCK given, outside MULTI (where Redis answers a
    null array at once, as after a timeout)."""
    return timeout != NO_BLOCK and may_block(ctx)


@command("xread", -4)
def xread(ctx: Context, args: list[bytes]) -> object:
    count, timeout, _, streams, _, _ = parse_read(ctx, args, False)
    nkeys = (len(args) - streams) // 2
    keys = args[streams:streams + nkeys]
    ks = ctx.keyspace
    after: list[StreamId] = []
    for key, raw in zip(keys, args[streams + nkeys:]):
        m = ks.stream_meta(key)
        if raw == b"$":
            after.append(MIN_ID if m is None else ks.stream_state(key).last)
        elif raw == b">":
            raise CommandError("The > ID can be specified only when calling XREADGROUP using the GROUP <group> "
                               "<consumer> option.")
        else:
            after.append(strict_id(raw))
    served: list[tuple[bytes, list[Any]]] = []
    for key, gt in zip(keys, after):
        if ks.xlen(key) == 0:
            continue
        start = incr_id(gt)
        if start is None:
            continue
        entries = ks.stream_range(key, start, MAX_ID, count)
        if entries:
            served.append((key, entries_reply(entries)))
    if not served:
        if may_park(ctx, timeout):
            from memd.commands.streamblocking import block_read  # (it imports this module)
            return block_read(keys, after, count, timeout)
        return NullArray
    return read_reply(ctx, served)


# ---- XINFO --------------------------------------------------------------------------------------

@command("xinfo", -2)
def xinfo(ctx: Context, args: list[bytes]) -> object:
    sub = subcommand("xinfo", args, {b"consumers": 4, b"groups": 3, b"stream": -3, b"help": 2}, ctx)
    if sub == b"help":
        return [SimpleString(line) for line in _XINFO_HELP]
    ks = ctx.keyspace
    key = args[1]
    m = ks.stream_meta(key)
    if m is None:
        raise CommandError("no such key")
    if sub == b"consumers":
        return info_consumers(ks, key, m, args[2])
    if sub == b"groups":
        return info_groups(ks, key, m)
    return info_stream(ctx, key, m, args[2:], args[0])


_XINFO_HELP = (
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
)

__all__ = ["NO_BLOCK", "end_bound", "entries_reply", "may_park", "parse_read", "read_reply", "start_bound"]
