"""``[cache] max_bytes`` applies live: a reload to 0 turns the read cache off and empties it, another turns it on."""

from __future__ import annotations

import pytest
import redis

from tests.integration.daemon import Daemon
from tests.integration.test_reload import daemon, wait_for_reloads, write_config

__all__ = ["daemon"]  # (the fixture, imported for pytest)
pytestmark = pytest.mark.timeout(60)


def _cache(c: redis.Redis) -> dict[str, int]:
    return {k: v for k, v in c.info("persistence").items() if k.startswith("memd_readcache_")}


def test_max_bytes_reloads_live(daemon: Daemon) -> None:
    conf = daemon.conf  # type: ignore[attr-defined]
    c = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
    for i in range(100):
        c.set(f"k{i}", "v")
    c.execute_command("MEMD.FLUSH")
    assert [c.get(f"k{i}") for i in range(100)] == ["v"] * 100
    on = _cache(c)
    assert on["memd_readcache_max_bytes"] == 64 << 20 and on["memd_readcache_entries"] >= 100
    base = daemon.reloads  # type: ignore[attr-defined]
    write_config(conf, '[flush]\nmax_age_seconds = 5.0\n[cache]\nmax_bytes = 0\n', atomic=True)
    assert wait_for_reloads(c, base + 1)["memd_config_last_reload_ok"] == 1
    off = _cache(c)
    assert off["memd_readcache_max_bytes"] == 0 and off["memd_readcache_entries"] == 0
    assert off["memd_readcache_bytes"] == 0
    assert c.get("k1") == "v" and _cache(c)["memd_readcache_hits"] == off["memd_readcache_hits"]
    write_config(conf, '[flush]\nmax_age_seconds = 5.0\n[cache]\nmax_bytes = "1MiB"\n', atomic=True)
    assert wait_for_reloads(c, base + 2)["memd_config_last_reload_ok"] == 1
    assert c.get("k1") == "v" and c.get("k1") == "v"
    again = _cache(c)
    assert again["memd_readcache_max_bytes"] == 1 << 20 and again["memd_readcache_hits"] > off["memd_readcache_hits"]
    write_config(conf, '[cache]\nmax_bytes = "a lot"\n', atomic=True)  # invalid: rejected, 1 MiB stays
    info = wait_for_reloads(c, base + 3)
    assert info["memd_config_last_reload_ok"] == 0 and "cache.max_bytes" in str(info["memd_config_last_error"])
    assert _cache(c)["memd_readcache_max_bytes"] == 1 << 20
