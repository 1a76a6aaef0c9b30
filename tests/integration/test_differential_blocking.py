"""Differential test of the blocking commands: a real memd daemon against redis-server 7.0,
several clients at once, outcome by outcome.

The same multi-client scenarios run on both servers (see
:mod:`tests.integration.blockkit`): each step is one client's command (or
pipeline), whose outcome is a reply or "parked"; after each step every
client a server has woken has its reply read, and the sets of parked
clients must agree. That covers what a single-connection differential test
cannot: timeouts, FIFO service across clients, which key of several serves
a client, BLMOVE chains, wake-ups from MULTI/EXEC, type changes of a
waited-on key, CLIENT UNBLOCK, disconnects, pipelines behind a blocked
command, both protocols. Seeded random multi-client sequences follow.

Scenario lines: ``N: command [; command...]`` is client N sending (one
write), ``sleep S`` waits (timeouts) then settles, ``close N`` disconnects
client N; ``$N`` in an argument is client N's id on each server. A ``#``
line starts a new scenario with new connections on an empty keyspace.
redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.integration.blockkit import Client, MultiPair
from tests.integration.diffkit import cmd, split_corpus
from tests.integration.test_differential_handlers import redis_socket  # noqa: F401  (a fixture)
from tests.integration.test_differential_server import memd_socket  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(180)

SEEDS = int(os.environ.get("MEMD_DIFF_BLOCKING_SEEDS", "8"))
STEPS = 60


CORPUS = r"""
# immediate pops: the non-blocking form when a key has elements
0: RPUSH k a b c
0: BLPOP missing k 0
0: BRPOP k 0
0: BLPOP k k 1
0: LLEN k
0: RPUSH k a b c d
0: BLMPOP 0 2 missing k LEFT COUNT 2
0: BLMPOP 0 1 k RIGHT
0: BLMPOP 0 1 k RIGHT COUNT 10
0: RPUSH s 1 2 3
0: BLMOVE s d RIGHT LEFT 0
0: BRPOPLPUSH s d 0
0: LRANGE d 0 -1
0: ZADD z 1 a 2 b 3 c 4 d
0: BZPOPMIN missing z 0
0: BZPOPMAX z 0
0: BZMPOP 0 2 missing z MIN COUNT 2
0: BZMPOP 0 1 z MAX
0: BZMPOP 0 1 z MAX COUNT 5
# timeouts: a null array for every form, also BLMOVE; fractions of a second
1: BLPOP k 0.05
2: BRPOP k1 k2 0.1
3: BZPOPMIN z 0.01
sleep 0.4
1: BLMOVE k d LEFT LEFT 0.05
2: BRPOPLPUSH k d 0.05
3: BLMPOP 0.05 2 k k2 LEFT COUNT 3
sleep 0.4
1: BZPOPMAX z 0.02
2: BZMPOP 0.02 1 z MIN
sleep 0.4
# argument errors, in Redis's order
0: BLPOP k -1
0: BLPOP k -0.5
0: BLPOP k abc
0: BLPOP k nan
0: BLPOP k inf
0: BLPOP k -inf
0: BLPOP k 1e300
0: BLPOP k 1e16
0: BLPOP k 9223372036854775807
0: BLPOP k " 1"
0: BLPOP k ""
0: BRPOP k
0: BLMOVE a b UP LEFT 0
0: BLMOVE a b LEFT LEFT abc
0: BLMOVE a b LEFT DOWN -1
0: BRPOPLPUSH a b -1
0: BLMPOP 0 0 k LEFT
0: BLMPOP 0 -1 k LEFT
0: BLMPOP 0 2 k LEFT
0: BLMPOP 0 1 k MIDDLE
0: BLMPOP 0 1 k LEFT COUNT 0
0: BLMPOP 0 1 k LEFT COUNT -1
0: BLMPOP 0 1 k LEFT COUNT 1 COUNT 2
0: BLMPOP 0 1 k LEFT COUNT
0: BLMPOP abc 1 k LEFT COUNT 0
0: BLMPOP abc 1 k LEFT
0: BLMPOP 0 abc k LEFT
0: BZMPOP 0 1 z LEFT
0: BZMPOP abc 1 z MIN
0: BZMPOP 0 1 z MIN COUNT 0
0: BZPOPMIN z -1
0: BZPOPMAX z nan
0: BLMPOP 0.01
0: BZMPOP 0 1 z
# wrong types when the command first runs; an empty key of another type blocks nothing
0: SET str x
0: ZADD zz 1 a
0: BLPOP str 0
0: BLPOP missing str 0
0: BRPOP zz 0
0: BLMPOP 0 2 missing str LEFT
0: BZPOPMIN str 0
0: BZMPOP 0 2 missing str MIN
0: BLMOVE str d LEFT LEFT 0
0: RPUSH src a
0: BLMOVE src str LEFT LEFT 0
0: BRPOPLPUSH src zz 0
0: LRANGE src 0 -1
1: BLMOVE empty str LEFT LEFT 0.05
sleep 0.3
# FIFO across three clients on one key
1: BLPOP k 0
2: BLPOP k 0
3: BLPOP k 0
0: RPUSH k a
0: RPUSH k b c
0: LLEN k
# one push serves several clients; the rest of the list stays
1: BRPOP k 0
2: BRPOP k 0
0: RPUSH k a b c d
0: LRANGE k 0 -1
# a client waiting on several keys is served from the one that became ready
1: BLPOP a b c 0
2: BLPOP b 0
3: BLPOP c a 0
0: RPUSH b x
0: RPUSH a y
0: RPUSH c z
0: RPUSH a w
# the first client blocked on a key is served first even if it listed the key last
1: BLPOP x y 0
2: BLPOP y x 0
0: RPUSH y 1
0: RPUSH x 2
# BLMOVE chains: a served BLMOVE makes its destination ready
1: BLMOVE a b LEFT RIGHT 0
2: BLMOVE b c LEFT RIGHT 0
3: BRPOPLPUSH c d 0
0: RPUSH a x
0: LRANGE a 0 -1
0: LRANGE b 0 -1
0: LRANGE d 0 -1
# BLMOVE onto its own key, then another waiter on that key
1: BLMOVE k k LEFT RIGHT 0
2: BLPOP k 0
0: RPUSH k a
0: LRANGE k 0 -1
# BLMOVE into a list a BLPOP waits on
1: BLPOP dst 0
2: BLMOVE src dst RIGHT LEFT 0
0: LPUSH src a b
0: LRANGE src 0 -1
# BLMOVE whose destination became another type while it waited: WRONGTYPE, element kept
1: BLMOVE src dst LEFT LEFT 0
2: BLPOP src 0
0: SET dst x
0: RPUSH src a
0: LRANGE src 0 -1
# sorted sets: min and max waiters, then counts
1: BZPOPMIN z 0
2: BZPOPMAX z 0
3: BZPOPMIN z 0
0: ZADD z 1 a 2 b 3 c 4 d
0: ZRANGE z 0 -1 WITHSCORES
1: BZMPOP 0 2 y z MAX COUNT 2
2: BZMPOP 0 1 z MIN COUNT 10
0: ZADD z 1.5 a 2.5 b 3.5 c
0: ZCARD z
# BLMPOP with COUNT, both ends
1: BLMPOP 0 2 a b RIGHT COUNT 2
2: BLMPOP 0 1 b LEFT COUNT 5
0: RPUSH b 1 2 3 4
0: LRANGE b 0 -1
# a push inside MULTI wakes after EXEC; the transaction sees its own push
1: BLPOP k 0
0: MULTI
0: RPUSH k a b
0: LLEN k
0: EXEC
0: LLEN k
# pushed then emptied inside one transaction: nobody is served
1: BLPOP k 0
0: MULTI
0: RPUSH k a
0: DEL k
0: EXEC
0: RPUSH k b
# a transaction that pushes several waited-on keys
1: BLPOP a 0
2: BZPOPMIN z 0
3: BLMOVE b a LEFT LEFT 0
0: MULTI
0: RPUSH b 1
0: ZADD z 5 m
0: SET other x
0: EXEC
0: LRANGE a 0 -1
# blocking commands inside MULTI do not block
0: RPUSH full x
0: MULTI
0: BLPOP k 0
0: BRPOP k full 0
0: BLMOVE k d LEFT LEFT 0
0: BRPOPLPUSH k d 0
0: BLMPOP 0 1 k LEFT
0: BZPOPMIN z 0
0: BZPOPMAX z 0
0: BZMPOP 0 1 z MIN COUNT 2
0: EXEC
0: MULTI
0: BLPOP k -1
0: EXEC
# the wrong type at wake-up: the client stays parked until the key is a list again
1: BLPOP k 0
0: ZADD k 1 a
0: SET k x
0: DEL k
0: RPUSH k a
# a sorted-set waiter and a list waiter on one key: each served only by its own type
1: BZPOPMIN k 0
2: BLPOP k 0
0: RPUSH k a
0: DEL k
0: ZADD k 1 m
# FLUSHALL while clients wait: they stay parked
1: BLPOP k 0
2: BZPOPMAX z 0
0: FLUSHALL
0: RPUSH k a
0: ZADD z 1 a
# keys created by other writes: LMOVE, RENAME, ZUNIONSTORE, SORT STORE, LINSERT on an existing list
1: BLPOP d 0
0: RPUSH s a b
0: LMOVE s d LEFT LEFT
1: BLPOP d 0
0: RENAME s d
1: BZPOPMIN zu 0
0: ZADD z1 1 a 2 b
0: ZUNIONSTORE zu 1 z1
1: BLPOP sorted 0
0: RPUSH nums 3 1 2
0: SORT nums STORE sorted
# databases: a client waits on a key of its own database
1: SELECT 1 ; BLPOP k 0
2: BLPOP k 0
0: RPUSH k a
0: SELECT 1
0: RPUSH k b
0: LLEN k
# SWAPDB serves the clients whose keys the swap filled
1: SELECT 1 ; BLPOP k 0
2: SELECT 1 ; BZPOPMIN z 0
3: BLPOP k 0
0: RPUSH k a ; ZADD z 1 m ; SET s x
0: SWAPDB 0 1
0: RPUSH k b
# MOVE into a waited-on key of another database
1: SELECT 2 ; BLPOP k 0
0: RPUSH k a b
0: MOVE k 2
0: SELECT 2 ; LRANGE k 0 -1
# CLIENT UNBLOCK: timeout reply, error, not parked, bad reason
1: BLPOP k 0
2: BZPOPMIN z 0
0: CLIENT UNBLOCK $1
0: CLIENT UNBLOCK $2 ERROR
0: CLIENT UNBLOCK $3
0: CLIENT UNBLOCK $1 TIMEOUT
0: CLIENT UNBLOCK $1 MAYBE
0: CLIENT UNBLOCK abc
0: CLIENT UNBLOCK 1 TIMEOUT extra
# a parked client runs nothing it pipelined until it is woken
1: BLPOP k 0 ; RPUSH k after ; LLEN k ; PING
0: LLEN k
0: RPUSH k a
0: LRANGE k 0 -1
# a pipeline whose second blocking command parks again
1: BLPOP k 0 ; BLPOP k 0 ; ECHO done
0: RPUSH k a
0: RPUSH k b
# the pusher's own pipeline sees the pop already done
1: BLPOP k 0
0: RPUSH k a ; LLEN k ; RPUSH k b ; LLEN k
# a disconnected client leaves its queues
1: BLPOP k 0
2: BLPOP k 0
close 1
0: RPUSH k a
0: LLEN k
"""


def run_scenarios(pair_factory: object, redis_path: str, memd_path: str, protocol: int) -> None:
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
def test_blocking_scenarios(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    run_scenarios(MultiPair, redis_socket, memd_socket, protocol)


@pytest.mark.parametrize("protocol", [2, 3])
def test_short_timeouts(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    """Timeouts of a millisecond or less (ceil to 1 ms): the reply may come before anyone could see
    the client parked, so these are compared as plain calls."""
    redis, memd = Client(redis_socket, protocol), Client(memd_socket, protocol)
    try:
        for line in ("BLPOP k 0.0001", "BLPOP k 1e-400", "BLPOP k 0x0.1p-6", "BZPOPMIN z 0.001",
                     "BLMOVE k d LEFT LEFT 0.0009", "BLMPOP 0.001 1 k LEFT", "BZMPOP 0.0002 1 z MAX COUNT 2"):
            assert redis.call(cmd(line)) == memd.call(cmd(line)), line
    finally:
        redis.close()
        memd.close()


def _wait_parked(control: Client, n: int) -> None:
    deadline = time.monotonic() + 10
    while b"blocked_clients:%d\r\n" % n not in control.call(cmd("INFO clients")):
        assert time.monotonic() < deadline, "the client was not parked"
        time.sleep(0.002)


@pytest.mark.parametrize("protocol", [2, 3])
def test_reply_modes_and_kill(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    """CLIENT REPLY SKIP / OFF apply to a blocking command's eventual reply; CLIENT KILL of a parked
    client takes it out of the queue at once (a push in the same pipeline stays in the list)."""
    got: dict[str, list[bytes]] = {}
    for name, path in (("redis", redis_socket), ("memd", memd_socket)):
        control, a, b = Client(path), Client(path, protocol), Client(path, protocol)
        try:
            control.call(cmd("FLUSHALL"))
            a.send([cmd("CLIENT REPLY SKIP"), cmd("BLPOP k 0"), cmd("PING")])
            _wait_parked(control, 1)
            out = [control.call(cmd("RPUSH k x")), a.read()]  # BLPOP's reply skipped: PONG comes first
            a.send([cmd("CLIENT REPLY OFF"), cmd("BRPOP k 0"), cmd("CLIENT REPLY ON"), cmd("ECHO on")])
            _wait_parked(control, 1)
            out += [control.call(cmd("RPUSH k y")), a.read(), control.call(cmd("LLEN k"))]
            b.send([cmd("BLPOP k 0")])
            _wait_parked(control, 1)
            control.send([cmd(f"CLIENT KILL ID {b.id}"), cmd("RPUSH k z"), cmd("LLEN k")])
            out += [control.read(), control.read(), control.read()]
            got[name] = out
        finally:
            for c in (control, a, b):
                c.close()
    assert got["memd"] == got["redis"], got


def test_pushes_to_a_parked_resp3_client(redis_socket: str, memd_socket: str) -> None:  # noqa: F811
    """A RESP3 subscriber parked by BLPOP gets its pub/sub messages while it waits, in order with the
    reply that wakes it (a PUBLISH just before the push that wakes it comes first)."""
    got: dict[str, list[bytes]] = {}
    for name, path in (("redis", redis_socket), ("memd", memd_socket)):
        control, a = Client(path), Client(path, 3)
        try:
            control.call(cmd("FLUSHALL"))
            out = [a.call(cmd("SUBSCRIBE ch"))]
            a.send([cmd("BLPOP k 0"), cmd("PING")])
            _wait_parked(control, 1)
            out += [control.call(cmd("PUBLISH ch one")), a.read()]
            control.send([cmd("PUBLISH ch two"), cmd("RPUSH k x"), cmd("PUBLISH ch three")])
            out += [control.read(), control.read(), control.read(), a.read(), a.read(), a.read(), a.read()]
            got[name] = out
        finally:
            control.close()
            a.close()
    assert got["memd"] == got["redis"], got


# ---- seeded random multi-client sequences ---------------------------------------------------------

LISTS = ["l0", "l1", "l2"]
ZSETS = ["z0", "z1"]


def _keys(rng: random.Random, pool: list[str]) -> list[str]:
    return rng.sample(pool, rng.randint(1, len(pool)))


def random_step(rng: random.Random) -> list[str]:
    """One client's commands: mostly pushes and blocking pops (timeout 0: outcomes never race a
    clock), some type changes, deletes and transactions."""
    r = rng.random()
    side = rng.choice(["LEFT", "RIGHT"])
    any_key = rng.choice(LISTS + ZSETS)
    if r < 0.22:
        return [f"{rng.choice(['LPUSH', 'RPUSH'])} {rng.choice(LISTS)} " + " ".join(
            f"v{rng.randint(0, 99)}" for _ in range(rng.randint(1, 3)))]
    if r < 0.34:
        return [f"ZADD {rng.choice(ZSETS)} " + " ".join(
            f"{rng.randint(0, 9)} m{rng.randint(0, 9)}" for _ in range(rng.randint(1, 3)))]
    if r < 0.46:
        return [f"{rng.choice(['BLPOP', 'BRPOP'])} {' '.join(_keys(rng, LISTS + ZSETS[:1]))} 0"]
    if r < 0.54:
        return [f"BLMOVE {rng.choice(LISTS)} {rng.choice(LISTS + ZSETS[:1])} {side} {rng.choice(['LEFT', 'RIGHT'])} 0"]
    if r < 0.60:
        return [f"BLMPOP 0 {len(keys := _keys(rng, LISTS))} {' '.join(keys)} {side} COUNT {rng.randint(1, 3)}"]
    if r < 0.68:
        return [f"{rng.choice(['BZPOPMIN', 'BZPOPMAX'])} {' '.join(_keys(rng, ZSETS + LISTS[:1]))} 0"]
    if r < 0.73:
        return [f"BZMPOP 0 {len(keys := _keys(rng, ZSETS))} {' '.join(keys)} {rng.choice(['MIN', 'MAX'])} "
                f"COUNT {rng.randint(1, 3)}"]
    if r < 0.78:
        return [f"DEL {any_key}"]
    if r < 0.81:
        return [f"SET {any_key} s"]
    if r < 0.86:
        return [f"{rng.choice(['LPOP', 'RPOP'])} {rng.choice(LISTS)}"]
    if r < 0.90:
        return ["MULTI", f"RPUSH {rng.choice(LISTS)} t{rng.randint(0, 9)}", f"ZADD {rng.choice(ZSETS)} 1 t",
                f"BLPOP {rng.choice(LISTS)} 0", "EXEC"]
    if r < 0.94:
        return [f"LMOVE {rng.choice(LISTS)} {rng.choice(LISTS)} {side} LEFT"]
    return [f"LRANGE {rng.choice(LISTS)} 0 -1", f"ZRANGE {rng.choice(ZSETS)} 0 -1 WITHSCORES"]


@pytest.mark.parametrize("protocol", [2, 3])
def test_blocking_random(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    mismatches: list[str] = []
    for seed in range(SEEDS):
        rng = random.Random(7000 + seed * 10 + protocol)
        pair = MultiPair(redis_socket, memd_socket, protocol)
        try:
            for side in (pair.redis, pair.memd):
                side.control.call(cmd("FLUSHALL"))
            for step in range(STEPS):
                free = [n for n in range(4) if n not in pair.parked]
                if not free:  # everyone waits: a push from a fresh angle frees someone (or not)
                    push = cmd(f"RPUSH {rng.choice(LISTS)} free")
                    pair.redis.control.call(push)
                    pair.memd.control.call(push)
                    pair.settle(f"seed {seed} step {step} (control push)")
                    continue
                cmds = random_step(rng)
                pair.step(rng.choice(free), [cmd(c) for c in cmds], f"seed {seed} step {step} {cmds}")
            for key in LISTS + ZSETS:  # what is left, compared through the control connections
                args = cmd(f"{'ZRANGE' if key in ZSETS else 'LRANGE'} {key} 0 -1")
                left = pair.redis.control.call(args), pair.memd.control.call(args)
                if left[0] != left[1]:
                    pair.mismatches.append(f"[seed {seed} end resp{protocol}] {key}: redis {left[0]!r} "
                                           f"memd {left[1]!r}")
        except AssertionError:
            pass
        finally:
            mismatches += pair.mismatches
            pair.close()
    assert not mismatches, f"{len(mismatches)} outcomes differ:\n" + "\n".join(mismatches[:40])
