"""The real daemon, as a process, used by real clients: redis-py (RESP2 and RESP3) and redis-cli."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="everysec").start()
    yield d
    d.cleanup()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[redis.Redis]:
    r = redis.Redis(unix_socket_path=daemon.socket, protocol=request.param, socket_timeout=10)
    r.flushdb()
    yield r
    r.close()


def raw(sock_path: str, payload: bytes, *, read_until_close: bool = False, timeout: float = 5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if not read_until_close:
                break
        return b"".join(chunks)
    finally:
        s.close()


def as_nobody(sock_path: str, groups: list[int], send: bytes) -> bytes:
    """Connect as uid/gid 65534 with these supplementary groups (forked child); return what was read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(groups)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(sock_path)
            if send:
                s.sendall(send)
            os.write(w, s.recv(400)[:200])
        except BaseException as exc:  # noqa: BLE001 - report it to the parent
            os.write(w, repr(exc).encode()[:200])
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 400)
    os.close(r)
    os.waitpid(pid, 0)
    return got


def test_socket_file_is_0660(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660


def test_basic_types_roundtrip(client: redis.Redis) -> None:
    assert client.ping() is True
    assert client.set("s", "v") is True
    assert client.get("s") == b"v"
    assert client.incr("n") == 1 and client.incrby("n", 41) == 42
    assert client.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert client.rpush("l", "x", "y") == 2 and client.lpush("l", "w") == 3
    assert client.lrange("l", 0, -1) == [b"w", b"x", b"y"]
    assert client.sadd("set", "a", "b", "a") == 2
    assert client.smembers("set") == {b"a", b"b"}
    assert client.zadd("z", {"m1": 1.5, "m2": 0.5}) == 2
    # (redis-py gives pairs as tuples over RESP2 and as lists over RESP3, against Redis too)
    assert [tuple(p) for p in client.zrange("z", 0, -1, withscores=True)] == [(b"m2", 0.5), (b"m1", 1.5)]
    assert client.expire("s", 100) is True and 0 < client.ttl("s") <= 100
    assert client.dbsize() == 6
    assert client.type("h") == b"hash"


def test_info_persistence_fields(client: redis.Redis) -> None:
    info = client.info("persistence")
    for field in ("memd_fsync_policy", "memd_last_lsn", "memd_flushed_lsn", "memd_buffer_keys",
                  "memd_buffer_bytes", "memd_wal_bytes", "memd_wal_segments", "memd_last_flush_ms"):
        assert field in info, field
    assert info["memd_fsync_policy"] == "everysec"


def test_pipeline_replies_in_order(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"k{i}", i)
        pipe.get(f"k{i}")
    out = pipe.execute()
    assert out[1::2] == [str(i).encode() for i in range(2000)]


def test_transaction_and_watch(client: redis.Redis, daemon: Daemon) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.set("a", 1).incr("a").get("a")
    assert pipe.execute() == [True, 2, b"2"]
    other = redis.Redis(unix_socket_path=daemon.socket)
    with client.pipeline() as p:
        p.watch("a")
        other.set("a", 100)  # a conflicting write between WATCH and EXEC
        p.multi()
        p.incr("a")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert client.get("a") == b"100"
    other.close()


def test_redis_cli_works(daemon: Daemon) -> None:
    cli = shutil.which("redis-cli")
    assert cli, "redis-cli is missing: apt-get install redis-tools (.ci/run does)"
    run = lambda *a: subprocess.run([cli, "-s", daemon.socket, *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=10)
    assert run("PING").stdout.strip() == "PONG"
    assert run("SET", "cli-key", "hello").stdout.strip() == "OK"
    assert run("GET", "cli-key").stdout.strip() == "hello"
    assert run("-3", "HGETALL", "nope").returncode == 0


def test_inline_commands(daemon: Daemon) -> None:
    assert raw(daemon.socket, b"PING\r\n") == b"+PONG\r\n"


def test_unknown_command_and_arity(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        client.execute_command("NOPE", "a")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        client.execute_command("GET")
    assert client.ping()


def test_garbage_closes_only_that_connection(daemon: Daemon) -> None:
    other = redis.Redis(unix_socket_path=daemon.socket)
    assert other.ping()
    reply = raw(daemon.socket, b"*2\r\n$3\r\nGET\r\n:x\r\n", read_until_close=True)
    assert reply.startswith(b"-ERR Protocol error"), reply
    assert other.ping()
    other.close()


def test_huge_declared_bulk_is_refused_at_once(daemon: Daemon) -> None:
    t0 = time.monotonic()
    reply = raw(daemon.socket, b"*2\r\n$3\r\nGET\r\n$1000000000\r\n", read_until_close=True)
    assert reply.startswith(b"-ERR Protocol error: invalid bulk length"), reply
    assert time.monotonic() - t0 < 5


def test_many_arguments(client: redis.Redis) -> None:
    args = [f"f{i}" for i in range(100_000)]
    assert client.execute_command("DEL", *args) == 0


def test_binary_keys(client: redis.Redis) -> None:
    key = b"\xff\x00\r\nkey"
    assert client.set(key, b"\x00\xfe") is True
    assert client.get(key) == b"\x00\xfe"


def test_500_concurrent_connections(daemon: Daemon) -> None:
    socks = []
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(daemon.socket)
            socks.append(s)
        for s in socks:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
        for s in socks:
            assert s.recv(16) == b"+PONG\r\n"
    finally:
        for s in socks:
            s.close()


def test_second_daemon_on_same_socket_refuses(daemon: Daemon) -> None:
    second = Daemon(fsync="everysec", base=short_tmpdir())
    second.socket = daemon.socket
    second.args[second.args.index("--socket") + 1] = daemon.socket
    proc = subprocess.run(second.args, capture_output=True, text=True, timeout=30, cwd=os.getcwd())
    assert proc.returncode != 0
    assert "already" in proc.stderr
    shutil.rmtree(second.base, ignore_errors=True)
    assert redis.Redis(unix_socket_path=daemon.socket).ping()


def test_peer_not_allowed_gets_noperm() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root to connect as another uid (CI runs as root)")
    base = short_tmpdir()
    os.chmod(base, 0o755)
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write('[server]\nsocket_mode = "0666"\n')
    d = Daemon(config=conf, base=base).start()
    try:
        got = as_nobody(d.socket, groups=[], send=b"")  # the server speaks first: -NOPERM, then closes
        assert got.startswith(b"-NOPERM"), got
    finally:
        d.cleanup()


def test_sigterm_under_load_loses_nothing_acknowledged() -> None:
    d = Daemon(fsync="everysec").start()
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
        i = 0
        try:
            while not stop.is_set():
                r.set(f"load:{i}", i)
                acked.append(i)
                i += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.stop(signal.SIGTERM) == 0, d.log()
        stop.set()
        t.join(10)
        assert not os.path.exists(d.socket), "the socket file must be removed on exit"
        d.start()
        r = redis.Redis(unix_socket_path=d.socket)
        values = r.mget([f"load:{i}" for i in acked])
        missing = [i for i, v in zip(acked, values) if v != str(i).encode()]
        assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:5]}"
        assert d.stop() == 0
    finally:
        stop.set()
        d.cleanup()


def test_memd_info_cli(daemon: Daemon) -> None:
    import sys

    run = subprocess.run([sys.executable, "-m", "memd", "info", "--socket", daemon.socket, "persistence"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "memd_fsync_policy:everysec" in run.stdout and "# Persistence" in run.stdout
    missing = subprocess.run([sys.executable, "-m", "memd", "info", "--socket", daemon.socket + ".none"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no daemon answers on" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_second_sigterm_during_shutdown_only_logs() -> None:
    base = short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:  # keep everything in the buffer so the final flush has real work
        f.write('[flush]\nmax_records = 10000000\nmax_bytes = "1GiB"\nmax_age_seconds = 3600\n'
                '[backpressure]\nbuffer_max_bytes = "2GiB"\n')
    d = Daemon(config=conf, base=base).start()
    try:
        r = redis.Redis(unix_socket_path=d.socket)
        pipe = r.pipeline(transaction=False)
        for i in range(100_000):
            pipe.set(f"k{i}", "v" * 100)
        pipe.execute()
        r.close()
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while "shutdown_begin" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.01)
        d.proc.send_signal(signal.SIGTERM)  # during the final flush
        assert d.stop(timeout=60) == 0, d.log()
        assert "signal_ignored" in d.log()
        d.start()
        r = redis.Redis(unix_socket_path=d.socket)
        assert r.dbsize() == 100_000 and r.get("k99999") == b"v" * 100
        assert "replayed=0" in d.log(), "the final flush put everything in SQLite"
        r.close()
    finally:
        d.cleanup()


def test_stale_socket_file_is_replaced() -> None:
    base = short_tmpdir()
    path = os.path.join(base, "memd.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on, as a crashed daemon leaves it
    stale.close()
    d = Daemon(base=base).start()
    try:
        assert redis.Redis(unix_socket_path=d.socket).ping()
    finally:
        d.cleanup()


def test_supplementary_group_member_is_served() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root to connect as another uid (CI runs as root)")
    base = short_tmpdir()
    os.chmod(base, 0o755)
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:  # like an agent in group "memd" under systemd: allowed by a supplementary gid
        f.write('[server]\nsocket_mode = "0666"\nallow_gids = [54321]\n')
    d = Daemon(config=conf, base=base).start()
    try:
        got = as_nobody(d.socket, groups=[54321], send=b"PING\r\n")
        assert got == b"+PONG\r\n", got
    finally:
        d.cleanup()


def test_shutdown_command_flushes_and_exits() -> None:
    d = Daemon().start()
    try:
        r = redis.Redis(unix_socket_path=d.socket)
        r.set("persisted", "yes")
        r.shutdown()  # redis-py raises if the server answered instead of closing the connection
        assert d.proc is not None and d.proc.wait(30) == 0
        assert not os.path.exists(d.socket)
        assert "flush_done" in d.log()
        d.start()
        assert redis.Redis(unix_socket_path=d.socket).get("persisted") == b"yes"
    finally:
        d.cleanup()
