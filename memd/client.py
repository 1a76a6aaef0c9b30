"""Python clients for memd, on top of redis-py.

``SyncClient`` and ``Client`` (asyncio) are ``redis.Redis`` subclasses, so
every Redis command works as usual; they find the daemon's socket the way
the daemon picks it (``$MEMD_SOCKET``, ``/run/memd/memd.sock`` if it exists,
then the per-user default) and add typed helpers for memd's own commands.
The ``MEM.*`` helpers arrive with the agent-memory commands.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from memd.config import client_socket_path


def _stats(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        items = raw.items()
    else:  # RESP2: a flat list of field, value
        items = zip(raw[::2], raw[1::2], strict=True)
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in items}


class SyncClient(redis.Redis):
    """A blocking client: ``SyncClient().set("k", "v")``, ``.memd_stats()``."""

    def __init__(self, socket_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(unix_socket_path=socket_path or client_socket_path(), **kwargs)

    def memd_stats(self) -> dict[str, Any]:
        """Every INFO figure in one map (buffer, WAL, LSNs, flush and fsync timings...)."""
        return _stats(self.execute_command("MEMD.STATS"))

    def memd_flush(self) -> None:
        """Flush the write buffer to SQLite now; returns when it is committed."""
        self.execute_command("MEMD.FLUSH")

    def wait_durable(self, timeout_ms: int = 0) -> bool:
        """WAITAOF 1 0: True once every earlier write of this connection is fsynced."""
        local, _ = self.execute_command("WAITAOF", 1, 0, timeout_ms)
        return bool(local)


class Client(redis.asyncio.Redis):
    """The asyncio twin of :class:`SyncClient`: ``await Client().set("k", "v")``."""

    def __init__(self, socket_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(unix_socket_path=socket_path or client_socket_path(), **kwargs)

    async def memd_stats(self) -> dict[str, Any]:
        return _stats(await self.execute_command("MEMD.STATS"))

    async def memd_flush(self) -> None:
        await self.execute_command("MEMD.FLUSH")

    async def wait_durable(self, timeout_ms: int = 0) -> bool:
        local, _ = await self.execute_command("WAITAOF", 1, 0, timeout_ms)
        return bool(local)
