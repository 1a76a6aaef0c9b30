"""memd.client against a real daemon: socket discovery, typed helpers, WAITAOF, MEMD.FLUSH."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from memd.client import Client, SyncClient
from tests.integration.daemon import Daemon

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="no").start()
    yield d
    d.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_sync_client_finds_socket_from_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMD_SOCKET", daemon.socket)
    with SyncClient() as c:
        assert c.set("a", "1") and c.get("a") == b"1"
        before = c.memd_stats()
        assert before["memd_fsync_policy"] == "no" and before["memd_last_lsn"] >= 1
        assert c.wait_durable(5000) is True  # fsync=no, yet WAITAOF fsyncs on demand
        after = c.memd_stats()
        assert after["memd_synced_lsn"] >= before["memd_last_lsn"]
        c.memd_flush()
        assert c.memd_stats()["memd_flushed_lsn"] >= before["memd_last_lsn"]


@pytest.mark.anyio
async def test_async_client(daemon: Daemon) -> None:
    c = Client(daemon.socket, protocol=3)
    try:
        with anyio.fail_after(20):
            assert await c.rpush("l", "x", "y") == 2
            assert await c.wait_durable(5000) is True
            await c.memd_flush()
            stats = await c.memd_stats()
            assert stats["memd_buffer_keys"] == 0
            assert await c.lrange("l", 0, -1) == [b"x", b"y"]
    finally:
        await c.aclose()
