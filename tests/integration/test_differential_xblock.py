"""Differential test of XREAD BLOCK and XREADGROUP BLOCK: a real memd daemon against redis-server 7.0,
several clients at once (one or more block, another writes), outcome by outcome; then the delivery
guarantee of a blocked XREADGROUP across a ``kill -9`` under ``fsync = always``.

The scenarios run through :mod:`tests.integration.blockkit` (see test_differential_blocking.py
for the line format): each step's outcome is a reply or "parked", and after each step the woken
clients' replies and the sets of parked clients must agree. Stream ids are given explicitly
(``XADD s 1-1 ...``) so that replies compare byte for byte; XPENDING is asked for its summary
(no idle times). Seeded random multi-client sequences follow.
redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import pytest
import redis

from tests.integration.blockkit import Client, MultiPair
from tests.integration.daemon import Daemon
from tests.integration.diffkit import cmd, split_corpus
from tests.integration.test_blocking_crash import connect, daemon, wait_until  # noqa: F401  (daemon: a fixture)
from tests.integration.test_differential_handlers import redis_socket  # noqa: F401  (a fixture)
from tests.integration.test_differential_server import memd_socket  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(180)

SEEDS = int(os.environ.get("MEMD_DIFF_XBLOCK_SEEDS", "6"))
STEPS = 50


CORPUS = r"""
# served at once when there is something: BLOCK changes nothing then
0: XADD s 1-1 a 1
0: XREAD BLOCK 0 STREAMS s 0
0: XREAD BLOCK 10 COUNT 1 STREAMS s missing 0 0
0: XGROUP CREATE s g 0
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s 0
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s 9-9
# argument errors, in Redis's order
0: XADD s 1-1 a 1
0: XREAD BLOCK -1 STREAMS s 0
0: XREAD BLOCK abc STREAMS s 0
0: XREAD BLOCK 1.5 STREAMS s 0
0: XREAD BLOCK 99999999999999999999 STREAMS s 0
0: XREAD BLOCK STREAMS s 0
0: XREAD BLOCK 0 STREAMS s
0: XREAD BLOCK 0 STREAMS s >
0: XREAD BLOCK -1 STREAMS s >
0: XREAD BLOCK 0 COUNT x STREAMS s $
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: XREADGROUP GROUP g c BLOCK -5 STREAMS s >
0: XGROUP CREATE s g $
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s $
0: XREADGROUP GROUP g c BLOCK 0 STREAMS s missing > >
0: SET str x
0: XREAD BLOCK 0 STREAMS str 0
0: XREAD BLOCK 0 STREAMS s str $ 0
# timeouts: a null array; $ on a missing stream; several keys
1: XREAD BLOCK 50 STREAMS s $
2: XREAD BLOCK 80 STREAMS missing other $ 0
3: XADD s 1-1 a 1 ; XGROUP CREATE s g $ ; XREADGROUP GROUP g c BLOCK 60 STREAMS s >
sleep 0.4
0: XINFO GROUPS s
0: XPENDING s g
# $ is the last id when the client blocks: an entry added later wakes it, with that entry only
0: XADD s 1-1 a 1
0: XADD s 2-1 b 2
1: XREAD BLOCK 0 STREAMS s $
2: XREAD BLOCK 0 STREAMS s 1-1
0: XADD s 3-1 c 3
1: XREAD BLOCK 0 STREAMS s $
0: XADD s 3-5 d 4 e 5
# every XREAD reader of a key gets the entry; each after its own id; COUNT; a reply per stream woken
1: XREAD BLOCK 0 STREAMS a b $ $
2: XREAD BLOCK 0 COUNT 1 STREAMS b 0
3: XREAD BLOCK 0 STREAMS b a 5-0 0-0
0: XADD b 6-1 x 1
0: XADD b 7-1 y 2
1: XREAD BLOCK 0 COUNT 2 STREAMS a b 0 $
0: XADD a 1-1 p 1 ; XADD b 8-1 q 2
# a key named twice waits for its first id
1: XREAD BLOCK 0 STREAMS s s $ 0
0: XADD s 1-1 a 1
# a stream created by XADD (and by XGROUP CREATE MKSTREAM, which adds no entry)
1: XREAD BLOCK 0 STREAMS n $
2: XREAD BLOCK 0 STREAMS n 0
0: XGROUP CREATE n g $ MKSTREAM
0: XADD n 5-5 f v
# XREAD readers keep waiting when the stream is deleted, or becomes another type
0: XADD s 1-1 a 1
1: XREAD BLOCK 0 STREAMS s $
0: DEL s
0: RPUSH s x
0: DEL s
0: XADD s 0-1 a 1
0: XADD s 2-1 b 2
# writes that add no entry do not wake a reader (XDEL, XTRIM, XACK, XGROUP)
0: XADD s 1-1 a 1 ; XADD s 2-1 b 2
0: XGROUP CREATE s g 0
1: XREAD BLOCK 0 STREAMS s $
0: XDEL s 1-1
0: XTRIM s MAXLEN 0
0: XGROUP CREATECONSUMER s g c
0: XREADGROUP GROUP g c STREAMS s 0
0: XLEN s
0: XADD s 3-1 c 3
# XREADGROUP consumers compete: the first blocked takes the entry, the next waits on
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c1 BLOCK 0 STREAMS s >
2: XREADGROUP GROUP g c2 BLOCK 0 STREAMS s >
3: XREAD BLOCK 0 STREAMS s $
0: XADD s 1-1 a 1
0: XPENDING s g
0: XINFO GROUPS s
0: XADD s 2-1 b 2 ; XADD s 3-1 c 3
0: XPENDING s g
0: XREADGROUP GROUP g c2 STREAMS s 0
0: XINFO GROUPS s
# COUNT and NOACK for a woken consumer; several entries in one write (MULTI) are served together
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c COUNT 2 BLOCK 0 NOACK STREAMS s >
2: XREADGROUP GROUP g d BLOCK 0 STREAMS s >
0: MULTI ; XADD s 1-1 a 1 ; XADD s 2-1 b 2 ; XADD s 3-1 c 3 ; EXEC
0: XPENDING s g
0: XINFO GROUPS s
0: XREADGROUP GROUP g c STREAMS s 0 ; XREADGROUP GROUP g d STREAMS s 0
# two groups on one stream: a consumer of each is served
0: XGROUP CREATE s g1 $ MKSTREAM
0: XGROUP CREATE s g2 $
1: XREADGROUP GROUP g1 c BLOCK 0 STREAMS s >
2: XREADGROUP GROUP g2 c BLOCK 0 STREAMS s >
0: XADD s 1-1 a 1
0: XPENDING s g1
0: XPENDING s g2
# a consumer on several streams is served by the first that gets an entry
0: XGROUP CREATE a g $ MKSTREAM
0: XGROUP CREATE b g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS a b > >
0: XADD b 1-1 x 1
0: XADD a 1-1 y 1
0: XPENDING a g
0: XPENDING b g
# the stream deleted under a blocked consumer: UNBLOCKED; an XREAD reader on it stays
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
3: XREAD BLOCK 0 STREAMS s $
0: DEL s
0: XADD s 1-1 a 1
# the stream overwritten by another type; by a write that ends as a stream again in one EXEC
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: SET s x
0: DEL s
0: XGROUP CREATE t g $ MKSTREAM
2: XREADGROUP GROUP g c BLOCK 0 STREAMS t >
0: MULTI ; DEL t ; XGROUP CREATE t g $ MKSTREAM ; EXEC
0: XADD t 1-1 a 1
# the group destroyed: NOGROUP; another group's consumer stays
0: XGROUP CREATE s g $ MKSTREAM
0: XGROUP CREATE s h $
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
2: XREADGROUP GROUP h c BLOCK 0 STREAMS s >
0: XGROUP DESTROY s g
0: XADD s 1-1 a 1
# FLUSHDB, FLUSHALL, SWAPDB take the stream away from a consumer
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: FLUSHDB
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: SELECT 1 ; XGROUP CREATE s g $ MKSTREAM ; XADD s 1-1 a 1 ; SELECT 0
0: SWAPDB 0 1
0: SELECT 1 ; XADD s 5-5 b 2 ; SELECT 0
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: FLUSHALL
# databases: a reader waits on its own database's key
0: SELECT 2 ; XADD s 1-1 a 1 ; SELECT 0
1: SELECT 2 ; XREAD BLOCK 0 STREAMS s $
0: XADD s 5-1 b 2
0: SELECT 2 ; XADD s 2-1 c 3 ; SELECT 0
# MOVE and RENAME bring a stream in, or take it away from a consumer
0: XADD src 9-9 a 1
1: XREAD BLOCK 0 STREAMS s 1-1
0: RENAME src s
0: XGROUP CREATE s g $ MKSTREAM
1: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: MOVE s 3
# inside MULTI, BLOCK does not block: a null array
0: XGROUP CREATE s g $ MKSTREAM
0: MULTI ; XREAD BLOCK 0 STREAMS s $ ; XREADGROUP GROUP g c BLOCK 0 STREAMS s > ; XREAD BLOCK 0 STREAMS s 0 ; EXEC
# a blocked reader with a pipeline behind it; CLIENT UNBLOCK (timeout reply, then error); a disconnect
0: XGROUP CREATE s g $ MKSTREAM
1: XREAD BLOCK 0 STREAMS s $ ; PING ; XREAD BLOCK 0 STREAMS s $ ; ECHO done
0: XADD s 1-1 a 1
0: XADD s 2-1 b 2
2: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
0: CLIENT UNBLOCK $2
2: XREAD BLOCK 0 STREAMS s $
0: CLIENT UNBLOCK $2 ERROR
3: XREADGROUP GROUP g c BLOCK 0 STREAMS s >
1: XREADGROUP GROUP g c2 BLOCK 0 STREAMS s >
close 3
0: XADD s 3-1 c 3
0: XPENDING s g
# a blocking pop and a stream reader on the same key name
1: BLPOP k 0
2: XREAD BLOCK 0 STREAMS k $
0: RPUSH k a
0: DEL k
0: XADD k 1-1 f v
# XADD with trimming wakes readers all the same; the entry may already be trimmed away
0: XADD s 1-1 a 1
1: XREAD BLOCK 0 STREAMS s 0-5
0: XADD s MAXLEN 0 2-1 b 2
0: XADD s 3-1 c 3
# a script's XADD wakes readers
1: XREAD BLOCK 0 STREAMS s $
0: EVAL "return redis.call('XADD', KEYS[1], '1-1', 'f', 'v')" 1 s
"""


def run_corpus(redis_path: str, memd_path: str, protocol: int) -> None:
    mismatches: list[str] = []
    total = 0
    for n, block in enumerate(split_corpus(CORPUS)):
        pair = MultiPair(redis_path, memd_path, protocol)
        try:
            for side in (pair.redis, pair.memd):
                side.control.call(cmd("FLUSHALL"))
            for line in block:
                where = f"scenario {n} ({block[0][:40]}) line {line!r}"
                if line.startswith("sleep "):
                    time.sleep(float(line.split()[1]))
                    pair.settle(where)
                elif line.startswith("close "):
                    pair.close_client(int(line.split()[1]), where)
                else:
                    who, text = line.split(":", 1)
                    pair.step(int(who), [cmd(part) for part in text.split(" ; ")], where)
            pair.settle(f"scenario {n} end")
        except AssertionError:
            pass  # the mismatch that stopped the scenario is in pair.mismatches
        finally:
            mismatches += pair.mismatches
            total += pair.count
            pair.close()
    assert not mismatches, f"{len(mismatches)} of {total} outcomes differ:\n" + "\n".join(mismatches[:40])


@pytest.mark.parametrize("protocol", [2, 3])
def test_xblock_scenarios(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    run_corpus(redis_socket, memd_socket, protocol)


@pytest.mark.parametrize("protocol", [2, 3])
def test_script_refuses_block(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    """In a script BLOCK is an error (not only ignored as in MULTI), as Redis 7.0 answers."""
    redis_c, memd_c = Client(redis_socket, protocol), Client(memd_socket, protocol)
    try:
        for line in ("EVAL \"return redis.pcall('xread', 'BLOCK', '0', 'STREAMS', 's', '$')\" 0",
                     "EVAL \"return redis.pcall('xreadgroup', 'GROUP', 'g', 'c', 'BLOCK', '0', 'STREAMS', 's', '>')\" 0",
                     "EVAL \"return redis.pcall('xread', 'COUNT', '1', 'STREAMS', 's', '0')\" 0"):
            assert redis_c.call(cmd(line)) == memd_c.call(cmd(line)), line
    finally:
        redis_c.close()
        memd_c.close()


# ---- seeded random multi-client sequences ---------------------------------------------------------

STREAMS = ["s0", "s1"]


def random_step(rng: random.Random, ids: dict[str, int]) -> list[str]:
    """One client's commands: entries added with increasing explicit ids, blocked readers of both kinds
    (timeout 0: outcomes never race a clock), groups created and destroyed, deletes, transactions."""
    r = rng.random()
    key = rng.choice(STREAMS)
    keys = rng.sample(STREAMS, rng.randint(1, 2))

    def add(k: str) -> str:
        ids[k] += rng.randint(1, 3)
        return f"XADD {k} {ids[k]}-1 f{rng.randint(0, 9)} v"
    if r < 0.25:
        return [add(key)]
    if r < 0.40:
        ids_arg = " ".join(rng.choice(["$", "0", f"{rng.randint(0, 20)}-0"]) for _ in keys)
        count = f"COUNT {rng.randint(1, 3)} " if rng.random() < 0.3 else ""
        return [f"XREAD {count}BLOCK 0 STREAMS {' '.join(keys)} {ids_arg}"]
    if r < 0.62:
        noack = "NOACK " if rng.random() < 0.2 else ""
        count = f"COUNT {rng.randint(1, 2)} " if rng.random() < 0.3 else ""
        return [f"XREADGROUP GROUP {rng.choice(['g', 'h'])} c{rng.randint(0, 2)} {count}BLOCK 0 {noack}"
                f"STREAMS {' '.join(keys)} {' '.join('>' for _ in keys)}"]
    if r < 0.72:
        return [f"XGROUP CREATE {key} {rng.choice(['g', 'h'])} {rng.choice(['$', '0'])} MKSTREAM"]
    if r < 0.75:
        return [f"XGROUP DESTROY {key} {rng.choice(['g', 'h'])}"]
    if r < 0.78:
        ids[key] = 0
        return [f"DEL {key}"]
    if r < 0.84:
        return ["MULTI", add(key), add(rng.choice(STREAMS)), "EXEC"]
    if r < 0.88:
        return [f"XACK {key} g {ids[key]}-1"]
    return [f"XPENDING {key} {rng.choice(['g', 'h'])}", f"XLEN {key}"]


@pytest.mark.parametrize("protocol", [2, 3])
def test_xblock_random(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    mismatches: list[str] = []
    for seed in range(SEEDS):
        rng = random.Random(9100 + seed * 10 + protocol)
        ids = {k: 0 for k in STREAMS}
        pair = MultiPair(redis_socket, memd_socket, protocol)
        try:
            for side in (pair.redis, pair.memd):
                side.control.call(cmd("FLUSHALL"))
            for step in range(STEPS):
                free = [n for n in range(4) if n not in pair.parked]
                if not free:  # everyone waits: an entry on each stream frees someone (or not)
                    for k in STREAMS:
                        ids[k] += 1
                        add = cmd(f"XADD {k} {ids[k]}-1 free 1")
                        pair.redis.control.call(add)
                        pair.memd.control.call(add)
                    pair.settle(f"seed {seed} step {step} (control adds)")
                    continue
                cmds = random_step(rng, ids)
                pair.step(rng.choice(free), [cmd(c) for c in cmds], f"seed {seed} step {step} {cmds}")
            for k in STREAMS:
                for args in (cmd(f"XRANGE {k} - +"), cmd(f"XPENDING {k} g"), cmd(f"XPENDING {k} h")):
                    left = pair.redis.control.call(args), pair.memd.control.call(args)
                    if left[0] != left[1]:
                        pair.mismatches.append(f"[seed {seed} end resp{protocol}] {args!r}: redis {left[0]!r} "
                                               f"memd {left[1]!r}")
        except AssertionError:
            pass
        finally:
            mismatches += pair.mismatches
            pair.close()
    assert not mismatches, f"{len(mismatches)} outcomes differ:\n" + "\n".join(mismatches[:40])


# ---- a blocked consumer across kill -9 (fsync always) -------------------------------------------

CONSUMERS = 3


def test_blocked_xreadgroup_delivery_survives_kill9(daemon: Daemon) -> None:
    """Consumers blocked in XREADGROUP ``>``, entries added, memd killed with SIGKILL meanwhile, three
    times. Every entry a consumer received is pending (or acknowledged) after the restart: a delivery's
    reply is sent only once its PEL row is fsynced. Every acknowledged XADD is in the stream, and
    each of its entries is delivered (in the PEL, acknowledged) or still to be delivered (after the
    group's last id): at least once, never lost."""
    d = daemon
    connect(d).xgroup_create("q", "g", id="$", mkstream=True)
    received: dict[bytes, str] = {}  # entry id -> consumer
    twice: list[bytes] = []  # entries ">" delivered again (never expected)
    acking: set[bytes] = set()  # XACKs sent (the crash may cut one off after it is durable)
    acked_ids: set[bytes] = set()  # XACKs acknowledged
    added: list[bytes] = []  # XADDs acknowledged
    lock = threading.Lock()

    def consume(name: str) -> None:
        r = connect(d, timeout=None)
        try:
            while True:
                got: Any = r.xreadgroup("g", name, {"q": ">"}, count=1, block=0)
                for _, entries in got:
                    for sid, _ in entries:
                        with lock:
                            if sid in received:
                                twice.append(sid)
                            received[sid] = name
                            if len(received) % 4 == 0:
                                acking.add(sid)
                        if sid in acking:
                            r.xack("q", "g", sid)
                            with lock:
                                acked_ids.add(sid)
        except (redis.ConnectionError, redis.TimeoutError):
            return

    def produce() -> None:
        r = connect(d)
        try:
            for i in range(100_000):
                added.append(r.xadd("q", {"n": str(i)}))
                if i % 2 == 0:
                    time.sleep(0.001)  # let the consumers block again: most deliveries are wake-ups
        except (redis.ConnectionError, redis.TimeoutError):
            return

    for _ in range(3):
        threads = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(CONSUMERS)]
        for t in threads:
            t.start()
        wait_until(lambda: int(connect(d).info("clients")["blocked_clients"]) == CONSUMERS)
        producer = threading.Thread(target=produce)
        producer.start()
        target = len(received) + 40
        wait_until(lambda: len(received) >= target)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        d.start()
        for t in [*threads, producer]:
            t.join(20)
            assert not t.is_alive()

    r = connect(d)
    stream = {sid for sid, _ in r.xrange("q")}
    pending = {p["message_id"]: p["consumer"] for p in r.xpending_range("q", "g", "-", "+", 1_000_000)}
    last = r.xinfo_groups("q")[0]["last-delivered-id"]

    def key(sid: bytes) -> tuple[int, int]:
        ms, seq = sid.split(b"-")
        return int(ms), int(seq)
    assert received, "no entry was delivered"
    assert not twice, f"delivered twice by >: {twice}"
    assert set(added) <= stream, "an acknowledged XADD was lost"
    for sid, name in received.items():  # what a consumer was told it has is pending for it, or acknowledged
        assert key(sid) <= key(last)
        if sid in acked_ids:
            assert sid not in pending
        elif sid not in acking:
            assert pending.get(sid) == name.encode(), f"{sid!r} was received by {name} but is not pending for it"
    for sid in added:  # at least once: ahead of the group's last id, or delivered and tracked
        assert key(sid) > key(last) or sid in pending or sid in acking, f"{sid!r} was delivered and lost"
    unseen = [sid for sid in pending if sid not in received]  # deliveries whose reply the crash cut off
    assert len(unseen) <= 3 * CONSUMERS, unseen
