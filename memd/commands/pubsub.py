"""Pub/sub: SUBSCRIBE PSUBSCRIBE SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH SPUBLISH and PUBSUB, as Redis 7.0.

The registry is the server's (:class:`memd.pubsub.PubSub`, ``ctx.server.pubsub``)
and each connection's own subscriptions are ``ctx.subscriptions``, whose sink
the server wired to that connection's push. Nothing here touches the engine:
messages are not data (never logged, not per database).

Every (un)subscription is confirmed by a push per channel (a RESP2 array, a
RESP3 ``>``), returned as :class:`~memd.resp.Frames` so that they stay in
order with the client's other replies, inside EXEC too. A RESP2 client with
any subscription is in subscriber mode: :func:`refusal` is the error every
other command gets (the dispatcher asks), and PING answers ``[pong, arg]``.
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context, command, wrong_arity
from memd.commands.commandtable import declare_subcommands, subcommand, table
from memd.commands.keys import glob_match, glob_regex
from memd.errors import CommandError
from memd.pubsub import Matcher, PubSub, Subscriptions
from memd.resp import Frames, Push, SimpleString

# what a RESP2 subscriber may still run (Redis 7.0's processCommand list)
SUBSCRIBER_COMMANDS = frozenset({b"ping", b"subscribe", b"ssubscribe", b"unsubscribe", b"sunsubscribe",
                                 b"psubscribe", b"punsubscribe", b"quit", b"reset"})
_ARITY = {b"channels": -2, b"numsub": -2, b"numpat": 2, b"shardchannels": -2, b"shardnumsub": -2, b"help": 2}
declare_subcommands("pubsub", [s.decode() for s in _ARITY])
_HELP = (
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
)


def refusal(argv: list[bytes]) -> CommandError:
    """What a RESP2 subscriber gets for a command outside :data:`SUBSCRIBER_COMMANDS`.

    Redis names the command by its full name (``client|list``), and has already refused an unknown
    subcommand or a subcommand of the wrong arity by then, with those errors.
    """
    name = argv[0].decode(errors="replace").lower()
    meta = table().get(name)
    if meta is not None and meta.subcommands and len(argv) > 1:
        sub = meta.subcommands.get(f"{name}|{argv[1].decode(errors='replace').lower()}")
        if sub is None:
            return CommandError(f"unknown subcommand '{argv[1].decode(errors='replace')[:128]}'. "
                                f"Try {name.upper()} HELP.")
        arity = sub.arity
        if arity >= 0 and len(argv) != arity or arity < 0 and len(argv) < -arity:
            return wrong_arity(sub.name)
        name = sub.name
    return CommandError(f"Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
                        "are allowed in this context")


def _state(ctx: Context) -> tuple[PubSub, Subscriptions]:
    server, subs = ctx.server, ctx.subscriptions
    if server is None or subs is None:
        raise CommandError("pub/sub needs a client connection to the server")
    return server.pubsub, subs


def _deny_in_exec(ctx: Context, name: str) -> None:
    """SSUBSCRIBE inside EXEC: Redis refuses it there (a transaction's client may not block)."""
    if ctx.multi is not None:  # (EXEC keeps ctx.multi while it runs the queued commands)
        raise CommandError(f"{name} isn't allowed for a DENY BLOCKING client")


def _matcher(pattern: bytes) -> Matcher:
    """The pattern's test, compiled once for the pattern's life (glob_match's cache is small): Redis's
    stringmatchlen, where an empty channel matches only the empty pattern."""
    if not pattern:
        return lambda channel: not channel
    regex = glob_regex(pattern)
    return lambda channel: bool(channel) and regex.fullmatch(channel) is not None


# ---- subscribing ------------------------------------------------------------------------------------

@command("subscribe", -2)
def subscribe(ctx: Context, args: list[bytes]) -> Any:
    registry, subs = _state(ctx)
    out = Frames()
    for channel in args:
        registry.subscribe(subs, channel)
        out.append(Push([b"subscribe", channel, subs.count]))
    return out


@command("ssubscribe", -2)
def ssubscribe(ctx: Context, args: list[bytes]) -> Any:
    _deny_in_exec(ctx, "SSUBSCRIBE")
    registry, subs = _state(ctx)
    out = Frames()
    for channel in args:
        registry.subscribe(subs, channel, shard=True)
        out.append(Push([b"ssubscribe", channel, len(subs.shard_channels)]))
    return out


@command("psubscribe", -2)
def psubscribe(ctx: Context, args: list[bytes]) -> Any:
    registry, subs = _state(ctx)
    out = Frames()
    for pattern in args:
        registry.psubscribe(subs, pattern, _matcher(pattern))
        out.append(Push([b"psubscribe", pattern, subs.count]))
    return out


@command("unsubscribe", -1)
def unsubscribe(ctx: Context, args: list[bytes]) -> Any:
    registry, subs = _state(ctx)
    out = Frames()
    for channel in args or list(subs.channels):
        registry.unsubscribe(subs, channel)
        out.append(Push([b"unsubscribe", channel, subs.count]))
    if not out:  # UNSUBSCRIBE with nothing subscribed still answers, with a null channel
        out.append(Push([b"unsubscribe", None, subs.count]))
    return out


@command("sunsubscribe", -1)
def sunsubscribe(ctx: Context, args: list[bytes]) -> Any:
    registry, subs = _state(ctx)
    out = Frames()
    for channel in args or list(subs.shard_channels):
        registry.unsubscribe(subs, channel, shard=True)
        out.append(Push([b"sunsubscribe", channel, len(subs.shard_channels)]))
    if not out:
        out.append(Push([b"sunsubscribe", None, len(subs.shard_channels)]))
    return out


@command("punsubscribe", -1)
def punsubscribe(ctx: Context, args: list[bytes]) -> Any:
    registry, subs = _state(ctx)
    out = Frames()
    for pattern in args or list(subs.patterns):
        registry.punsubscribe(subs, pattern)
        out.append(Push([b"punsubscribe", pattern, subs.count]))
    if not out:
        out.append(Push([b"punsubscribe", None, subs.count]))
    return out


# ---- publishing -----------------------------------------------------------------------------------

@command("publish", 3)
def publish(ctx: Context, args: list[bytes]) -> Any:
    """The number of clients the message went to (a client matching by channel and pattern counts twice)."""
    return ctx.server.pubsub.publish(args[0], args[1]) if ctx.server is not None else 0


@command("spublish", 3)
def spublish(ctx: Context, args: list[bytes]) -> Any:
    return ctx.server.pubsub.publish(args[0], args[1], shard=True) if ctx.server is not None else 0


# ---- PUBSUB ---------------------------------------------------------------------------------------

@command("pubsub", -2)
def pubsub(ctx: Context, args: list[bytes]) -> Any:
    sub = subcommand("pubsub", args, _ARITY, ctx)
    registry = ctx.server.pubsub if ctx.server is not None else PubSub()
    if sub in (b"channels", b"shardchannels"):
        if len(args) > 2:
            raise _syntax(args)
        channels = registry.shard_channels if sub == b"shardchannels" else registry.channels
        if len(args) == 1:
            return list(channels)
        return [c for c in channels if glob_match(args[1], c)]
    if sub in (b"numsub", b"shardnumsub"):
        shard = sub == b"shardnumsub"
        out: list[Any] = []
        for channel in args[1:]:
            out += [channel, registry.numsub(channel, shard=shard)]
        return out
    if sub == b"numpat":
        return len(registry.patterns)
    return [SimpleString(line) for line in _HELP]


def _syntax(args: list[bytes]) -> CommandError:
    return CommandError(f"unknown subcommand or wrong number of arguments for "
                        f"'{args[0].decode(errors='replace')[:128]}'. Try PUBSUB HELP.")
