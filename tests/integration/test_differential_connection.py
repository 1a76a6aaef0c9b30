"""Differential test of the connection and server commands: a real memd daemon against redis-server 7.0.

COMMAND (INFO, DOCS, GETKEYS, GETKEYSANDFLAGS, COUNT, LIST), CLIENT (LIST,
INFO, KILL, REPLY, NO-EVICT, SETNAME...), CONFIG (GET, SET, RESETSTAT),
INFO's fields, AUTH / HELLO AUTH / ACL with and without a password, and the
two WATCH rules (a watched key that expires aborts EXEC; a flush aborts only
the watches of keys that existed), over RESP2 and RESP3, byte for byte where
Redis's reply is deterministic. Where it is not (client ids, ages, the
order of COMMAND's table, which follows Redis's hash seed), each test names
the property it checks instead. Fixtures and the pair of connections are
test_differential_server.py's. redis-server is required: missing, the test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import tempfile
import time
from typing import Any

import pytest
import redis

from tests.integration.daemon import Daemon
from tests.integration.diffkit import redis_server, run_lines
from tests.integration.test_differential_handlers import _random_command, cmd, pack, parse, read_reply
from tests.integration.test_differential_server import (  # noqa: F401  (fixtures)
    Conn,
    Pair,
    memd_socket,
    pair,
    redis_socket,
)

pytestmark = pytest.mark.timeout(120)


def _value(raw: bytes) -> Any:
    """A raw reply as plain nested values (type bytes dropped): RESP2 and RESP3 shapes compare alike."""
    def plain(v: Any) -> Any:
        kind, body = v
        if kind == b":":
            return int(body)
        if kind == b"=":  # verbatim: "txt:" then the text
            return body[4:]
        return [plain(x) for x in body] if isinstance(body, list) else body
    return plain(parse(raw))


def _memd_names(pair: Pair) -> list[str]:
    """Every command and subcommand memd lists (COMMAND LIST)."""
    return [n.decode() for n in _value(pair.memd.call(cmd("COMMAND LIST")))]


def _is_container(raw_info: bytes) -> bool:
    entry = _value(raw_info)[0]
    return isinstance(entry[9], list) and bool(entry[9])


# ---- COMMAND ---------------------------------------------------------------------------------

def test_command_info_and_docs_match_redis(pair: Pair) -> None:
    """COMMAND INFO and DOCS of every command both implement: Redis's bytes (subcommands one by one)."""
    names = _memd_names(pair)
    assert {"get", "set", "mset", "client|list", "command|getkeys", "config|get"} <= set(names)
    compared = 0
    for name in names:
        info = cmd(f"COMMAND INFO {name}")
        expected = pair.redis.call(info)
        if expected in (b"*1\r\n$-1\r\n", b"*1\r\n_\r\n"):  # memd's own (MEM.*, MEMD.*), or Redis 7.2's
            continue
        got = pair.memd.call(info)
        if _is_container(expected):  # subcommands follow Redis's hash order: compared one by one below
            assert _value(got)[0][:9] == _value(expected)[0][:9], name
        else:
            pair._check(info, expected, got, "command info")
            pair._check(cmd(f"COMMAND DOCS {name}"), pair.redis.call(cmd(f"COMMAND DOCS {name}")),
                        pair.memd.call(cmd(f"COMMAND DOCS {name}")), "command docs")
        compared += 1
    assert compared > 60
    for line in ["COMMAND INFO get nosuch CLIENT|LIST", "COMMAND INFO", "COMMAND DOCS nosuch GET",
                 "COMMAND DOCS nosuch", "COMMAND FOO", "COMMAND COUNT x", "COMMAND GETKEYS", "COMMAND HELP",
                 "COMMAND LIST x", "COMMAND LIST FILTERBY x y", "COMMAND LIST FILTERBY MODULE x"]:
        if line in ("COMMAND INFO",):  # the whole table: only the shape
            assert _value(pair.memd.call(cmd(line)))[0][0] in [n.encode() for n in names]
            continue
        pair.run(cmd(line), "command errors")
    pair.assert_clean()


def test_command_count_and_list_are_memds_table(pair: Pair) -> None:
    """COUNT = the top-level names of LIST; every name is Redis's or one of memd's own; filters agree."""
    names = _memd_names(pair)
    top = [n for n in names if "|" not in n]
    assert _value(pair.memd.call(cmd("COMMAND COUNT"))) == len(top) == len(_value(pair.memd.call(cmd("COMMAND"))))
    redis_names = {n.decode() for n in _value(pair.redis.call(cmd("COMMAND LIST")))}
    own = {n for n in names if n not in redis_names}
    assert own <= {n for n in names if n.startswith(("mem.", "memd.")) or n in ("waitaof", "client|setinfo",
                                                                                  "client|no-touch")}, own
    assert "flushall" in names and "geoadd" not in names  # only what memd implements
    for flt in ("FILTERBY PATTERN client*", "FILTERBY PATTERN *get*", "FILTERBY ACLCAT string",
                "FILTERBY ACLCAT KEYSPACE", "FILTERBY ACLCAT nosuch", "FILTERBY MODULE x"):
        want = {n.decode() for n in _value(pair.redis.call(cmd(f"COMMAND LIST {flt}")))} & set(names)
        got = {n.decode() for n in _value(pair.memd.call(cmd(f"COMMAND LIST {flt}")))}
        assert got - own == want, flt


GETKEYS = r"""
GET k
MSET a b c d
MSET a b c
MGET a b c
SET k v
SET k v GET
SET k v EX 10 GET
DEL a b c
EXISTS a
EXPIRE k 10
RENAME a b
ZUNIONSTORE d 2 a b WEIGHTS 1 2
ZUNIONSTORE d 01 a
ZUNIONSTORE d x a
ZUNIONSTORE d 5 a
ZUNIONSTORE d 0 a
ZINTERSTORE d 1 a
ZUNION 2 a b
ZDIFF 1 a
SINTERCARD 2 a b LIMIT 1
SINTERSTORE d a b
LMPOP 2 a b LEFT
ZMPOP 1 a MIN
SORT k
SORT k STORE d
SORT k BY w GET g LIMIT 0 1 STORE d
SORT k STORE
SORT_RO k BY w
LMOVE a b LEFT RIGHT
RPOPLPUSH a b
SMOVE a b m
COPY a b
OBJECT ENCODING k
OBJECT HELP
MEMORY USAGE k
HSET h f v
ZADD z 1 m
XADD s * f v
PING
PING x
CLIENT LIST
NOSUCH a
GET a b
"""


def test_command_getkeys_matches_redis(pair: Pair) -> None:
    """GETKEYS and GETKEYSANDFLAGS for what memd implements (a fixed corpus, then random commands)."""
    names = set(_memd_names(pair))
    lines = [line for line in GETKEYS.strip().splitlines() if line.strip()]
    checked = 0
    for line in lines:
        argv = cmd(line)
        name = argv[0].decode().lower()
        if name not in names and name != "nosuch":
            continue
        for sub in ("GETKEYS", "GETKEYSANDFLAGS"):
            pair.run([b"COMMAND", sub.encode(), *argv], "getkeys corpus")
        checked += 1
    assert checked >= 15  # the corpus names commands other families add: more are checked as they land
    assert _value(pair.memd.call(cmd("COMMAND GETKEYS MSET a b c d"))) == [b"a", b"c"]
    rng = random.Random(4242 + pair.protocol)
    for step in range(300):
        command = _random_command(rng)
        if isinstance(command, tuple):
            continue
        argv = [a.encode("utf-8") for a in command]
        if argv[0].decode().lower() in names:
            pair.run([b"COMMAND", b"GETKEYSANDFLAGS" if step % 2 else b"GETKEYS", *argv], f"getkeys random {step}")
    pair.assert_clean()


# ---- AUTH, HELLO AUTH, ACL without a password ---------------------------------------------------

NO_PASSWORD = r"""
AUTH secret-1
AUTH default anything
AUTH nobody secret-2
AUTH a b c
AUTH
ACL WHOAMI
ACL USERS
ACL LIST
ACL WHOAMI x
ACL NOSUCH
ACL
HELLO 3 AUTH nobody secret-3
HELLO 2 AUTH default
HELLO 4 AUTH default x
MULTI
AUTH default x
ACL WHOAMI
EXEC
"""


def test_auth_without_a_password(pair: Pair) -> None:
    """Redis 7.0 without requirepass: AUTH pass is an error saying so; the default user takes any password."""
    run_lines(pair, NO_PASSWORD, "auth, no password")
    for c in (pair.redis, pair.memd):  # HELLO AUTH succeeds: its server map differs by design, not compared
        reply = c.call(cmd(f"HELLO {pair.protocol} AUTH default whatever"))
        assert reply.startswith(b"%" if pair.protocol == 3 else b"*"), reply
    for line in ("AUTH secret-1", "AUTH nobody secret-2"):
        assert b"secret" not in pair.memd.call(cmd(line))
    pair.assert_clean()


def redis_with(*extra: str) -> contextlib.AbstractContextManager[str]:
    """A redis-server of our own (with options the shared one lacks); its socket path."""
    return redis_server("rconn-", *extra)


def config_daemon(text: str) -> tuple[Daemon, str]:
    """A started daemon reading a memd.toml of its own holding ``text``; the file's path (to rewrite it)."""
    base = tempfile.mkdtemp(prefix="mconn-", dir="/tmp")
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as fh:
        fh.write(text)
    return Daemon(config=config, base=base).start(), config


PASSWORD = "pw-Zq81-not-echoed"
WITH_PASSWORD = rf"""
PING
GET k
NOSUCH a
GET
SET k v
CLIENT LIST
MULTI
HELLO 3
HELLO 3 AUTH default wrong-{PASSWORD}
AUTH wrong-{PASSWORD}
AUTH nobody {PASSWORD}
AUTH default wrong-{PASSWORD}
PING
AUTH {PASSWORD}
PING
SET k v
GET k
ACL WHOAMI
ACL LIST
AUTH wrong-{PASSWORD}
PING
RESET
PING
AUTH default {PASSWORD}
GET k
"""


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_password_is_required_as_requirepass(protocol: int) -> None:
    """[server] password against Redis's requirepass: NOAUTH, WRONGPASS, AUTH, HELLO AUTH, RESET; never echoed."""
    d, _ = config_daemon(f'[server]\npassword = "{PASSWORD}"\n')
    try:
        with redis_with("--requirepass", PASSWORD) as rpath:
            p = Pair(rpath, d.socket, 2)  # HELLO 3 needs AUTH first here: switch after, by HELLO AUTH
            try:
                if protocol == 3:
                    for c in (p.redis, p.memd):
                        assert c.call(cmd(f"HELLO 3 AUTH default {PASSWORD}")).startswith(b"%")
                        assert c.call(cmd("RESET")) == b"+RESET\r\n"  # back to RESP2 and unauthenticated
                    p.protocol = 3
                for line in WITH_PASSWORD.strip().splitlines():
                    p.run(cmd(line), "password")
                for line in WITH_PASSWORD.strip().splitlines():  # the memd side alone: no reply shows it
                    assert PASSWORD.encode() not in p.memd.call(cmd(line)), line
                p.memd.call(cmd(f"AUTH {PASSWORD}"))
                for name in ("requirepass", "server.password", "*pass*"):  # CONFIG GET says set, never what
                    assert PASSWORD.encode() not in p.memd.call(cmd(f"CONFIG GET {name}"))
                refused = p.memd.call(cmd("CONFIG SET requirepass other-value"))  # the TOML file decides
                assert refused.startswith(b"-ERR CONFIG SET failed") and b"server.password" in refused
                assert b"other-value" not in refused
                acl = _value(p.memd.call(cmd("ACL LIST")))[0]
                assert acl == f"user default on #{hashlib.sha256(PASSWORD.encode()).hexdigest()} ~* &* +@all".encode()
                p.assert_clean()
            finally:
                p.close()
        fresh = Conn(d.socket, 2)
        try:
            assert fresh.call(cmd("PING")) == b"-NOAUTH Authentication required.\r\n"
        finally:
            fresh.close()
    finally:
        d.stop()
        log = d.log()
        d.cleanup()
    assert PASSWORD not in log and "wrong-" not in log


def test_a_library_configured_with_a_password() -> None:
    """redis-py with password=... against memd with that password: it connects, works; a wrong one fails."""
    d, _ = config_daemon(f'[server]\npassword = "{PASSWORD}"\n')
    try:
        for protocol in (2, 3):
            r = redis.Redis(unix_socket_path=d.socket, password=PASSWORD, protocol=protocol)
            assert r.set("k", "v") and r.get("k") == b"v"
            r.close()
        with pytest.raises(redis.AuthenticationError) as info:
            redis.Redis(unix_socket_path=d.socket, password="not-" + PASSWORD).ping()
        assert PASSWORD not in str(info.value)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=d.socket).ping()
    finally:
        d.cleanup()


# ---- CLIENT ----------------------------------------------------------------------------------

CLIENT = r"""
CLIENT GETNAME
CLIENT SETNAME conn-a
CLIENT GETNAME
CLIENT SETNAME "bad name"
CLIENT SETNAME
CLIENT GETNAME
CLIENT LIST ID abc
CLIENT LIST ID 1 abc
CLIENT LIST ID 999999
CLIENT LIST TYPE nosuch
CLIENT LIST TYPE master
CLIENT LIST TYPE replica
CLIENT LIST TYPE pubsub
CLIENT LIST nosuch
CLIENT LIST TYPE normal x
CLIENT KILL 1.2.3.4:5
CLIENT KILL ID 0
CLIENT KILL ID -1
CLIENT KILL ID abc
CLIENT KILL ID 999999
CLIENT KILL TYPE nosuch
CLIENT KILL TYPE master
CLIENT KILL USER nobody
CLIENT KILL USER default SKIPME yes ID 999999
CLIENT KILL SKIPME maybe
CLIENT KILL ID
CLIENT KILL ID 1 TYPE
CLIENT KILL NOSUCH x
CLIENT KILL
CLIENT NO-EVICT on
CLIENT NO-EVICT OFF
CLIENT NO-EVICT maybe
CLIENT NO-EVICT
CLIENT REPLY maybe
CLIENT REPLY ON
CLIENT REPLY
CLIENT NOSUCH
CLIENT
MULTI
CLIENT SETNAME in-multi
CLIENT GETNAME
EXEC
"""


def test_client_subcommands(pair: Pair) -> None:
    run_lines(pair, CLIENT, "client")
    pair.assert_clean()


def _fields(line: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.decode().split())


def test_client_list_and_info_fields(pair: Pair) -> None:
    """Redis 7.0's fields in its order (memd adds lib-name, lib-ver); the values that must agree do."""
    for c in (pair.redis, pair.memd):
        c.call(cmd("CLIENT SETNAME lister"))
    for sub in ("INFO", "LIST"):
        lines = {side: _value(c.call(cmd(f"CLIENT {sub}"))) for side, c in (("redis", pair.redis),
                                                                          ("memd", pair.memd))}
        mine = {side: next(_fields(ln) for ln in text.splitlines() if b"name=lister " in ln)
                for side, text in lines.items()}
        redis_keys, memd_keys = list(mine["redis"]), list(mine["memd"])
        assert memd_keys[:len(redis_keys)] == redis_keys and memd_keys[len(redis_keys):] == ["lib-name", "lib-ver"]
        for key in ("name", "flags", "db", "sub", "psub", "ssub", "multi", "events", "user", "redir", "resp"):
            assert mine["memd"][key] == mine["redis"][key], key
        assert mine["memd"]["cmd"] == mine["redis"]["cmd"] == f"client|{sub.lower()}"
        assert mine["memd"]["addr"].endswith(":0") and int(mine["memd"]["age"]) >= 0
    for side in (pair.redis, pair.memd):  # ID filters: exactly the ids asked that exist, in order
        my_id = _value(side.call(cmd("CLIENT ID")))
        text = _value(side.call(cmd(f"CLIENT LIST ID 999999 {my_id} {my_id}")))
        assert [_fields(ln)["id"] for ln in text.splitlines()] == [str(my_id)] * 2
    inside = {}
    for side, c in (("redis", pair.redis), ("memd", pair.memd)):  # CLIENT INFO run by EXEC
        for line in ("MULTI", "PING", "CLIENT INFO"):
            c.call(cmd(line))
        info = _fields(_value(c.call(cmd("EXEC")))[1])
        inside[side] = (info["flags"], info["multi"], info["cmd"])
    assert inside["memd"] == inside["redis"]


def _closed(c: Conn) -> bool:
    """Whether the server closed this connection (a PING gets no reply, only the end of the stream)."""
    try:
        c.sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return c.f.read() == b""
    except (BrokenPipeError, ConnectionResetError):
        return True


@pytest.mark.parametrize("protocol", [2, 3])
def test_client_kill_closes_the_other_connection(redis_socket: str, memd_socket: str, protocol: int) -> None:
    for path in (redis_socket, memd_socket):
        killer, victim = Conn(path, protocol), Conn(path, protocol)
        try:
            victim_id = _value(victim.call(cmd("CLIENT ID")))
            assert killer.call(cmd(f"CLIENT KILL ID {victim_id}")) == b":1\r\n"
            assert _closed(victim)
            assert killer.call(cmd(f"CLIENT KILL ID {victim_id}")) == b":0\r\n"
            me = _value(killer.call(cmd("CLIENT ID")))
            assert killer.call(cmd(f"CLIENT KILL ID {me}")) == b":0\r\n"  # SKIPME yes by default
            assert killer.call(cmd(f"CLIENT KILL ID {me} SKIPME no")) == b":1\r\n"  # the reply, then closed
            assert _closed(killer)
        finally:
            killer.close()
            victim.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_client_reply_off_and_skip(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """The bytes a client receives around CLIENT REPLY OFF / SKIP / ON are Redis's."""
    script = [cmd(line) for line in ("CLIENT REPLY SKIP", "PING a", "PING b", "CLIENT REPLY OFF", "SET rk 1",
                                     "GET rk", "CLIENT REPLY SKIP", "PING c", "CLIENT REPLY ON", "GET rk",
                                     "CLIENT REPLY SKIP", "CLIENT REPLY ON", "PING d", "DEL rk")]
    received = []
    for path in (redis_socket, memd_socket):
        c = Conn(path, protocol)
        try:
            c.sock.sendall(b"".join(pack(a) for a in script) + pack(cmd("PING end")))
            data = b""
            while not data.endswith(b"end\r\n"):
                chunk = c.sock.recv(65536)
                assert chunk
                data += chunk
            received.append(data)
        finally:
            c.close()
    assert received[0] == received[1]


# ---- CONFIG and INFO ------------------------------------------------------------------------

CONFIG = r"""
CONFIG GET maxmemory
CONFIG GET maxmemory-policy
CONFIG GET timeout
CONFIG GET save
CONFIG GET notify-keyspace-events
CONFIG GET lua-time-limit
CONFIG GET busy-reply-threshold
CONFIG GET maxclients
CONFIG GET proto-max-bulk-len
CONFIG GET MAXMEMORY
CONFIG GET maxmemory-p*
CONFIG GET nosuch
CONFIG GET nosuch*
CONFIG GET
CONFIG SET
CONFIG SET maxmemory
CONFIG SET nosuch 1
CONFIG SET timeout 0
CONFIG SET maxmemory 0
CONFIG SET timeout 0 timeout 0
CONFIG SET timeout 0 maxmemory
CONFIG RESETSTAT x
CONFIG NOSUCH
CONFIG
"""


def test_config_get_and_set(pair: Pair) -> None:
    run_lines(pair, CONFIG, "config")
    pair.assert_clean()
    several = [_value(c.call(cmd("CONFIG GET maxmemory timeout maxmemory"))) for c in (pair.redis, pair.memd)]
    assert [sorted(zip(v[::2], v[1::2])) for v in several] == [[(b"maxmemory", b"0"), (b"timeout", b"0")]] * 2
    err = pair.memd.call(cmd("CONFIG SET maxmemory 100mb"))
    assert err.startswith(b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - ") and b"TOML" in err
    assert pair.memd.call(cmd("CONFIG SET appendfsync always")) == b"+OK\r\n"
    assert _value(pair.memd.call(cmd("CONFIG GET appendfsync"))) == [b"appendfsync", b"always"]
    assert pair.memd.call(cmd("CONFIG SET appendfsync everysec")) == b"+OK\r\n"
    assert _value(pair.memd.call(cmd("CONFIG GET storage.fsync"))) == [b"storage.fsync", b"everysec"]


def _info(c: Conn, section: str = "") -> dict[str, str]:
    text = _value(c.call(cmd(f"INFO {section}".strip())))
    return dict(ln.split(":", 1) for ln in text.decode().splitlines() if ln and not ln.startswith("#"))


LIBRARY_FIELDS = ("redis_version", "redis_mode", "os", "arch_bits", "process_id", "run_id", "tcp_port",
                  "uptime_in_seconds", "uptime_in_days", "connected_clients", "blocked_clients", "maxclients",
                  "used_memory", "used_memory_human", "used_memory_peak", "maxmemory", "maxmemory_policy",
                  "mem_allocator", "loading", "total_connections_received", "total_commands_processed",
                  "expired_keys", "evicted_keys", "keyspace_hits", "keyspace_misses", "role", "connected_slaves",
                  "cluster_enabled")


def test_info_has_the_fields_libraries_read(pair: Pair) -> None:
    redis_info, memd_info = _info(pair.redis), _info(pair.memd)
    for name in LIBRARY_FIELDS:
        assert name in redis_info and name in memd_info, name
    for name in ("redis_mode", "arch_bits", "tcp_port", "maxmemory", "maxmemory_policy", "role", "cluster_enabled"):
        assert memd_info[name] == redis_info[name], name
    assert memd_info["os"].split()[0] == redis_info["os"].split()[0] and len(memd_info["run_id"]) == 40
    assert _info(pair.memd, "replication")["role"] == "master"


def test_config_resetstat_resets_what_info_reports(pair: Pair) -> None:
    """Errors and commands counted, then CONFIG RESETSTAT: both servers start counting again from zero."""
    for c in (pair.redis, pair.memd):
        for _ in range(3):
            c.call(cmd("NOSUCH"))
            c.call(cmd("GET"))
        before = _info(c)
        assert int(before["total_commands_processed"]) > 0 and int(before["total_error_replies"]) >= 3
        assert "errorstat_ERR" in _info(c, "errorstats")
        assert c.call(cmd("CONFIG RESETSTAT")) == b"+OK\r\n"
        after = _info(c)
        assert int(after["total_commands_processed"]) <= 1 and after["total_error_replies"] == "0"
        assert int(after["total_connections_received"]) == 0
        assert _info(c, "errorstats") == {}


# ---- WATCH: expiry and flushes -------------------------------------------------------------------

def _exec(c: Conn) -> bytes:
    assert c.call(cmd("MULTI")) == b"+OK\r\n"
    assert c.call(cmd("SET wx 1")) == b"+QUEUED\r\n"
    return c.call(cmd("EXEC"))


@pytest.mark.parametrize("protocol", [2, 3])
def test_watch_expiry_and_flush_rules(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """Both servers decide alike: expiry aborts, a flush aborts only the watch of a key that existed."""
    outcomes: list[list[bytes]] = []
    for path in (redis_socket, memd_socket):
        a, b = Conn(path, protocol), Conn(path, protocol)
        seen: list[bytes] = []
        try:
            b.call(cmd("FLUSHALL"))
            a.call(cmd("SET wk v PX 150"))
            a.call(cmd("WATCH wk"))
            time.sleep(0.3)  # nobody touches it: it expires
            seen.append(_exec(a))
            for flush in ("FLUSHALL", "FLUSHDB"):
                a.call(cmd("SET other 1"))
                a.call(cmd("WATCH missing"))
                b.call(cmd(flush))
                seen.append(_exec(a))
                a.call(cmd("SET wk 1"))
                a.call(cmd("WATCH wk"))
                b.call(cmd(flush))
                seen.append(_exec(a))
            a.call(cmd("WATCH created"))
            b.call(cmd("SET created 1"))
            b.call(cmd("FLUSHALL"))
            seen.append(_exec(a))
            a.call(cmd("SET wk v PX 5000"))
            a.call(cmd("WATCH wk"))
            seen.append(_exec(a))
        finally:
            a.close()
            b.close()
        outcomes.append(seen)
    null = b"_\r\n" if protocol == 3 else b"*-1\r\n"
    ok = b"*1\r\n+OK\r\n"
    assert outcomes[0] == outcomes[1] == [null, ok, null, ok, null, null, ok]


def test_the_password_reloads_for_new_connections() -> None:
    """[server] password is live: after a reload new connections must AUTH; one already open keeps working."""
    d, config = config_daemon("")
    try:
        before = redis.Redis(unix_socket_path=d.socket)
        assert before.set("k", "v")
        reloads = int(before.info("server")["memd_config_reloads"])
        with open(config, "w") as fh:
            fh.write(f'[server]\npassword = "{PASSWORD}"\n')
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while int(before.info("server")["memd_config_reloads"]) <= reloads:
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.05)
        assert before.get("k") == b"v"  # connected before the password: still in
        before.close()
        anonymous = redis.Redis(unix_socket_path=d.socket)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("k")
        anonymous.close()
        authed = redis.Redis(unix_socket_path=d.socket, password=PASSWORD)
        assert authed.get("k") == b"v"
        authed.close()
        raw = Conn(d.socket, 2)
        assert raw.call(cmd("CONFIG GET requirepass")) == b"-NOAUTH Authentication required.\r\n"
        raw.close()
    finally:
        d.stop()
        log = d.log()
        d.cleanup()
    assert PASSWORD not in log


@pytest.mark.parametrize("protocol", [2, 3])
def test_client_pause(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """CLIENT PAUSE WRITE holds writes, not reads; ALL holds everything; UNPAUSE and the timeout release them."""
    for path in (redis_socket, memd_socket):
        pauser, other = Conn(path, protocol), Conn(path, protocol)
        try:
            for line in ("CLIENT PAUSE 10 x", "CLIENT PAUSE -1", "CLIENT PAUSE abc", "CLIENT PAUSE 1 ALL x"):
                assert pauser.call(cmd(line)).startswith(b"-ERR "), line
            assert pauser.call(cmd("CLIENT PAUSE 5000 WRITE")) == b"+OK\r\n"
            assert other.call(cmd("GET pk")) in (b"$-1\r\n", b"_\r\n")  # reads go on
            t0 = time.monotonic()
            other.sock.sendall(pack(cmd("SET pk 1")))
            time.sleep(0.3)
            assert pauser.call(cmd("CLIENT UNPAUSE")) == b"+OK\r\n"
            assert read_reply(other.f) == b"+OK\r\n" and 0.25 < time.monotonic() - t0 < 4
            assert pauser.call(cmd("CLIENT PAUSE 400 ALL")) == b"+OK\r\n"
            t0 = time.monotonic()
            assert other.call(cmd("GET pk")) == b"$1\r\n1\r\n"  # held until the pause runs out
            assert 0.3 < time.monotonic() - t0 < 4
            assert other.call(cmd("DEL pk")) == b":1\r\n"
        finally:
            pauser.call(cmd("CLIENT UNPAUSE"))
            pauser.close()
            other.close()
