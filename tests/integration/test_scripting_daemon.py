"""Scripts in a real daemon: -BUSY past lua-time-limit and SCRIPT KILL, durability across a crash,
and redis-py's Lock (which acquires, extends, reacquires and releases through Lua).

The time limit comes from the daemon's TOML config ([server] lua_time_limit_ms) and from CONFIG SET.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon
from tests.integration.test_differential_handlers import pack, read_reply

pytestmark = pytest.mark.timeout(90)

BUSY = b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
LOOP = b"local i = 0 while true do i = i + 1 end"


@pytest.fixture
def daemon(tmp_path: object) -> Iterator[Daemon]:
    d = Daemon(fsync="always")
    config = os.path.join(d.base, "memd.toml")
    with open(config, "w") as f:
        f.write("[server]\nlua_time_limit_ms = 300\n")
    d.args += ["--config", config]
    d.start()
    try:
        yield d
    finally:
        for conn in OPEN:
            conn.close()
        OPEN.clear()
        d.cleanup()


OPEN: list[Raw] = []  # closed by the fixture, also when a test fails half-way


class Raw:
    def __init__(self, path: str) -> None:
        OPEN.append(self)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")

    def send(self, *args: bytes) -> None:
        self.sock.sendall(pack(list(args)))

    def reply(self) -> bytes:
        return read_reply(self.f)

    def call(self, *args: bytes) -> bytes:
        self.send(*args)
        return self.reply()

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def test_busy_then_script_kill(daemon: Daemon) -> None:
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    assert other.call(b"CONFIG", b"GET", b"lua-time-limit") == b"*2\r\n$14\r\nlua-time-limit\r\n$3\r\n300\r\n"
    assert other.call(b"SET", b"k", b"v") == b"+OK\r\n"
    t0 = time.monotonic()
    runner.send(b"EVAL", LOOP, b"0")
    time.sleep(0.05)
    other.send(b"GET", b"k")  # before the limit: held, then answered -BUSY once the limit passes
    assert other.reply() == BUSY
    assert time.monotonic() - t0 >= 0.28
    assert other.call(b"PING") == BUSY
    assert other.call(b"SCRIPT", b"KILL") == b"+OK\r\n"
    killed = runner.reply()
    assert killed.startswith(b"-ERR Script killed by user with SCRIPT KILL... script: "), killed
    assert killed.endswith(b", on @user_script:1.\r\n"), killed
    assert other.call(b"GET", b"k") == b"$1\r\nv\r\n"
    assert other.call(b"SCRIPT", b"KILL") == b"-NOTBUSY No scripts in execution right now.\r\n"
    assert runner.call(b"PING") == b"+PONG\r\n"
    runner.close()
    other.close()


def test_held_command_sees_the_whole_script(daemon: Daemon) -> None:
    """A command arriving while a script (shorter than the limit) runs waits for it, and sees all of it."""
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    script = (b"redis.call('set', 'a', '1') local t = redis.call('time') local i = 0 "
              b"while i < 3000000 do i = i + 1 end redis.call('set', 'b', '2') return i")
    assert other.call(b"CONFIG", b"SET", b"lua-time-limit", b"20000") == b"+OK\r\n"
    runner.send(b"EVAL", script, b"0")
    wait_log(daemon, "script_to_worker", 1)  # it runs (and has passed its budget on the loop)
    assert other.call(b"MGET", b"a", b"b") == b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    assert runner.reply() == b":3000000\r\n"
    runner.close()
    other.close()


def wait_log(daemon: Daemon, text: str, count: int) -> None:
    """Until the daemon's log holds ``text`` ``count`` times (what it logs is flushed line by line)."""
    deadline = time.monotonic() + 20
    while daemon.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.002)


def wait_busy(conn: Raw) -> None:
    """Until the server answers -BUSY (a PING sent before the limit is held, then answered -BUSY)."""
    deadline = time.monotonic() + 20
    while conn.call(b"PING") != BUSY:
        assert time.monotonic() < deadline, "the script never passed its limit"
        time.sleep(0.005)


def test_script_that_wrote_is_unkillable(daemon: Daemon) -> None:
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    assert other.call(b"CONFIG", b"SET", b"lua-time-limit", b"100") == b"+OK\r\n"
    # it writes first: whenever SCRIPT KILL gets through (once the limit passed), the script has written
    runner.send(b"EVAL", b"redis.call('set', 'w', '1') local i = 0 while i < 30000000 do i = i + 1 end "
                b"return redis.call('get', 'w')", b"0")
    wait_busy(other)
    assert other.call(b"SCRIPT", b"KILL") == (
        b"-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either "
        b"wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n")
    assert other.call(b"INCR", b"w") == BUSY
    assert runner.reply() == b"$1\r\n1\r\n"
    assert other.call(b"GET", b"w") == b"$1\r\n1\r\n"
    runner.close()
    other.close()


def test_script_that_wrote_then_runs_long_leaves_the_event_loop(daemon: Daemon) -> None:
    """A script that writes at once, on the event loop, then runs for a second: past its budget on the
    loop it goes on in the worker thread, so other clients get -BUSY once lua-time-limit passed (not
    their answer a second later) and each of their round trips stays short."""
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    assert other.call(b"CONFIG", b"SET", b"lua-time-limit", b"100") == b"+OK\r\n"
    body = (b"redis.call('set', 'w', '1') local t0 = redis.call('time') local i = 0 "
            b"while true do i = i + 1 if i % 20000 == 0 then local t = redis.call('time') "
            b"if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= 1000000 then break end end end "
            b"return redis.call('incr', 'w')")
    t0 = time.monotonic()
    runner.send(b"EVAL", body, b"0")
    wait_log(daemon, "script_to_worker", 1)  # it runs, has written, and left the event loop
    assert other.call(b"PING") == BUSY  # held until the limit, then -BUSY
    first = time.monotonic() - t0
    assert first < 0.8, first  # long before the script ends
    worst = 0.0
    busy = 0
    while True:
        t = time.monotonic()
        answer = other.call(b"PING")
        worst = max(worst, time.monotonic() - t)
        if answer != BUSY:
            assert answer == b"+PONG\r\n"
            break
        busy += 1
        if busy == 5:
            assert other.call(b"SCRIPT", b"KILL").startswith(b"-UNKILLABLE ")
        time.sleep(0.01)
    assert busy >= 10, busy
    assert worst < 0.25, worst  # the event loop answers while the script runs
    assert runner.reply() == b":2\r\n"
    assert time.monotonic() - t0 >= 1.0
    assert other.call(b"GET", b"w") == b"$1\r\n2\r\n"
    assert "script_to_worker" in daemon.log() and "dirty=True" in daemon.log()
    runner.close()
    other.close()


def test_shutdown_nosave_stops_a_script_that_wrote(daemon: Daemon) -> None:
    """Redis's way out of an unkillable script: SHUTDOWN answers -BUSY, SHUTDOWN NOSAVE stops the daemon,
    and none of the script's writes survive (its batch was never logged); what came before it does."""
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    assert other.call(b"CONFIG", b"SET", b"lua-time-limit", b"100") == b"+OK\r\n"
    assert other.call(b"SET", b"before", b"1") == b"+OK\r\n"
    runner.send(b"EVAL", b"redis.call('set', 'w', '1') redis.call('incr', 'before') while true do end", b"0")
    wait_busy(other)
    assert other.call(b"SCRIPT", b"KILL").startswith(b"-UNKILLABLE ")
    assert other.call(b"SHUTDOWN") == BUSY
    other.send(b"SHUTDOWN", b"NOSAVE")
    assert other.f.readline() == b""  # the connection closes without a reply, as in Redis
    assert daemon.stop(timeout=30) == 0  # (it has exited by itself: no signal needed)
    assert "script_abandoned" in daemon.log()
    daemon.start()
    r = redis.Redis(unix_socket_path=daemon.socket)
    assert r.get("before") == b"1" and r.get("w") is None
    r.close()
    runner.close()
    other.close()


def test_busy_inside_multi_fails_the_transaction(daemon: Daemon) -> None:
    runner, other = Raw(daemon.socket), Raw(daemon.socket)
    assert other.call(b"CONFIG", b"SET", b"lua-time-limit", b"100") == b"+OK\r\n"
    runner.send(b"EVAL", LOOP, b"0")
    wait_busy(other)
    assert other.call(b"MULTI") == b"+OK\r\n"
    assert other.call(b"SET", b"x", b"1") == BUSY
    killer = Raw(daemon.socket)
    assert killer.call(b"SCRIPT", b"KILL") == b"+OK\r\n"
    assert runner.reply().startswith(b"-ERR Script killed")
    assert other.call(b"EXEC") == b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    assert killer.call(b"EXISTS", b"x") == b":0\r\n"
    runner.close()
    other.close()
    killer.close()


def test_script_writes_survive_a_crash(daemon: Daemon) -> None:
    r = redis.Redis(unix_socket_path=daemon.socket)
    body = "for i = 1, 50 do redis.call('set', KEYS[1] .. i, ARGV[1]) end redis.call('rpush', KEYS[2], 'a', 'b')"
    sha = r.script_load(body)
    r.evalsha(sha, 2, "k", "list", "v")
    with pytest.raises(redis.ResponseError):
        r.eval("redis.call('set', 'partial', 'yes') error('after the write')", 0)
    r.close()
    daemon.stop(signal.SIGKILL)
    daemon.start()
    r = redis.Redis(unix_socket_path=daemon.socket)
    assert r.mget([f"k{i}" for i in range(1, 51)]) == [b"v"] * 50
    assert r.lrange("list", 0, -1) == [b"a", b"b"]
    assert r.get("partial") == b"yes"  # no rollback of what ran before the error, as in Redis
    assert r.script_exists(sha) == [False]  # the script cache is not persisted, as in Redis
    r.close()


def test_redis_py_lock(daemon: Daemon) -> None:
    a = redis.Redis(unix_socket_path=daemon.socket)
    b = redis.Redis(unix_socket_path=daemon.socket)
    lock = a.lock("resource", timeout=5, blocking_timeout=0.2)
    assert lock.acquire()
    assert lock.owned()
    assert 0 < a.pttl("resource") <= 5000
    assert lock.extend(10)
    assert 5000 < a.pttl("resource") <= 15000
    assert lock.reacquire()
    assert 0 < a.pttl("resource") <= 5000
    contender = b.lock("resource", timeout=5, blocking_timeout=0.2)
    assert not contender.acquire()  # contention: the second client gives up after its blocking timeout
    token = lock.local.token
    lock.release()
    assert contender.acquire()
    lock.local.token = token  # as if this client still believed it held the lock: the scripts say it does not
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lock.extend(1)
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lock.reacquire()
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lock.release()
    contender.release()
    lost = a.lock("short", timeout=0.1)
    assert lost.acquire()
    time.sleep(0.25)  # its holder lost it: expired
    other = b.lock("short", timeout=5)
    assert other.acquire()
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lost.release()
    assert other.locked()
    other.release()
    a.close()
    b.close()


def test_lock_contention_between_threads(daemon: Daemon) -> None:
    """Two clients increment a counter under the lock: no increment is lost."""
    counter_key = "counted"

    def worker() -> None:
        client = redis.Redis(unix_socket_path=daemon.socket)
        for _ in range(20):
            with client.lock("mutex", timeout=5, blocking_timeout=10, sleep=0.001):
                value = int(client.get(counter_key) or 0)
                client.set(counter_key, value + 1)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    r = redis.Redis(unix_socket_path=daemon.socket)
    assert r.get(counter_key) == b"40"
    r.close()


def test_flushes_wait_for_a_script_in_the_worker(tmp_path: object) -> None:
    """While a long script writes from the worker thread, the flush loop (every 50 ms here) must not
    freeze the memtable under it (its part of the batch would reach SQLite under the script's LSN
    before the WAL record, and a crash would then skip the record); every write is there afterwards,
    and after a crash."""
    d = Daemon(fsync="always")
    config = os.path.join(d.base, "memd.toml")
    with open(config, "w") as f:
        f.write("[server]\nlua_time_limit_ms = 60000\n[flush]\nmax_age_seconds = 0.05\n")
    d.args += ["--config", config]
    d.start()
    try:
        r = redis.Redis(unix_socket_path=d.socket)
        r.set("before", "1")
        body = ("local i = 0 while i < 3000000 do i = i + 1 end "  # past the loop's budget: to the worker
                "for n = 1, 400 do redis.call('hset', 'h', 'f' .. n, n) local j = 0 "
                "while j < 20000 do j = j + 1 end end return redis.call('hlen', 'h')")
        assert r.eval(body, 0) == 400
        assert r.hlen("h") == 400
        r.close()
        d.stop(signal.SIGKILL)  # a crash: the WAL and what the flushes wrote must agree
        d.start()
        r = redis.Redis(unix_socket_path=d.socket)
        assert r.hlen("h") == 400 and r.hget("h", "f400") == b"400" and r.get("before") == b"1"
        assert "script_to_worker" in d.log()  # it did run in the worker
        r.close()
    finally:
        d.cleanup()
