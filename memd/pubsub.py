"""The pub/sub registry: who listens to which channel or pattern, and fan-out of one message.

Pub/sub is a property of the server, not of the data: messages are not
durable (never logged, never flushed), and channels are global, not per
database, as in Redis. So the registry belongs to the RESP server, and the
engine knows nothing of it. This module knows no sockets either: each
client's :class:`Subscriptions` carries a ``sink``, a callable the server
gives it (its connection's push), which receives every frame meant for that
client already encoded, once for RESP2 and once for RESP3.

One publish encodes its frame once per kind (``message`` and one
``pmessage`` per matching pattern), not once per subscriber: RESP2's array
and RESP3's push differ in their first byte only (``*`` / ``>``), so both
come from one encoding. That is what keeps a fan-out to many subscribers
cheap.

Order, as Redis 7.0 delivers: the channel's subscribers in the order they
subscribed, then each matching pattern's (patterns in the order they were
first subscribed; Redis walks a hash table there, so clients may not rely
on an order between patterns). Shard channels (SSUBSCRIBE / SPUBLISH) are
a namespace of their own that patterns never see, as a standalone Redis
keeps them.
"""

from __future__ import annotations

from collections.abc import Callable

Sink = Callable[[bytes, bytes], None]  # (RESP2 frame, RESP3 frame) -> queued or written for that client
Matcher = Callable[[bytes], bool]  # a pattern's test of a channel name


def frame(*parts: bytes) -> tuple[bytes, bytes]:
    """A push of bulk strings, as (RESP2 array, RESP3 push)."""
    body = b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
    head = b"%d\r\n" % len(parts)
    return b"*" + head + body, b">" + head + body


class Subscriptions:
    """One client's subscriptions, each kind in subscription order, and where its frames go."""

    __slots__ = ("channels", "patterns", "shard_channels", "sink")

    def __init__(self, sink: Sink) -> None:
        self.channels: dict[bytes, None] = {}
        self.patterns: dict[bytes, None] = {}
        self.shard_channels: dict[bytes, None] = {}
        self.sink = sink

    @property
    def count(self) -> int:
        """Channels plus patterns: the figure SUBSCRIBE / PSUBSCRIBE replies report (Redis's
        clientSubscriptionsCount)."""
        return len(self.channels) + len(self.patterns)

    @property
    def total(self) -> int:
        """Every subscription, shard channels included: non-zero puts the client in subscriber mode."""
        return len(self.channels) + len(self.patterns) + len(self.shard_channels)


class PubSub:
    """Channels, patterns and shard channels -> their subscribers (insertion-ordered dicts)."""

    __slots__ = ("channels", "patterns", "shard_channels", "_matchers", "messages")

    def __init__(self) -> None:
        self.channels: dict[bytes, dict[Subscriptions, None]] = {}
        self.patterns: dict[bytes, dict[Subscriptions, None]] = {}
        self.shard_channels: dict[bytes, dict[Subscriptions, None]] = {}
        self._matchers: dict[bytes, Matcher] = {}
        self.messages = 0  # frames delivered since the start (a message to n clients counts n)

    # ---- subscribing ------------------------------------------------------------------------

    def subscribe(self, sub: Subscriptions, channel: bytes, *, shard: bool = False) -> bool:
        """Add ``channel`` (or a shard channel) to ``sub``; False if it was there already."""
        mine, table = (sub.shard_channels, self.shard_channels) if shard else (sub.channels, self.channels)
        if channel in mine:
            return False
        mine[channel] = None
        table.setdefault(channel, {})[sub] = None
        return True

    def unsubscribe(self, sub: Subscriptions, channel: bytes, *, shard: bool = False) -> bool:
        """Remove ``channel`` from ``sub``; False if it was not subscribed. An emptied channel is
        forgotten (PUBSUB CHANNELS lists only channels with subscribers)."""
        mine, table = (sub.shard_channels, self.shard_channels) if shard else (sub.channels, self.channels)
        if channel not in mine:
            return False
        del mine[channel]
        subscribers = table[channel]
        del subscribers[sub]
        if not subscribers:
            del table[channel]
        return True

    def psubscribe(self, sub: Subscriptions, pattern: bytes, matcher: Matcher) -> bool:
        """Add ``pattern`` (``matcher`` tests a channel against it) to ``sub``; False if there already."""
        if pattern in sub.patterns:
            return False
        sub.patterns[pattern] = None
        subscribers = self.patterns.get(pattern)
        if subscribers is None:
            subscribers = self.patterns[pattern] = {}
            self._matchers[pattern] = matcher
        subscribers[sub] = None
        return True

    def punsubscribe(self, sub: Subscriptions, pattern: bytes) -> bool:
        if pattern not in sub.patterns:
            return False
        del sub.patterns[pattern]
        subscribers = self.patterns[pattern]
        del subscribers[sub]
        if not subscribers:
            del self.patterns[pattern]
            del self._matchers[pattern]
        return True

    def drop(self, sub: Subscriptions) -> None:
        """Forget every subscription of ``sub`` without telling it (RESET, a closed connection)."""
        for channel in list(sub.channels):
            self.unsubscribe(sub, channel)
        for channel in list(sub.shard_channels):
            self.unsubscribe(sub, channel, shard=True)
        for pattern in list(sub.patterns):
            self.punsubscribe(sub, pattern)

    # ---- publishing -------------------------------------------------------------------------

    def publish(self, channel: bytes, message: bytes, *, shard: bool = False) -> int:
        """Hand the message to every subscriber (channel, then matching patterns); return how many
        frames went out, which is PUBLISH's reply (a client matching twice counts twice)."""
        receivers = 0
        subscribers = (self.shard_channels if shard else self.channels).get(channel)
        if subscribers:
            resp2, resp3 = frame(b"smessage" if shard else b"message", channel, message)
            targets = list(subscribers)  # (a sink may end a client that is over its output limit)
            for sub in targets:
                sub.sink(resp2, resp3)
            receivers = len(targets)
        if shard or not self.patterns:
            self.messages += receivers
            return receivers
        for pattern, subscribers in list(self.patterns.items()):
            if not self._matchers[pattern](channel):
                continue
            resp2, resp3 = frame(b"pmessage", pattern, channel, message)
            targets = list(subscribers)
            for sub in targets:
                sub.sink(resp2, resp3)
            receivers += len(targets)
        self.messages += receivers
        return receivers

    # ---- introspection (PUBSUB, INFO) ------------------------------------------------------

    def numsub(self, channel: bytes, *, shard: bool = False) -> int:
        subscribers = (self.shard_channels if shard else self.channels).get(channel)
        return len(subscribers) if subscribers else 0

