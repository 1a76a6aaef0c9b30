"""What the command handlers may ask of the RESP server that runs them.

Handlers see the server through :attr:`memd.commands.Context.server`
(None in unit tests, which run handlers without a socket). The commands
sit below the server in the import layers (``pyproject.toml``), so they
cannot import :class:`memd.server.Server`; this protocol names, instead,
every attribute and method they read, and the server satisfies it
structurally. Every member is read-only here: handlers read them, only the
server and the daemon set them. The daemon fills in the parts only it knows (``config_view``,
``namespace_rules``, ``maintenance``, ``info_providers``,
``shutdown_requested``) after it builds the server; until then they hold
empty defaults, never missing attributes.

``tests/unit/test_serverview.py`` checks a real server against it, so an
attribute renamed on one side fails a test instead of silently reading a
default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from memd.commands import Context
    from memd.config import NamespaceRule
    from memd.pubsub import PubSub

__all__ = ["ClientLimits", "InfoProvider", "JobRunner", "ServerView"]

InfoProvider = tuple[str, Callable[[], dict[str, Any]]]  # (INFO section, its extra fields)


class ClientLimits(Protocol):
    """The connection limits INFO reports, and the string size limit (Redis's proto-max-bulk-len)."""

    @property
    def max_clients(self) -> int: ...

    @property
    def max_bulk_bytes(self) -> int: ...


class JobRunner(Protocol):
    """The maintenance scheduler, as MEMD.COMPACT and MEMD.BACKUP use it."""

    @property
    def jobs(self) -> Mapping[str, object]: ...

    async def run_now(self, name: str) -> Any:
        """Run job ``name`` now (or join the run in progress) and return its result."""


@runtime_checkable
class ServerView(Protocol):
    """The server as the handlers see it (INFO, CLIENT LIST, CONFIG GET, SHUTDOWN, MEMD.*)."""

    @property
    def socket_path(self) -> str: ...

    @property
    def stats_connections(self) -> int:
        """Connections accepted since the start."""

    @property
    def stats_commands(self) -> int:
        """Commands processed since the start."""

    @property
    def stats_writes(self) -> int:
        """Write commands that logged a WAL record."""

    @property
    def stats_output_limit_disconnects(self) -> int:
        """Subscribers disconnected at their pub/sub output-buffer limit."""

    @property
    def stats_errors(self) -> Mapping[str, int]:
        """Error replies by RESP prefix (INFO errorstats)."""

    @property
    def shutdown_requested(self) -> asyncio.Event | None:
        """SHUTDOWN sets it; None: no shutdown is wired in this process."""

    @property
    def config_view(self) -> Callable[[], Mapping[str, str]]:
        """CONFIG GET's settings."""

    @property
    def namespace_rules(self) -> Sequence[NamespaceRule]:
        """The [memory] access rules MEM.* checks."""

    @property
    def maintenance(self) -> JobRunner | None:
        """None: no maintenance scheduler in this process."""

    @property
    def info_providers(self) -> Sequence[InfoProvider]:
        """Extra INFO fields by section (maintenance, watchdog, reload)."""

    @property
    def connections(self) -> Collection[object]: ...

    @property
    def limits(self) -> ClientLimits: ...

    @property
    def pubsub(self) -> PubSub:
        """The pub/sub registry: channels, patterns and their subscribers (PUBLISH fans out through it)."""

    def contexts(self) -> list[Context]:
        """Every open connection's context (CLIENT LIST)."""

    @property
    def password(self) -> str:
        """``[server] password`` ("" = none): AUTH checks it; the daemon sets it (and on reload)."""

    # a script running in its thread (memd.commands.scripting.Running, None: none): the server holds or
    # answers -BUSY to every other command meanwhile; and the time before -BUSY (lua-time-limit)
    script: Any
    lua_time_limit_ms: int

    @property
    def blocked_clients(self) -> int:
        """Clients parked by a blocking command (INFO blocked_clients)."""

    def unblock_client(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: wake that client (timeout reply, or -UNBLOCKED with ``error``) if parked."""

    def kill_client(self, ctx: Context) -> None:
        """Close the connection whose context is ``ctx`` (CLIENT KILL)."""

    def pause(self, milliseconds: int, all_commands: bool) -> None:
        """CLIENT PAUSE: hold every client's commands (``all_commands``) or writes for that long."""

    def unpause(self) -> None:
        """CLIENT UNPAUSE: end a pause now."""

    def reset_stats(self) -> None:
        """Zero the counters INFO's stats and errorstats report (CONFIG RESETSTAT)."""
