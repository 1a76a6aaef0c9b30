"""COMMAND's table: Redis 7.0's generated metadata, cut to what memd implements, and key positions.

Byte-for-byte agreement with redis-server is test_differential_connection.py's;
here the table's own rules are pinned: only registered commands appear, a
command registered later appears at once, memd's own commands have entries,
and GETKEYS follows the key specs (ranges, steps, numkeys, keywords) and
Redis's fallbacks.
"""

from __future__ import annotations

import json

import pytest

from memd.commands import COMMANDS, command, load_all
from memd.commands import commandtable as ct
from memd.errors import CommandError

load_all()


def keys(line: str) -> list[bytes]:
    return [k for k, _ in ct.get_keys(line.encode().split())]


def test_the_generated_file_is_redis_7_0() -> None:
    with open(ct.DATA_FILE) as fh:
        data = json.load(fh)
    assert data["redis_version"].startswith("7.0.")
    assert {"get", "set", "client", "command", "zunionstore"} <= set(data["commands"])


def test_only_registered_commands_and_declared_subcommands_appear() -> None:
    table = ct.table()
    assert set(table) == {k.decode() for k in COMMANDS}
    assert "client|list" in table["client"].subcommands and "client|tracking" not in table["client"].subcommands
    assert table["get"].arity == 2 and "readonly" in table["get"].flags
    assert table["mem.put"].docs["group"] == "generic" and table["memd.flush"].info[2] == ["admin", "noscript"]


def test_a_command_registered_later_gets_its_metadata() -> None:
    name = b"getrange"
    saved = COMMANDS.pop(name, None)
    try:
        assert "getrange" not in ct.table()
        command("getrange", 4)(lambda ctx, args: b"")
        meta = ct.table()["getrange"]
        assert meta.arity == 4 and meta.docs["summary"].startswith("Get a substring")
    finally:
        COMMANDS.pop(name, None)
        if saved is not None:
            COMMANDS[name] = saved


def positions(line: str) -> list[int]:
    """Key positions by Redis's metadata, whether or not memd implements the command yet."""
    argv = line.encode().split()
    raw = ct._redis_table()[argv[0].decode().lower()]
    meta = ct._from_redis(ct._value(raw["info"]), ct._value(raw["docs"]))
    return [pos for pos, _ in ct._find_keys(meta, argv)]


def test_key_positions_follow_the_specs() -> None:
    assert keys("MSET a b c d") == [b"a", b"c"]
    assert keys("GET k") == [b"k"]
    assert keys("DEL a b c") == [b"a", b"b", b"c"]
    assert ct.key_positions([b"MSET", b"a", b"b"]) == [1] and ct.key_positions([b"PING"]) == []
    assert positions("ZUNIONSTORE d 2 a b WEIGHTS 1 2") == [1, 3, 4]
    assert positions("ZUNIONSTORE d 01 a") == [3, 1]  # the spec refuses "01": ZUNIONSTORE's own finder, dest last
    assert positions("EVAL s 2 k1 k2 a") == [3, 4]
    assert positions("SORT k BY w STORE d") == [1, 5]  # 'unknown' specs: SORT's own finder
    assert positions("XREAD COUNT 2 STREAMS a b 0 0") == [4, 5]


def test_getkeys_errors_and_flags() -> None:
    with pytest.raises(CommandError, match="Invalid command specified"):
        keys("NOSUCH a")
    with pytest.raises(CommandError, match="The command has no key arguments"):
        keys("PING a")
    with pytest.raises(CommandError, match="Invalid number of arguments specified for command"):
        keys("GET a b")
    flags = dict(ct.get_keys([b"SET", b"k", b"v", b"GET"]))
    assert flags[b"k"] == ["RW", "access", "update"]
    assert dict(ct.get_keys([b"SET", b"k", b"v"]))[b"k"] == ["OW", "update"]
