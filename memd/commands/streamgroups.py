"""Consumer-group commands: XGROUP XREADGROUP XACK XPENDING (Redis 7.0, ``t_stream.c``; XCLAIM and
XAUTOCLAIM: :mod:`memd.commands.streamclaim`).

Every write gathers its rows in one :class:`~memd.engine.streams.StreamEdit` per key and
hands the engine one op list: an XREADGROUP over several streams is one WAL record.
Times (delivery times, seen times, idle) come from the engine's clock.
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context, command
from memd.commands.commandtable import subcommand
from memd.commands.streamblocking import block_group, delivered_reply
from memd.commands.streams import OK, end_bound, may_park, parse_read, read_reply, start_bound
from memd.commands.strings import SYNTAX, ll
from memd.engine.streamcodec import INVALID_ENTRIES_READ, MAX_ID, MIN_ID, StreamId, format_id, parse_id, strict_id
from memd.engine.streamgroups import Group
from memd.engine.streams import StreamEdit
from memd.errors import CommandError
from memd.resp import NullArray, SimpleString


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode(errors="replace")


def _nogroup(key: bytes, group: bytes, tail: str = "") -> CommandError:
    return CommandError(f"No such key '{_text(key)}' or consumer group '{_text(group)}'{tail}", "NOGROUP")


def apply_edits(ctx: Context, edits: list[StreamEdit]) -> None:
    ctx.keyspace.apply_stream_edits(edits)


def group_of(ctx: Context, key: bytes, group: bytes, tail: str = "") -> tuple[StreamEdit, Group]:
    """The stream and its group, or Redis's NOGROUP error (WRONGTYPE first)."""
    ks = ctx.keyspace
    m = ks.stream_meta(key)
    edit = StreamEdit(ks, key, m)
    g = None if m is None else ks.stream_group(edit, group)
    if g is None:
        raise _nogroup(key, group, tail)
    return edit, g


# ---- XGROUP -------------------------------------------------------------------------------------

_XGROUP_HELP = (
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
)


@command("xgroup", -2, write=True)
def xgroup(ctx: Context, args: list[bytes]) -> object:
    sub = subcommand("xgroup", args, {b"create": -5, b"setid": -5, b"destroy": 4, b"createconsumer": 5,
                                      b"delconsumer": 5, b"help": 2}, ctx)
    if sub == b"help":
        return [SimpleString(line) for line in _XGROUP_HELP]
    syntax = CommandError(f"unknown subcommand or wrong number of arguments for '{_text(args[0])}'. "
                          "Try XGROUP HELP.")
    mkstream = False
    entries_read = INVALID_ENTRIES_READ
    i = 4
    while i < len(args):
        opt = args[i].lower()
        if sub == b"create" and opt == b"mkstream":
            mkstream = True
            i += 1
        elif sub in (b"create", b"setid") and opt == b"entriesread" and i + 1 < len(args):
            entries_read = ll(args[i + 1])
            if entries_read < 0 and entries_read != INVALID_ENTRIES_READ:
                raise CommandError("value for ENTRIESREAD must be positive or -1")
            i += 2
        else:
            raise syntax
    ks = ctx.keyspace
    key, name = args[1], args[2]
    m = ks.stream_meta(key)
    edit = StreamEdit(ks, key, m)
    g = None if m is None else ks.stream_group(edit, name)
    if not mkstream:
        if m is None:
            raise CommandError("The XGROUP subcommand requires the key to exist. Note that for CREATE you may "
                               "want to use the MKSTREAM option to create an empty stream automatically.")
        if g is None and sub in (b"setid", b"createconsumer", b"delconsumer"):
            raise CommandError(f"No such consumer group '{_text(name)}' for key name '{_text(key)}'", "NOGROUP")
    if sub == b"create":
        if len(args) > 7:
            raise syntax
        sid = edit.state.last if args[3] == b"$" else strict_id(args[3])
        if g is not None:
            raise CommandError("Consumer Group name already exists", "BUSYGROUP")
        ks.new_group(edit, name, sid, entries_read)
        apply_edits(ctx, [edit])
        return OK
    assert g is not None or sub == b"destroy"
    if sub == b"setid":
        if len(args) not in (4, 6):
            raise syntax
        assert g is not None
        g.last = edit.state.last if args[3] == b"$" else strict_or_plain(args[3])
        g.entries_read = entries_read
        g.save()
        apply_edits(ctx, [edit])
        return OK
    if sub == b"destroy":
        if g is None:
            return 0
        ks.destroy_group(g)
        apply_edits(ctx, [edit])
        return 1
    assert g is not None
    if sub == b"createconsumer":
        if g.consumer(args[3]) is not None:
            return 0
        g.see(args[3], ks.now_ms())
        apply_edits(ctx, [edit])
        return 1
    if g.consumer(args[3]) is None:
        return 0
    pending = ks.delete_consumer(g, args[3])
    apply_edits(ctx, [edit])
    return pending


def strict_or_plain(raw: bytes) -> StreamId:
    """XGROUP SETID reads its id with ``-`` and ``+`` allowed (``streamParseIDOrReply``)."""
    return parse_id(raw)[0]


# ---- XREADGROUP ---------------------------------------------------------------------------------

@command("xreadgroup", -7, write=True)
def xreadgroup(ctx: Context, args: list[bytes]) -> object:
    count, timeout, noack, streams, gname, consumer = parse_read(ctx, args, True)
    assert gname is not None and consumer is not None
    ks = ctx.keyspace
    nkeys = (len(args) - streams) // 2
    keys = args[streams:streams + nkeys]
    edits: dict[bytes, StreamEdit] = {}
    groups: dict[bytes, Group] = {}
    plan: list[tuple[bytes, StreamId | None]] = []
    for key, raw in zip(keys, args[streams + nkeys:]):
        m = ks.stream_meta(key)
        if key not in edits:
            edits[key] = StreamEdit(ks, key, m)
            g = None if m is None else ks.stream_group(edits[key], gname)
            if g is not None:
                groups[key] = g
        if key not in groups:
            raise _nogroup(key, gname, " in XREADGROUP with GROUP option")
        if raw == b"$":
            raise CommandError("The $ ID is meaningless in the context of XREADGROUP: you want to read the history "
                               "of this consumer by specifying a proper ID, or use the > ID to get new messages. "
                               "The $ ID would just return an empty result set.")
        plan.append((key, None if raw == b">" else strict_id(raw)))
    now = ks.now_ms()
    served: list[tuple[bytes, list[Any]]] = []
    for key, after in plan:
        edit, g = edits[key], groups[key]
        if after is None:
            if not edit.length:
                continue
            top = ks.stream_edge(key, True)
            if top is None or top[0] <= g.last:
                continue
            g.see(consumer, now)
            items = ks.deliver_new(g, consumer, g.last, count, noack, now)
        else:
            g.see(consumer, now)
            items = ks.deliver_history(g, consumer, after, count, now)
        served.append((key, delivered_reply(items)))
    apply_edits(ctx, list(edits.values()))
    if not served:
        if may_park(ctx, timeout):  # (only ">" can find nothing: an id always serves its history)
            return block_group(keys, gname, consumer, count, noack, timeout)
        return NullArray
    return read_reply(ctx, served)


# ---- XACK, XPENDING -----------------------------------------------------------------------------

@command("xack", -4, write=True)
def xack(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    m = ks.stream_meta(args[0])
    if m is None:
        return 0
    edit = StreamEdit(ks, args[0], m)
    g = ks.stream_group(edit, args[1])
    if g is None:
        return 0
    ids = [strict_id(a) for a in args[2:]]
    acked = 0
    for sid in ids:
        if g.nack(sid) is not None:
            g.drop_nack(sid)
            acked += 1
    apply_edits(ctx, [edit])
    return acked


@command("xpending", -3)
def xpending(ctx: Context, args: list[bytes]) -> object:
    argc = len(args) + 1
    if argc != 3 and not 6 <= argc <= 9:
        raise CommandError(SYNTAX)
    minidle = 0
    consumer: bytes | None = None
    start, end, count = MIN_ID, MAX_ID, 0
    if argc >= 6:
        at = 2
        if args[2].lower() == b"idle":
            minidle = ll(args[3])
            if argc < 8:
                raise CommandError(SYNTAX)
            at += 2
        count = max(0, ll(args[at + 2]))
        start = start_bound(args[at])
        end = end_bound(args[at + 1])
        if at + 3 < len(args):
            consumer = args[at + 3]
    ks = ctx.keyspace
    m = ks.stream_meta(args[0])
    edit = StreamEdit(ks, args[0], m)
    g = None if m is None else ks.stream_group(edit, args[1])
    if g is None:
        raise _nogroup(args[0], args[1])
    if argc == 3:
        pel = list(g.pel())
        if not pel:
            return [0, None, None, NullArray]
        owned: dict[bytes, int] = {}
        for n in pel:
            owned[n.consumer] = owned.get(n.consumer, 0) + 1
        return [len(pel), format_id(pel[0].id), format_id(pel[-1].id),
                [[name, b"%d" % owned[name]] for name in sorted(owned)]]
    if consumer is not None and g.consumer(consumer) is None:
        return []
    now = ks.now_ms()
    out: list[Any] = []
    if count == 0:
        return out
    for n in g.pel(start, end):
        if consumer is not None and n.consumer != consumer:
            continue
        if minidle and now - n.time < minidle:
            continue
        out.append([format_id(n.id), n.consumer, max(0, now - n.time), n.times])
        if len(out) >= count:
            break
    return out


__all__ = ["apply_edits", "group_of", "xack", "xgroup", "xpending", "xreadgroup"]
