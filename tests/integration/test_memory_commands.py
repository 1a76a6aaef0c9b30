"""The MEM.* commands (docs/memory.md) against a real daemon, black-box.

Every test talks to a ``memd serve`` process through redis-py's raw
``execute_command`` (over RESP2 and RESP3), a raw socket (exact error
lines) or ``redis-cli -s``. The module daemon is configured so that it never
flushes on its own (huge flush thresholds): a search that sees a write made
just before can only do so through the read-your-writes flush. It also has a
small ``memory.max_value_bytes`` (4096) for the value-size checks. Each test
files its items under its own random root label, so tests sharing the daemon
do not see each other's items. TTL tests use sub-second TTLs and poll with a
bounded deadline; nothing else waits on the clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis

from tests.integration.daemon import NO_AUTOFLUSH, Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(60)

MAX_VALUE_BYTES = 4096
ITEM_FIELDS = {"namespace", "key", "value", "version", "created_at", "updated_at", "expires_at"}
HISTORY_FIELDS = {"version", "value", "created_at", "updated_at", "superseded_at", "deleted"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# ---- daemons and clients -------------------------------------------------------------------------

def start_daemon(config_text: str, fsync: str = "everysec", base: str | None = None) -> Daemon:
    base = base or short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write(config_text)
    return Daemon(fsync=fsync, config=conf, base=base).start()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = start_daemon(NO_AUTOFLUSH + f"[memory]\nmax_value_bytes = {MAX_VALUE_BYTES}\n")
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def client(daemon: Daemon, protocol: int) -> Iterator[redis.Redis]:
    r = redis.Redis(unix_socket_path=daemon.socket, protocol=protocol, socket_timeout=10)
    yield r
    r.close()


@pytest.fixture
def root() -> str:
    """A namespace label of this test's own: items under it are this test's only."""
    return "t" + uuid.uuid4().hex[:12]


# ---- helpers -------------------------------------------------------------------------------------

def enc(value: Any) -> Any:
    return value if isinstance(value, (str, bytes)) else json.dumps(value)


def put(r: redis.Redis, ns: Any, key: Any, value: Any, ttl: float | str | None = None) -> Any:
    args = ["MEM.PUT", ns, key, enc(value)]
    if ttl is not None:
        args += ["TTL", str(ttl)]
    return r.execute_command(*args)


def get(r: redis.Redis, ns: Any, key: Any, *opts: Any) -> dict[str, Any] | None:
    raw = r.execute_command("MEM.GET", ns, key, *opts)
    if raw is None:
        return None
    assert isinstance(raw, bytes), raw
    item = json.loads(raw)
    assert isinstance(item, dict)
    return item


def delete(r: redis.Redis, ns: Any, key: Any) -> Any:
    return r.execute_command("MEM.DEL", ns, key)


def search(r: redis.Redis, prefix: Any, *, query: Any = None, filter: Any = None, limit: Any = None,
           offset: Any = None, refresh: bool = False) -> list[dict[str, Any]]:
    args: list[Any] = ["MEM.SEARCH", prefix]
    if query is not None:
        args += ["QUERY", query]
    if filter is not None:
        args += ["FILTER", enc(filter)]
    if limit is not None:
        args += ["LIMIT", str(limit)]
    if offset is not None:
        args += ["OFFSET", str(offset)]
    if refresh:
        args.append("REFRESHTTL")
    out = r.execute_command(*args)
    assert isinstance(out, list), out
    items = [json.loads(x) for x in out]
    for item in items:
        assert isinstance(item, dict)
    return items


def keys_of(items: list[dict[str, Any]]) -> list[str]:
    return [i["key"] for i in items]


def namespaces(r: redis.Redis, *opts: Any) -> list[str]:
    out = r.execute_command("MEM.NAMESPACES", *[str(o) if isinstance(o, int) else o for o in opts])
    assert isinstance(out, list), out
    return [x.decode() for x in out]


def history(r: redis.Redis, ns: Any, key: Any, *opts: Any) -> list[dict[str, Any]]:
    out = r.execute_command("MEM.HISTORY", ns, key, *[str(o) if isinstance(o, int) else o for o in opts])
    assert isinstance(out, list), out
    return [json.loads(x) for x in out]


def ts(text: str) -> float:
    """ISO-8601 '...Z' with milliseconds -> Unix seconds."""
    assert isinstance(text, str) and TIME_RE.match(text), f"not ISO-8601 UTC with ms and Z: {text!r}"
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def tick() -> None:
    """Let the wall clock move past the current millisecond, so the next put has a later updated_at."""
    time.sleep(0.003)


def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"{what} not reached within {timeout} s")


def sleep_until_wallclock(t: float, bound: float = 5.0) -> None:
    """Wait (bounded) until time.time() > t: lets a TTL run out."""
    assert t - time.time() < bound, "refusing to wait that long"
    while time.time() <= t:
        time.sleep(min(0.02, max(0.001, t - time.time())))


def assert_error(r: redis.Redis, *args: Any, match: str | None = None) -> str:
    with pytest.raises(redis.ResponseError) as info:
        r.execute_command(*args)
    msg = str(info.value)
    if match is not None:
        assert re.search(match, msg), f"{repr(args)[:200]}: error {msg!r} does not match {match!r}"
    assert r.ping() is True, "the connection must keep serving after an error reply"
    return msg


def pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def raw_reply(sock_path: str, *args: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    try:
        s.sendall(pack(*args))
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def info_int(r: redis.Redis, field: str) -> int:
    return int(r.info("persistence")[field])


# ---- items, versions, timestamps -----------------------------------------------------------------

def test_put_get_item_fields_and_formats(client: redis.Redis, root: str) -> None:
    ns = f"{root}.user-42.preferences"
    before = time.time()
    assert put(client, ns, "food", {"likes": "ramen"}) == 1
    after = time.time()
    item = get(client, ns, "food")
    assert item is not None
    assert set(item) - {"score"} == ITEM_FIELDS, item
    assert item.get("score") is None, "score has a value in MEM.SEARCH results only"
    assert item["namespace"] == ns and isinstance(item["namespace"], str)
    assert item["key"] == "food"
    assert item["value"] == {"likes": "ramen"}
    assert item["version"] == 1 and type(item["version"]) is int
    assert item["expires_at"] is None
    created, updated = ts(item["created_at"]), ts(item["updated_at"])
    assert created == updated, "the first put creates the key"
    assert before - 0.01 <= updated <= after + 0.01, (before, item["updated_at"], after)


def test_get_absent_is_nil(client: redis.Redis, root: str) -> None:
    assert get(client, f"{root}.nothing", "here") is None
    put(client, f"{root}.a", "k", {"x": 1})
    assert get(client, f"{root}.a", "other") is None
    assert get(client, f"{root}.b", "k") is None, "same key, other namespace"
    assert get(client, root, "k") is None, "a parent namespace is another namespace"


def test_versions_start_at_one_and_continue_after_delete(client: redis.Redis, root: str) -> None:
    ns = f"{root}.v"
    assert [put(client, ns, "k", {"n": i}) for i in range(3)] == [1, 2, 3]
    assert get(client, ns, "k")["version"] == 3  # type: ignore[index]
    assert get(client, ns, "k")["value"] == {"n": 2}  # type: ignore[index]
    assert delete(client, ns, "k") == 1
    assert get(client, ns, "k") is None
    assert delete(client, ns, "k") == 0, "nothing live to delete any more"
    assert put(client, ns, "k", {"n": "again"}) == 4, "the count continues across MEM.DEL"
    assert put(client, ns, "k", {"n": "again2"}) == 5
    assert get(client, ns, "k")["version"] == 5  # type: ignore[index]
    # versions are per (namespace, key)
    assert put(client, ns, "other", {}) == 1
    assert put(client, f"{ns}.sub", "k", {}) == 1
    assert put(client, f"{root}.w", "k", {}) == 1


def test_del_replies(client: redis.Redis, root: str) -> None:
    assert delete(client, f"{root}.d", "never") == 0
    put(client, f"{root}.d", "k", {"a": 1})
    assert delete(client, f"{root}.d", "other") == 0
    assert delete(client, f"{root}.e", "k") == 0
    assert delete(client, f"{root}.d", "k") == 1
    assert delete(client, f"{root}.d", "k") == 0


def test_created_at_updated_at_semantics(client: redis.Redis, root: str) -> None:
    ns = f"{root}.c"
    put(client, ns, "k", {"v": 1})
    first = get(client, ns, "k")
    assert first is not None
    tick()
    put(client, ns, "k", {"v": 2})
    second = get(client, ns, "k")
    assert second is not None
    assert second["created_at"] == first["created_at"], "created_at stays across puts"
    assert ts(second["updated_at"]) > ts(first["updated_at"]), "updated_at is this version's put"
    tick()
    assert delete(client, ns, "k") == 1
    tick()
    assert put(client, ns, "k", {"v": 3}) == 3
    third = get(client, ns, "k")
    assert third is not None
    assert third["created_at"] == third["updated_at"], "the first put after MEM.DEL re-creates the key"
    assert ts(third["created_at"]) > ts(first["created_at"])


def test_value_stored_compactly_equal_modulo_whitespace(client: redis.Redis, root: str) -> None:
    text = ('{ "s" : "x \\" \\\\ \\n y" ,\n "u": "ramen \\u00e9 \U0001f35c caf\u00e9",  "n": [1, -2.5, 1e3, '
            '12345678901234567890, true, false, null],\n\t"o": {"deep": {"er": []}}, "e": {} }')
    assert put(client, f"{root}.j", "k", text) == 1
    raw = client.execute_command("MEM.GET", f"{root}.j", "k")
    item = json.loads(raw)
    assert item["value"] == json.loads(text)
    assert item["value"]["n"][3] == 12345678901234567890, "big integers survive"


def test_keys_and_labels_are_any_utf8(client: redis.Redis, root: str) -> None:
    ns = f"{root}.caf\u00e9.with space.\U0001f35c"
    key = "a.b c/\u00fc\U0001f600*"
    assert put(client, ns, key, {"v": 1}) == 1
    item = get(client, ns, key)
    assert item is not None and item["namespace"] == ns and item["key"] == key
    assert namespaces(client, "PREFIX", root) == [ns]
    assert keys_of(search(client, ns)) == [key]


def test_size_limits_of_names(client: redis.Redis, root: str) -> None:
    labels64 = ".".join([root] + ["l"] * 63)
    assert put(client, labels64, "k", {}) == 1
    assert_error(client, "MEM.PUT", labels64 + ".l", "k", "{}", match="(?i)namespace")
    ns1024 = root + "." + "x" * (1024 - len(root) - 1)
    assert len(ns1024.encode()) == 1024
    assert put(client, ns1024, "k", {}) == 1
    assert_error(client, "MEM.PUT", ns1024 + "x", "k", "{}", match="(?i)namespace")
    key1024 = "\u00e9" * 512  # 1024 bytes, 512 characters
    assert put(client, root, key1024, {}) == 1
    assert get(client, root, key1024)["key"] == key1024  # type: ignore[index]
    assert_error(client, "MEM.PUT", root, key1024 + "x", "{}", match="(?i)key")
    assert_error(client, "MEM.GET", root, key1024 + "x", match="(?i)key")


def test_value_size_limit(client: redis.Redis, root: str) -> None:
    def compact(n: int) -> str:
        text = json.dumps({"p": "x" * (n - 8)}, separators=(",", ":"))
        assert len(text.encode()) == n
        return text

    assert put(client, root, "exact", compact(MAX_VALUE_BYTES)) == 1, "at most max_value_bytes is allowed"
    assert_error(client, "MEM.PUT", root, "over", compact(MAX_VALUE_BYTES + 1), match="(?i)large|size|big|bytes")
    assert_error(client, "MEM.PUT", root, "way-over", compact(100_000), match="(?i)large|size|big|bytes")
    assert get(client, root, "over") is None and get(client, root, "way-over") is None
    assert get(client, root, "exact")["value"]["p"] == "x" * (MAX_VALUE_BYTES - 8)  # type: ignore[index]


# ---- TTL -----------------------------------------------------------------------------------------

def test_ttl_sets_expires_at_and_expired_items_are_invisible(client: redis.Redis, root: str) -> None:
    put(client, f"{root}.perm", "p", {"word": "platypus"})
    tick()
    t0 = time.monotonic()
    assert put(client, f"{root}.ttl", "t", {"word": "platypus"}, ttl=1.0) == 1
    item = get(client, f"{root}.ttl", "t")
    listed = keys_of(search(client, root))
    queried = keys_of(search(client, root, query="platypus"))
    spaces = namespaces(client, "PREFIX", root)
    if time.monotonic() - t0 < 0.9:  # (a very slow machine may have let it expire already: then skip these)
        assert item is not None
        assert item["expires_at"] is not None
        assert abs(ts(item["expires_at"]) - ts(item["updated_at"]) - 1.0) <= 0.002, item
        assert listed == ["t", "p"]
        assert sorted(queried) == ["p", "t"]
        assert spaces == [f"{root}.perm", f"{root}.ttl"]
    wait_until(lambda: get(client, f"{root}.ttl", "t") is None, what="TTL expiry")
    assert keys_of(search(client, root)) == ["p"]
    assert keys_of(search(client, root, query="platypus")) == ["p"]
    assert keys_of(search(client, root, filter={"word": "platypus"})) == ["p"]
    assert namespaces(client, "PREFIX", root) == [f"{root}.perm"]
    assert get(client, f"{root}.ttl", "t", "REFRESHTTL") is None, "REFRESHTTL does not revive an expired item"
    assert delete(client, f"{root}.ttl", "t") == 0, "an expired item is not live"


def test_put_after_expiry_recreates_and_continues_version(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"v": 1}, ttl=0.3)
    first = get(client, root, "k")
    wait_until(lambda: get(client, root, "k") is None, what="TTL expiry")
    assert put(client, root, "k", {"v": 2}) == 2, "versions grow by one per put of that key"
    item = get(client, root, "k")
    assert item is not None and item["expires_at"] is None
    assert item["created_at"] == item["updated_at"], "the first put after expiry re-creates the key"
    if first is not None:
        assert ts(item["created_at"]) > ts(first["created_at"])


def test_put_without_ttl_makes_permanent(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"v": 1}, ttl=0.4)
    old = get(client, root, "k")
    assert put(client, root, "k", {"v": 2}) == 2
    item = get(client, root, "k")
    assert item is not None and item["expires_at"] is None
    if old is not None:
        sleep_until_wallclock(ts(old["expires_at"]) + 0.15)
    else:
        time.sleep(0.55)
    item = get(client, root, "k")
    assert item is not None and item["version"] == 2 and item["value"] == {"v": 2}


def test_put_replaces_ttl(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"v": 1}, ttl=100)
    item = get(client, root, "k")
    assert item is not None and abs(ts(item["expires_at"]) - ts(item["updated_at"]) - 100) <= 0.002
    put(client, root, "k", {"v": 2}, ttl=0.3)
    wait_until(lambda: get(client, root, "k") is None, what="the new, shorter TTL to expire the item")


def test_fractional_ttl_values_accepted(client: redis.Redis, root: str) -> None:
    assert put(client, root, "a", {}, ttl="1.5") == 1
    item = get(client, root, "a")
    assert item is not None and abs(ts(item["expires_at"]) - ts(item["updated_at"]) - 1.5) <= 0.002
    assert put(client, root, "b", {}, ttl="100") == 1
    assert put(client, root, "c", {}, ttl="0.25") == 1


def test_get_refreshttl_restarts_the_ttl(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"v": 1}, ttl=1.0)
    before = get(client, root, "k")
    assert before is not None
    e0 = ts(before["expires_at"])
    time.sleep(0.4)  # let part of the TTL elapse (not synchronisation)
    t_a = time.time()
    refreshed = get(client, root, "k", "REFRESHTTL")
    t_b = time.time()
    assert refreshed is not None and refreshed["version"] == 1 and refreshed["value"] == {"v": 1}
    now = get(client, root, "k")
    assert now is not None
    e1 = ts(now["expires_at"])
    assert t_a + 1.0 - 0.01 <= e1 <= t_b + 1.0 + 0.01, "restarted from now with the last put's duration"
    assert e1 - e0 >= 0.3
    assert now["version"] == 1, "REFRESHTTL is not a new version"
    assert now["updated_at"] == before["updated_at"] and now["created_at"] == before["created_at"]
    assert history(client, root, "k") == [], "REFRESHTTL adds no history"
    # past the original expiry the item is still there, then it expires at the new time
    sleep_until_wallclock(e0 + 0.1)
    if time.time() < e1 - 0.1:
        assert get(client, root, "k") is not None, "the refreshed TTL kept the item alive"
    wait_until(lambda: get(client, root, "k") is None, what="expiry at the refreshed time")
    assert time.time() >= e1 - 0.01


def test_refreshttl_without_ttl_has_no_effect(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"v": 1})
    item = get(client, root, "k", "REFRESHTTL")
    assert item is not None and item["expires_at"] is None
    assert get(client, root, "k")["expires_at"] is None  # type: ignore[index]
    assert search(client, root, refresh=True)[0]["expires_at"] is None
    assert get(client, root, "k")["expires_at"] is None  # type: ignore[index]
    assert get(client, root, "k")["version"] == 1  # type: ignore[index]


def test_search_refreshttl_refreshes_only_returned_items(client: redis.Redis, root: str) -> None:
    put(client, root, "older", {"v": 1}, ttl=1.5)
    tick()
    put(client, root, "newer", {"v": 2}, ttl=1.5)
    e_old = ts(get(client, root, "older")["expires_at"])  # type: ignore[index]
    e_new = ts(get(client, root, "newer")["expires_at"])  # type: ignore[index]
    time.sleep(0.4)  # let part of the TTL elapse (not synchronisation)
    t_a = time.time()
    got = search(client, root, limit=1, refresh=True)
    t_b = time.time()
    assert keys_of(got) == ["newer"], "without QUERY: most recently updated first"
    e_new2 = ts(get(client, root, "newer")["expires_at"])  # type: ignore[index]
    assert t_a + 1.5 - 0.01 <= e_new2 <= t_b + 1.5 + 0.01 and e_new2 - e_new >= 0.3
    assert ts(get(client, root, "older")["expires_at"]) == e_old, "an item not returned is not refreshed"
    assert get(client, root, "newer")["version"] == 1  # type: ignore[index]


# ---- MEM.SEARCH ----------------------------------------------------------------------------------

def test_search_prefix_is_label_wise(client: redis.Redis, root: str) -> None:
    for ns in (root, f"{root}.a", f"{root}.a.b", f"{root}.a.b.c", f"{root}.a.bc", f"{root}.ab", f"{root}.x"):
        put(client, ns, "k", {"tag": root, "ns": ns})

    def found(prefix: str, **kw: Any) -> set[str]:
        return {i["namespace"] for i in search(client, prefix, limit=1000, **kw)}

    assert found(f"{root}.a.b") == {f"{root}.a.b", f"{root}.a.b.c"}
    assert found(f"{root}.a") == {f"{root}.a", f"{root}.a.b", f"{root}.a.b.c", f"{root}.a.bc"}
    assert found(f"{root}.a.b.c") == {f"{root}.a.b.c"}
    assert found(f"{root}.a.b.c.d") == set()
    assert len(found(root)) == 7
    every = found("", filter={"tag": root})
    assert every == {root, f"{root}.a", f"{root}.a.b", f"{root}.a.b.c", f"{root}.a.bc", f"{root}.ab", f"{root}.x"}
    assert found(f"{root}.a.b", query=root) == {f"{root}.a.b", f"{root}.a.b.c"}


def test_search_items_have_score_null_without_query(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"text": "hello"})
    (item,) = search(client, root)
    assert "score" in item and item["score"] is None
    assert set(item) == ITEM_FIELDS | {"score"}
    assert item["value"] == {"text": "hello"} and item["version"] == 1 and item["namespace"] == root
    assert item == {**get(client, root, "k"), "score": None}  # type: ignore[dict-item]


def test_search_without_query_orders_by_updated_at_desc(client: redis.Redis, root: str) -> None:
    for key in ("k1", "k2", "k3", "k4"):
        put(client, root, key, {"k": key})
        tick()
    assert keys_of(search(client, root)) == ["k4", "k3", "k2", "k1"]
    put(client, root, "k2", {"k": "again"})
    assert keys_of(search(client, root)) == ["k2", "k4", "k3", "k1"]
    # ties on updated_at: then namespace, then key (a transaction makes ties likely)
    pipe = client.pipeline(transaction=True)
    for ns, key in ((f"{root}.b", "z"), (f"{root}.b", "a"), (f"{root}.a", "m"), (f"{root}.a", "b")):
        pipe.execute_command("MEM.PUT", ns, key, "{}")
    pipe.execute()
    items = search(client, root, limit=100)
    expected = sorted(items, key=lambda i: (-ts(i["updated_at"]), i["namespace"], i["key"]))
    assert [(i["namespace"], i["key"]) for i in items] == [(i["namespace"], i["key"]) for i in expected]


def test_search_limit_and_offset(client: redis.Redis, root: str) -> None:
    for i in range(12):
        put(client, root, f"k{i:02d}", {"i": i})
        tick()
    everything = keys_of(search(client, root, limit=1000))
    assert everything == [f"k{i:02d}" for i in reversed(range(12))]
    assert keys_of(search(client, root)) == everything[:10], "LIMIT defaults to 10"
    assert keys_of(search(client, root, limit=3)) == everything[:3]
    assert keys_of(search(client, root, limit=3, offset=4)) == everything[4:7]
    assert keys_of(search(client, root, offset=5)) == everything[5:]
    assert keys_of(search(client, root, offset=11, limit=5)) == everything[11:]
    assert search(client, root, offset=12) == []
    assert search(client, root, offset=1_000_000) == []
    assert search(client, root, limit=0) == []
    assert len(search(client, root, limit=1000)) == 12
    assert keys_of(search(client, root, filter={"i": {"$gte": 6}}, limit=2, offset=1)) == everything[1:3]


def test_search_excludes_deleted_items(client: redis.Redis, root: str) -> None:
    put(client, root, "a", {"w": "zanzibar"})
    put(client, root, "b", {"w": "zanzibar"})
    delete(client, root, "a")
    assert keys_of(search(client, root)) == ["b"]
    assert keys_of(search(client, root, query="zanzibar")) == ["b"]
    assert keys_of(search(client, root, filter={"w": "zanzibar"})) == ["b"]


# ---- QUERY (FTS5) --------------------------------------------------------------------------------

def test_query_ranking_term_frequency(client: redis.Redis, root: str) -> None:
    put(client, root, "once", {"text": "ramen noodles broth pork egg onion"})
    put(client, root, "many", {"text": "ramen ramen ramen ramen noodles broth"})
    put(client, root, "none", {"text": "sushi rice fish seaweed wasabi ginger"})
    got = search(client, root, query="ramen")
    assert keys_of(got) == ["many", "once"]
    assert all(isinstance(i["score"], (int, float)) and i["score"] > 0 for i in got), got
    assert got[0]["score"] > got[1]["score"], "higher score is better, best first"


def test_query_ranking_shorter_document(client: redis.Redis, root: str) -> None:
    put(client, root, "long", {"text": "udon noodles with broth and pork and egg and onion and garlic and leek"})
    put(client, root, "short", {"text": "udon"})
    got = search(client, root, query="udon")
    assert keys_of(got) == ["short", "long"]
    assert got[0]["score"] > got[1]["score"] > 0


def test_query_ranking_beats_recency_and_limit_offset_apply_to_ranking(client: redis.Redis, root: str) -> None:
    # same length, more mentions ranks higher; put best first so that recency alone would reverse it
    put(client, root, "best", {"t": "kiwi kiwi kiwi apple"})
    tick()
    put(client, root, "mid", {"t": "kiwi kiwi apple pear"})
    tick()
    put(client, root, "worst", {"t": "kiwi apple pear plum"})
    ranked = keys_of(search(client, root, query="kiwi"))
    assert ranked == ["best", "mid", "worst"]
    assert keys_of(search(client, root, query="kiwi", limit=1)) == ["best"]
    assert keys_of(search(client, root, query="kiwi", limit=1, offset=1)) == ["mid"]
    assert keys_of(search(client, root, query="kiwi", offset=2)) == ["worst"]


def test_query_porter_stemming_case_and_diacritics(client: redis.Redis, root: str) -> None:
    put(client, root, "pref", {"text": "User preferences are documented here"})
    put(client, root, "run", {"text": "She was RUNNING every morning"})
    put(client, root, "cafe", {"text": "Cr\u00e8me br\u00fbl\u00e9e at the caf\u00e9"})
    assert keys_of(search(client, root, query="preference")) == ["pref"]
    assert keys_of(search(client, root, query="documenting")) == ["pref"]
    assert keys_of(search(client, root, query="runs")) == ["run"]
    assert keys_of(search(client, root, query="running")) == ["run"]
    assert keys_of(search(client, root, query="MORNING")) == ["run"]
    assert keys_of(search(client, root, query="creme brulee")) == ["cafe"]
    assert keys_of(search(client, root, query="CAFE")) == ["cafe"]
    assert search(client, root, query="espresso") == []


def test_query_syntax_phrases_booleans_prefix_near(client: redis.Redis, root: str) -> None:
    put(client, root, "p1", {"t": "I drink green tea daily"})
    put(client, root, "p2", {"t": "the tea was green"})
    put(client, root, "p3", {"t": "coffee only"})

    def q(text: str) -> set[str]:
        return set(keys_of(search(client, root, query=text)))

    assert q('"green tea"') == {"p1"}
    assert q('"tea green"') == set()
    assert q("green tea") == {"p1", "p2"}, "implicit AND"
    assert q("green AND daily") == {"p1"}
    assert q("green NOT daily") == {"p2"}
    assert q("daily OR coffee") == {"p1", "p3"}
    assert q("dai*") == {"p1"}
    assert q("cof*") == {"p3"}
    assert q("NEAR(drink daily, 2)") == {"p1"}
    assert q("NEAR(drink daily, 1)") == set()


def test_query_indexes_nested_string_values_not_field_names(client: redis.Redis, root: str) -> None:
    put(client, root, "nested", {"zebrafield": "apple",
                                 "outer": {"innerfield": ["kiwi", {"deepfield": "mango"}, 42]},
                                 "num": 987654, "flag": True})

    def q(text: str) -> list[str]:
        return keys_of(search(client, root, query=text))

    assert q("apple") == ["nested"]
    assert q("kiwi") == ["nested"], "strings inside arrays are indexed"
    assert q("mango") == ["nested"], "strings at any depth are indexed"
    assert q("zebrafield") == [], "field names are not indexed"
    assert q("innerfield") == [] and q("deepfield") == [] and q("outer") == []


def test_query_does_not_index_non_strings_key_or_namespace(client: redis.Redis, root: str) -> None:
    put(client, f"{root}.wombat", "platypus", {"num": 987654, "t": "visible"})
    assert keys_of(search(client, root, query="visible")) == ["platypus"]
    assert search(client, root, query="987654") == [], "numbers are not string values"
    assert search(client, root, query="platypus") == [], "the key is not part of the value"
    assert search(client, root, query="wombat") == [], "the namespace is not part of the value"


def test_query_respects_prefix_and_combines_with_filter(client: redis.Redis, root: str) -> None:
    put(client, f"{root}.a", "k1", {"t": "lighthouse", "kind": "fact"})
    put(client, f"{root}.a", "k2", {"t": "lighthouse", "kind": "note"})
    put(client, f"{root}.b", "k3", {"t": "lighthouse", "kind": "fact"})
    assert {(i["namespace"], i["key"]) for i in search(client, f"{root}.a", query="lighthouse")} == {
        (f"{root}.a", "k1"), (f"{root}.a", "k2")}
    assert keys_of(search(client, f"{root}.a", query="lighthouse", filter={"kind": "fact"})) == ["k1"]
    assert len(search(client, root, query="lighthouse")) == 3


def test_query_reflects_updates_and_deletes(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"t": "albatross"})
    assert keys_of(search(client, root, query="albatross")) == ["k"]
    put(client, root, "k", {"t": "pelican"})
    assert search(client, root, query="albatross") == [], "the old version is not searchable"
    (hit,) = search(client, root, query="pelican")
    assert hit["version"] == 2 and hit["value"] == {"t": "pelican"}
    delete(client, root, "k")
    assert search(client, root, query="pelican") == []


# ---- FILTER --------------------------------------------------------------------------------------

FILTER_ITEMS: dict[str, dict[str, Any]] = {
    "i1": {"kind": "fact", "stars": 5, "flag": True, "tags": ["x", "y"], "meta": {"a": 1, "b": [1, 2]},
           "cp": "\uffff"},
    "i2": {"kind": "fact", "stars": 3, "flag": 1, "name": "bob", "cp": "\U0001f600"},
    "i3": {"kind": "note", "stars": 1, "name": "alice", "opt": None, "flag": False, "cp": "\u00e9"},
    "i4": {"kind": "note", "stars": "5", "name": "Carl", "tags": ["y", "x"], "cp": "z"},
    "i5": {"kind": "fact", "stars": 4.5, "meta": {"b": [1, 2], "a": 1}, "opt": 0},
}

FILTER_CASES: list[tuple[Any, set[str]]] = [
    ({}, {"i1", "i2", "i3", "i4", "i5"}),
    ({"kind": "fact"}, {"i1", "i2", "i5"}),
    ({"kind": {"$eq": "fact"}}, {"i1", "i2", "i5"}),
    ({"kind": {"$ne": "fact"}}, {"i3", "i4"}),
    ({"kind": "fact", "stars": {"$gte": 4}}, {"i1", "i5"}),
    ({"stars": 5}, {"i1"}),
    ({"stars": "5"}, {"i4"}),
    ({"stars": {"$gte": 3}}, {"i1", "i2", "i5"}),
    ({"stars": {"$gt": 3}}, {"i1", "i5"}),
    ({"stars": {"$lt": 3}}, {"i3"}),
    ({"stars": {"$lte": 3}}, {"i2", "i3"}),
    ({"stars": {"$gt": 3, "$lt": 5}}, {"i5"}),
    ({"stars": {"$gte": 4.5, "$lte": 4.5}}, {"i5"}),
    ({"stars": {"$gte": "4"}}, {"i4"}),
    ({"name": {"$lt": "a"}}, {"i4"}),  # code points: 'C' < 'a'
    ({"name": {"$gte": "alice"}}, {"i2", "i3"}),
    ({"name": {"$gt": "alice"}}, {"i2"}),
    ({"stars": {"$in": [1, "5"]}}, {"i3", "i4"}),
    ({"kind": {"$in": ["note"]}}, {"i3", "i4"}),
    ({"kind": {"$in": []}}, set()),
    ({"flag": True}, {"i1"}),
    ({"flag": 1}, {"i2"}),
    ({"flag": False}, {"i3"}),
    ({"flag": {"$in": [True]}}, {"i1"}),
    ({"flag": {"$ne": True}}, {"i2", "i3", "i4", "i5"}),
    ({"name": None}, {"i1", "i5"}),
    ({"name": {"$eq": None}}, {"i1", "i5"}),
    ({"opt": None}, {"i1", "i2", "i3", "i4"}),
    ({"opt": 0}, {"i5"}),
    ({"name": {"$ne": "bob"}}, {"i1", "i3", "i4", "i5"}),
    ({"name": {"$ne": None}}, {"i2", "i3", "i4"}),
    ({"nosuchfield": {"$gt": 0}}, set()),
    ({"nosuchfield": "x"}, set()),
    ({"tags": ["x", "y"]}, {"i1"}),
    ({"tags": ["y", "x"]}, {"i4"}),
    ({"tags": ["x"]}, set()),
    ({"tags": "x"}, set()),
    ({"meta": {"a": 1, "b": [1, 2]}}, {"i1", "i5"}),
    ({"meta": {"a": 1}}, set()),
    ({"meta": {"a": 1, "b": [2, 1]}}, set()),
    ({"meta": {"a": True, "b": [1, 2]}}, set()),
    ({"stars": 5.0}, {"i1"}),  # numbers compare numerically
    ({"stars": 4.5}, {"i5"}),
    ({"stars": {"$in": [5]}}, {"i1"}),
    ({"flag": 0}, set()),  # false is not 0
    ({"flag": {"$in": [1]}}, {"i2"}),
    ({"flag": {"$ne": 1}}, {"i1", "i3", "i4", "i5"}),
    ({"flag": {"$gte": 0}}, {"i2"}),  # booleans are not numbers
    ({"cp": {"$gt": "\uffff"}}, {"i2"}),  # code points, not UTF-16 units
    ({"cp": {"$lt": "\u00ff"}}, {"i3", "i4"}),
    ({"cp": {"$gte": "\u00e9", "$lt": "\U0001f600"}}, {"i1", "i3"}),
]


@pytest.fixture
def filter_root(client: redis.Redis, root: str) -> str:
    for key, value in FILTER_ITEMS.items():
        put(client, root, key, value)
    return root


@pytest.mark.parametrize("flt,expected", FILTER_CASES, ids=[json.dumps(c[0]) for c in FILTER_CASES])
def test_filter_operators(client: redis.Redis, filter_root: str, flt: Any, expected: set[str]) -> None:
    got = search(client, filter_root, filter=flt, limit=1000)
    assert set(keys_of(got)) == expected
    for item in got:
        assert item["value"] == FILTER_ITEMS[item["key"]]


def test_filter_field_names_are_literal_top_level_names(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {"a.b": 1, "a": {"b": 2}, "x[0]": 3, "x": [4], "sp ace": 6, "\u00fcml": 7, "*": 8,
                            "'": 10, "$.a": 11})
    assert keys_of(search(client, root, filter={"a.b": 1})) == ["k"], "'a.b' is a field name, not a path"
    assert search(client, root, filter={"a.b": 2}) == []
    assert keys_of(search(client, root, filter={"a": {"b": 2}})) == ["k"]
    assert keys_of(search(client, root, filter={"x[0]": 3})) == ["k"]
    assert search(client, root, filter={"x[0]": 4}) == []
    assert keys_of(search(client, root, filter={"sp ace": {"$gte": 6}, "'": 10})) == ["k"]
    assert keys_of(search(client, root, filter={"\u00fcml": {"$in": [7]}, "*": 8})) == ["k"]
    assert keys_of(search(client, root, filter={"$.a": 11})) == ["k"]


@pytest.mark.parametrize("field", ["\\", 'q"uote', "", 'a\\"b', "\\n"], ids=repr)
def test_filter_any_json_field_name(client: redis.Redis, root: str, field: str) -> None:
    """Any JSON object key is a top-level field a FILTER may name (the spec restricts no names)."""
    put(client, root, "k", {field: 5, "other": 1})
    assert keys_of(search(client, root, filter={field: 5})) == ["k"]
    assert keys_of(search(client, root, filter={field: {"$gte": 5}})) == ["k"]
    assert search(client, root, filter={field: 6}) == []


@pytest.mark.parametrize("flt", [
    "[1, 2]", '"text"', "3", "null", "true", "{bad json", '{"a": NaN',  # NaN itself is a valid operand
    '{"a": {"$foo": 1}}', '{"a": {"$in": 5}}', '{"a": {"$in": "x"}}', '{"a": {"$in": [[1]]}}',
    '{"a": {"$gt": [1]}}', '{"a": {"$gt": {"x": 1}}}', '{"a": {"$lte": true}}', '{"a": {"$eq": 1, "b": 2}}',
])
def test_bad_filter_is_an_error(client: redis.Redis, root: str, flt: str) -> None:
    put(client, root, "k", {"a": 1})
    assert_error(client, "MEM.SEARCH", root, "FILTER", flt)
    assert keys_of(search(client, root)) == ["k"]


# ---- read-your-writes ----------------------------------------------------------------------------

def test_read_your_writes_with_no_background_flush(client: redis.Redis, daemon: Daemon, root: str) -> None:
    other = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=10)
    try:
        put(client, root, "k", {"t": "quokka", "n": 1})
        assert info_int(client, "memd_last_lsn") > info_int(client, "memd_flushed_lsn"), \
            "precondition: the put is still unflushed (the daemon must not flush on its own)"
        assert keys_of(search(client, root, query="quokka")) == ["k"]
        assert keys_of(search(client, root, filter={"n": 1})) == ["k"]
        put(client, root, "k", {"t": "wallaby", "n": 2})
        assert info_int(client, "memd_last_lsn") > info_int(client, "memd_flushed_lsn")
        assert search(client, root, query="quokka") == []
        assert keys_of(search(other, root, query="wallaby")) == ["k"], "another connection sees it too"
        assert search(client, root, filter={"n": 1}) == []
        assert search(client, root)[0]["version"] == 2
        delete(client, root, "k")
        assert search(other, root, query="wallaby") == []
        assert search(client, root) == []
        assert namespaces(client, "PREFIX", root) == []
        put(other, f"{root}.x", "j", {"t": "numbat", "root": root})
        assert keys_of(search(client, "", query="numbat", filter={"root": root})) == ["j"]
        assert namespaces(client, "PREFIX", root) == [f"{root}.x"]
    finally:
        other.close()


def test_read_your_writes_after_transaction(daemon: Daemon, protocol: int, root: str) -> None:
    r = redis.Redis(unix_socket_path=daemon.socket, protocol=protocol, single_connection_client=True,
                    socket_timeout=10)
    try:
        assert r.execute_command("MULTI") in (b"OK", "OK", True)
        r.execute_command("MEM.PUT", root, "a", '{"t": "echidna"}')
        r.execute_command("MEM.PUT", root, "b", '{"t": "echidna"}')
        assert r.execute_command("EXEC") == [1, 1]
        assert set(keys_of(search(r, root, query="echidna"))) == {"a", "b"}
    finally:
        r.close()


# ---- MEM.NAMESPACES ------------------------------------------------------------------------------

@pytest.fixture
def ns_root(client: redis.Redis, root: str) -> str:
    for ns in ("a", "a.b", "a.b.c", "a.bc", "x.b", "x.y.z", "dead", "half"):
        put(client, f"{root}.{ns}", "k", {"v": 1})
    put(client, f"{root}.half", "k2", {"v": 2})
    delete(client, f"{root}.dead", "k")
    delete(client, f"{root}.half", "k")
    return root


def test_namespaces_prefix_lists_only_live_sorted_distinct(client: redis.Redis, ns_root: str) -> None:
    R = ns_root
    assert namespaces(client, "PREFIX", R) == [f"{R}.a", f"{R}.a.b", f"{R}.a.b.c", f"{R}.a.bc", f"{R}.half",
                                               f"{R}.x.b", f"{R}.x.y.z"]
    assert namespaces(client, "PREFIX", f"{R}.a.b") == [f"{R}.a.b", f"{R}.a.b.c"], "labels, not characters"
    assert namespaces(client, "PREFIX", f"{R}.a.b.c") == [f"{R}.a.b.c"]
    assert namespaces(client, "PREFIX", f"{R}.dead") == [], "no live item left"
    assert namespaces(client, "PREFIX", f"{R}.nope") == []


def test_namespaces_without_prefix_and_root_prefix(client: redis.Redis, ns_root: str) -> None:
    R = ns_root
    mine = [f"{R}.a", f"{R}.a.b", f"{R}.a.b.c", f"{R}.a.bc", f"{R}.half", f"{R}.x.b", f"{R}.x.y.z"]
    for got in (namespaces(client, "LIMIT", 10000), namespaces(client, "PREFIX", "", "LIMIT", 10000)):
        assert got == sorted(set(got)), "sorted and distinct"
        assert [n for n in got if n == R or n.startswith(R + ".")] == mine


def test_namespaces_wildcard_prefix_and_suffix(client: redis.Redis, ns_root: str) -> None:
    R = ns_root
    assert namespaces(client, "PREFIX", f"{R}.*.b") == [f"{R}.a.b", f"{R}.a.b.c", f"{R}.x.b"]
    assert namespaces(client, "PREFIX", f"{R}.*.*.*") == [f"{R}.a.b.c", f"{R}.x.y.z"]
    assert namespaces(client, "PREFIX", f"{R}.*") == namespaces(client, "PREFIX", R)
    assert namespaces(client, "PREFIX", R, "SUFFIX", "b") == [f"{R}.a.b", f"{R}.x.b"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "c") == [f"{R}.a.b.c"], "whole labels: not a.bc"
    assert namespaces(client, "PREFIX", R, "SUFFIX", "b.c") == [f"{R}.a.b.c"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "*.b") == [f"{R}.a.b", f"{R}.x.b"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "x.*") == [f"{R}.x.b"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "y.*") == [f"{R}.x.y.z"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "*.*.*") == [f"{R}.a.b", f"{R}.a.b.c", f"{R}.a.bc",
                                                                  f"{R}.x.b", f"{R}.x.y.z"]
    assert namespaces(client, "PREFIX", R, "SUFFIX", "dead") == []
    assert namespaces(client, "PREFIX", f"{R}.a.b", "SUFFIX", "b.c") == [f"{R}.a.b.c"], "they may overlap"
    assert namespaces(client, "PREFIX", f"{R}.a", "SUFFIX", "a") == [f"{R}.a"]
    suffixed = namespaces(client, "SUFFIX", f"{R}.a.b.c", "LIMIT", 10000)
    assert suffixed == [f"{R}.a.b.c"], "SUFFIX alone works too"


def test_namespaces_maxdepth(client: redis.Redis, ns_root: str) -> None:
    R = ns_root
    assert namespaces(client, "PREFIX", R, "MAXDEPTH", 1) == [R]
    assert namespaces(client, "PREFIX", R, "MAXDEPTH", 2) == [f"{R}.a", f"{R}.half", f"{R}.x"]
    assert namespaces(client, "PREFIX", R, "MAXDEPTH", 3) == [f"{R}.a", f"{R}.a.b", f"{R}.a.bc", f"{R}.half",
                                                              f"{R}.x.b", f"{R}.x.y"]
    assert namespaces(client, "PREFIX", R, "MAXDEPTH", 99) == namespaces(client, "PREFIX", R)
    assert namespaces(client, "PREFIX", R, "SUFFIX", "c", "MAXDEPTH", 2) == [f"{R}.a"]
    assert namespaces(client, "PREFIX", f"{R}.a.b", "MAXDEPTH", 2) == [f"{R}.a"], "first d labels of the namespace"


def test_namespaces_limit_offset(client: redis.Redis, ns_root: str) -> None:
    R = ns_root
    every = namespaces(client, "PREFIX", R)
    assert len(every) == 7
    assert namespaces(client, "PREFIX", R, "LIMIT", 2) == every[:2]
    assert namespaces(client, "PREFIX", R, "LIMIT", 2, "OFFSET", 3) == every[3:5]
    assert namespaces(client, "PREFIX", R, "OFFSET", 5) == every[5:]
    assert namespaces(client, "PREFIX", R, "OFFSET", 7) == []
    assert namespaces(client, "PREFIX", R, "LIMIT", 0) == []
    assert namespaces(client, "PREFIX", R, "MAXDEPTH", 2, "LIMIT", 1, "OFFSET", 1) == [f"{R}.half"]


def test_namespaces_default_limit_is_100(client: redis.Redis, root: str) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(105):
        pipe.execute_command("MEM.PUT", f"{root}.n{i:03d}", "k", "{}")
    pipe.execute()
    got = namespaces(client, "PREFIX", root)
    assert got == [f"{root}.n{i:03d}" for i in range(100)]
    assert len(namespaces(client, "PREFIX", root, "LIMIT", 10000)) == 105


# ---- MEM.HISTORY ---------------------------------------------------------------------------------

def test_history_newest_first_with_superseded_and_deleted(client: redis.Redis, root: str) -> None:
    assert history(client, root, "k") == [], "no such key: empty history"
    items = []
    for i in range(1, 4):
        put(client, root, "k", {"n": i})
        items.append(get(client, root, "k"))
        tick()
    assert history(client, root, "k") == [
        {"version": 2, "value": {"n": 2}, "created_at": items[0]["created_at"], "updated_at": items[1]["updated_at"],
         "superseded_at": items[2]["updated_at"], "deleted": False},
        {"version": 1, "value": {"n": 1}, "created_at": items[0]["created_at"], "updated_at": items[0]["updated_at"],
         "superseded_at": items[1]["updated_at"], "deleted": False},
    ], "newest first, the current version excluded, superseded_at = the later put"
    t_a = time.time()
    assert delete(client, root, "k") == 1
    t_b = time.time()
    hist = history(client, root, "k")
    assert [h["version"] for h in hist] == [3, 2, 1]
    assert set(hist[0]) == HISTORY_FIELDS
    assert hist[0]["deleted"] is True and hist[0]["value"] == {"n": 3}
    assert hist[0]["updated_at"] == items[2]["updated_at"] and hist[0]["created_at"] == items[0]["created_at"]
    assert t_a - 0.002 <= ts(hist[0]["superseded_at"]) <= t_b + 0.002, "superseded_at of a delete: its time"
    assert [h["deleted"] for h in hist] == [True, False, False]
    tick()
    assert put(client, root, "k", {"n": 4}) == 4
    current = get(client, root, "k")
    hist2 = history(client, root, "k")
    assert hist2 == hist, "re-creating the key adds no history entry; v4 is current"
    assert current is not None and current["created_at"] != items[0]["created_at"]
    tick()
    put(client, root, "k", {"n": 5})
    hist3 = history(client, root, "k")
    assert [h["version"] for h in hist3] == [4, 3, 2, 1]
    assert hist3[0] == {"version": 4, "value": {"n": 4}, "created_at": current["created_at"],
                        "updated_at": current["updated_at"],
                        "superseded_at": get(client, root, "k")["updated_at"],  # type: ignore[index]
                        "deleted": False}
    for h in hist3:
        for f in ("created_at", "updated_at", "superseded_at"):
            ts(h[f])
        assert ts(h["created_at"]) <= ts(h["updated_at"]) <= ts(h["superseded_at"])


def test_history_limit(client: redis.Redis, root: str) -> None:
    for i in range(5):
        put(client, root, "k", {"n": i})
    assert [h["version"] for h in history(client, root, "k")] == [4, 3, 2, 1]
    assert [h["version"] for h in history(client, root, "k", "LIMIT", 2)] == [4, 3]
    assert [h["version"] for h in history(client, root, "k", "LIMIT", 100)] == [4, 3, 2, 1]
    assert history(client, root, "k", "LIMIT", 0) == []


def test_history_is_per_key(client: redis.Redis, root: str) -> None:
    put(client, root, "a", {"n": 1})
    put(client, root, "a", {"n": 2})
    put(client, root, "b", {"n": 1})
    put(client, f"{root}.sub", "a", {"n": 1})
    assert [h["value"] for h in history(client, root, "a")] == [{"n": 1}]
    assert history(client, root, "b") == []
    assert history(client, f"{root}.sub", "a") == []


def test_history_retention_versions() -> None:
    d = start_daemon(NO_AUTOFLUSH + "[memory]\nhistory_versions = 3\n")
    try:
        r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)

        def check(key: str, current: int) -> None:
            versions = [h["version"] for h in history(r, "ns", key)]
            assert 1 <= len(versions) <= 3, versions
            assert versions == list(range(current - 1, current - 1 - len(versions), -1)), \
                f"the newest earlier versions are kept: {versions}"

        for i in range(1, 7):
            assert put(r, "ns", "k", {"n": i}) == i
        check("k", 6)
        assert len(history(r, "ns", "k", "LIMIT", 100)) <= 3
        for i in range(1, 3):
            put(r, "ns", "short", {"n": i})
        assert [h["version"] for h in history(r, "ns", "short")] == [1], "retention is per key"
        assert r.execute_command("MEMD.FLUSH") in (b"OK", True)
        check("k", 6)
        for i in range(7, 10):
            put(r, "ns", "k", {"n": i})
        check("k", 9)
        assert delete(r, "ns", "k") == 1
        hist = history(r, "ns", "k")
        assert 1 <= len(hist) <= 3 and hist[0]["version"] == 9 and hist[0]["deleted"] is True
        r.execute_command("MEMD.FLUSH")
        hist = history(r, "ns", "k")
        assert 1 <= len(hist) <= 3 and hist[0]["version"] == 9
        assert [h["version"] for h in history(r, "ns", "short")] == [1]
        r.close()
    finally:
        d.cleanup()


def test_history_retention_max_age() -> None:
    # docs/memory.md calls it memory.history_max_age; config/memd.toml spells the key history_max_age_seconds
    d = start_daemon(NO_AUTOFLUSH + "[memory]\nhistory_max_age_seconds = 0.5\n")
    try:
        r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
        put(r, "ns", "k", {"n": 1})
        put(r, "ns", "k", {"n": 2})
        assert [h["version"] for h in history(r, "ns", "k")] == [1]
        wait_until(lambda: history(r, "ns", "k") == [], what="history older than history_max_age to go")
        put(r, "ns", "k", {"n": 3})
        assert [h["version"] for h in history(r, "ns", "k")] == [2], "a version superseded just now is kept"
        assert get(r, "ns", "k")["value"] == {"n": 3}  # type: ignore[index]
        r.close()
    finally:
        d.cleanup()


# ---- transactions --------------------------------------------------------------------------------

def test_multi_exec_queues_and_runs_mem_writes(daemon: Daemon, protocol: int, root: str) -> None:
    r = redis.Redis(unix_socket_path=daemon.socket, protocol=protocol, single_connection_client=True,
                    socket_timeout=10)
    other = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=10)
    try:
        put(r, root, "gone", {"v": 0})
        assert r.execute_command("MULTI") in (b"OK", "OK", True)
        for args in (("MEM.PUT", root, "a", '{"v": 1}'), ("MEM.PUT", root, "a", '{"v": 2}'),
                     ("MEM.GET", root, "a"), ("MEM.DEL", root, "gone"), ("MEM.DEL", root, "never"),
                     ("MEM.PUT", root, "b", '{"v": 3}', "TTL", "100"), ("MEM.GET", root, "b", "REFRESHTTL")):
            assert r.execute_command(*args) in (b"QUEUED", "QUEUED"), args
        r.execute_command("SET", f"{root}-plain", "x")  # MEM commands mix with the others
        assert get(other, root, "a") is None, "queued, not run yet"
        assert get(other, root, "gone") is not None
        out = r.execute_command("EXEC")
        assert out[:2] == [1, 2]
        got = json.loads(out[2])
        assert got["value"] == {"v": 2} and got["version"] == 2, "a GET in the transaction sees earlier writes"
        assert out[3:6] == [1, 0, 1]
        assert json.loads(out[6])["version"] == 1, "MEM.GET REFRESHTTL queues too"
        assert out[7] in (b"OK", "OK", True) and other.get(f"{root}-plain") == b"x"
        assert get(other, root, "gone") is None and get(other, root, "b")["version"] == 1  # type: ignore[index]
        assert r.ping()
    finally:
        r.close()
        other.close()


@pytest.mark.parametrize("refused", [
    ("MEM.SEARCH", "x"), ("MEM.NAMESPACES",), ("MEM.HISTORY", "x", "k"),
])
def test_multi_refuses_search_namespaces_history(daemon: Daemon, protocol: int, root: str,
                                                 refused: tuple[str, ...]) -> None:
    r = redis.Redis(unix_socket_path=daemon.socket, protocol=protocol, single_connection_client=True,
                    socket_timeout=10)
    try:
        r.execute_command("MULTI")
        r.execute_command("MEM.PUT", root, "k", '{"v": 1}')
        with pytest.raises(redis.ResponseError):
            r.execute_command(*refused)
        with pytest.raises(redis.ResponseError, match="(?i)EXECABORT|discarded"):
            r.execute_command("EXEC")
        assert get(r, root, "k") is None, "the aborted transaction ran nothing"
        assert r.ping()
        assert put(r, root, "k", {"v": 1}) == 1
    finally:
        r.close()


# ---- concurrency and pipelining ------------------------------------------------------------------

def test_concurrent_puts_get_distinct_consecutive_versions(daemon: Daemon, root: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        r = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=10)
        try:
            for i in range(25):
                v = put(r, root, "hot", {"w": w, "i": i})
                with lock:
                    results.append(v)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            r.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results) == list(range(1, 151)), "every put got its own version, none skipped"
    assert get(redis.Redis(unix_socket_path=daemon.socket), root, "hot")["version"] == 150  # type: ignore[index]


def test_concurrent_deletes_only_one_wins(daemon: Daemon, root: str) -> None:
    clients = [redis.Redis(unix_socket_path=daemon.socket, socket_timeout=10) for _ in range(8)]
    try:
        for c in clients:
            c.ping()
        for round_ in range(5):
            put(clients[0], root, "k", {"round": round_})
            barrier = threading.Barrier(len(clients))
            replies: list[Any] = []

            def deleter(c: redis.Redis) -> None:
                barrier.wait(10)
                replies.append(delete(c, root, "k"))

            threads = [threading.Thread(target=deleter, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(replies) == [0] * 7 + [1]
    finally:
        for c in clients:
            c.close()


def test_pipelined_mem_commands_see_each_other(client: redis.Redis, root: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("MEM.PUT", root, "k", '{"t": "okapi"}')
    pipe.execute_command("MEM.SEARCH", root, "QUERY", "okapi")
    pipe.execute_command("MEM.PUT", root, "k", '{"t": "tapir"}')
    pipe.execute_command("MEM.SEARCH", root, "QUERY", "okapi")
    pipe.execute_command("MEM.SEARCH", root, "QUERY", "tapir")
    pipe.execute_command("MEM.HISTORY", root, "k")
    pipe.execute_command("MEM.DEL", root, "k")
    pipe.execute_command("MEM.SEARCH", root)
    pipe.execute_command("MEM.NAMESPACES", "PREFIX", root)
    pipe.execute_command("MEM.GET", root, "k")
    out = pipe.execute()
    assert out[0] == 1 and [json.loads(x)["version"] for x in out[1]] == [1]
    assert out[2] == 2 and out[3] == [] and [json.loads(x)["version"] for x in out[4]] == [2]
    assert [json.loads(x)["value"] for x in out[5]] == [{"t": "okapi"}]
    assert out[6] == 1 and out[7] == [] and out[8] == [] and out[9] is None


# ---- separate keyspace ---------------------------------------------------------------------------

def test_mem_items_invisible_to_keyspace_and_survive_flushall(client: redis.Redis, root: str) -> None:
    client.flushall()
    put(client, root, "k", {"t": "capybara"})
    put(client, f"{root}.x", "k2", {"t": "capybara"})
    assert client.dbsize() == 0
    assert client.keys("*") == []
    assert client.scan(0, count=1000) == (0, [])
    assert client.exists(root, "k", f"{root}.k", f"{root}:k") == 0
    client.set(root, "plain")
    client.set("k", "plain")
    assert client.dbsize() == 2
    assert sorted(client.keys("*")) == sorted([root.encode(), b"k"])
    assert get(client, root, "k")["value"] == {"t": "capybara"}  # type: ignore[index]
    assert client.flushall() is True
    assert client.dbsize() == 0
    assert get(client, root, "k")["value"] == {"t": "capybara"}  # type: ignore[index]
    assert len(search(client, root, query="capybara")) == 2
    assert namespaces(client, "PREFIX", root) == [root, f"{root}.x"]
    assert put(client, root, "k", {"t": "capybara"}) == 2


# ---- bad input -----------------------------------------------------------------------------------

BAD_NS = ["", "a..b", ".a", "a.", ".", "a.b."]


@pytest.mark.parametrize("ns", BAD_NS)
def test_bad_namespace_refused_everywhere(client: redis.Redis, ns: str) -> None:
    for args in (("MEM.PUT", ns, "k", "{}"), ("MEM.GET", ns, "k"), ("MEM.DEL", ns, "k"),
                 ("MEM.HISTORY", ns, "k")):
        assert_error(client, *args, match="(?i)invalid namespace")
    if ns != "":
        assert_error(client, "MEM.SEARCH", ns, match="(?i)invalid namespace")
        assert_error(client, "MEM.NAMESPACES", "PREFIX", ns, match="(?i)invalid (namespace|prefix)")


def test_bad_namespace_message(client: redis.Redis) -> None:
    msg = assert_error(client, "MEM.PUT", "a..b", "k", "{}")
    assert msg == "invalid namespace 'a..b': labels must be non-empty and contain no '.'"


def test_exact_error_lines_on_the_wire(daemon: Daemon) -> None:
    assert raw_reply(daemon.socket, b"MEM.PUT", b"a..b", b"k", b"{}") == \
        b"-ERR invalid namespace 'a..b': labels must be non-empty and contain no '.'\r\n"
    assert raw_reply(daemon.socket, b"MEM.SEARCH", b"x", b"BOGUS") == b"-ERR syntax error\r\n"
    assert raw_reply(daemon.socket, b"MEM.SEARCH", b"x", b"QUERY", b'"unterminated').startswith(
        b"-ERR invalid QUERY: ")
    for args in ((b"MEM.PUT", b"x", b"k", b"[1]"), (b"MEM.PUT", b"x", b"k", b"{"), (b"MEM.PUT", b"x", b"", b"{}"),
                 (b"MEM.PUT", b"x", b"k", b'{"a": NaN}'), (b"MEM.PUT", b"x", b"k", b"{}", b"TTL", b"0"),
                 (b"MEM.PUT", b"x", b"k", b"{}", b"TTL", b"abc"), (b"MEM.PUT", b"x", b"k", b"{}", b"BOGUS"),
                 (b"MEM.PUT", b"x", b"k", b"{" + b'"p":"' + b"x" * MAX_VALUE_BYTES + b'"}'),
                 (b"MEM.GET", b"x"), (b"MEM.GET", b"\xff", b"k"), (b"MEM.SEARCH", b"x", b"LIMIT", b"-1"),
                 (b"MEM.SEARCH", b"x", b"OFFSET", b"x"), (b"MEM.SEARCH", b"x", b"FILTER", b"[]"),
                 (b"MEM.SEARCH", b"x", b"FILTER", b'{"a": {"$foo": 1}}'), (b"MEM.NAMESPACES", b"MAXDEPTH", b"0"),
                 (b"MEM.NAMESPACES", b"LIMIT", b"10001"), (b"MEM.HISTORY", b"x", b"k", b"LIMIT", b"-1"),
                 (b"MEM.DEL", b".x", b"k")):
        reply = raw_reply(daemon.socket, *args)
        assert reply.startswith(b"-ERR ") and reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1, (args, reply)


def test_empty_key_refused(client: redis.Redis, root: str) -> None:
    for args in (("MEM.PUT", root, "", "{}"), ("MEM.GET", root, ""), ("MEM.DEL", root, ""),
                 ("MEM.HISTORY", root, "")):
        assert_error(client, *args, match="(?i)key")


@pytest.mark.parametrize("value", [
    "{", "", "not json", '{"a": 1', '{"a": 1}}', "{'a': 1}", '{"a": 1} trailing',
    "[]", "[1, 2]", '"string"', "42", "1.5", "true", "null",
    '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": [1, {"b": NaN}]}',
], ids=repr)
def test_bad_json_value_refused(client: redis.Redis, root: str, value: str) -> None:
    assert_error(client, "MEM.PUT", root, "k", value)
    assert get(client, root, "k") is None
    assert put(client, root, "k", {"ok": True}) == 1, "nothing was stored, no version used up"


@pytest.mark.parametrize("args", [
    (b"\xff\xfe", b"k", b"{}"), (b"ok.\xff", b"k", b"{}"), (b"ok", b"\xff", b"{}"), (b"ok", b"k\xc3", b"{}"),
    (b"ok", b"k", b'{"a": "\xff"}'), (b"ok", b"k", b'{"\xfe": 1}'),
], ids=repr)
def test_non_utf8_put_refused(client: redis.Redis, root: str, args: tuple[bytes, ...]) -> None:
    ns = args[0].replace(b"ok", root.encode())
    assert_error(client, "MEM.PUT", ns, *args[1:])
    assert client.execute_command("MEM.GET", root, "k") is None


def test_non_utf8_elsewhere_refused(client: redis.Redis, root: str) -> None:
    assert_error(client, "MEM.GET", b"\xff", b"k")
    assert_error(client, "MEM.GET", root, b"\xff")
    assert_error(client, "MEM.DEL", b"\xff", b"k")
    assert_error(client, "MEM.HISTORY", root, b"k\xff")
    assert_error(client, "MEM.SEARCH", b"\xff")
    assert_error(client, "MEM.SEARCH", root, b"QUERY", b"\xff\xfe")
    assert_error(client, "MEM.SEARCH", root, b"FILTER", b'{"a": "\xff"}')
    assert_error(client, "MEM.NAMESPACES", b"PREFIX", b"\xff")
    assert_error(client, "MEM.NAMESPACES", b"SUFFIX", b"\xff")


@pytest.mark.parametrize("ttl", ["0", "-1", "-0.5", "abc", "", "nan", "1s", "0x10"])
def test_bad_ttl_refused(client: redis.Redis, root: str, ttl: str) -> None:
    assert_error(client, "MEM.PUT", root, "k", "{}", "TTL", ttl)
    assert get(client, root, "k") is None


@pytest.mark.parametrize("opts", [
    ("LIMIT", "-1"), ("LIMIT", "abc"), ("LIMIT", "1.5"), ("LIMIT", "1001"), ("LIMIT", ""),
    ("OFFSET", "-1"), ("OFFSET", "x"), ("OFFSET", "2.5"),
    ("LIMIT",), ("OFFSET",), ("QUERY",), ("FILTER",),
    ("BOGUS",), ("BOGUS", "1"), ("REFRESHTTL", "extra"),
], ids=repr)
def test_bad_search_options(client: redis.Redis, root: str, opts: tuple[str, ...]) -> None:
    assert_error(client, "MEM.SEARCH", root, *opts)


def test_search_limit_bounds_accepted(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {})
    assert len(search(client, root, limit=1000)) == 1
    assert search(client, root, limit=0) == []
    assert len(search(client, root, offset=0)) == 1


@pytest.mark.parametrize("opts", [
    ("LIMIT", "-1"), ("LIMIT", "abc"), ("LIMIT", "10001"), ("OFFSET", "-1"), ("OFFSET", "x"),
    ("MAXDEPTH", "0"), ("MAXDEPTH", "-1"), ("MAXDEPTH", "x"), ("MAXDEPTH", "1.5"),
    ("LIMIT",), ("PREFIX",), ("SUFFIX",), ("MAXDEPTH",), ("BOGUS",), ("BOGUS", "x"),
    ("SUFFIX", ""), ("SUFFIX", "a..b"),
], ids=repr)
def test_bad_namespaces_options(client: redis.Redis, opts: tuple[str, ...]) -> None:
    assert_error(client, "MEM.NAMESPACES", *opts)


def test_namespaces_limit_bounds_accepted(client: redis.Redis, root: str) -> None:
    put(client, root, "k", {})
    assert namespaces(client, "PREFIX", root, "LIMIT", 10000) == [root]
    assert namespaces(client, "PREFIX", root, "MAXDEPTH", 1) == [root]


@pytest.mark.parametrize("opts", [("LIMIT", "-1"), ("LIMIT", "x"), ("LIMIT",), ("BOGUS", "1"), ("BOGUS",)],
                         ids=repr)
def test_bad_history_options(client: redis.Redis, root: str, opts: tuple[str, ...]) -> None:
    put(client, root, "k", {})
    assert_error(client, "MEM.HISTORY", root, "k", *opts)


@pytest.mark.parametrize("args", [
    ("MEM.PUT", "ns", "k", "{}", "BOGUS"), ("MEM.PUT", "ns", "k", "{}", "TTL", "5", "BOGUS"),
    ("MEM.PUT", "ns", "k", "{}", "REFRESHTTL"), ("MEM.GET", "ns", "k", "BOGUS"),
    ("MEM.GET", "ns", "k", "TTL", "5"), ("MEM.SEARCH", "ns", "WITHSCORES"),
    ("MEM.NAMESPACES", "NOPE", "x"), ("MEM.HISTORY", "ns", "k", "OFFSET", "1"),
], ids=repr)
def test_unknown_option_is_syntax_error(client: redis.Redis, args: tuple[str, ...]) -> None:
    assert_error(client, *args, match="syntax error")


def test_missing_ttl_value(client: redis.Redis, root: str) -> None:
    assert_error(client, "MEM.PUT", root, "k", "{}", "TTL")
    assert get(client, root, "k") is None


@pytest.mark.parametrize("args", [
    ("MEM.PUT",), ("MEM.PUT", "ns"), ("MEM.PUT", "ns", "k"), ("MEM.GET",), ("MEM.GET", "ns"),
    ("MEM.DEL",), ("MEM.DEL", "ns"), ("MEM.DEL", "ns", "k", "extra"), ("MEM.SEARCH",),
    ("MEM.HISTORY",), ("MEM.HISTORY", "ns"),
], ids=repr)
def test_wrong_arity(client: redis.Redis, args: tuple[str, ...]) -> None:
    assert_error(client, *args, match="(?i)wrong number of arguments")


@pytest.mark.parametrize("query", ['"unterminated', "foo AND", "(", "AND", "NEAR(", "a OR OR b", ")"], ids=repr)
def test_fts5_syntax_error(client: redis.Redis, root: str, query: str) -> None:
    put(client, root, "k", {"t": "foo"})
    assert_error(client, "MEM.SEARCH", root, "QUERY", query, match=r"^invalid QUERY: \S")


def test_daemon_survives_all_bad_input(daemon: Daemon, client: redis.Redis) -> None:
    """A burst of bad commands on one connection, pipelined: every one answered, the daemon alive."""
    pipe = client.pipeline(transaction=False)
    bad = [("MEM.PUT", "a..b", "k", "{}"), ("MEM.PUT", "ns", "", "{}"), ("MEM.PUT", "ns", "k", "[1]"),
           ("MEM.SEARCH", "ns", "QUERY", '"'), ("MEM.SEARCH", "ns", "FILTER", "[]"),
           ("MEM.NAMESPACES", "MAXDEPTH", "0"), ("MEM.HISTORY", "ns", "k", "LIMIT", "-1"),
           ("MEM.PUT", b"\xff", b"\xff", b"\xff")]
    for args in bad:
        pipe.execute_command(*args)
    pipe.ping()
    out = pipe.execute(raise_on_error=False)
    assert all(isinstance(x, redis.ResponseError) for x in out[:-1]), out
    assert out[-1] is True
    assert daemon.proc is not None and daemon.proc.poll() is None


# ---- redis-cli -----------------------------------------------------------------------------------

def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("redis-cli")
    assert exe, "redis-cli is missing: apt-get install redis-tools (.ci/run does)"
    return subprocess.run([exe, "-s", daemon.socket, *args], capture_output=True, text=True, timeout=10)


def test_redis_cli_round_trip(daemon: Daemon, root: str) -> None:
    ns = f"{root}.cli"
    assert cli(daemon, "MEM.PUT", ns, "k", '{"text": "hello cli", "n": 1}').stdout.strip() == "1"
    assert cli(daemon, "MEM.PUT", ns, "k", '{"text": "hello again", "n": 2}', "TTL", "100").stdout.strip() == "2"
    item = json.loads(cli(daemon, "MEM.GET", ns, "k").stdout)
    assert item["value"] == {"text": "hello again", "n": 2} and item["version"] == 2
    lines = cli(daemon, "MEM.SEARCH", root, "QUERY", "hello").stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "k" and json.loads(lines[0])["score"] > 0
    lines = cli(daemon, "-3", "MEM.SEARCH", root, "FILTER", '{"n": 2}').stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["score"] is None
    assert cli(daemon, "MEM.NAMESPACES", "PREFIX", root).stdout.strip() == ns
    hist = cli(daemon, "MEM.HISTORY", ns, "k").stdout.strip().splitlines()
    assert [json.loads(h)["version"] for h in hist] == [1]
    assert cli(daemon, "MEM.DEL", ns, "k").stdout.strip() == "1"
    assert cli(daemon, "MEM.DEL", ns, "k").stdout.strip() == "0"
    gone = cli(daemon, "-3", "MEM.GET", ns, "k")
    assert gone.returncode == 0 and gone.stdout.strip() == ""


def test_redis_cli_errors(daemon: Daemon) -> None:
    out = cli(daemon, "MEM.PUT", "a..b", "k", "{}")
    assert "ERR invalid namespace 'a..b': labels must be non-empty and contain no '.'" in out.stdout + out.stderr
    out = cli(daemon, "MEM.SEARCH", "x", "QUERY", '"open')
    assert "ERR invalid QUERY: " in out.stdout + out.stderr
    out = cli(daemon, "MEM.SEARCH", "x", "FROB")
    assert "ERR syntax error" in out.stdout + out.stderr
    assert cli(daemon, "PING").stdout.strip() == "PONG"
