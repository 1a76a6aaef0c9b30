"""Per-namespace access rules ([memory] access) against a real daemon, with a peer of another uid.

The test process is root; a forked child drops to uid/gid 65534 (with chosen
supplementary groups) and runs commands through redis-py, so SO_PEERCRED and
SO_PEERGROUPS really report another user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir

NOBODY = 65534
RULES = ('access = [{prefix = "private", write_uids = [1]},\n'
         '          {prefix = "shared", read_uids = [65534], write_gids = [4242]},\n'
         '          {prefix = "shared.inbox", write_uids = [65534]}]\n')


def as_nobody(socket_path: str, groups: list[int], commands: list[list[str]]) -> list[Any]:
    """Run ``commands`` as uid/gid 65534 in a forked child; each reply, or the error's text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out: list[Any] = []
        try:
            os.setgroups(groups)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            client = redis.Redis(unix_socket_path=socket_path, socket_timeout=5, decode_responses=True)
            for cmd in commands:
                try:
                    out.append(client.execute_command(*cmd))
                except redis.ResponseError as exc:
                    out.append(f"error: {exc}")
        except BaseException as exc:  # noqa: BLE001 - report it to the parent
            out.append(f"child failed: {exc!r}")
        finally:
            os.write(w, json.dumps(out).encode())
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    os.chmod(base, 0o755)  # the unprivileged child must reach the socket
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write(f'[server]\nsocket_mode = "0666"\nallow_uids = [{NOBODY}]\n[memory]\n{RULES}')
    d = Daemon(config=conf, base=base).start()
    owner = redis.Redis(unix_socket_path=d.socket)
    for ns in ("private", "shared", "shared.inbox", "open"):
        owner.execute_command("MEM.PUT", ns, "k", json.dumps({"text": f"hello from {ns}"}))
    yield d
    d.cleanup()


def test_rules_govern_by_longest_prefix(daemon: Daemon) -> None:
    got = as_nobody(daemon.socket, [], [
        ["MEM.GET", "private", "k"],
        ["MEM.PUT", "private.sub", "k", "{}"],
        ["MEM.GET", "shared", "k"],
        ["MEM.PUT", "shared", "k", "{}"],
        ["MEM.PUT", "shared.inbox", "k2", "{}"],  # the longer rule lets this uid write here
        ["MEM.DEL", "shared", "k"],
        ["MEM.PUT", "open.x", "k", "{}"],  # no rule covers "open": every admitted peer
        ["MEM.HISTORY", "private", "k"],
    ])
    assert got[0].startswith("error: uid 65534 may not read namespace 'private' (memory.access rule for 'private')")
    assert got[1].startswith("error: uid 65534 may not write namespace 'private.sub'")
    assert json.loads(got[2])["value"] == {"text": "hello from shared"}
    assert got[3].startswith("error: uid 65534 may not write namespace 'shared'")
    assert got[4] == 1 and got[6] == 1
    assert got[5].startswith("error: uid 65534 may not write")
    assert got[7].startswith("error: uid 65534 may not read")


def test_supplementary_group_grants_write(daemon: Daemon) -> None:
    assert as_nobody(daemon.socket, [4242], [["MEM.PUT", "shared", "g", "{}"]]) == [1]


def test_searches_and_listings_skip_what_the_peer_may_not_read(daemon: Daemon) -> None:
    got = as_nobody(daemon.socket, [], [
        ["MEM.SEARCH", "", "QUERY", "hello", "LIMIT", "100"],
        ["MEM.NAMESPACES"],
        ["MEM.SEARCH", "private"],
        ["PING"],
    ])
    assert sorted(json.loads(i)["namespace"] for i in got[0]) == ["open", "shared", "shared.inbox"]
    assert "private" not in got[1] and {"open", "shared", "shared.inbox"} <= set(got[1])
    assert got[2].startswith("error: uid 65534 may not read namespace 'private'")
    assert got[3] is True  # (redis-py turns PONG into True) the connection goes on


def test_the_daemon_owner_is_never_restricted(daemon: Daemon) -> None:
    owner = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
    assert json.loads(owner.execute_command("MEM.GET", "private", "k"))["value"] == {"text": "hello from private"}
    assert "private" in owner.execute_command("MEM.NAMESPACES")
