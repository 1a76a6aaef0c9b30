"""Connection-level commands: PING ECHO HELLO QUIT RESET SELECT, the dispatcher
(with the password gate of :mod:`memd.commands.auth` and RESP2's subscriber
mode of :mod:`memd.commands.pubsub`), and transactions
(MULTI EXEC DISCARD WATCH UNWATCH). CLIENT is :mod:`memd.commands.clients`,
COMMAND :mod:`memd.commands.introspect`.

A transaction runs its queued commands inside ``engine.batch()``: one WAL
record, so after a crash it is all there or not at all. WATCH records what the
engine says of each key (``Engine.watch_mark``: its modification stamp,
whether it lived and until when) and EXEC asks the engine whether any of
them broke (``Engine.watch_broken``: a write, a flush of a key that existed,
an expiry), as Redis 7.0 decides.
"""

from __future__ import annotations

from typing import Any

from memd import __version__
from memd.commands import (
    COMMANDS,
    NO_REPLY,
    Command,
    CommandError,
    Context,
    check_arity,
    command,
    parse_int,
    unknown_command,
)
from memd.commands.auth import authenticate, needs_auth, password
from memd.commands.clients import client_name
from memd.commands.pubsub import SUBSCRIBER_COMMANDS, refusal
from memd.resp import Frames, NullArray, Raw, SimpleString

OK = SimpleString("OK")
_TX_CONTROL = {b"exec", b"discard", b"multi", b"watch", b"quit", b"reset"}
_NO_AUTH = frozenset({b"auth", b"hello", b"quit", b"reset"})  # Redis's no_auth commands
NOAUTH = "Authentication required."


def execute(ctx: Context, argv: list[bytes]) -> Any:
    """Run one command (or queue it inside MULTI); return its reply value."""
    name = argv[0].lower()
    cmd = COMMANDS.get(name)
    ctx.last_cmd = name  # CLIENT LIST's cmd= (containers memd answers add their subcommand: client|list)
    if ctx.multi is not None and name not in _TX_CONTROL:
        if cmd is None:
            ctx.multi_error = True
            ctx.last_cmd = b"NULL"
            return unknown_command(argv)
        try:
            check_arity(cmd, len(argv) - 1)
            if not ctx.authenticated and name not in _NO_AUTH and needs_auth(ctx):
                raise CommandError(NOAUTH, prefix="NOAUTH")
        except CommandError as exc:
            ctx.multi_error = True
            return exc
        if cmd.no_multi:
            ctx.multi_error = True
            return CommandError(f"Command not allowed inside a transaction: {cmd.name}")
        ctx.multi.append((cmd, argv[1:]))
        return SimpleString("QUEUED")
    if cmd is None:
        ctx.last_cmd = b"NULL"  # as Redis: no command ran
        return unknown_command(argv)
    try:
        check_arity(cmd, len(argv) - 1)
        if not ctx.authenticated and name not in _NO_AUTH and needs_auth(ctx):
            raise CommandError(NOAUTH, prefix="NOAUTH")  # after the name and arity checks, as Redis orders them
        if cmd.write:
            ctx.engine.check_writable()
        subs = ctx.subscriptions  # (Subscriptions.total inlined: every command of a RESP2 client asks)
        if ctx.protocol == 2 and subs is not None and (subs.channels or subs.patterns or subs.shard_channels) \
                and name not in SUBSCRIBER_COMMANDS:
            refused = refusal(argv)  # RESP2 subscriber mode
            if name == b"exec":  # Redis's rejectCommand turns any refusal of EXEC into an abort
                release_watches(ctx)
                return CommandError(f"Transaction discarded because of: {refused}", prefix="EXECABORT")
            return refused
        return cmd.handler(ctx, argv[1:])
    except CommandError as exc:
        return exc


@command("ping", -1)
def ping(ctx: Context, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise CommandError("wrong number of arguments for 'ping' command")
    if ctx.protocol == 2 and ctx.subscriptions is not None and ctx.subscriptions.total:
        return [b"pong", args[0] if args else b""]  # a RESP2 subscriber reads arrays only
    return args[0] if args else SimpleString("PONG")


@command("echo", 2)
def echo(ctx: Context, args: list[bytes]) -> Any:
    return args[0]


@command("quit", -1, no_multi=True)
def quit_(ctx: Context, args: list[bytes]) -> Any:
    ctx.quit = True
    return OK


@command("reset", 1, no_multi=True)
def reset(ctx: Context, args: list[bytes]) -> Any:
    ctx.multi = None
    ctx.multi_error = False
    release_watches(ctx)
    if ctx.subscriptions is not None and ctx.subscriptions.total and ctx.server is not None:
        ctx.server.pubsub.drop(ctx.subscriptions)  # out of subscriber mode, with no unsubscribe replies
    ctx.protocol = 2
    ctx.db = 0
    ctx.name = None
    ctx.reply = "on"
    ctx.authenticated = not password(ctx)  # back to the default user's state, as a new connection
    return SimpleString("RESET")


@command("select", 2)
def select(ctx: Context, args: list[bytes]) -> Any:
    index = parse_int(args[0])
    if not -(1 << 31) <= index < (1 << 31):  # Redis reads the index as a C int
        raise CommandError(f"value is out of range, value must between {-(1 << 31)} and {(1 << 31) - 1}")
    if not 0 <= index < ctx.engine.databases:
        raise CommandError("DB index is out of range")
    ctx.db = index
    return OK


@command("hello", -1, no_multi=True)
def hello(ctx: Context, args: list[bytes]) -> Any:
    protocol = ctx.protocol
    if args:
        protocol = parse_int(args[0], "Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            raise CommandError("unsupported protocol version", prefix="NOPROTO")
        i = 1
        while i < len(args):
            opt = args[i].lower()
            if opt == b"auth" and i + 2 < len(args):
                if not authenticate(ctx, args[i + 1], args[i + 2]):
                    raise CommandError("invalid username-password pair or user is disabled.", prefix="WRONGPASS")
                i += 3
            elif opt == b"setname" and i + 1 < len(args):
                ctx.name = client_name(args[i + 1])
                i += 2
            else:
                raise CommandError(f"Syntax error in HELLO option '{args[i].decode(errors='replace')}'")
    if needs_auth(ctx):
        raise CommandError("HELLO must be called with the client already authenticated, otherwise the HELLO AUTH "
                           "<user> <pass> option can be used to authenticate the client and select the RESP "
                           "protocol version at the same time", prefix="NOAUTH")
    ctx.protocol = protocol
    return {
        "server": "redis", "version": "7.0.15", "proto": protocol, "id": ctx.client_id,
        "mode": "standalone", "role": "master", "modules": [], "memd_version": __version__,
    }


def release_watches(ctx: Context) -> None:
    """Forget this connection's WATCHes (EXEC, DISCARD, UNWATCH, RESET, disconnect)."""
    if ctx.watched:
        ctx.watched.clear()
        ctx.engine.watching -= 1


# ---- transactions ---------------------------------------------------------------------

@command("multi", 1, no_multi=True)
def multi(ctx: Context, args: list[bytes]) -> Any:
    if ctx.multi is not None:
        raise CommandError("MULTI calls can not be nested")
    ctx.multi = []
    ctx.multi_error = False
    return OK


@command("discard", 1, no_multi=True)
def discard(ctx: Context, args: list[bytes]) -> Any:
    if ctx.multi is None:
        raise CommandError("DISCARD without MULTI")
    ctx.multi = None
    ctx.multi_error = False
    release_watches(ctx)
    return OK


@command("watch", -2, no_multi=True)
def watch(ctx: Context, args: list[bytes]) -> Any:
    if ctx.multi is not None:
        raise CommandError("WATCH inside MULTI is not allowed")
    for key in args:
        if not ctx.watched:
            ctx.engine.watching += 1  # the engine stamps writes only while someone watches
        if (ctx.db, key) not in ctx.watched:
            ctx.watched[(ctx.db, key)] = ctx.engine.watch_mark(ctx.db, key)
    return OK


@command("unwatch", 1)
def unwatch(ctx: Context, args: list[bytes]) -> Any:
    release_watches(ctx)
    return OK


@command("exec", 1, no_multi=True)
def exec_(ctx: Context, args: list[bytes]) -> Any:
    if ctx.multi is None:
        raise CommandError("EXEC without MULTI")
    queued, failed = ctx.multi, ctx.multi_error
    watched = dict(ctx.watched)
    ctx.multi = None
    ctx.multi_error = False
    release_watches(ctx)
    if failed:
        raise CommandError("Transaction discarded because of previous errors.", prefix="EXECABORT")
    engine = ctx.engine
    if any(engine.watch_broken(db, k, mark) for (db, k), mark in watched.items()):
        return NullArray
    if any(cmd.write for cmd, _ in queued):
        engine.check_writable()
    replies: list[Any] = []
    ctx.multi = queued  # while EXEC runs them the client is still in its transaction (CLIENT LIST flags=x)
    try:
        with engine.batch():
            for cmd, cargs in queued:
                reply = _run_queued(ctx, cmd, cargs)
                if ctx.pushed:  # it published to itself: Redis writes those pushes inside EXEC's array
                    reply, ctx.pushed = Frames([Raw(ctx.pushed), reply]), None
                replies.append(reply)
    finally:
        ctx.multi = None
    return replies


def _run_queued(ctx: Context, cmd: Command, args: list[bytes]) -> Any:
    try:
        reply = cmd.handler(ctx, args)
    except CommandError as exc:
        return exc
    return OK if reply is NO_REPLY else reply  # CLIENT REPLY OFF|SKIP inside EXEC: EXEC's array keeps its slot
