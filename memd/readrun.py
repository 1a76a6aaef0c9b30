"""Runs of pipelined GETs and MGETs answered in one pass: the read side of the SET runs.

Why: a pipelined client (redis-benchmark ``-t get -P 16``, a cache warming
itself) sends reads back to back, and the per-command path pays for
everything a command *might* need on each of them: the script gate, the
write admission check, CLIENT PAUSE, the dispatcher's table lookup, arity,
authentication, subscriber mode, the generic reply encoder. None of that can
change inside a run of reads (nothing awaits between them and a read writes
nothing), so :meth:`memd.server.Connection._read_ok` checks it once and
:func:`serve_reads` answers the whole run: one ``Keyspace.get`` per key and
the reply bytes appended directly.

The replies are byte-identical to the per-command path's, because the value
comes from the very same ``Keyspace.get`` (same layers, same expiry, same
access time for OBJECT IDLETIME, same WRONGTYPE) and the encodings are the
ones :class:`memd.resp.ReplyEncoder` writes: ``$-1`` (RESP2) or ``_`` (RESP3)
for a missing key, ``*n`` for MGET in both protocols, where a key of another
type is a null. The observable counters stay the same too: the caller adds
the run's length to ``total_commands_processed``, its WRONGTYPE errors to
errorstats, and the last command's name becomes CLIENT LIST's ``cmd=``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memd.errors import WrongTypeError

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

READ_COMMANDS = frozenset({b"get", b"mget"})
_WRONGTYPE = b"-WRONGTYPE %b\r\n" % str(WrongTypeError()).encode()
_NULLS = {2: b"$-1\r\n", 3: b"_\r\n"}


def serve_reads(ks: Keyspace, protocol: int, cmds: list[list[bytes]], i: int, out: bytearray,
                max_bytes: int) -> tuple[int, int, bytes]:
    """Answer the run of GET / MGET calls that starts at ``cmds[i]`` into ``out``.

    Returns ``(end, wrongtype, name)``: the index after the run (``i``: no run
    here), how many WRONGTYPE errors it answered, and the lowercased name of its
    last command. The run stops at any other command, a call of the wrong arity
    (the per-command path answers it) or once ``max_bytes`` of replies are out
    (the caller's loop goes on with the next run: its checks run again).
    """
    null = _NULLS[protocol]
    get = ks.get
    n = len(cmds)
    end = i
    wrongtype = 0
    name = b""
    limit = len(out) + max_bytes
    while end < n:
        argv = cmds[end]
        lowered = argv[0].lower()
        if lowered == b"get":
            if len(argv) != 2:
                break
            try:
                value = get(argv[1])
            except WrongTypeError:
                out += _WRONGTYPE
                wrongtype += 1
            else:
                if value is None:
                    out += null
                elif type(value) is bytes:
                    out += b"$%d\r\n%b\r\n" % (len(value), value)
                else:  # a buffer-protocol value (a memoryview from the store): as ReplyEncoder writes it
                    data = bytes(value)
                    out += b"$%d\r\n%b\r\n" % (len(data), data)
        elif lowered == b"mget":
            if len(argv) < 2:
                break
            out += b"*%d\r\n" % (len(argv) - 1)
            for key in argv[1:]:
                try:
                    value = get(key)
                except WrongTypeError:
                    value = None
                if value is None:
                    out += null
                else:
                    data = value if type(value) is bytes else bytes(value)
                    out += b"$%d\r\n%b\r\n" % (len(data), data)
        else:
            break
        name = lowered
        end += 1
        if len(out) >= limit:
            break
    return end, wrongtype, name


__all__ = ["READ_COMMANDS", "serve_reads"]
