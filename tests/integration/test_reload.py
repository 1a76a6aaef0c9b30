"""Live config reload: edit the real config file under a running daemon (and SIGHUP)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir


def write_config(path: str, text: str, *, atomic: bool = False) -> None:
    if not atomic:
        with open(path, "w") as f:
            f.write(text)
        return
    with open(path + ".tmp", "w") as f:  # how editors save: a new file renamed over the old
        f.write(text)
    os.replace(path + ".tmp", path)


def wait_for_reloads(client: redis.Redis, n: int, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("server")
        if int(info["memd_config_reloads"]) >= n:
            return info  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"no reload #{n} after {timeout} s: {info}")
        time.sleep(0.05)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    conf = os.path.join(base, "conf", "memd.toml")
    os.makedirs(os.path.dirname(conf))
    write_config(conf, '[flush]\nmax_age_seconds = 5.0\n')
    d = Daemon(config=conf, base=base)
    i = d.args.index("--fsync")
    del d.args[i:i + 2]  # a flag beats the file, also on reload: leave storage.fsync to the file
    d.start()
    d.conf = conf  # type: ignore[attr-defined]
    # the file watcher's thread starts right after the socket: rewrite the same config until a
    # reload shows the watcher sees the file (one write at a time, so exactly one reload answers
    # it), then count reloads from there
    c = redis.Redis(unix_socket_path=d.socket, decode_responses=True)
    for _ in range(5):
        write_config(conf, '[flush]\nmax_age_seconds = 5.0\n')
        try:
            d.reloads = wait_for_reloads(c, 1, timeout=2.0)["memd_config_reloads"]  # type: ignore[attr-defined]
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("the config file watcher never saw a write")
    yield d
    d.cleanup()


def test_edits_apply_live_invalid_ones_are_rejected_and_restart_keys_wait(daemon: Daemon) -> None:
    conf = daemon.conf  # type: ignore[attr-defined]
    c = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
    write_config(conf, '[storage]\nfsync = "always"\nrecovery = "absolute"\n'
                       '[memory]\nmax_value_bytes = 64\n[compaction]\nschedule = "every 7m"\n', atomic=True)
    base = daemon.reloads  # type: ignore[attr-defined]
    info = wait_for_reloads(c, base + 1)
    assert info["memd_config_last_reload_ok"] == 1
    assert c.config_get("storage.fsync") == {"storage.fsync": "always"}
    assert c.info("persistence")["memd_fsync_policy"] == "always"
    assert c.info("maintenance")["compact_schedule"] == "every 7m"
    with pytest.raises(redis.ResponseError, match="max_value_bytes is 64"):
        c.execute_command("MEM.PUT", "ns", "k", '{"text": "' + "x" * 100 + '"}')
    assert c.set("still", "writable") is True
    # the recovery mode needs a restart: the running one stays in force, and the log says so
    assert c.config_get("storage.recovery") == {"storage.recovery": "tolerate-tail"}
    assert "config_restart_needed key=storage.recovery" in daemon.log()

    write_config(conf, '[storage]\nfsync = "sometimes"\n')  # invalid: rejected, the old config stays
    info = wait_for_reloads(c, base + 2)
    assert info["memd_config_last_reload_ok"] == 0
    assert "storage.fsync" in str(info["memd_config_last_error"]) and "sometimes" in str(info["memd_config_last_error"])
    assert c.info("persistence")["memd_fsync_policy"] == "always"
    assert c.ping() is True

    write_config(conf, "")  # back to the defaults
    info = wait_for_reloads(c, base + 3)
    assert info["memd_config_last_reload_ok"] == 1 and info["memd_config_last_error"] == ""
    assert c.info("persistence")["memd_fsync_policy"] == "everysec"
    assert c.execute_command("MEM.PUT", "ns", "k", '{"text": "' + "x" * 100 + '"}') == 1


def test_sighup_reloads(daemon: Daemon) -> None:
    c = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
    before = int(c.info("server")["memd_config_reloads"])
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    info = wait_for_reloads(c, before + 1)
    assert info["memd_config_last_reload_ok"] == 1
    assert c.ping() is True and daemon.proc.poll() is None
