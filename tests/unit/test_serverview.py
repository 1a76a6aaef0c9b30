"""The server satisfies the protocol the command handlers see it through.

Handlers read the server only through :class:`memd.commands.serverview.ServerView`
(they cannot import :mod:`memd.server`: it sits above them in the layers). If
the server renamed or dropped one of those attributes, the handlers would
fail only when that command ran; this checks a real server, before and after
the daemon wires its parts in, and that INFO reads the figures through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memd.commands import Context
from memd.commands.serverview import ServerView
from memd.commands.server import info_sections
from memd.engine.engine import Engine
from memd.server import Server

pytestmark = pytest.mark.anyio


async def test_a_real_server_is_a_server_view(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "data")) as engine:
        server = Server(engine, os.path.join(tmp_path, "unused.sock"))
        assert isinstance(server, ServerView)
        members = [name for name in vars(ServerView) if not name.startswith("_")]
        assert len(members) >= 13, members  # every property and method of the protocol
        missing = [name for name in members if not hasattr(server, name)]
        assert not missing, missing
        assert server.maintenance is None and server.shutdown_requested is None  # the daemon sets them

        server.stats_errors["WRONGTYPE"] = 2
        server.stats_commands = 7
        server.info_providers.append(("maintenance", lambda: {"compact_running": 0}))
        sections = info_sections(Context(engine=engine, server=server), keyspace=False)
        assert sections["stats"]["total_commands_processed"] == 7
        assert sections["stats"]["total_error_replies"] == 2
        assert sections["errorstats"] == {"errorstat_WRONGTYPE": "count=2"}
        assert sections["maintenance"] == {"compact_running": 0}
        assert sections["server"]["unix_socket"] == server.socket_path
        assert sections["clients"]["maxclients"] == server.limits.max_clients

        server.reset_stats()  # CONFIG RESETSTAT
        sections = info_sections(Context(engine=engine, server=server), keyspace=False)
        assert sections["stats"]["total_commands_processed"] == 0
        assert sections["stats"]["total_error_replies"] == 0 and sections["errorstats"] == {}


async def test_handlers_run_without_a_server(tmp_path: Path) -> None:
    """Unit tests run handlers with ``server=None``: INFO still answers, with neutral figures."""
    async with Engine(str(tmp_path / "data")) as engine:
        sections = info_sections(Context(engine=engine), keyspace=False)
        assert sections["stats"]["total_commands_processed"] == 0
        assert sections["clients"] == {"connected_clients": 1, "blocked_clients": 0, "maxclients": 0}
        assert sections["errorstats"] == {}
