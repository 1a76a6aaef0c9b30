"""Durability of MEM.* writes against real process death (docs/memory.md).

A real ``memd serve`` (``fsync = "always"``) takes MEM.PUT / MEM.DEL /
MEM.GET REFRESHTTL; the test keeps a model built only from acknowledged
replies (plus a MEM.GET after each put for the timestamps). The daemon is then
SIGKILLed (or stopped with SIGTERM) and restarted on the same data directory,
and every acknowledged put (value, version, timestamps, TTL), delete and
REFRESHTTL must be there, the history intact, and search (QUERY and FILTER)
and MEM.NAMESPACES must find exactly the live items. The daemon is configured
not to flush on its own, so a kill leaves everything to WAL replay unless the
test flushed (MEMD.FLUSH) on purpose; one test kills a daemon that flushes
often, in the middle of a stream of writes.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.daemon import NO_AUTOFLUSH, Daemon, short_tmpdir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FREQUENT_FLUSH = """\
[flush]
max_records = 40
max_age_seconds = 0.05
"""
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
Key = tuple[str, str]


# ---- helpers -------------------------------------------------------------------------------------

def start_daemon(config_text: str) -> Daemon:
    base = short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write(config_text)
    return Daemon(fsync="always", config=conf, base=base).start()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = start_daemon(NO_AUTOFLUSH)
    try:
        yield d
    finally:
        d.cleanup()


def connect(d: Daemon) -> redis.Redis:
    # no silent retries: a resent MEM.PUT could land twice, and retrying a dead daemon only costs time
    return redis.Redis(unix_socket_path=d.socket, socket_timeout=10, retry=Retry(NoBackoff(), 0))


def sigkill_and_restart(d: Daemon) -> None:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    d.start()


def last_replayed(d: Daemon) -> int:
    found = re.findall(r"recovery_done replayed=(\d+)", d.log())
    assert found, d.log()
    return int(found[-1])


def ts(text: str) -> float:
    assert isinstance(text, str) and TIME_RE.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def get(r: redis.Redis, ns: str, key: str, *opts: str) -> dict[str, Any] | None:
    raw = r.execute_command("MEM.GET", ns, key, *opts)
    return None if raw is None else json.loads(raw)


def search(r: redis.Redis, prefix: str, *opts: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.execute_command("MEM.SEARCH", prefix, *opts)]


def history(r: redis.Redis, ns: str, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.execute_command("MEM.HISTORY", ns, key)]


# ---- the model: what acknowledged replies promise ------------------------------------------------

@dataclass
class Version:
    version: int
    value: dict[str, Any]
    created_at: str
    updated_at: str
    ended_by: str | None = None          # "put" or "del" once a later write ended it
    end_window: tuple[float, float] = (0.0, 0.0)


class Model:
    def __init__(self, root: str) -> None:
        self.root = root
        self.versions: dict[Key, list[Version]] = defaultdict(list)
        self.live: dict[Key, dict[str, Any] | None] = {}

    def key(self, i: int) -> Key:
        return (f"{self.root}.g{i % 4}" + (".sub" if i % 5 == 0 else ""), f"k{i}")

    def next_version(self, k: Key) -> int:
        return self.versions[k][-1].version + 1 if self.versions[k] else 1

    def value(self, i: int, version: int) -> dict[str, Any]:
        return {"uid": f"u{i}", "rev": version, "word": f"w{i}v{version}", "n": i,
                "kind": "fact" if i % 2 else "note", "text": "remember this durable memory",
                "nested": {"list": [i, f"x{i}", {"deep": True}]}}

    def put(self, r: redis.Redis, i: int, ttl: float | None = None) -> None:
        k = self.key(i)
        expected = self.next_version(k)
        value = self.value(i, expected)
        args = ["MEM.PUT", k[0], k[1], json.dumps(value)] + (["TTL", str(ttl)] if ttl else [])
        assert r.execute_command(*args) == expected, f"{k}: versions grow by one per put"
        item = get(r, *k)
        assert item is not None and item["version"] == expected and item["value"] == value
        if self.live.get(k) is not None:
            prev = self.versions[k][-1]
            prev.ended_by, prev.end_window = "put", (ts(prev.updated_at), ts(item["updated_at"]))
        self.versions[k].append(Version(expected, value, item["created_at"], item["updated_at"]))
        self.live[k] = item

    def delete(self, r: redis.Redis, i: int) -> None:
        k = self.key(i)
        was_live = self.live.get(k) is not None
        t_a = time.time()
        assert r.execute_command("MEM.DEL", *k) == (1 if was_live else 0)
        t_b = time.time()
        if was_live:
            v = self.versions[k][-1]
            v.ended_by, v.end_window = "del", (t_a - 0.002, t_b + 0.002)
        self.live[k] = None

    def refresh(self, r: redis.Redis, i: int) -> None:
        k = self.key(i)
        before = self.live[k]
        assert before is not None and before["expires_at"] is not None
        time.sleep(0.003)  # let a few ms pass, so the refreshed expires_at differs (not synchronisation)
        assert get(r, *k, "REFRESHTTL") is not None
        after = get(r, *k)
        assert after is not None and ts(after["expires_at"]) > ts(before["expires_at"])
        assert after["version"] == before["version"]
        self.live[k] = after

    def workload(self, r: redis.Redis, rng: random.Random, indices: range) -> None:
        for i in indices:
            for _ in range(rng.randint(1, 4)):
                self.put(r, i, ttl=300 if rng.random() < 0.25 else None)
            roll = rng.random()
            if roll < 0.2:
                self.delete(r, i)
            elif roll < 0.35:
                self.delete(r, i)
                self.put(r, i)  # re-created after a delete: the version count continues
            elif self.live[self.key(i)]["expires_at"] is not None:  # type: ignore[index]
                self.refresh(r, i)

    # -- checks ----------------------------------------------------------------------------------

    def verify(self, r: redis.Redis) -> None:
        live = {k: item for k, item in self.live.items() if item is not None}
        assert live, "the workload left nothing live"
        for k, item in self.live.items():
            assert get(r, *k) == item, f"{k}: acknowledged state lost or changed"
            self.verify_history(r, k)
        # search: exactly the live items, each findable by QUERY and by FILTER
        listed = search(r, self.root, "LIMIT", "1000")
        assert {(i["namespace"], i["key"]) for i in listed} == set(live)
        assert all(ts(a["updated_at"]) >= ts(b["updated_at"]) for a, b in zip(listed, listed[1:]))
        for k, item in live.items():
            (hit,) = search(r, self.root, "QUERY", item["value"]["word"])
            assert (hit["namespace"], hit["key"]) == k and hit["score"] > 0
            assert {f: hit[f] for f in item if f != "score"} == {f: v for f, v in item.items() if f != "score"}
            (hit,) = search(r, self.root, "FILTER", json.dumps({"uid": item["value"]["uid"]}))
            assert (hit["namespace"], hit["key"]) == k
        for k, versions in self.versions.items():
            current = self.live[k]
            for v in versions:
                if current is None or v.version != current["version"]:
                    assert search(r, self.root, "QUERY", v.value["word"]) == [], f"{k} v{v.version} still indexed"
            if current is None:
                assert search(r, self.root, "FILTER", json.dumps({"uid": versions[0].value["uid"]})) == []
        facts = search(r, self.root, "QUERY", "durable", "FILTER", '{"kind": "fact"}', "LIMIT", "1000")
        assert {(i["namespace"], i["key"]) for i in facts} == {k for k, i in live.items()
                                                               if i["value"]["kind"] == "fact"}
        spaces = [x.decode() for x in r.execute_command("MEM.NAMESPACES", "PREFIX", self.root, "LIMIT", "10000")]
        assert spaces == sorted({ns for ns, _ in live})

    def verify_history(self, r: redis.Redis, k: Key) -> None:
        got = history(r, *k)
        expected = [v for v in reversed(self.versions[k]) if v.ended_by is not None]
        assert [h["version"] for h in got] == [v.version for v in expected], f"{k}: history"
        for h, v in zip(got, expected):
            assert h["value"] == v.value and h["created_at"] == v.created_at and h["updated_at"] == v.updated_at
            assert h["deleted"] is (v.ended_by == "del"), f"{k} v{v.version}"
            lo, hi = v.end_window
            assert lo - 0.001 <= ts(h["superseded_at"]) <= hi + 0.001, (k, h, v)

    def verify_versions_continue(self, r: redis.Redis) -> None:
        """After the restart, the next put of every key (deleted ones too) continues its count."""
        for i in sorted({int(k[1][1:]) for k in self.versions}):
            self.put(r, i)


def all_histories(r: redis.Redis, model: Model) -> dict[Key, list[dict[str, Any]]]:
    return {k: history(r, *k) for k in model.versions}


# ---- tests ---------------------------------------------------------------------------------------

def test_sigkill_keeps_acknowledged_mem_writes(daemon: Daemon) -> None:
    model = Model("crash")
    r = connect(daemon)
    model.workload(r, random.Random("sigkill"), range(30))
    r.close()
    sigkill_and_restart(daemon)
    assert last_replayed(daemon) > 0, "the test meant to recover from the WAL"
    r = connect(daemon)
    model.verify(r)
    snapshot = all_histories(r, model)
    items = {k: get(r, *k) for k in model.versions}
    r.close()
    # a second kill right after recovery: what recovery (and the searches' flush) produced is durable too
    sigkill_and_restart(daemon)
    r = connect(daemon)
    assert all_histories(r, model) == snapshot
    assert {k: get(r, *k) for k in model.versions} == items
    model.verify_versions_continue(r)
    model.workload(r, random.Random("sigkill-2"), range(25, 40))
    r.close()
    sigkill_and_restart(daemon)
    r = connect(daemon)
    model.verify(r)
    r.close()


def test_sigterm_restart_keeps_mem_writes(daemon: Daemon) -> None:
    model = Model("clean")
    r = connect(daemon)
    model.workload(r, random.Random("sigterm"), range(30))
    r.close()
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    daemon.start()
    assert last_replayed(daemon) == 0, "a clean shutdown flushes the MEM writes to SQLite like the others"
    r = connect(daemon)
    model.verify(r)
    model.verify_versions_continue(r)
    r.close()


def test_flush_then_more_writes_then_sigkill(daemon: Daemon) -> None:
    model = Model("mixed")
    r = connect(daemon)
    rng = random.Random("flush")
    model.workload(r, rng, range(20))
    assert r.execute_command("MEMD.FLUSH") in (b"OK", "OK", True)
    # more writes on top: new versions of flushed keys, deletes, re-creations, new keys
    model.workload(r, rng, range(10, 30))
    for i in range(0, 20, 3):
        model.delete(r, i)
    for i in range(0, 20, 6):
        model.put(r, i)
    r.close()
    sigkill_and_restart(daemon)
    assert last_replayed(daemon) > 0, "the writes after MEMD.FLUSH come back from the WAL"
    r = connect(daemon)
    model.verify(r)
    model.verify_versions_continue(r)
    r.close()


def test_ttl_and_refresh_survive_sigkill(daemon: Daemon) -> None:
    r = connect(daemon)
    assert r.execute_command("MEM.PUT", "ttl", "short", '{"t": "gone soon"}', "TTL", "0.5") == 1
    assert r.execute_command("MEM.PUT", "ttl", "long", '{"t": "stays"}', "TTL", "300") == 1
    assert r.execute_command("MEM.PUT", "ttl", "perm", '{"t": "stays"}', "TTL", "300") == 1
    assert r.execute_command("MEM.PUT", "ttl", "perm", '{"t": "stays forever"}') == 2
    long_before = get(r, "ttl", "long")
    assert long_before is not None
    time.sleep(0.02)  # the refresh must land on a later millisecond (not synchronisation)
    assert get(r, "ttl", "long", "REFRESHTTL") is not None
    long_after = get(r, "ttl", "long")
    assert long_after is not None and ts(long_after["expires_at"]) > ts(long_before["expires_at"])
    short = get(r, "ttl", "short")
    r.close()
    sigkill_and_restart(daemon)
    r = connect(daemon)
    assert get(r, "ttl", "long") == long_after, "REFRESHTTL is a WAL-logged write"
    assert get(r, "ttl", "perm")["expires_at"] is None  # type: ignore[index]
    if short is not None:
        deadline = time.monotonic() + 5
        while get(r, "ttl", "short") is not None and time.monotonic() < deadline:
            time.sleep(0.02)  # bounded polling for the TTL to run out
        assert get(r, "ttl", "short") is None, "the TTL survived the restart and still expires"
    assert sorted(i["key"] for i in search(r, "ttl")) == ["long", "perm"]
    r.close()


def test_sigkill_mid_stream_keeps_every_acknowledged_mem_write() -> None:
    d = start_daemon(FREQUENT_FLUSH)  # flushes run while the writes go on: part SQLite, part WAL
    keys = [(f"s.g{i % 3}", f"k{i}") for i in range(24)]
    acked: dict[Key, tuple[int, dict[str, Any] | None]] = {}  # key -> (last version put, live value or None)
    inflight: list[tuple[Key, str, int, dict[str, Any]]] = []
    count = [0]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        r = connect(d)
        rng = random.Random("stream")
        n = 0
        try:
            while not stop.is_set():
                k = rng.choice(keys)
                last_version, value = acked.get(k, (0, None))
                n += 1
                if value is not None and rng.random() < 0.2:
                    inflight.append((k, "del", last_version, {}))
                    assert r.execute_command("MEM.DEL", *k) == 1
                    acked[k] = (last_version, None)
                else:
                    new = {"n": n, "word": f"s{n}x", "k": k[1]}
                    inflight.append((k, "put", last_version + 1, new))
                    ttl = ["TTL", "300"] if n % 4 == 0 else []
                    assert r.execute_command("MEM.PUT", *k, json.dumps(new), *ttl) == last_version + 1
                    acked[k] = (last_version + 1, new)
                inflight.pop()
                count[0] += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the kill
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            r.close()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 3
        while count[0] < 300 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.01)
        assert count[0] >= 50, f"only {count[0]} writes acknowledged"
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        t.join(10)
        assert not t.is_alive()
        assert not errors, errors
        assert len(inflight) <= 1
        d.start()
        r = connect(d)
        pending = inflight[0] if inflight else None
        for k in keys:
            version, value = acked.get(k, (0, None))
            item = get(r, *k)
            states = [(version, value)]
            if pending is not None and pending[0] == k:  # sent, never answered: may or may not have landed
                _, op, pv, pvalue = pending
                states.append((pv, pvalue) if op == "put" else (version, None))
            got = None if item is None else item["value"]
            assert any(got == v and (v is None or item["version"] == ver) for ver, v in states), \
                f"{k}: got {item}, acknowledged {states[0]}"
            hits = search(r, "s", "FILTER", json.dumps({"k": k[1]}))
            assert [h["value"] for h in hits] == ([] if got is None else [got])
            if got is not None:
                (hit,) = search(r, "s", "QUERY", got["word"])
                assert hit["key"] == k[1]
            # the version count survived: the next put continues it (a deleted key's too)
            base = item["version"] if item is not None else version
            assert r.execute_command("MEM.PUT", *k, "{}") == base + 1, f"{k}: version count after restart"
        r.close()
    finally:
        stop.set()
        d.cleanup()
