"""XINFO STREAM [FULL [COUNT n]], XINFO GROUPS, XINFO CONSUMERS: replies built from the stream's rows.

Field names and order are Redis 7.0's. ``radix-tree-keys`` and ``radix-tree-nodes``
describe Redis's own memory layout, which memd does not have: they are reported as a
Redis stream of the same length would roughly have them (one node key per 100
entries), so tools that read them see plausible numbers, not measurements.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from memd.commands import Context
from memd.commands.strings import ll
from memd.engine.collections import M_COUNT, Meta
from memd.engine.streamcodec import MAX_ID, MIN_ID, format_id
from memd.engine.streams import Entry, StreamEdit
from memd.errors import CommandError

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

NODE_ENTRIES = 100  # Redis's stream-node-max-entries


def entry_reply(entry: Entry) -> list[Any]:
    return [format_id(entry[0]), entry[1]]


def entries_reply(entries: list[Entry]) -> list[Any]:
    return [[format_id(sid), fields] for sid, fields in entries]


def no_group(group: bytes, key: bytes) -> CommandError:
    return CommandError(f"No such consumer group '{_text(group)}' for key name '{_text(key)}'", "NOGROUP")


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode(errors="replace")


def _header(ks: Keyspace, key: bytes, m: Meta) -> dict[bytes, Any]:
    length = m[M_COUNT] - 1
    state = ks.stream_state(key)
    nodes = (length + NODE_ENTRIES - 1) // NODE_ENTRIES
    return {
        b"length": length,
        b"radix-tree-keys": nodes,
        b"radix-tree-nodes": max(1, 2 * nodes),
        b"last-generated-id": format_id(state.last),
        b"max-deleted-entry-id": format_id(state.max_deleted),
        b"entries-added": state.entries_added,
        b"recorded-first-entry-id": format_id(ks.stream_first_id(key)),
    }


def info_stream(ctx: Context, key: bytes, m: Meta, opts: list[bytes], sub: bytes = b"stream") -> object:
    ks = ctx.keyspace
    if not opts:
        reply = _header(ks, key, m)
        reply[b"groups"] = len(ks.stream_groups(key))
        first = ks.stream_edge(key, False)
        last = ks.stream_edge(key, True)
        reply[b"first-entry"] = None if first is None else entry_reply(first)
        reply[b"last-entry"] = None if last is None else entry_reply(last)
        return reply
    syntax = CommandError("unknown subcommand or wrong number of arguments for '%s'. Try XINFO HELP."
                          % _text(sub))
    if len(opts) not in (1, 3) or opts[0].lower() != b"full":
        raise syntax
    count = 10
    if len(opts) == 3:
        if opts[1].lower() != b"count":
            raise syntax
        count = ll(opts[2])
        if count < 0:
            count = 10
    reply = _header(ks, key, m)
    reply[b"entries"] = entries_reply(ks.stream_range(key, MIN_ID, MAX_ID, count))
    state = ks.stream_state(key)
    length = m[M_COUNT] - 1
    first_id = ks.stream_first_id(key)
    groups: list[Any] = []
    edit = StreamEdit(ks, key, m)
    for info in ks.stream_groups(key):
        g = ks.stream_group(edit, info.name)
        assert g is not None
        pel = list(g.pel())
        owned = Counter(n.consumer for n in pel)
        consumers: list[Any] = []
        for name, seen in g.consumers():
            mine = [n for n in pel if n.consumer == name]
            consumers.append({
                b"name": name,
                b"seen-time": seen,
                b"pel-count": owned[name],
                b"pending": [[format_id(n.id), n.time, n.times] for n in (mine[:count] if count else mine)],
            })
        groups.append({
            b"name": info.name,
            b"last-delivered-id": format_id(info.last),
            b"entries-read": None if info.entries_read < 0 else info.entries_read,
            b"lag": ks.group_lag(state, length, first_id, info),
            b"pel-count": len(pel),
            b"pending": [[format_id(n.id), n.consumer, n.time, n.times] for n in (pel[:count] if count else pel)],
            b"consumers": consumers,
        })
    reply[b"groups"] = groups
    return reply


def info_groups(ks: Keyspace, key: bytes, m: Meta) -> object:
    state = ks.stream_state(key)
    length = m[M_COUNT] - 1
    first_id = ks.stream_first_id(key)
    edit = StreamEdit(ks, key, m)
    out: list[Any] = []
    for info in ks.stream_groups(key):
        g = ks.stream_group(edit, info.name)
        assert g is not None
        out.append({
            b"name": info.name,
            b"consumers": len(g.consumers()),
            b"pending": sum(1 for _ in g.pel()),
            b"last-delivered-id": format_id(info.last),
            b"entries-read": None if info.entries_read < 0 else info.entries_read,
            b"lag": ks.group_lag(state, length, first_id, info),
        })
    return out


def info_consumers(ks: Keyspace, key: bytes, m: Meta, group: bytes) -> object:
    g = ks.stream_group(StreamEdit(ks, key, m), group)
    if g is None:
        raise no_group(group, key)
    owned = Counter(n.consumer for n in g.pel())
    now = ks.now_ms()
    return [{b"name": name, b"pending": owned[name], b"idle": max(0, now - seen)} for name, seen in g.consumers()]


__all__ = ["entries_reply", "entry_reply", "info_consumers", "info_groups", "info_stream", "no_group"]
