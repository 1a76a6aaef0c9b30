"""The command table: name -> handler, arity, and whether it writes.

A handler is a plain synchronous function ``(ctx, args) -> reply`` where
``args`` excludes the command name and ``reply`` is a value the RESP encoder
understands (bytes, int, float, None, list, dict, set, SimpleString,
ErrorReply, NullArray...). It raises :class:`memd.errors.CommandError` (or a
subclass: WRONGTYPE, OOM...) for an error reply. Handlers never await: that
is what makes each command atomic (see :mod:`memd.engine.engine`).

Modules register their commands with the :func:`command` decorator; the
server imports :data:`COMMANDS` after :func:`load_all`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memd.errors import CommandError
from memd.int64 import parse_int64

if TYPE_CHECKING:
    from memd.commands.serverview import ServerView
    from memd.engine.engine import Engine, WatchMark
    from memd.engine.keyspace import Keyspace
    from memd.pubsub import Subscriptions

Handler = Callable[["Context", list[bytes]], Any]
# A run of consecutive calls of one command (each call's arguments) -> one reply per call (see batched)
RunHandler = Callable[["Context", list[list[bytes]]], list[Any]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    arity: int  # Redis convention, counting the name: n exact, -n at least n
    write: bool = False
    admin: bool = False
    no_multi: bool = False  # connection-level commands handled outside transactions
    run: RunHandler | None = None  # a whole run of calls at once (see batched)


COMMANDS: dict[bytes, Command] = {}


NO_REPLY: Any = object()  # a Deferred may return this to send nothing (SHUTDOWN)


class Deferred:
    """A reply that needs an await (WAITAOF, MEMD.FLUSH, SHUTDOWN).

    The handler returns ``Deferred(fn)``; the server sends the replies before
    it (after their durability), awaits ``fn()`` and sends what it returns.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.fn = fn


def command(name: str, arity: int, *, write: bool = False, admin: bool = False,
            no_multi: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` under ``name`` (case-insensitive)."""
    def register(handler: Handler) -> Handler:
        COMMANDS[name.lower().encode()] = Command(name.lower(), handler, arity, write, admin, no_multi)
        return handler
    return register


def batched(name: str) -> Callable[[RunHandler], RunHandler]:
    """Give the registered command ``name`` a handler for a run of consecutive calls.

    Pipelined clients send runs of one command (bulk ingest of MEM.PUTs). The server hands
    such a run, outside any transaction and only when the engine takes writes at all, to
    ``handler(ctx, calls)`` in one go. Its contract: the replies (a value or a
    CommandError, one per call) and the effects are exactly those of the calls run one
    after the other, and its writes go in ONE ``engine.apply`` (a run is then all or
    nothing after a crash: atomicity only grows). What it saves is per-call work that
    can be shared: dispatch, store reads, WAL records.
    """
    def register(handler: RunHandler) -> RunHandler:
        key = name.lower().encode()
        COMMANDS[key] = dataclasses.replace(COMMANDS[key], run=handler)
        return handler
    return register


@dataclass(eq=False)
class Context:
    """What a handler may see: the engine and its own connection's state."""

    engine: Engine
    server: ServerView | None = None  # the RESP server (INFO, CLIENT LIST, SHUTDOWN...); None in unit tests
    client_id: int = 0
    protocol: int = 2
    name: bytes | None = None
    lib_name: bytes = b""
    lib_ver: bytes = b""
    peer_uid: int = -1
    peer_gid: int = -1
    peer_pid: int = -1
    peer_groups: tuple[int, ...] = ()  # supplementary groups (SO_PEERGROUPS)
    quit: bool = False
    multi: list[tuple[Command, list[bytes]]] | None = None
    multi_error: bool = False
    watched: dict[tuple[int, bytes], WatchMark] = field(default_factory=dict)  # (db, key) -> what WATCH saw
    authenticated: bool = True  # False until AUTH while [server] password is set (the server decides at accept)
    reply: str = "on"  # CLIENT REPLY: "on", "off", or "skip" (the next command's reply only)
    no_evict: bool = False  # CLIENT NO-EVICT (recorded: memd evicts no client)
    no_touch: bool = False  # CLIENT NO-TOUCH
    fd: int = -1  # the connection's socket (CLIENT LIST)
    created: float = 0.0  # time.monotonic() at accept (CLIENT LIST age)
    last_active: float = 0.0  # time.monotonic() at the last batch of commands (CLIENT LIST idle)
    last_cmd: bytes = b"NULL"  # the last command run, "client|list" for a subcommand (CLIENT LIST cmd)
    db: int = 0  # the database SELECTed (Redis's logical number)
    subscriptions: Subscriptions | None = None  # its pub/sub channels and patterns; the server sets it
    pushed: bytearray | None = None  # pushes to this client while its EXEC runs: they go between EXEC's elements
    # Whether a blocking command may park this client (the opposite of Redis's CLIENT_DENY_BLOCKING):
    # only a connection's own context, which the server marks. Any other context (a script's, a
    # unit test's) gets the timeout reply at once, as Redis answers inside a script; inside EXEC
    # (ctx.multi set) too. A runner that lends a connection's own context must clear it meanwhile.
    may_block: bool = False
    blocked: bool = False  # parked by a blocking command (CLIENT LIST flags=b); the server sets it

    @property
    def keyspace(self) -> Keyspace:
        """The keyspace of the database this connection has selected: what every key command reads and writes."""
        engine = self.engine  # (engine.keyspace_of inlined: this is every key command's path)
        return engine.keyspaces[engine.dbmap[self.db]]


def wrong_arity(name: str) -> CommandError:
    return CommandError(f"wrong number of arguments for '{name}' command")


def arity_ok(cmd: Command, nargs: int) -> bool:
    """``nargs`` excludes the command name, as handlers see it."""
    n = nargs + 1
    return n == cmd.arity if cmd.arity >= 0 else n >= -cmd.arity


def check_arity(cmd: Command, nargs: int) -> None:
    n = nargs + 1  # (arity_ok's test, inline: every command's path)
    if n != cmd.arity if cmd.arity >= 0 else n < -cmd.arity:
        raise wrong_arity(cmd.name)


def unknown_command(argv: list[bytes]) -> CommandError:
    """Redis's wording: each argument as ``'arg' ``, until 128 characters of them."""
    name = argv[0].decode(errors="replace")[:128]
    args = ""
    for raw in argv[1:]:
        if len(args) >= 128:
            break
        args += f"'{raw.decode(errors='replace')[:128 - len(args)]}' "
    return CommandError(f"unknown command '{name}', with args beginning with: {args}")


# ---- argument helpers shared by every command module ---------------------------------

def parse_int(raw: bytes, what: str = "value is not an integer or out of range") -> int:
    """A Redis integer argument (see :mod:`memd.int64`); an error reply saying ``what`` otherwise."""
    value = parse_int64(raw)
    if value is None:
        raise CommandError(what)
    return value


MODULES = ("connection", "strings", "bits", "bitfield", "lcs", "keys", "keyops", "sort", "hashes", "lists", "sets",
           "zsets", "zsetops", "blocking", "streams", "streamgroups", "streamclaim", "server", "memory", "introspect", "clients",
           "auth", "pubsub", "scripting")


def load_all() -> dict[bytes, Command]:
    """Import every command module (each registers itself) and return the table."""
    for module in MODULES:
        importlib.import_module(f"memd.commands.{module}")
    return COMMANDS
